"""Sampling parameters and the shared warping rule."""
import pytest
import torch

from minispec.sampling import SamplingParams, next_token, warp


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_k": -1}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
])
def test_invalid_parameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


LOGITS = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.1]))


def test_temperature_one_is_softmax():
    torch.testing.assert_close(warp(LOGITS, SamplingParams(1.0)), torch.tensor([0.5, 0.25, 0.15, 0.1]))


def test_temperature_sharpens_and_flattens():
    cold, hot = warp(LOGITS, SamplingParams(0.5)), warp(LOGITS, SamplingParams(2.0))
    assert cold[0] > 0.5 > hot[0]
    torch.testing.assert_close(cold, torch.softmax(LOGITS / 0.5, -1))


def test_top_k_keeps_k_tokens_renormalised():
    p = warp(LOGITS, SamplingParams(1.0, top_k=2))
    torch.testing.assert_close(p, torch.tensor([2 / 3, 1 / 3, 0.0, 0.0]))


def test_top_p_keeps_the_smallest_set_reaching_p():
    # 0.5 < 0.7 so the second token is needed; 0.75 >= 0.7 so the third is not
    torch.testing.assert_close(warp(LOGITS, SamplingParams(1.0, top_p=0.7)), torch.tensor([2 / 3, 1 / 3, 0.0, 0.0]))
    # a tiny top_p still keeps the most likely token
    torch.testing.assert_close(warp(LOGITS, SamplingParams(1.0, top_p=0.01)), torch.tensor([1.0, 0, 0, 0]))


def test_top_k_then_top_p_compose():
    p = warp(LOGITS, SamplingParams(1.0, top_k=3, top_p=0.6))  # after top-k: 0.56, 0.28, 0.17
    torch.testing.assert_close(p, torch.tensor([0.5 / 0.75, 0.25 / 0.75, 0.0, 0.0]))


def test_greedy_is_one_hot_argmax_and_batched():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert torch.equal(warp(logits, SamplingParams()), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    assert next_token(logits, SamplingParams()).tolist() == [1, 0]


def test_seeded_sampling_is_reproducible():
    logits = torch.randn(1000)
    params = SamplingParams(1.0)
    a = [int(next_token(logits, params, torch.Generator().manual_seed(3))) for _ in range(3)]
    b = [int(next_token(logits, params, torch.Generator().manual_seed(3))) for _ in range(3)]
    assert a == b
