"""Self-distillation data: batches depend only on (seed, step), carry the target's hidden states
at the requested layers (the final one always), regenerated windows continue their corpus prefix
with the target's own tokens, and a disk cache returns exactly what was computed."""
import numpy as np
import pytest
import torch

from conftest import TINY, tiny_model
from minispec.checks import chi_square_ok
from minispec.distill import MixedDistillation, SelfDistillation

TOKENS = {"a": np.arange(0, 2000, dtype=np.uint16) % 64, "b": (np.arange(0, 2000, dtype=np.uint16) * 7) % 64}


def test_batches_are_deterministic_and_carry_the_target_states():
    target = tiny_model()
    data = SelfDistillation(target, TOKENS, batch_size=3, seq_len=16, layers=(1,), seed=5)
    a, b = data.batch(7), data.batch(7)
    assert torch.equal(a.ids, b.ids) and not torch.equal(a.ids, data.batch(8).ids)
    assert set(a.hidden) == {1, TINY.n_layers} and a.feature(target).shape == (3, 16, TINY.dim)
    with torch.no_grad():
        want = target(a.ids, hidden_layers=(1, TINY.n_layers))
    torch.testing.assert_close(a.hidden[1], want.hidden_states[1])
    torch.testing.assert_close(target.lm_head(a.feature(target)), want.logits)  # p is recomputable


def test_regenerated_windows_keep_the_prefix_and_follow_the_target():
    target = tiny_model()
    with torch.no_grad():
        target.lm_head.weight.mul_(50.0)          # near-greedy: sampled continuations = argmax
    data = SelfDistillation(target, TOKENS, batch_size=2, seq_len=12, source="regenerated", prompt_len=4)
    b = data.batch(0)
    assert torch.equal(b.ids[:, :4], data.windows(0)[:, :4])
    with torch.no_grad():
        best = target(b.ids).logits.argmax(-1)
    assert (b.ids[:, 4:] == best[:, 3:-1]).float().mean() > 0.9


def test_regenerated_rows_depend_on_their_own_step_only():
    """Several steps generated in one batch give each step's batch alone (inverse-CDF sampling
    with per-step numbers), and num_batches makes epochs over the same batches."""
    target = tiny_model()
    data = SelfDistillation(target, TOKENS, batch_size=2, seq_len=12, source="regenerated", prompt_len=3,
                            num_batches=2)
    together = data.compute_many([0, 1, 5])
    for s, b in zip([0, 1, 5], together):
        alone = data.compute(s)
        assert torch.equal(b.ids, alone.ids)
        torch.testing.assert_close(b.feature(target), alone.feature(target))
    assert not torch.equal(together[0].ids, together[1].ids)
    assert torch.equal(data.batch(3).ids, together[1].ids)         # step 3 reads batch 3 % 2


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_regenerated_tokens_follow_the_target_distribution(temperature):
    """The inverse-CDF sampler draws each token with the target's probability at the given
    temperature: first tokens of many rows against p, exactly computed."""
    target = tiny_model()
    data = SelfDistillation(target, TOKENS, batch_size=4000, seq_len=5, source="regenerated", prompt_len=4,
                            temperature=temperature)
    prefix = torch.tensor([[1, 2, 3, 4]]).repeat(4000, 1)
    ids = data.regenerate(prefix, data.uniforms(0)[:, :1])
    with torch.no_grad():
        p = torch.softmax(target(prefix[:1]).logits[0, -1].double() / temperature, -1)
    counts = torch.bincount(ids[:, 4], minlength=p.numel())
    assert chi_square_ok(counts, p)
    assert not chi_square_ok(counts, torch.softmax(p.log() * 1.3, -1))   # a sharper p is told apart


def test_greedy_regeneration_is_the_targets_greedy_decoding(tmp_path):
    """temperature=0: each row continues its prefix exactly as plain greedy decoding does (the
    text that greedy speculative decoding drafts for); its cache files are kept apart from the
    sampled ones."""
    from minispec import generate
    target = tiny_model()
    greedy = SelfDistillation(target, TOKENS, batch_size=3, seq_len=12, source="regenerated", prompt_len=4,
                              temperature=0, cache_dir=tmp_path)
    b = greedy.batch(0)
    for row in b.ids.tolist():
        assert generate(target, row[:4], max_new_tokens=8).tokens == row[4:]
    sampled = SelfDistillation(target, TOKENS, batch_size=3, seq_len=12, source="regenerated", prompt_len=4,
                               cache_dir=tmp_path)
    assert sampled.path(0) != greedy.path(0) and torch.equal(greedy.batch(0).ids, b.ids)
    assert not torch.equal(sampled.batch(0).ids, b.ids)


def test_mixed_data_takes_turns(tmp_path):
    target = tiny_model()
    a = SelfDistillation(target, TOKENS, batch_size=2, seq_len=8, cache_dir=tmp_path)
    b = SelfDistillation(target, TOKENS, batch_size=2, seq_len=8, source="regenerated", prompt_len=3,
                         cache_dir=tmp_path)
    mixed = MixedDistillation(a, b)
    mixed.precompute(range(4), progress=False)
    assert len(list(tmp_path.glob("corpus-*"))) == 2 and len(list(tmp_path.glob("regenerated-*"))) == 2
    assert torch.equal(mixed.batch(2).ids, a.batch(1).ids) and torch.equal(mixed.batch(3).ids, b.batch(1).ids)


def test_the_disk_cache_returns_what_was_computed(tmp_path):
    target = tiny_model()
    data = SelfDistillation(target, TOKENS, batch_size=2, seq_len=8, cache_dir=tmp_path)
    data.precompute(range(3), progress=False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3
    fresh = SelfDistillation(target, TOKENS, batch_size=2, seq_len=8).batch(2)
    cached = data.batch(2)
    assert torch.equal(cached.ids, fresh.ids) and torch.equal(cached.feature(target), fresh.feature(target))


def test_cached_windows_gain_other_layers_without_being_regenerated(tmp_path):
    """A head that reads other layers (EAGLE-3) reuses the windows an earlier head's training
    regenerated: only the target's forward pass runs again."""
    target = tiny_model()
    first = SelfDistillation(target, TOKENS, batch_size=2, seq_len=8, source="regenerated", prompt_len=3,
                             cache_dir=tmp_path)
    first.precompute(range(2), progress=False)
    planted = first.batch(1)
    first.save(1, type(planted)(torch.full_like(planted.ids, 5), planted.hidden))   # marks the stored ids
    more = SelfDistillation(target, TOKENS, batch_size=2, seq_len=8, layers=(1, 2), source="regenerated",
                            prompt_len=3, cache_dir=tmp_path)
    more.precompute(range(2), progress=False)
    b = more.batch(1)
    assert torch.equal(b.ids, torch.full_like(planted.ids, 5))                      # not regenerated
    want = target(b.ids, hidden_layers=(1, 2, TINY.n_layers)).hidden_states
    for i in (1, 2, TINY.n_layers):
        torch.testing.assert_close(b.hidden[i], want[i])
    assert more._layers_missing(1) == 0 and more._layers_missing(0) == 0


def test_bad_settings_are_refused():
    target = tiny_model()
    with pytest.raises(ValueError, match="source"):
        SelfDistillation(target, TOKENS, 2, 8, source="web")
    with pytest.raises(ValueError, match="context"):
        SelfDistillation(target, TOKENS, 2, 1000)
    with pytest.raises(ValueError, match="prompt_len"):
        SelfDistillation(target, TOKENS, 2, 8, source="regenerated", prompt_len=8)
    with pytest.raises(ValueError, match="num_batches"):
        SelfDistillation(target, TOKENS, 2, 8, num_batches=0)
    for t in (-1.0, float("nan"), True, 1e-300):
        with pytest.raises(ValueError, match="temperature"):
            SelfDistillation(target, TOKENS, 2, 8, source="regenerated", prompt_len=3, temperature=t)
