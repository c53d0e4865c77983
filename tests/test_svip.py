"""SVIP's adaptive draft length (chapter 4) and EAGLE-2's calibration records: stopping where
the draft is unsure changes how much is drafted, never what comes out (greedy: the same tokens;
sampling: the exact distribution), and the calibration records agree with the generation."""
import pytest
import torch

from conftest import SMALL, TINY, tiny_model
from test_eagle import PROMPT, random_head
from test_speculative import SMALL_DRAFT
from minispec import generate
from minispec.checks import chi_square_ok, exact_distribution, sequence_frequencies
from minispec.eagle2 import calibration
from minispec.model import ModelConfig
from minispec.sampling import SamplingParams, warp
from minispec.speculative import too_unsure


def entropies(model, prompt, n=12):
    """The draft's entropy (nats) after each of n greedy steps from prompt."""
    out, tokens = [], list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([tokens])).logits[0, -1]
            q = torch.softmax(logits.float(), -1)
            out.append(float(-(q * q.log()).sum()))
            tokens.append(int(logits.argmax()))
    return sorted(out)


@pytest.mark.parametrize("method", ["sps", "eagle1"])
def test_svip_greedy_equals_plain_greedy_and_drafts_less(method):
    target = tiny_model()
    draft = tiny_model(3, ModelConfig(**{**TINY.to_dict(), "n_layers": 1})) if method == "sps" \
        else random_head(target, 1)
    want = generate(target, PROMPT, 30).tokens
    fixed = generate(target, PROMPT, 30, method=method, draft=draft, gamma=4)
    h = entropies(draft, PROMPT) if method == "sps" else entropies(target, PROMPT)   # the head: roughly
    middle = h[len(h) // 2]
    for max_entropy, expect in ((None, "fixed"), (1e9, "fixed"), (middle, "fewer"), (0.0, "one")):
        g = generate(target, PROMPT, 30, method=method, draft=draft, gamma=4, max_entropy=max_entropy)
        assert g.tokens == want
        if expect == "fixed":
            assert g.stats.num_draft_tokens == fixed.stats.num_draft_tokens
        elif expect == "fewer":
            assert g.stats.num_draft_tokens < fixed.stats.num_draft_tokens
        elif expect == "one":                                   # every token drafted is a guess
            assert g.stats.num_draft_tokens == g.stats.num_drafts > 0


def test_svip_stops_where_the_entropy_is_high():
    params = SamplingParams(0.0)
    sharp, flat = torch.tensor([10.0, 0.0, 0.0, 0.0]), torch.zeros(4)       # entropy ~0 and log 4
    assert not too_unsure(sharp, params, 0.1) and too_unsure(flat, params, 1.0)   # log 4 = 1.39
    assert not too_unsure(flat, params, 1.4) and not too_unsure(flat, params, None)
    assert too_unsure(sharp, SamplingParams(100.0), 1.0)      # sampling: the entropy of the warped q


def test_svip_sampling_matches_the_target_exactly():
    """sps with a threshold at the draft's median entropy: some rounds stop early, some do not;
    the 3-token distribution is still the target's."""
    target = tiny_model(2, SMALL)
    with torch.no_grad():
        target.lm_head.weight.mul_(3.0)
    draft = tiny_model(3, SMALL_DRAFT, scale=3.0)
    params = SamplingParams(1.0)
    h = entropies(draft, PROMPT)
    exact = exact_distribution(target, PROMPT, params, 3).flatten()
    counts = sequence_frequencies(target, PROMPT, params, 3000, draft=draft, gamma=2,
                                  max_entropy=h[len(h) // 2])
    assert counts[exact == 0].sum() == 0
    assert chi_square_ok(counts, exact)


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan"), True, "2"])
def test_bad_thresholds_are_refused(bad):
    target = tiny_model()
    with pytest.raises(ValueError, match="max_entropy"):
        generate(target, PROMPT, 5, method="eagle1", draft=random_head(target), max_entropy=bad)


def test_calibration_records_agree_with_the_generation():
    target, head = tiny_model(), random_head(tiny_model(), 2)
    rec = calibration(target, head, [PROMPT, PROMPT[:3]], max_new_tokens=20, total_tokens=6, depth=3, top_k=2)
    n = len(rec["q"])
    assert n > 0 and all(len(v) == n for v in rec.values())
    for d, r, q, c, reached, acc in zip(*rec.values()):
        assert 0 < c <= q + 1e-6 <= 1 + 1e-6 and 1 <= d <= 3 and 0 <= r < 2
        assert reached or not acc
        assert reached or d > 1                                 # the root's children are always checked
    accepted = sum(rec["accepted"])
    runs = [generate(target, p, 20, method="eagle2", draft=head, total_tokens=6, depth=3, eagle_topk=2)
            for p in (PROMPT, PROMPT[:3])]
    assert accepted == sum(g.stats.num_accepted_tokens for g in runs)


@pytest.mark.parametrize("method, options", [("eagle1", {"gamma": 2}),
                                             ("eagle1-tree", {"choices": [[0], [1], [0, 0], [1, 0]]})])
def test_svip_with_the_eagle_head_sampling_matches_the_target_exactly(method, options, monkeypatch):
    """The threshold is the median entropy the head actually meets, so some nodes stop and some
    expand (checked), and the 3-token distribution is still the target's."""
    import minispec.eagle as eagle_module
    target = tiny_model(2, SMALL)
    with torch.no_grad():
        target.lm_head.weight.mul_(3.0)
    head = random_head(target, 0)
    params = SamplingParams(1.0)
    real, seen = eagle_module.too_unsure, []

    def spy(logits, params, max_entropy):
        q = warp(logits, params)
        seen.append(float(-(q * q.clamp_min(1e-30).log()).sum()))
        return real(logits, params, max_entropy)

    monkeypatch.setattr(eagle_module, "too_unsure", spy)
    sequence_frequencies(target, PROMPT, params, 50, method=method, draft=head, **options)
    threshold = sorted(seen)[len(seen) // 2]
    seen.clear()
    exact = exact_distribution(target, PROMPT, params, 3).flatten()
    counts = sequence_frequencies(target, PROMPT, params, 3000, method=method, draft=head,
                                  max_entropy=threshold, **options)
    assert min(seen) <= threshold < max(seen)                     # both branches were taken
    assert int(counts[exact == 0].sum()) == 0
    assert chi_square_ok(counts, exact)
