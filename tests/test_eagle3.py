"""EAGLE-3: the head has SpecForge's layout and loads back from it, the draft vocabulary maps
ids both ways, the training-time test computes exactly what drafting computes, drafting is
lossless (greedy: identical tokens; sampling: the exact distribution), training resumes, and
bad heads and settings get clear errors."""
import json

import numpy as np
import pytest
import torch

from conftest import SMALL, TINY, tiny_model
from test_eagle import PROMPT, random_head, sharpened
from minispec import generate
from minispec.checkpoint import CheckpointError
from minispec.checks import chi_square_ok, exact_distribution, sequence_frequencies
from minispec.eagle3 import Eagle3Head, feature_layers_for, load_eagle3
from minispec.eagle3_train import draft_vocab, eagle3_loss, token_counts, train_eagle3, ttt_forward, ttt_mask
from minispec.model import ModelConfig
from minispec.sampling import SamplingParams
from minispec.train import TrainConfig

# Four layers, so that the low, middle and high features are three different layers (1, 2, 3).
FOUR = ModelConfig(**{**TINY.to_dict(), "n_layers": 4})
SMALL4 = ModelConfig(**{**SMALL.to_dict(), "n_layers": 4})


def random_eagle3(target, seed=0, vocab=None, scale=4.0):
    """A random EAGLE-3 head (sharp, mostly wrong) over the draft vocabulary `vocab` (target
    ids; default every other id)."""
    torch.manual_seed(seed)
    vocab = list(range(0, target.vocab_size, 2)) if vocab is None else vocab
    return sharpened(Eagle3Head.for_target(target, vocab), scale)


def test_feature_layers_keep_the_references_fractions_of_depth():
    assert feature_layers_for(32) == (2, 16, 29)          # the reference's 2, L//2, L-3
    assert feature_layers_for(8) == (1, 4, 7)             # minispec's target
    assert feature_layers_for(4) == (1, 2, 3)


def test_head_has_the_specforge_layout_and_loads_back_from_it(tmp_path):
    from minispec.eagle3 import save_eagle3
    target = tiny_model(0, FOUR)
    head = random_eagle3(target)
    d, N, V, F = FOUR.dim, 32, FOUR.vocab_size, FOUR.ffn_dim
    want = {"fc.weight": (d, 3 * d),
            **{f"midlayer.self_attn.{x}_proj.weight": (d, 2 * d) for x in "qkv"},
            "midlayer.self_attn.o_proj.weight": (d, d),
            "midlayer.mlp.gate_proj.weight": (F, d), "midlayer.mlp.up_proj.weight": (F, d),
            "midlayer.mlp.down_proj.weight": (d, F),
            **{f"midlayer.{n}.weight": (d,) for n in ("hidden_norm", "input_layernorm", "post_attention_layernorm")},
            "norm.weight": (d,), "lm_head.weight": (N, d), "d2t": (N,), "t2d": (V,)}
    state = head.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == want
    assert state["d2t"].dtype == torch.int64 and state["t2d"].dtype == torch.bool
    from minispec.checkpoint import weights_fingerprint
    save_eagle3(head, tmp_path / "h", target_sha256=weights_fingerprint(target))
    cfg = json.loads((tmp_path / "h" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLMEagle3"]
    assert (cfg["draft_vocab_size"], cfg["vocab_size"], cfg["hidden_size"]) == (N, V, d)
    assert cfg["eagle_aux_hidden_state_layer_ids"] == [1, 2, 3]
    from safetensors.torch import load_file
    assert set(load_file(str(tmp_path / "h" / "model.safetensors"))) == set(want)
    x, h = torch.randn(1, 3, d), torch.randn(1, 3, d)
    for folder in ("h", "specforge-only"):
        if folder == "specforge-only":            # what SpecForge writes: no minispec manifest
            (tmp_path / folder).mkdir()
            for f in ("config.json", "model.safetensors"):
                (tmp_path / folder / f).write_bytes((tmp_path / "h" / f).read_bytes())
        loaded = load_eagle3(tmp_path / folder, target)
        torch.testing.assert_close(loaded.logits(loaded(x, h)), head.logits(head(x, h)))
        assert torch.equal(loaded.d2t, head.d2t) and torch.equal(loaded.t2d, head.t2d)


def test_draft_vocabulary_maps_ids_both_ways():
    counts = token_counts([np.array([5, 5, 5, 1, 1, 9, 9, 9, 9, 0])], 12)
    ids = draft_vocab(counts, 3)
    assert ids.tolist() == [1, 5, 9]                      # the 3 most frequent, in id order
    assert draft_vocab(counts, 4).tolist() == [0, 1, 5, 9]  # a tie with 0 counts: smaller id first
    target = tiny_model(0, FOUR)
    head = random_eagle3(target, vocab=[2, 7, 8, 40])
    assert head.d2t.tolist() == [2, 6, 6, 37]             # target id = draft id + d2t
    assert head.t2d.nonzero().flatten().tolist() == [2, 7, 8, 40]
    out = head.to_target(torch.tensor([[0.5, 1.5, 2.5, 3.5]]))
    assert out.shape == (1, FOUR.vocab_size) and out[0, [2, 7, 8, 40]].tolist() == [0.5, 1.5, 2.5, 3.5]
    assert torch.isinf(out).sum() == FOUR.vocab_size - 4
    with pytest.raises(ValueError, match="increasing"):
        head.set_vocab([7, 2, 8, 40])
    with pytest.raises(ValueError, match="draft vocabulary size"):
        draft_vocab(counts, 0)


def test_ttt_mask_sees_the_prefix_causally_and_its_own_chain_diagonally():
    m = ttt_mask(4, 2) == 0                                 # (4, 12): visible
    assert m.shape == (4, 12)
    assert torch.equal(m[:, :4], torch.ones(4, 4, dtype=torch.bool).tril())
    assert torch.equal(m[:, 4:8], torch.eye(4, dtype=torch.bool))
    assert torch.equal(m[:, 8:], torch.eye(4, dtype=torch.bool))
    assert torch.equal(ttt_mask(4, 0) == 0, torch.ones(4, 4, dtype=torch.bool).tril())


def test_training_time_test_equals_drafting_a_chain_step_by_step():
    """Row t, step j of the unrolled training forward is the head drafting after real position
    t: a cache over the real pairs up to t, then its own outputs fed back one position further
    each step, with the real next tokens."""
    target = tiny_model(0, FOUR)
    head = random_eagle3(target, scale=1.0)
    ids = torch.randint(0, FOUR.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = target(ids, hidden_layers=head.layers).hidden_states
        steps = ttt_forward(head, target, ids, hidden, ttt_steps=3)
        g = head.fuse(hidden)
        for b in range(2):
            for t in range(0, 6):
                cache = head.new_cache(32)
                o = head(target.embed_tokens(ids[b:b + 1, 1:t + 2]), g[b:b + 1, :t + 1], cache)[:, -1:]
                for j in range(3):
                    if j:
                        o = head(target.embed_tokens(ids[b:b + 1, t + 1 + j:t + 2 + j]), o, cache)
                    torch.testing.assert_close(steps[j][b, t], head.logits(o)[0, 0], rtol=1e-4, atol=1e-4)


def test_loss_ignores_positions_whose_target_choice_is_outside_the_draft_vocabulary():
    target = tiny_model(0, FOUR)
    ids = torch.randint(0, FOUR.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = target(ids, hidden_layers=(1, 2, 3, 4))
    chosen = set(out.logits.argmax(-1).flatten().tolist())
    outside = [i for i in range(FOUR.vocab_size) if i not in chosen][:8]
    head = random_eagle3(target, vocab=outside)
    loss, parts = eagle3_loss(head, target, ids, out.hidden_states, ttt_steps=2)
    assert loss.item() == 0.0 and parts["top1_0"] == 0.0
    head = random_eagle3(target)
    loss, parts = eagle3_loss(head, target, ids, out.hidden_states, ttt_steps=2)
    assert loss.item() > 0 and set(parts) == {"ce0", "ce1", "top1_0", "top1_1"}


@pytest.mark.parametrize("options", [{"total_tokens": 8, "depth": 4, "eagle_topk": 3},
                                     {"total_tokens": 1, "depth": 1, "eagle_topk": 1}, {}])
def test_greedy_eagle3_equals_plain_greedy(options):
    target = tiny_model(0, FOUR)
    want = generate(target, PROMPT, 40).tokens
    g = generate(target, PROMPT, 40, method="eagle3", draft=random_eagle3(target, 1), **options)
    assert g.tokens == want


def test_eagle3_sampling_matches_the_target_exactly():
    """Dynamic trees from a head whose draft vocabulary leaves out 6 of the 16 tokens: the
    3-token continuations still follow the target's exact distribution. 1,000 generations, as
    for EAGLE-2 (tests/test_eagle2.py): the planted bug there (the tree claims a uniform q for
    its deterministic picks), planted here, gave 4.9 to 5.2 times the critical value over 3 seeds."""
    target = tiny_model(2, SMALL4)
    with torch.no_grad():
        target.lm_head.weight.mul_(3.0)
    params = SamplingParams(1.0)
    exact = exact_distribution(target, PROMPT, params, 3).flatten()
    head = random_eagle3(target, 0, vocab=[0, 1, 3, 4, 6, 9, 10, 12, 13, 15])
    counts = sequence_frequencies(target, PROMPT, params, 1000, method="eagle3", draft=head,
                                  total_tokens=6, depth=3, eagle_topk=3)
    assert int(counts[exact == 0].sum()) == 0
    assert chi_square_ok(counts, exact)


def test_a_trained_head_gets_drafts_accepted_and_training_resumes(tmp_path):
    """A tiny target that learned a repeating pattern; an EAGLE-3 head trained with the
    training-time test drafts it (a random head does not); a resumed run ends identical."""
    from minispec.train import train
    tokens = {"a": np.tile(np.arange(0, 16, dtype=np.uint16), 200)}
    lm = TrainConfig(steps=30, batch_size=4, seq_len=16, lr=1e-2, min_lr=1e-3, warmup=5,
                     ckpt_every=100, eval_every=0, eval_windows=2)
    target = train("t", FOUR, lm, tmp_path / "t", tmp_path / "t_out", progress=False,
                   tokens=tokens, val_tokens=tokens).eval()
    cfg = TrainConfig(steps=80, batch_size=4, seq_len=32, lr=3e-3, min_lr=3e-4, warmup=10,
                      weight_decay=0.0, grad_clip=0.5, ckpt_every=20, eval_every=40, eval_windows=2)
    kw = dict(cfg=cfg, tokens=tokens, val_tokens=tokens, progress=False, source="corpus",
              draft_vocab_size=24, ttt_steps=3)
    head = train_eagle3(target, tmp_path / "a" / "out", tmp_path / "a" / "run", **kw)
    train_eagle3(target, tmp_path / "b" / "out", tmp_path / "b" / "run", stop_after=40, **kw)
    resumed = train_eagle3(target, tmp_path / "b" / "out", tmp_path / "b" / "run", **kw)
    for (k, a), (_, b) in zip(head.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert set(range(16)) <= set(head.draft_ids.tolist())          # the pattern's tokens are in it
    prompt = [3, 4, 5, 6]
    plain = generate(target, prompt, 24).tokens
    assert plain[:8] == [7, 8, 9, 10, 11, 12, 13, 14]
    options = dict(total_tokens=4, depth=4, eagle_topk=1)
    trained = generate(target, prompt, 24, method="eagle3", draft=load_eagle3(tmp_path / "a" / "out", target), **options)
    rand = generate(target, prompt, 24, method="eagle3", draft=random_eagle3(target), **options)
    assert trained.tokens == rand.tokens == plain
    assert trained.stats.mean_acceptance_length > 4.0 > 1.5 > rand.stats.mean_acceptance_length
    # a warm restart continues from the trained head (its first loss is the trained head's, far
    # below a fresh head's), keeps its vocabulary and records where it started and what it saw
    from dataclasses import replace
    from minispec.checkpoint import read_manifest, weights_fingerprint
    short = {**kw, "cfg": replace(cfg, steps=10, eval_every=0)}
    first = {}
    more = train_eagle3(target, tmp_path / "c" / "out", tmp_path / "c" / "run", init=tmp_path / "a" / "out",
                        seed=1, on_step=lambda s, l: first.setdefault("warm", l), **short)
    train_eagle3(target, tmp_path / "d" / "out", tmp_path / "d" / "run", seed=1,
                 on_step=lambda s, l: first.setdefault("fresh", l), **short)
    assert first["warm"] < 0.5 * first["fresh"]
    assert torch.equal(more.draft_ids, head.draft_ids)
    info = read_manifest(tmp_path / "c" / "out")["training"]
    assert info["init"]["sha256"] == weights_fingerprint(head) and info["config"]["seed"] == 1
    assert info["tokens_seen"] == (80 + 10) * 4 * 32
    with pytest.raises(ValueError, match="draft vocabulary of 24"):
        train_eagle3(target, tmp_path / "e" / "out", tmp_path / "e" / "run", init=tmp_path / "a" / "out",
                     **{**short, "draft_vocab_size": 32})


def test_bad_heads_and_settings_get_clear_errors(tmp_path):
    from minispec.checkpoint import weights_fingerprint
    from minispec.eagle3 import save_eagle3
    target = tiny_model(0, FOUR)
    head = random_eagle3(target)
    with pytest.raises(ValueError, match="needs an EAGLE-3 head"):
        generate(target, PROMPT, 5, method="eagle3", draft=random_head(target))
    with pytest.raises(ValueError, match="needs an EAGLE-3 head"):
        generate(target, PROMPT, 5, method="eagle3")
    with pytest.raises(ValueError, match="does not match the target"):
        generate(tiny_model(0, TINY), PROMPT, 5, method="eagle3", draft=head)   # 3 layers: no layer 3
    with pytest.raises(ValueError, match="depth"):
        generate(target, PROMPT, 5, method="eagle3", draft=head, depth=0)
    save_eagle3(head, tmp_path / "h", target_sha256=weights_fingerprint(target))
    with pytest.raises(CheckpointError, match="trained on the target whose weights"):
        load_eagle3(tmp_path / "h", tiny_model(1, FOUR))
    sf = tmp_path / "sf"
    sf.mkdir()
    (sf / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(CheckpointError, match="not an EAGLE-3 head"):
        load_eagle3(sf, target)
    with pytest.raises(ValueError, match="ttt_steps"):
        train_eagle3(target, tmp_path / "o", tmp_path / "r", ttt_steps=0, tokens={"a": np.arange(100)})


def test_a_restricted_vocabulary_drafts_only_its_tokens_and_stays_lossless():
    from minispec.eagle3 import restrict_vocab
    target = tiny_model(0, FOUR)
    head = random_eagle3(target, 3)
    small = restrict_vocab(head, [0, 4, 10, 62])
    assert small.config.vocab_size == 4 and small.draft_ids.tolist() == [0, 4, 10, 62]
    x, h = torch.randn(1, 2, FOUR.dim), torch.randn(1, 2, FOUR.dim)
    full = head.to_target(head.logits(head(x, h)))
    cut = small.to_target(small.logits(small(x, h)))
    torch.testing.assert_close(cut[..., [0, 4, 10, 62]], full[..., [0, 4, 10, 62]])
    assert torch.isinf(cut).sum() == 2 * (FOUR.vocab_size - 4)
    g = generate(target, PROMPT, 30, method="eagle3", draft=small)
    assert g.tokens == generate(target, PROMPT, 30).tokens
    with pytest.raises(ValueError, match="subset"):
        restrict_vocab(head, [1, 4])                    # 1 is not in the head's (even) vocabulary


def test_vocab_study_reports_coverage_tau_and_speed_per_size():
    import minispec
    from minispec.studies import vocab_study
    target, tok = minispec.load_target("cpu"), minispec.load_tokenizer()
    head = random_eagle3(target, 0, vocab=list(range(1024)), scale=1.0)
    counts = np.arange(target.vocab_size)[::-1].copy()              # prefers small ids
    from minispec.data import load_sample
    s = vocab_study(target, tok, head, [16, 256, 4096], {"low": counts}, limit=1, max_new_tokens=8,
                    progress=False, val_tokens=load_sample("val"))       # the shipped sample: no corpus needed
    assert list(s["methods"]) == ["ar", "eagle3", "eagle3@low16", "eagle3@low256"]
    assert all(s["methods"][m]["all"]["lossless"] for m in s["methods"])
    cov = s["coverage"]
    assert 0 <= cov["eagle3@low16"] <= cov["eagle3@low256"] <= cov["eagle3"] <= 1


def test_the_shipped_head_fits_the_shipped_target_and_is_lossless():
    import minispec
    target, tok = minispec.load_target("cpu"), minispec.load_tokenizer()
    head = minispec.load_eagle3(target)
    assert head.layers == (1, 4, 7) and head.config.vocab_size == 2048
    ids = tok.encode("def fib(n):")
    g = generate(target, ids, 48, method="eagle3", draft=head)
    assert g.tokens == generate(target, ids, 48).tokens
    assert g.stats.mean_acceptance_length > 1.5                      # its drafts are really accepted
    with pytest.raises(CheckpointError, match="trained on the target whose weights"):
        minispec.load_eagle3(tiny_model(0, FOUR))                    # another target


def test_first_level_acceptance_reads_the_root_children_a_round_drafts():
    """studies.first_level_logits gives, at the prompt's end, the head's scores of the children a
    real round gives the root; the acceptance study's two chances are probabilities, and with
    every draft token a child the tree's is the draft vocabulary's mass, above the chain's."""
    from minispec.drafting import HeadDrafter
    from minispec.eagle2 import DynamicTree
    from minispec.studies import first_level_acceptance, first_level_logits
    target = tiny_model(2, FOUR)
    head = random_eagle3(target, 0)
    feats = head.target_layers(target)
    with torch.no_grad():
        out = target(torch.tensor([PROMPT[:-1]]), hidden_layers=feats)
        d = HeadDrafter(head, target, 64, DynamicTree(total_tokens=6, depth=3, eagle_topk=3))
        d.observe(PROMPT, {i: h[0] for i, h in out.hidden_states.items()})
        tree = d.propose(list(PROMPT), 6, SamplingParams(0.0))
    _, q_logits = first_level_logits(target, head, PROMPT)
    root = torch.log_softmax(q_logits[len(PROMPT) - 2], -1)         # the row for the token after PROMPT
    kids = tree.children(-1)
    assert kids and [tree.tokens[i] for i in kids] == root.topk(len(kids)).indices.tolist()
    torch.testing.assert_close(torch.tensor([tree.scores[i] for i in kids]), root[[tree.tokens[i] for i in kids]],
                               atol=1e-4, rtol=1e-4)
    r = first_level_acceptance(target, head, [PROMPT], eagle_topk=2, max_new_tokens=12)
    assert r["positions"] == 12 and 0 <= r["tree"] <= 1 and 0 <= r["chain"] <= 1
    # by hand, position by position: p from the target run on the text before each generated token
    from minispec.sampling import warp
    seq = PROMPT + generate(target, PROMPT, 12, temperature=1.0, seed=0).tokens
    _, q_all = first_level_logits(target, head, seq)
    tree_p, chain_p = [], []
    for k in range(len(PROMPT), len(seq)):                          # the generated tokens
        with torch.no_grad():
            p = warp(target(torch.tensor([seq[:k]])).logits[0, -1], SamplingParams(1.0))
        q_logits = q_all[k - 2]                                     # the head's, as at the round's root
        tree_p.append(float(p[q_logits.topk(2).indices].sum()))
        chain_p.append(float(torch.minimum(p, warp(q_logits, SamplingParams(1.0))).sum()))
    assert r["tree"] == pytest.approx(np.mean(tree_p), abs=1e-5) and r["chain"] == pytest.approx(np.mean(chain_p), abs=1e-5)
    everything = first_level_acceptance(target, head, [PROMPT], eagle_topk=len(head.draft_ids), max_new_tokens=12)
    assert everything["tree"] >= everything["chain"] and everything["tree"] >= r["tree"]
