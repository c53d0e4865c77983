"""The losslessness checks themselves: exact distributions sum to one, the test has power."""
import pytest
import torch

from conftest import SMALL, tiny_model
from minispec.checks import chi_square_ok, exact_distribution
from minispec.sampling import SamplingParams


def test_exact_distribution_is_a_distribution_and_factorises():
    model = tiny_model(0, SMALL)
    joint = exact_distribution(model, [1, 2, 3], SamplingParams(1.0), 2)
    assert joint.shape == (16, 16)
    torch.testing.assert_close(joint.sum(), torch.tensor(1.0))
    first = exact_distribution(model, [1, 2, 3], SamplingParams(1.0), 1)
    torch.testing.assert_close(joint.sum(-1), first)


def test_chi_square_accepts_the_truth_and_rejects_a_shifted_distribution():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(20, generator=g), -1)
    counts = torch.bincount(torch.multinomial(p, 5000, replacement=True, generator=g), minlength=20)
    assert chi_square_ok(counts, p)
    shifted = (p + 0.02) / (p + 0.02).sum()
    assert not chi_square_ok(counts, shifted)


def test_chi_square_refuses_a_test_without_power():
    with pytest.raises(ValueError, match="no power"):
        chi_square_ok(torch.tensor([1.0, 2.0, 0.0]), torch.tensor([0.3, 0.3, 0.4]))
