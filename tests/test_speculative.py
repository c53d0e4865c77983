"""Chapter 1: speculative sampling and prompt lookup are lossless.

Greedy: identical tokens to plain greedy decoding. Sampling: the output distribution is the
target's, checked by a chi-square test against exactly computed probabilities, and the same
test catches a verifier that skips the residual distribution.
"""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from conftest import SMALL, TINY, tiny_model
from minispec import generate
from minispec.checks import chi_square_ok, exact_distribution, sequence_frequencies, verify_without_residual
from minispec.model import ModelConfig, Transformer
from minispec.sampling import SamplingParams, sample
from minispec.speculative import PromptLookupDrafter
from minispec.verify import verify_greedy, verify_sampling

DRAFT_CFG = ModelConfig(**{**TINY.to_dict(), "n_layers": 1})  # a one-layer draft, same vocab
PROMPT = [3, 14, 15, 9, 2, 6]
REPEATS = [5, 6, 7, 8, 5, 6, 7, 8, 5, 6]  # gives prompt lookup something to find


@pytest.fixture(scope="module")
def target():
    return tiny_model(0)


@pytest.fixture(scope="module")
def draft():
    return tiny_model(1, DRAFT_CFG)


# ---------------------------------------------------------------- greedy: token for token
@pytest.mark.parametrize("gamma", [1, 2, 3, 5, 8])
def test_sps_greedy_equals_plain_greedy(target, draft, gamma):
    ar = generate(target, PROMPT, 40).tokens
    sps = generate(target, PROMPT, 40, method="sps", draft=draft, gamma=gamma)
    assert sps.tokens == ar
    assert sps.stats.new_tokens == 40


@pytest.mark.parametrize("gamma", [1, 3, 6])
def test_pld_greedy_equals_plain_greedy(target, gamma):
    ar = generate(target, REPEATS, 40).tokens
    pld = generate(target, REPEATS, 40, method="pld", gamma=gamma)
    assert pld.tokens == ar
    assert pld.stats.num_drafts > 0


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), gamma=st.integers(1, 7), n=st.integers(1, 30),
       prompt=st.lists(st.integers(0, TINY.vocab_size - 1), min_size=1, max_size=12))
def test_greedy_lossless_on_random_models(seed, gamma, n, prompt):
    target, draft = tiny_model(seed), tiny_model(seed + 1, DRAFT_CFG)
    ar = generate(target, prompt, n).tokens
    assert generate(target, prompt, n, method="sps", draft=draft, gamma=gamma).tokens == ar
    assert generate(target, prompt, n, method="pld", gamma=gamma).tokens == ar


def test_a_perfect_draft_is_always_accepted(target):
    """Draft == target: every draft is accepted, so the draft cache must stay in sync."""
    g = generate(target, PROMPT, 41, method="sps", draft=target, gamma=4)
    st_ = g.stats
    assert st_.num_accepted_tokens == st_.num_draft_tokens
    assert st_.accept_lengths == [5] * 8 + [1] and st_.mean_acceptance_length == 5.0  # + a last plain step
    assert st_.target_calls == 1 + 8 + 1  # prefill, 8 full rounds, one last token


def test_end_token_stops_like_plain_decoding(target, draft):
    full = generate(target, PROMPT, 30).tokens
    eos = full[7]
    ar = generate(target, PROMPT, 30, eos_id=eos).tokens
    assert generate(target, PROMPT, 30, eos_id=eos, method="sps", draft=draft, gamma=4).tokens == ar
    assert generate(target, PROMPT, 30, eos_id=eos, method="pld", gamma=4).tokens == ar


def test_statistics_add_up(target, draft):
    s = generate(target, PROMPT, 50, method="sps", draft=draft, gamma=4).stats
    assert 0 < s.num_draft_tokens <= 4 * s.num_drafts
    assert s.num_accepted_tokens == sum(s.accepted_per_pos)
    assert s.accepted_per_pos == sorted(s.accepted_per_pos, reverse=True)
    assert sum(s.accept_lengths) == s.new_tokens == 50   # every target step, drafted or not
    assert s.mean_acceptance_length == pytest.approx(1 + s.num_accepted_tokens / s.num_drafts)


def test_verify_greedy_rule():
    logits = torch.full((4, 10), -1.0)
    for i, t in enumerate([3, 5, 7, 9]):
        logits[i, t] = 1.0
    assert verify_greedy([3, 5, 7], logits) == (3, 9)   # all accepted + bonus
    assert verify_greedy([3, 4, 7], logits) == (1, 5)   # correction at the first mismatch
    assert verify_greedy([], logits[:1]) == (0, 3)


# ---------------------------------------------------------------- sampling: exact distributions
def round_first_token_counts(verifier, p, q, trials, seed=0):
    """Run one verification round `trials` times with drafts drawn from q; count first tokens."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.zeros(p.shape[-1])
    for _ in range(trials):
        drafts = [int(sample(q[i], g)) for i in range(q.shape[0])]
        n, nxt = verifier(drafts, q, p, g)
        counts[drafts[0] if n > 0 else nxt] += 1
    return counts


def random_pq(seed, V=12, k=3):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(3 * torch.randn(k + 1, V, generator=g), -1)
    q = torch.softmax(3 * torch.randn(k, V, generator=g), -1)
    return p, q


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_round_emits_the_target_distribution(seed):
    p, q = random_pq(seed)
    counts = round_first_token_counts(verify_sampling, p, q, 20_000, seed)
    assert chi_square_ok(counts, p[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_round_check_catches_a_verifier_without_residual(seed):
    p, q = random_pq(seed)
    counts = round_first_token_counts(verify_without_residual, p, q, 20_000, seed)
    assert not chi_square_ok(counts, p[0])


# Whole generations of THREE tokens with gamma = 2: the first round verifies two drafts, so
# rejections after a partial acceptance, the residual at the second position, the bonus token
# and the draft cache's rollback under sampling are all inside the checked distribution. A
# 16-token vocabulary keeps the 16^3 outcomes enumerable.
SMALL_DRAFT = ModelConfig(**{**SMALL.to_dict(), "n_layers": 1})
SAMPLING = [SamplingParams(1.0), SamplingParams(0.7, top_k=6), SamplingParams(1.3, top_p=0.8)]


@pytest.fixture(scope="module")
def small():
    """A target with a sharpened LM head (its 3-token distribution is concentrated enough for
    the chi-square test to have power at 3000 samples) and a poor, near-uniform draft (many
    rejections, so the residual is exercised at every position). Checked: with this pair the
    test passes for the real verifier and fails for the broken one."""
    target = tiny_model(2, SMALL)
    with torch.no_grad():
        target.lm_head.weight.mul_(3.0)
    return target, tiny_model(3, SMALL_DRAFT, scale=1.0)


@pytest.mark.parametrize("params", SAMPLING)
def test_sps_sampling_matches_the_target_exactly(small, params):
    target, draft = small
    exact = exact_distribution(target, PROMPT, params, 3).flatten()
    counts = sequence_frequencies(target, PROMPT, params, 3000, draft=draft, gamma=2)
    assert counts[exact == 0].sum() == 0
    assert chi_square_ok(counts, exact)


@pytest.mark.parametrize("params", SAMPLING[:2])
def test_pld_sampling_matches_the_target_exactly(small, params):
    target, _ = small
    exact = exact_distribution(target, REPEATS, params, 3).flatten()
    counts = sequence_frequencies(target, REPEATS, params, 3000, method="pld", gamma=2)
    assert counts[exact == 0].sum() == 0
    assert chi_square_ok(counts, exact)


def test_end_to_end_check_catches_a_verifier_without_residual(small):
    target, draft = small
    params = SAMPLING[0]
    exact = exact_distribution(target, PROMPT, params, 3).flatten()
    # 1,000 generations suffice: over 5 seeds the statistic was 2.1 to 2.5 times the critical value
    # (0.97 to 1.5 times at 500), so the 3,000 of the tests above catch this bug with room to spare
    counts = sequence_frequencies(target, PROMPT, params, 1000, draft=draft, gamma=2,
                                  verifier=verify_without_residual)
    assert not chi_square_ok(counts, exact)


# ---------------------------------------------------------------- prompt lookup and bad input
def test_prompt_lookup_finds_the_latest_longest_match():
    d = PromptLookupDrafter(100, max_ngram=3)
    assert d.lookup([1, 2, 3, 9, 9, 1, 2, 3, 7, 7, 2, 3], 3) == [7, 7, 2]  # latest "2 3" match
    assert d.lookup([1, 2, 3, 4], 2) == []
    assert d.lookup([4, 5, 4], 5) == [5, 4]  # stops at the end of the context


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "sps", "gamma": 0}, "gamma"),
    ({"method": "sps", "gamma": 2.5}, "gamma"),
    ({"method": "sps"}, "needs a draft model"),
    ({"method": "pld", "gamma": -1}, "gamma"),
])
def test_bad_speculative_options(target, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(target, PROMPT, 5, **kwargs)


def test_draft_with_another_vocabulary_is_refused(target):
    other = Transformer(ModelConfig(**{**DRAFT_CFG.to_dict(), "vocab_size": 80}))
    with pytest.raises(ValueError, match="vocabulary"):
        generate(target, PROMPT, 5, method="sps", draft=other)


def test_draft_with_a_shorter_context_is_refused(target):
    short = Transformer(ModelConfig(**{**DRAFT_CFG.to_dict(), "max_seq_len": 16}))
    with pytest.raises(ValueError, match="context"):
        generate(target, PROMPT, 20, method="sps", draft=short)


def test_unknown_options_are_refused(target, draft):
    with pytest.raises(ValueError, match="unknown option"):
        generate(target, PROMPT, 5, method="sps", draft=draft, gama=4)


def test_end_token_inside_accepted_drafts(target):
    """A perfect draft accepts whole rounds, so the end token arrives inside the drafts."""
    full = generate(target, PROMPT, 30).tokens
    eos = full[6]
    g = generate(target, PROMPT, 30, eos_id=eos, method="sps", draft=target, gamma=4)
    assert g.tokens == full[:full.index(eos) + 1]


def test_draft_with_another_tokenizer_is_refused(target, draft):
    target.tokenizer_sha256, draft.tokenizer_sha256 = "a" * 64, "b" * 64
    try:
        with pytest.raises(ValueError, match="different tokenizer"):
            generate(target, PROMPT, 5, method="sps", draft=draft)
    finally:
        del target.tokenizer_sha256, draft.tokenizer_sha256


def test_a_request_filling_the_context_works_for_every_method(target, draft):
    """The caches hold prompt + max_new_tokens whatever gamma is: the draft needs one position
    fewer than the sequence, so a request ar accepts, sps and pld accept too."""
    n = TINY.max_seq_len - len(PROMPT)
    ar = generate(target, PROMPT, n).tokens
    assert generate(target, PROMPT, n, method="sps", draft=draft, gamma=4).tokens == ar
    assert generate(target, PROMPT, n, method="pld", gamma=4).tokens == ar


def test_a_huge_gamma_is_clamped_not_allocated(target, draft):
    ar = generate(target, PROMPT, 12).tokens
    assert generate(target, PROMPT, 12, method="sps", draft=draft, gamma=10**6).tokens == ar
    assert generate(target, PROMPT, 12, method="pld", gamma=10**9).tokens == ar


def test_default_gamma_is_the_documented_one(target, draft):
    from minispec.methods import METHODS
    for method, kw in (("sps", {"draft": draft}), ("pld", {})):
        a = generate(target, REPEATS, 20, method=method, **kw).stats
        b = generate(target, REPEATS, 20, method=method, gamma=METHODS[method].defaults()["gamma"], **kw).stats
        assert a.accept_lengths == b.accept_lengths and a.num_draft_tokens == b.num_draft_tokens
