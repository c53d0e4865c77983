"""EAGLE-1: the head's format, lossless drafting as a chain and as a tree (greedy: identical
tokens; sampling: the exact distribution), tree levels cached in the head equal decoding each
path, training (the loss falls, resuming gives the same weights), and loading refuses a head
that belongs to another target."""
import json

import numpy as np
import pytest
import torch

from conftest import SMALL, TINY, tiny_model
import minispec
from minispec import generate
from minispec.checkpoint import CheckpointError, MANIFEST
from minispec.checks import chi_square_ok, exact_distribution, sequence_frequencies
from minispec.drafting import HeadDrafter
from minispec.eagle import Eagle1Head, StaticTree, chain_choices, check_choices, load_eagle1
from minispec.eagle_train import train_eagle1
from minispec.sampling import SamplingParams
from minispec.train import TrainConfig

PROMPT = [3, 14, 15, 9, 2, 6]
TREE = [[0], [1], [2], [0, 0], [0, 1], [1, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0, 0]]


def sharpened(head, scale=4.0):
    """A random head with its matrices scaled: its outputs are far from uniform (a sharp, mostly
    wrong drafter), so that rejections and acceptances both happen."""
    with torch.no_grad():
        for p in head.parameters():
            if p.dim() == 2:
                p.mul_(scale)
    return head.eval()


def random_head(target, seed=0, token_shift=True, scale=4.0):
    torch.manual_seed(seed)
    return sharpened(Eagle1Head.for_target(target, token_shift), scale)


def test_head_has_the_eagle1_checkpoint_layout():
    head = Eagle1Head.for_target(tiny_model())
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    d = TINY.dim
    assert shapes["fc.weight"] == (d, 2 * d) and shapes["fc.bias"] == (d,)
    assert set(shapes) == {"fc.weight", "fc.bias", "layers.0.post_attention_layernorm.weight",
                           *(f"layers.0.self_attn.{x}_proj.weight" for x in "qkvo"),
                           *(f"layers.0.mlp.{x}_proj.weight" for x in ("gate", "up", "down"))}


@pytest.mark.parametrize("method, options, shift", [("eagle1", {"gamma": 3}, True),
                                                    ("eagle1", {"gamma": 5}, False),
                                                    ("eagle1-tree", {"choices": TREE}, True)])
def test_greedy_eagle_equals_plain_greedy(method, options, shift):
    target = tiny_model()
    want = generate(target, PROMPT, 40).tokens
    for seed in range(3):
        g = generate(target, PROMPT, 40, method=method, draft=random_head(target, seed, shift), **options)
        assert g.tokens == want
    assert g.stats.num_drafts > 0


def test_a_trained_head_gets_drafts_accepted(tmp_path):
    """The whole pipeline in miniature: a tiny target learns a repeating pattern, a head learns
    the target's features, and its drafts are then mostly accepted (a random head's are not)."""
    from minispec.train import train
    tokens = {"a": np.tile(np.arange(0, 16, dtype=np.uint16), 200)}
    lm = TrainConfig(steps=30, batch_size=4, seq_len=16, lr=1e-2, min_lr=1e-3, warmup=5,
                     ckpt_every=100, eval_every=0, eval_windows=2)
    target = train("t", TINY, lm, tmp_path / "t", tmp_path / "t_out", progress=False,
                   tokens=tokens, val_tokens=tokens).eval()
    cfg = TrainConfig(steps=150, batch_size=8, seq_len=32, lr=3e-3, min_lr=3e-4, warmup=10,
                      weight_decay=0.0, grad_clip=0.5, ckpt_every=1000, eval_every=75, eval_windows=2)
    head = train_eagle1(target, tmp_path / "out", tmp_path / "run", cfg=cfg, tokens=tokens,
                        val_tokens=tokens, progress=False)
    prompt = [3, 4, 5, 6]
    plain = generate(target, prompt, 24).tokens
    assert plain[:8] == [7, 8, 9, 10, 11, 12, 13, 14]                 # the target learned the pattern
    trained = generate(target, prompt, 24, method="eagle1", draft=head, gamma=4)
    rand = generate(target, prompt, 24, method="eagle1", draft=random_head(target), gamma=4)
    assert trained.tokens == rand.tokens == plain
    assert trained.stats.mean_acceptance_length > 4.0 > 1.5 > rand.stats.mean_acceptance_length
    # a warm restart continues from the trained head (its first loss is the trained head's, far
    # below a fresh head's) and records where it started and what it saw in all
    from dataclasses import replace
    from minispec.checkpoint import read_manifest, weights_fingerprint
    short = dict(cfg=replace(cfg, steps=10, eval_every=0), tokens=tokens, val_tokens=tokens, progress=False)
    first = {}
    train_eagle1(target, tmp_path / "w" / "out", tmp_path / "w" / "run", init=tmp_path / "out", seed=1,
                 on_step=lambda s, l: first.setdefault("warm", l), **short)
    train_eagle1(target, tmp_path / "f" / "out", tmp_path / "f" / "run", seed=1,
                 on_step=lambda s, l: first.setdefault("fresh", l), **short)
    assert first["warm"] < 0.5 * first["fresh"]
    info = read_manifest(tmp_path / "w" / "out")["training"]
    assert info["init"]["sha256"] == weights_fingerprint(head) and info["config"]["seed"] == 1
    assert info["tokens_seen"] == (150 + 10) * 8 * 32
    assert [h["step"] for h in info["init"]["history"]] == [75, 150]          # the first run's curve
    first_time = read_manifest(tmp_path / "out")["training"]["train_time_s"]
    assert info["init"]["train_time_s"] == first_time <= info["train_time_s"]  # both runs' time, summed
    # a chain of restarts keeps every run (this one on the target's greedy continuations too)
    longer = {**short, "cfg": replace(short["cfg"], seq_len=48)}       # room for a 32-token prompt
    train_eagle1(target, tmp_path / "w2" / "out", tmp_path / "w2" / "run", init=tmp_path / "w" / "out", seed=2,
                 source="mixed", regen_temperature=0, **longer)
    again = read_manifest(tmp_path / "w2" / "out")["training"]
    assert [h["step"] for h in again["init"]["init"]["history"]] == [75, 150]
    assert again["data"]["source"] == "mixed" and again["data"]["regen_temperature"] == 0
    assert again["tokens_seen"] == (150 + 10) * 8 * 32 + 10 * 8 * 48
    with pytest.raises(ValueError, match="token_shift=True"):
        train_eagle1(target, tmp_path / "x" / "out", tmp_path / "x" / "run", init=tmp_path / "out",
                     token_shift=False, **short)


def test_tree_levels_cached_in_the_head_equal_running_each_path():
    """Each node's children are the top-k of the head run from scratch along the node's path."""
    target, head = tiny_model(), random_head(tiny_model(), 1)
    with torch.no_grad():
        out = target(torch.tensor([PROMPT[:-1]]), hidden_layers=(TINY.n_layers,))
        f = out.hidden_states[TINY.n_layers][0]                                   # (L-1, D)
        drafter = HeadDrafter(head, target, 64, StaticTree(TREE))
        drafter.observe(PROMPT, {TINY.n_layers: f})
        tree = drafter.propose(list(PROMPT), 10, SamplingParams(0.0))
        assert len(tree) == len(TREE) and drafter.cache.length == len(PROMPT) - 1
        for node in range(-1, len(tree)):
            kids = tree.children(node)
            if not kids:
                continue
            path = tree.path(node) if node >= 0 else []
            toks = PROMPT[1:] + [tree.tokens[i] for i in path]                   # x_{t+1}
            feats = [f[t] for t in range(len(PROMPT) - 1)]
            for j in range(len(path)):                                            # predicted features
                h = head(target.embed_tokens(torch.tensor([toks[:len(feats)]])), torch.stack(feats)[None])
                feats.append(h[0, -1])
            h = head(target.embed_tokens(torch.tensor([toks[:len(feats)]])), torch.stack(feats)[None])
            want = target.lm_head(h[0, -1]).topk(len(kids)).indices.tolist()
            assert [tree.tokens[c] for c in kids] == want, f"children of node {node}"


@pytest.mark.parametrize("method, options", [("eagle1", {"gamma": 2}), ("eagle1-tree", {"choices": TREE}),
                                             ("eagle1-tree", {"choices": [[0], [1], [2], [3], [0, 0]]})])
def test_eagle_sampling_matches_the_target_exactly(method, options):
    """Siblings drawn without replacement by the real drafter, verified by the tree rule: the
    3-token continuations follow the target's exact distribution."""
    target = tiny_model(2, SMALL)
    with torch.no_grad():
        target.lm_head.weight.mul_(3.0)
    params = SamplingParams(1.0)
    exact = exact_distribution(target, PROMPT, params, 3).flatten()
    counts = sequence_frequencies(target, PROMPT, params, 3000, method=method,
                                  draft=random_head(target, 0), **options)
    assert int(counts[exact == 0].sum()) == 0
    assert chi_square_ok(counts, exact)


def test_sampling_with_top_k_smaller_than_the_tree_is_still_exact():
    """top_k = 2 leaves q two tokens: a node gets at most two children, never a repeat."""
    target = tiny_model(2, SMALL)
    with torch.no_grad():
        target.lm_head.weight.mul_(3.0)
    params = SamplingParams(1.0, top_k=2)
    exact = exact_distribution(target, PROMPT, params, 3).flatten()
    counts = sequence_frequencies(target, PROMPT, params, 2000, method="eagle1-tree",
                                  draft=random_head(target, 0), choices=[[0], [1], [2], [0, 0]])
    assert chi_square_ok(counts, exact)


def test_training_resumes_to_the_same_head(tmp_path):
    target = tiny_model()
    tokens = {"a": np.tile(np.arange(0, 16, dtype=np.uint16), 200)}
    cfg = TrainConfig(steps=20, batch_size=4, seq_len=16, lr=3e-3, warmup=2, weight_decay=0.0,
                      grad_clip=0.5, ckpt_every=5, eval_every=10, eval_windows=2)
    kw = dict(cfg=cfg, tokens=tokens, val_tokens=tokens, progress=False)
    straight = train_eagle1(target, tmp_path / "a" / "out", tmp_path / "a" / "run", **kw)
    train_eagle1(target, tmp_path / "b" / "out", tmp_path / "b" / "run", stop_after=10, **kw)
    assert not (tmp_path / "b" / "out").exists()
    resumed = train_eagle1(target, tmp_path / "b" / "out", tmp_path / "b" / "run", **kw)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    info = json.loads((tmp_path / "a" / "out" / MANIFEST).read_text())
    assert info["kind"] == "eagle1" and [h["step"] for h in info["training"]["history"]] == [10, 20]
    loaded = load_eagle1(tmp_path / "a" / "out", target)
    x = torch.randn(1, 3, TINY.dim)
    torch.testing.assert_close(loaded(x, x), straight.eval()(x, x))


def test_loading_refuses_another_target_and_bad_files(tmp_path):
    target = tiny_model()
    cfg = TrainConfig(steps=2, batch_size=2, seq_len=16, warmup=1, ckpt_every=5, eval_every=0, eval_windows=2)
    tokens = {"a": np.tile(np.arange(0, 16, dtype=np.uint16), 50)}
    train_eagle1(target, tmp_path / "h", tmp_path / "run", cfg=cfg, tokens=tokens, val_tokens=tokens, progress=False)
    with pytest.raises(CheckpointError, match="trained on the target whose weights"):
        load_eagle1(tmp_path / "h", tiny_model(1))
    from minispec.checkpoint import load_pretrained
    with pytest.raises(CheckpointError, match="their own loader"):
        load_pretrained(tmp_path / "h")
    with pytest.raises(CheckpointError, match="expected a 'eagle1' model"):
        load_eagle1(minispec.DATA_DIR / "draft", target)
    w = tmp_path / "h" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_eagle1(tmp_path / "h", target)


def test_bad_eagle_requests_get_clear_errors():
    target = tiny_model()
    with pytest.raises(ValueError, match="need an EAGLE-1 head"):
        generate(target, PROMPT, 5, method="eagle1")
    with pytest.raises(ValueError, match="need an EAGLE-1 head"):
        generate(target, PROMPT, 5, method="eagle1", draft=tiny_model(1))
    with pytest.raises(ValueError, match="drafts chains only"):
        generate(target, PROMPT, 5, method="eagle1-tree", draft=random_head(target, token_shift=False))
    with pytest.raises(ValueError, match="elder sibling"):
        generate(target, PROMPT, 5, method="eagle1-tree", draft=random_head(target), choices=[[0], [2]])
    with pytest.raises(ValueError, match="no parent"):
        check_choices([[0], [1, 0]])
    with pytest.raises(ValueError, match="gamma"):
        generate(target, PROMPT, 5, method="eagle1", draft=random_head(target), gamma=0)
    other = Eagle1Head.for_target(tiny_model(0, SMALL))
    with pytest.raises(ValueError, match="does not match the target"):
        generate(target, PROMPT, 5, method="eagle1", draft=other)
    assert chain_choices(3) == [[0], [0, 0], [0, 0, 0]]


def test_the_exact_test_catches_a_drafter_that_forgets_to_renormalise_q(monkeypatch):
    """Planted bug: every sibling reports the parent's full q (as if drawn with replacement)
    although they are drawn without it. The same test as above must reject it."""
    original = StaticTree.pick_children

    def wrong(logits, n, params, generator):
        picks, rows = original(logits, n, params, generator)
        return picks, (None if rows is None else [rows[0]] * len(rows))

    monkeypatch.setattr(StaticTree, "pick_children", staticmethod(wrong))
    target = tiny_model(2, SMALL)
    with torch.no_grad():
        target.lm_head.weight.mul_(3.0)
    params = SamplingParams(1.0)
    exact = exact_distribution(target, PROMPT, params, 3).flatten()
    counts = sequence_frequencies(target, PROMPT, params, 3000, method="eagle1-tree",
                                  draft=random_head(target, 0), choices=TREE)
    assert not chi_square_ok(counts, exact)


def test_tree_statistics_count_nodes_drafted_and_levels_accepted():
    target = tiny_model()
    s = generate(target, PROMPT, 30, method="eagle1-tree", draft=random_head(target), choices=TREE).stats
    depth = max(len(c) for c in TREE)
    assert len(s.accepted_per_pos) == depth                      # one entry per level, not per node
    assert s.num_accepted_tokens == sum(s.accepted_per_pos)
    assert s.accepted_per_pos == sorted(s.accepted_per_pos, reverse=True)
    assert s.num_draft_tokens <= len(TREE) * s.num_drafts         # nodes, not levels (rounds near the
    assert s.num_draft_tokens > depth * s.num_drafts              # end are cut to the tokens left)
