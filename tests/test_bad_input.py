"""Bad or borderline input across the EAGLE wing: every case of an audit of the public API, the
loaders and the command line gets a specific message (or works, where the value is legitimate),
nothing hangs, nothing allocates beyond what the context allows, nothing is silently accepted.
The rules themselves are in minispec/validate.py."""
import json
import signal
from contextlib import contextmanager

import pytest
import torch

from conftest import SMALL, tiny_model
from test_eagle import PROMPT, random_head
from test_eagle3 import FOUR, random_eagle3
import minispec
from minispec import generate
from minispec.checkpoint import CheckpointError, WEIGHTS, weights_fingerprint
from minispec.eagle3 import Eagle3Head, load_eagle3, save_eagle3
from minispec.methods import make_drafter


@contextmanager
def time_limit(seconds: int):
    """Fail (rather than hang CI) when the block runs longer than `seconds`."""
    def stop(*_):
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def tiny():
    """A 3-layer target with an EAGLE-1 head, and a 4-layer one with an EAGLE-3 head (draft
    vocabulary: the 32 even ids)."""
    t1, t3 = tiny_model(0), tiny_model(0, FOUR)
    return t1, random_head(t1), t3, random_eagle3(t3)


def run(tiny, method, **options):
    t1, h1, t3, h3 = tiny
    target, head = (t3, h3) if method == "eagle3" else (t1, h1)
    return generate(target, PROMPT, 6, method=method, draft=head, **options)


# --------------------------------------------------------------- sizes: refused with their name
@pytest.mark.parametrize("method, options, message", [
    ("eagle2", {"eagle_topk": 5000}, r"eagle_topk must be in \[1, 64\]"),          # above the vocabulary
    ("eagle3", {"eagle_topk": 33}, r"eagle_topk must be in \[1, 32\]"),            # above the draft vocabulary
    ("eagle2", {"eagle_topk": 10**9}, "eagle_topk must be in"),
    ("eagle3", {"eagle_topk": 10**9}, "eagle_topk must be in"),
    ("eagle2", {"total_tokens": 10**9}, r"total_tokens must be in \[1, 64\]"),     # the model's context
    ("eagle3", {"total_tokens": 10**9}, "total_tokens must be in"),
    ("eagle2", {"total_tokens": 64, "depth": 64, "eagle_topk": 64}, "frontier nodes in the head"),
    ("eagle2", {"depth": 0}, "depth must be >= 1"),
    ("eagle2", {"depth": 2.5}, "depth must be an integer"),
    ("eagle3", {"eagle_topk": True}, "eagle_topk must be an integer"),
    ("eagle1-tree", {"choices": 5}, "choices must be a list of paths"),
    ("eagle1-tree", {"choices": [1, 2]}, "choice 1: a path is"),
    ("eagle1-tree", {"choices": [None]}, "choice None: a path is"),
    ("eagle1-tree", {"choices": "t4"}, "choices must be a list of paths"),
    ("eagle1-tree", {"choices": []}, "choices is empty"),                           # was: the default tree
    ("eagle1-tree", {"choices": [[0], [-1]]}, "sibling ranks >= 0"),
    ("eagle1-tree", {"choices": [[0]] * 65}, "at most 64"),
    ("eagle1", {"gamma": 0}, "gamma"),
])
def test_bad_sizes_are_refused_by_name(tiny, method, options, message):
    with pytest.raises(ValueError, match=message):
        run(tiny, method, **options)


def test_ranks_beyond_the_heads_vocabulary_are_refused():
    target = tiny_model(0, SMALL)                                   # 16 tokens: a tree can name rank 16
    with pytest.raises(ValueError, match="ranks only 16 tokens"):
        generate(target, PROMPT, 5, method="eagle1-tree", draft=random_head(target),
                 choices=[[r] for r in range(17)])
    four = tiny_model(0, FOUR)
    head = random_eagle3(four, vocab=list(range(8)))                # 8 draft tokens, eagle_topk 9
    with pytest.raises(ValueError, match=r"eagle_topk must be in \[1, 8\]"):
        generate(four, PROMPT, 5, method="eagle3", draft=head, eagle_topk=9)


# --------------------------------------------------------------- extreme sizes: bounded, lossless
EXTREMES = [("eagle1", "gamma", 10**6), ("eagle1", "gamma", 20000), ("eagle2", "depth", 20000),
            ("eagle2", "depth", 10**6), ("eagle3", "depth", 10**6), ("eagle2", "eagle_topk", 64),
            ("eagle3", "eagle_topk", 32), ("eagle2", "total_tokens", 64), ("eagle3", "total_tokens", 64)]


@pytest.mark.parametrize("method, option, value", EXTREMES)
def test_extreme_sizes_stay_bounded_and_lossless(tiny, method, option, value):
    """Values that used to hang or crash: they draft at most what the request and the context
    allow (the caches the drafter allocates are bounded by them), take at most one target pass
    per new token, finish well inside a time limit, and stay lossless."""
    t1, h1, t3, h3 = tiny
    target, head = (t3, h3) if method == "eagle3" else (t1, h1)
    max_len = len(PROMPT) + 6
    with time_limit(60):
        d = make_drafter(method, target, head, max_len, **{option: value})
        assert d.cache.max_len <= max_len + target.max_seq_len
        assert d.extra_nodes < target.max_seq_len and d.depth <= max_len
        g = run(tiny, method, **{option: value})
    assert g.stats.target_calls <= 1 + 6                            # the prefill, then one pass per round
    assert g.tokens == generate(target, PROMPT, 6).tokens


def test_the_caps_draft_the_same_trees(tiny):
    """depth and eagle_topk above total_tokens act as total_tokens: a drafter forced past the caps
    (deeper and wider expansions) drafts the same trees, round by round."""
    from minispec.sampling import SamplingParams
    from minispec.speculative import speculative_generate
    t1, h1 = tiny[0], tiny[1]
    max_len = len(PROMPT) + 20
    trees = []
    for wide in (False, True):
        d = make_drafter("eagle2", t1, h1, max_len, total_tokens=5, depth=10**6, eagle_topk=60)
        assert (d.policy.total_tokens, d.depth, d.policy.eagle_topk) == (5, 5, 5)
        if wide:
            d.policy.depth, d.policy.eagle_topk = 12, 12
            d.cache = h1.new_cache(max_len + 12 * 12)
        rounds = []
        speculative_generate(t1, list(PROMPT), 20, SamplingParams(), None, None, d,
                             on_round=lambda r: rounds.append((r.tree.tokens, r.tree.parents)))
        trees.append(rounds)
    assert trees[0] == trees[1] and any(len(t) == 5 for t, _ in trees[0])


# --------------------------------------------------------------- heads given to the API
def test_heads_that_do_not_fit_are_refused(tiny):
    t1, h1, t3, h3 = tiny
    with pytest.raises(ValueError, match="was made for the target whose weights"):
        generate(tiny_model(1), PROMPT, 5, method="eagle1", draft=h1)        # same shape, other weights
    with pytest.raises(ValueError, match="draft language model"):
        generate(t1, PROMPT, 5, method="sps", draft=h1)
    bad = Eagle3Head(h3.config, t3.vocab_size, (-1, 1, 2)).eval()
    bad.set_vocab(h3.draft_ids)
    with pytest.raises(ValueError, match=r"feature layers \[-1, 1, 2\]"):
        generate(t3, PROMPT, 5, method="eagle3", draft=bad)
    wrapped = random_eagle3(t3, 1)
    with torch.no_grad():
        wrapped.d2t[3] = -4                                         # draft id 3 -> target id -1
    with pytest.raises(ValueError, match="outside the target's vocabulary"):
        generate(t3, PROMPT, 5, method="eagle3", draft=wrapped)
    twice = random_eagle3(t3, 1)
    with torch.no_grad():
        twice.d2t[3] = twice.d2t[2] - 1                             # draft ids 2 and 3 -> one target id
    with pytest.raises(ValueError, match="one-to-one"):
        generate(t3, PROMPT, 5, method="eagle3", draft=twice)


@pytest.mark.parametrize("method", ["eagle1", "eagle3"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_head_with_overflowing_weights_is_named(tiny, method, temperature):
    t1, h1, t3, h3 = tiny
    target, head = (t3, random_eagle3(t3, 2)) if method == "eagle3" else (t1, random_head(t1, 2))
    with torch.no_grad():
        for p in head.parameters():
            p.mul_(1e36)                                            # finite, but the logits overflow
    with pytest.raises(ValueError, match="head gave NaN or infinite logits"):
        generate(target, PROMPT, 5, temperature=temperature, seed=0, method=method, draft=head)


@pytest.mark.parametrize("prompt, message", [
    (None, "prompt_ids must be a list of token ids"),
    (5, "prompt_ids must be a list of token ids"),
    ("ROMEO:", "not text"),
])
def test_a_prompt_that_is_not_token_ids_is_named(tiny, prompt, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny[0], prompt, 5)


# --------------------------------------------------------------- head folders
@pytest.fixture
def eagle3_folder(tmp_path, tiny):
    t3, h3 = tiny[2], tiny[3]
    return save_eagle3(h3, tmp_path / "h", target_sha256=weights_fingerprint(t3))


def specforge_only(folder):
    """The same head in SpecForge's layout alone (no minispec manifest)."""
    (folder / "manifest.json").unlink()
    return folder


def rewrite_d2t(folder, change):
    from safetensors.torch import load_file, save_file
    state = load_file(str(folder / WEIGHTS))
    change(state)
    save_file(state, str(folder / WEIGHTS))


@pytest.mark.parametrize("layout", ["minispec", "specforge"])
@pytest.mark.parametrize("change, message", [
    (lambda s: s["d2t"].__setitem__(0, -5000), "outside the target's vocabulary"),      # negative target id
    (lambda s: s["d2t"].__setitem__(31, 5000), "outside the target's vocabulary"),      # too large
    (lambda s: s["d2t"].__setitem__(0, -1), "outside the target's vocabulary"),         # would wrap to V - 1
    (lambda s: s["d2t"].__setitem__(1, s["d2t"][0] - 1), "one-to-one"),                  # two draft ids, one token
    (lambda s: s.__setitem__("d2t", s["d2t"].float() + 0.5), "non-integer"),
    (lambda s: s["t2d"].__setitem__(1, 1), "t2d does not mark exactly"),
    (lambda s: s.pop("d2t"), "has no d2t"),
])
def test_a_broken_draft_vocabulary_is_refused_on_loading(tiny, eagle3_folder, layout, change, message):
    if layout == "specforge":
        specforge_only(eagle3_folder)
    rewrite_d2t(eagle3_folder, change)
    with pytest.raises(CheckpointError, match=message):          # verify=False: past the file's sha256
        load_eagle3(eagle3_folder, tiny[2], verify=False)


def test_bad_head_folders_are_named(tiny, eagle3_folder, tmp_path):
    t1, t3 = tiny[0], tiny[2]
    f = tmp_path / "file"
    f.write_text("not a folder")
    with pytest.raises(CheckpointError, match="is a file, not a checkpoint folder"):
        load_eagle3(f, t3)
    with pytest.raises(CheckpointError, match="is a file, not a checkpoint folder"):
        minispec.load_eagle1(t1, f)
    with pytest.raises(CheckpointError, match="does not exist"):
        minispec.load_eagle1(t1, tmp_path / "nowhere")
    weights = eagle3_folder / WEIGHTS
    weights.unlink()
    weights.mkdir()
    with pytest.raises(CheckpointError, match="is a folder, not a safetensors weights file"):
        load_eagle3(eagle3_folder, t3)
    with pytest.raises(CheckpointError, match="is a folder, not a safetensors weights file"):
        load_eagle3(specforge_only(eagle3_folder), t3)


@pytest.mark.parametrize("config", [None, [], "x", 3])
def test_a_specforge_config_that_is_not_an_object_is_named(tiny, eagle3_folder, config):
    specforge_only(eagle3_folder)
    (eagle3_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not a config"):
        load_eagle3(eagle3_folder, tiny[2])


def test_a_specforge_head_with_a_short_context_refuses_a_longer_request(tiny, eagle3_folder):
    t3 = tiny[2]
    cfg = json.loads((specforge_only(eagle3_folder) / "config.json").read_text())
    (eagle3_folder / "config.json").write_text(json.dumps({**cfg, "max_position_embeddings": 8}))
    head = load_eagle3(eagle3_folder, t3)
    assert generate(t3, PROMPT[:3], 5, method="eagle3", draft=head).tokens == generate(t3, PROMPT[:3], 5).tokens
    with pytest.raises(ValueError, match=r"context \(8 positions\) is shorter than this request \(11 tokens\)"):
        generate(t3, PROMPT, 5, method="eagle3", draft=head)


# --------------------------------------------------------------- the benchmark
def test_the_oracle_by_name_runs_at_its_own_gamma():
    from minispec.bench import run_bench
    target, tok = minispec.load_target("cpu"), minispec.load_tokenizer()
    s = run_bench(target, tok, ["oracle"], domains=["math"], limit=1, max_new_tokens=12, progress=False)
    r = s["methods"]["oracle"]["math"]
    assert r["lossless"] and r["mean_acceptance_length"] > 1.0
    with pytest.raises(ValueError, match="defined at temperature 0"):
        run_bench(target, tok, ["oracle"], domains=["math"], limit=1, max_new_tokens=4, temperature=1.0,
                  progress=False)
