"""The target's forward pass: caching, rollback, compaction, tree masks, hidden states."""
import pytest
import torch

from conftest import TINY, tiny_model
from minispec.model import causal_mask

ATOL = 1e-5


def full_logits(model, ids):
    """Reference: recompute everything from scratch, no cache."""
    return model(torch.tensor([ids])).logits[0]


def test_cached_decoding_equals_recompute(model):
    ids = torch.randint(0, TINY.vocab_size, (20,), generator=torch.Generator().manual_seed(1)).tolist()
    cache = model.new_cache()
    got = [model(torch.tensor([ids[:8]]), cache=cache).logits[0]]
    for t in ids[8:]:
        got.append(model(torch.tensor([[t]]), cache=cache).logits[0])
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(got), full_logits(model, ids), atol=ATOL, rtol=0)


def test_multi_token_chunk_with_cache_is_causal(model):
    ids = list(range(3, 23))
    cache = model.new_cache()
    model(torch.tensor([ids[:5]]), cache=cache)
    chunk = model(torch.tensor([ids[5:]]), cache=cache).logits[0]
    torch.testing.assert_close(chunk, full_logits(model, ids)[5:], atol=ATOL, rtol=0)


def test_rollback_then_continue_equals_recompute(model):
    prefix, junk, good = [5, 9, 2, 7, 1, 3], [11, 12, 13, 14], [20, 21, 22]
    cache = model.new_cache()
    model(torch.tensor([prefix]), cache=cache)
    model(torch.tensor([junk]), cache=cache)       # rejected drafts
    cache.rollback(len(prefix))
    got = model(torch.tensor([good]), cache=cache).logits[0]
    torch.testing.assert_close(got, full_logits(model, prefix + good)[len(prefix):], atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="roll back"):
        cache.rollback(cache.length + 1)


def tree_mask(parents):
    """Additive (N, N) mask: node i sees itself and its ancestors."""
    n = len(parents)
    m = torch.full((n, n), float("-inf"))
    for i in range(n):
        j = i
        while j != -1:
            m[i, j] = 0.0
            j = parents[j]
    return m


def depths(parents):
    d = []
    for p in parents:
        d.append(0 if p == -1 else d[p] + 1)
    return d


# A token tree under the prefix: node -> parent (-1 = root level), as in tree verification.
PARENTS = [-1, 0, 0, 1, 1, 2, 3, -1]
TOKENS = [7, 3, 9, 4, 12, 1, 30, 44]


def path_to(i):
    path = []
    while i != -1:
        path.append(i)
        i = PARENTS[i]
    return path[::-1]


def test_tree_forward_equals_sequential_decoding_of_each_path(model):
    prefix = [2, 8, 5, 6, 1]
    cache = model.new_cache()
    model(torch.tensor([prefix]), cache=cache)
    pos = torch.tensor([len(prefix) + d for d in depths(PARENTS)])
    out = model(torch.tensor([TOKENS]), cache=cache, position_ids=pos, attn_mask=tree_mask(PARENTS),
                hidden_layers=(TINY.n_layers,))
    for i in range(len(TOKENS)):
        seq = prefix + [TOKENS[j] for j in path_to(i)]
        torch.testing.assert_close(out.logits[0, i], full_logits(model, seq)[-1], atol=ATOL, rtol=0)


def test_compact_keeps_an_accepted_path(model):
    prefix = [2, 8, 5, 6, 1]
    cache = model.new_cache()
    model(torch.tensor([prefix]), cache=cache)
    pos = torch.tensor([len(prefix) + d for d in depths(PARENTS)])
    model(torch.tensor([TOKENS]), cache=cache, position_ids=pos, attn_mask=tree_mask(PARENTS))
    accepted = path_to(6)  # nodes 0 -> 1 -> 3 -> 6
    cache.compact([len(prefix) + i for i in accepted], start=len(prefix))
    assert cache.length == len(prefix) + len(accepted)
    nxt = model(torch.tensor([[17, 18]]), cache=cache).logits[0]
    seq = prefix + [TOKENS[i] for i in accepted] + [17, 18]
    torch.testing.assert_close(nxt, full_logits(model, seq)[-2:], atol=ATOL, rtol=0)


def test_compact_rejects_positions_outside_the_cache(model):
    cache = model.new_cache()
    model(torch.tensor([[1, 2, 3]]), cache=cache)
    with pytest.raises(ValueError, match="compact"):
        cache.compact([5], start=3)


def test_hidden_states_follow_hugging_face_numbering(model):
    ids = torch.tensor([[4, 5, 6, 7]])
    L = TINY.n_layers
    out = model(ids, hidden_layers=(0, 1, L))
    torch.testing.assert_close(out.hidden_states[0], model.embed_tokens(ids))
    torch.testing.assert_close(out.hidden_states[1], model.layers[0](model.embed_tokens(ids),
                               model.rope_cos[:4], model.rope_sin[:4], None, "causal"))
    torch.testing.assert_close(model.lm_head(out.hidden_states[L]), out.logits)


def test_logits_to_keep_returns_the_last_positions(model):
    ids = torch.tensor([[4, 5, 6, 7]])
    torch.testing.assert_close(model(ids, logits_to_keep=1).logits, model(ids).logits[:, -1:])


def test_context_overflow_is_a_clear_error(model):
    cache = model.new_cache()
    model(torch.zeros(1, TINY.max_seq_len - 1, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, 2, dtype=torch.long), cache=cache)


def test_causal_mask_shape_and_values():
    m = causal_mask(3, past=2)
    assert m.shape == (3, 5)
    assert torch.equal(m == 0, torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))


def test_config_rejects_odd_head_split():
    from minispec.model import ModelConfig
    with pytest.raises(ValueError, match="heads"):
        ModelConfig(dim=30, n_heads=4)


def test_lean_inference_equals_the_training_path(model):
    """Inference runs q/k/v and gate/up as one matmul each, over weights transposed once and kept;
    training stacks them afresh on every call. Both must compute the same model, and the kept
    weights must follow the parameters when they change."""
    ids = torch.tensor([[5, 9, 2, 7, 1, 3, 8]])
    separate = model(ids).logits                       # grad enabled: the training path
    with torch.inference_mode():
        stacked = model(ids).logits
    torch.testing.assert_close(stacked, separate, atol=ATOL, rtol=0)
    with torch.no_grad():                              # an in-place change (as an optimizer makes)
        model.layers[1].self_attn.k_proj.weight.mul_(2.0)
        model.layers[2].mlp.up_proj.weight.add_(0.1)
    changed = model(ids).logits
    assert not torch.allclose(changed, separate, atol=1e-3)
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, changed, atol=ATOL, rtol=0)
    double = model.double()                            # a move: new storage, so a new stack
    with torch.inference_mode():
        torch.testing.assert_close(double(ids).logits, changed, atol=1e-4, rtol=0)


def test_training_gradients_are_those_of_the_separate_projections():
    """Training stacks the weights too: the gradients of the separate weights equal those of a
    hand-written forward of the block (to float32 rounding)."""
    import torch.nn.functional as F
    model = tiny_model(3)
    x = torch.randn(1, 5, TINY.dim, generator=torch.Generator().manual_seed(0))
    mlp = model.layers[0].mlp
    mlp(x).square().sum().backward()
    got = [mlp.gate_proj.weight.grad.clone(), mlp.up_proj.weight.grad.clone()]
    mlp.zero_grad()
    ref = mlp.down_proj(F.silu(mlp.gate_proj(x)) * mlp.up_proj(x))
    ref.square().sum().backward()
    torch.testing.assert_close(got[0], mlp.gate_proj.weight.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got[1], mlp.up_proj.weight.grad, rtol=1e-5, atol=1e-7)


def test_rotary_is_hugging_face_rotate_half():
    """apply_rotary with the signed-sin table equals x cos + rotate_half(x) sin with plain tables."""
    from minispec.model import apply_rotary, rotary_tables
    cos, sin = rotary_tables(TINY)
    hd = TINY.head_dim
    inv = 1.0 / TINY.rope_theta ** (torch.arange(0, hd, 2).float() / hd)
    ang = torch.outer(torch.arange(TINY.max_seq_len).float(), inv).repeat(1, 2)   # (L, hd)
    x = torch.randn(1, TINY.n_heads, TINY.max_seq_len, hd, generator=torch.Generator().manual_seed(0))
    rotate_half = torch.cat([-x[..., hd // 2:], x[..., :hd // 2]], dim=-1)
    torch.testing.assert_close(apply_rotary(x, cos, sin), x * ang.cos() + rotate_half * ang.sin(),
                               atol=1e-5, rtol=0)


def test_rms_norm_gives_the_same_numbers_when_decoding_and_when_training():
    """RMSNorm calls torch's fused kernel directly under no_grad/inference_mode (a faster path):
    bit for bit F.rms_norm's numbers, and training still gets gradients."""
    import torch.nn.functional as F
    from minispec.model import RMSNorm
    norm = RMSNorm(32, 1e-5)
    with torch.no_grad():
        norm.weight.normal_()
    for shape in [(1, 1, 32), (2, 7, 32)]:
        x = torch.randn(*shape) * 3
        want = F.rms_norm(x, (32,), norm.weight, 1e-5)
        with torch.inference_mode():
            assert torch.equal(norm(x), want)
        with torch.no_grad():
            assert torch.equal(norm(x), want)
        assert torch.equal(norm(x), want) and norm(x).requires_grad
