"""Plain decoding, the baseline: greedy correctness, sampling distribution, stopping, errors."""
import numpy as np
import pytest
import torch

from conftest import SMALL, TINY, tiny_model
from minispec import generate
from minispec.checks import chi_square_ok, exact_distribution
from minispec.sampling import SamplingParams, warp

PROMPT = [3, 14, 15, 9, 2, 6]


def naive_greedy(model, prompt, n):
    """Reference: recompute the whole sequence for every token, no cache."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def test_greedy_equals_recomputing_from_scratch(model):
    g = generate(model, PROMPT, max_new_tokens=20)
    assert g.tokens == naive_greedy(model, PROMPT, 20)
    assert g.stats.new_tokens == 20 and g.stats.target_calls == 20
    assert g.stats.mean_acceptance_length == 1.0


def test_accepts_a_tensor_prompt(model):
    assert generate(model, torch.tensor([PROMPT]), 5).tokens == generate(model, PROMPT, 5).tokens


def test_stops_at_the_end_token(model):
    full = generate(model, PROMPT, 20).tokens
    eos = full[4]
    g = generate(model, PROMPT, 20, eos_id=eos)
    assert g.tokens == full[:full.index(eos) + 1]


def test_seeded_sampling_is_reproducible(model):
    a = generate(model, PROMPT, 15, temperature=1.0, seed=7).tokens
    b = generate(model, PROMPT, 15, temperature=1.0, seed=7).tokens
    assert a == b


@pytest.mark.parametrize("params", [SamplingParams(1.0), SamplingParams(0.7, top_k=6, top_p=0.9)])
def test_sampling_matches_exact_two_token_distribution(params):
    """Chi-square goodness of fit over the first two tokens; false alarm rate 1e-4."""
    model = tiny_model(2, SMALL)
    exact = exact_distribution(model, PROMPT, params, 2).flatten()
    counts = torch.zeros_like(exact)
    for i in range(2000):
        t = generate(model, PROMPT, 2, params.temperature, params.top_k, params.top_p, seed=i).tokens
        counts[t[0] * SMALL.vocab_size + t[1]] += 1
    assert counts[exact == 0].sum() == 0, "sampled a token the warped distribution excludes"
    assert chi_square_ok(counts, exact)


@pytest.mark.parametrize("prompt, kwargs, message", [
    ([], {}, "empty"),
    ([1] * TINY.max_seq_len, {}, "context"),
    ([1] * 10, {"max_new_tokens": TINY.max_seq_len}, "exceeds"),
    (PROMPT, {"max_new_tokens": 0}, "max_new_tokens"),
    (PROMPT, {"temperature": -1.0}, "temperature"),
    (PROMPT, {"top_p": 0.0}, "top_p"),
    (PROMPT, {"top_p": 1.01}, "top_p"),
    (PROMPT, {"top_k": -3}, "top_k"),
    ([TINY.vocab_size + 5], {}, "vocabulary"),
    (PROMPT, {"method": "magic"}, "unknown method"),
    (PROMPT, {"temperature": 1e-300}, "too small"),         # underflows float32: would give NaN
    (PROMPT, {"temperature": True}, "temperature"),         # a bool is not a temperature
    (PROMPT, {"top_p": True}, "top_p"),
    (PROMPT, {"temperature": 1.0, "seed": 1.5}, "seed"),    # not a raw torch error
    (PROMPT, {"temperature": 1.0, "seed": -1}, "seed"),
    (PROMPT, {"eos_id": 2.5}, "eos_id"),                    # would never match
    (PROMPT, {"eos_id": True}, "eos_id"),
    (np.array([1.7, 2.2], dtype=np.float32), {}, "integer token ids"),   # not truncated to [1, 2]
    ([1.0, 2.0], {}, "integer token ids"),
    (torch.tensor([1.5, 2.0]), {}, "integer token ids"),
])
def test_bad_input_gets_a_clear_error(model, prompt, kwargs, message):
    kwargs = {"max_new_tokens": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(model, prompt, **kwargs)


def test_batched_prompts_are_refused(model):
    with pytest.raises(ValueError, match="batch size 1"):
        generate(model, torch.zeros(2, 3, dtype=torch.long), 4)


def test_numpy_integer_prompts_and_ids_are_accepted(model):
    want = generate(model, PROMPT, 5).tokens
    assert generate(model, np.array(PROMPT, dtype=np.int64), 5).tokens == want
    assert generate(model, PROMPT, 5, eos_id=np.int64(want[2])).tokens == want[:3]


def test_the_smallest_temperature_allowed_still_samples(model):
    assert len(generate(model, PROMPT, 5, temperature=1e-30, seed=0).tokens) == 5


def test_no_method_option_shadows_a_parameter_of_generate():
    """Options travel in generate's **method_options, so one named like a sampling parameter
    (top_k, temperature, ...) would silently go to the wrong place."""
    import inspect
    from minispec.methods import METHODS
    params = set(inspect.signature(generate).parameters)
    assert not {o for m in METHODS.values() for o in m.options} & params


@pytest.mark.parametrize("value, expected", [(None, 1), ("0", 0), ("3", 3), ("x", None), ("-1", None)])
def test_inference_threads_reads_minispec_threads(monkeypatch, value, expected):
    from minispec.device import inference_threads
    if value is None:
        monkeypatch.delenv("MINISPEC_THREADS", raising=False)
    else:
        monkeypatch.setenv("MINISPEC_THREADS", value)
    if expected is None:
        with pytest.raises(ValueError, match="MINISPEC_THREADS must be an integer >= 0"):
            inference_threads()
    else:
        assert inference_threads("cpu") == expected
        assert inference_threads("cuda") == 0          # threads matter only on the CPU


def test_generate_decodes_with_the_inference_threads_and_restores_torch(monkeypatch, model):
    """generate sets torch's thread count for the decoding only: the forward passes see
    MINISPEC_THREADS (default 1), the caller's setting is back afterwards."""
    seen = []
    forward = type(model).forward
    monkeypatch.setattr(type(model), "forward",
                        lambda self, *a, **k: seen.append(torch.get_num_threads()) or forward(self, *a, **k))
    before = torch.get_num_threads()
    monkeypatch.setenv("MINISPEC_THREADS", "2")
    try:
        torch.set_num_threads(1)
        generate(model, PROMPT, 3)
        assert seen == [2, 2, 2] and torch.get_num_threads() == 1
        monkeypatch.delenv("MINISPEC_THREADS")
        torch.set_num_threads(2)
        seen.clear()
        generate(model, PROMPT, 3, method="pld")
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
