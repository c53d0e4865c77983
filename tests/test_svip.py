"""SVIP's adaptive draft length and EAGLE-2's defaults and calibration records (chapter 4):
stopping where the draft is unsure changes how much is drafted, never what comes out (greedy:
the same tokens; sampling: the exact distribution), and the calibration records agree with the
rounds the verifier ran."""
import pytest
import torch

import minispec.eagle as eagle_module
import minispec.speculative as speculative_module
from conftest import SMALL, TINY, tiny_model
from test_eagle import PROMPT, random_head
from minispec import generate
from minispec.checks import chi_square_ok, exact_distribution, sequence_frequencies
from minispec.eagle2 import DEFAULTS, defaults_for
from minispec.studies import calibration
from minispec.model import ModelConfig
from minispec.sampling import SamplingParams, warp
from minispec.speculative import too_unsure

SMALL_DRAFT = ModelConfig(**{**SMALL.to_dict(), "n_layers": 1})
TINY_DRAFT = ModelConfig(**{**TINY.to_dict(), "n_layers": 1})


def spy_on(module, monkeypatch) -> list[float]:
    """Record the entropy of every distribution the stopping rule is asked about."""
    real, seen = module.too_unsure, []

    def spy(logits, params, max_entropy):
        q = torch.softmax(logits.float(), -1) if params.greedy else warp(logits, params)
        seen.append(float(-(q * q.clamp_min(1e-30).log()).sum()))
        return real(logits, params, max_entropy)
    monkeypatch.setattr(module, "too_unsure", spy)
    return seen


def median_threshold(seen: list[float]) -> float:
    return sorted(seen)[len(seen) // 2]


def test_the_stopping_rule():
    params = SamplingParams(0.0)
    sharp, flat = torch.tensor([10.0, 0.0, 0.0, 0.0]), torch.zeros(4)       # entropy ~0 and log 4
    assert not too_unsure(sharp, params, 0.1) and too_unsure(flat, params, 1.0)   # log 4 = 1.39
    assert not too_unsure(flat, params, 1.4) and not too_unsure(flat, params, None)
    assert too_unsure(sharp, SamplingParams(100.0), 1.0)      # sampling: the entropy of the warped q


@pytest.mark.parametrize("method, options", [("sps", {"gamma": 4}), ("eagle1", {"gamma": 4}),
                                             ("eagle1-tree", {"choices": [[0], [1], [0, 0], [0, 0, 0], [1, 0]]})])
def test_svip_greedy_equals_plain_greedy_and_drafts_less(method, options, monkeypatch):
    target = tiny_model()
    draft = tiny_model(3, TINY_DRAFT) if method == "sps" else random_head(target, 1)
    seen = spy_on(speculative_module if method == "sps" else eagle_module, monkeypatch)
    want = generate(target, PROMPT, 30).tokens
    fixed = generate(target, PROMPT, 30, method=method, draft=draft, **options)
    middle = median_threshold(seen)
    for max_entropy, expect in ((None, "fixed"), (1e9, "fixed"), (middle, "fewer"), (0.0, "least")):
        seen.clear()
        g = generate(target, PROMPT, 30, method=method, draft=draft, max_entropy=max_entropy, **options)
        assert g.tokens == want
        if expect == "fixed":
            assert g.stats.num_draft_tokens == fixed.stats.num_draft_tokens
        elif expect == "fewer":
            assert min(seen) <= middle < max(seen)                 # some nodes stop, some expand
            assert g.stats.num_draft_tokens < fixed.stats.num_draft_tokens
        elif expect == "least":                                     # only the root's children
            first_level = len([c for c in options.get("choices", [[0]]) if len(c) == 1])
            assert g.stats.num_draft_tokens == first_level * g.stats.num_drafts > 0


@pytest.mark.parametrize("method, options", [("sps", {"gamma": 2}), ("eagle1", {"gamma": 2}),
                                             ("eagle1-tree", {"choices": [[0], [1], [0, 0], [1, 0]]})])
def test_svip_sampling_matches_the_target_exactly(method, options, monkeypatch):
    """The threshold is the median entropy the drafter actually meets, so some nodes stop and
    some expand (checked), and the 3-token distribution is still the target's. (sps meets one
    context only in a 3-token generation, its first draft's: there it always stops, and never
    stopping is chapter 1's test.)"""
    target = tiny_model(2, SMALL)
    with torch.no_grad():
        target.lm_head.weight.mul_(3.0)
    draft = tiny_model(3, SMALL_DRAFT, scale=3.0) if method == "sps" else random_head(target, 0)
    params = SamplingParams(1.0)
    seen = spy_on(speculative_module if method == "sps" else eagle_module, monkeypatch)
    sequence_frequencies(target, PROMPT, params, 50, method=method, draft=draft, **options)
    threshold = median_threshold(seen) if method != "sps" else min(seen) - 1e-3
    seen.clear()
    exact = exact_distribution(target, PROMPT, params, 3).flatten()
    counts = sequence_frequencies(target, PROMPT, params, 3000, method=method, draft=draft,
                                  max_entropy=threshold, **options)
    assert min(seen) <= threshold < max(seen) if method != "sps" else threshold < min(seen)
    assert int(counts[exact == 0].sum()) == 0
    assert chi_square_ok(counts, exact)


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan"), True, "2"])
def test_bad_thresholds_are_refused(bad):
    target = tiny_model()
    with pytest.raises(ValueError, match="max_entropy"):
        generate(target, PROMPT, 5, method="eagle1", draft=random_head(target), max_entropy=bad)


def test_eagle2_defaults_follow_the_device():
    assert defaults_for("cpu") == DEFAULTS["cpu"] and defaults_for("cuda") == DEFAULTS["gpu"]
    assert defaults_for(torch.device("mps")) == DEFAULTS["gpu"]
    target, head = tiny_model(), random_head(tiny_model(), 2)
    g = generate(target, PROMPT, 12, method="eagle2", draft=head)              # the CPU defaults
    assert g.tokens == generate(target, PROMPT, 12).tokens
    assert max(len(g.stats.accepted_per_pos), 1) <= DEFAULTS["cpu"]["depth"]
    assert g.stats.num_draft_tokens <= DEFAULTS["cpu"]["total_tokens"] * g.stats.num_drafts


def test_calibration_records_agree_with_the_rounds():
    """Per round, the reached nodes are exactly the root's children and the children of the
    accepted nodes, the accepted nodes form a path, and over all rounds they add up to what
    generate accepts."""
    target, head = tiny_model(), random_head(tiny_model(), 2)
    prompts = [PROMPT, PROMPT[:1]]                                   # a one-token prompt too
    rec = calibration(target, head, prompts, max_new_tokens=20, total_tokens=6, depth=3, eagle_topk=2)
    n = len(rec["q"])
    assert n > 0 and all(len(v) == n for v in rec.values())
    rows = list(zip(*rec.values()))
    for rnd in sorted(set(rec["round"])):
        nodes = [r for r in rows if r[0] == rnd]
        _, depth, rank, q, conf, reached, accepted = zip(*nodes)
        assert all(0 < c <= x + 1e-6 <= 1 + 1e-6 for c, x in zip(conf, q))
        assert all(1 <= d <= 3 and 0 <= k < 2 for d, k in zip(depth, rank))
        n_acc = sum(accepted)
        assert sorted(d for d, a in zip(depth, accepted) if a) == list(range(1, n_acc + 1))   # a path
        root_children = sum(d == 1 for d in depth)
        assert all(reached[i] for i in range(len(nodes)) if depth[i] == 1)
        assert sum(reached) >= root_children and (sum(reached) == root_children) == (n_acc == 0)
        assert all(not a or r for a, r in zip(accepted, reached))
    runs = [generate(target, p, 20, method="eagle2", draft=head, total_tokens=6, depth=3, eagle_topk=2)
            for p in prompts]
    assert sum(rec["accepted"]) == sum(g.stats.num_accepted_tokens for g in runs)
