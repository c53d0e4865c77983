"""Notebook helpers: the round stepper runs the package's own round and reports it faithfully."""
import pytest
import torch

from conftest import TINY, tiny_model
from minispec.model import ModelConfig
from minispec.sampling import SamplingParams
from minispec.viz import RoundStepper, forward_cost, show


def test_stepper_reports_what_the_verifier_did():
    target, draft = tiny_model(0), tiny_model(1, ModelConfig(**{**TINY.to_dict(), "n_layers": 1}))
    st = RoundStepper(target, draft, [3, 1, 4, 1, 5], gamma=3, params=SamplingParams(1.0), seed=0)
    for _ in range(6):
        before = len(st.tokens)
        r = st.step()
        n = r["n_accepted"]
        assert [row["accepted"] for row in r["drafts"]] == [True] * n + [False] * (len(r["drafts"]) - n)
        assert st.tokens[before:] == [row["token"] for row in r["drafts"][:n]] + [r["next_token"]]
        assert all(0 <= row["accept_prob"] <= 1 and row["q"] > 0 for row in r["drafts"])
        assert (r["residual"] is None) == r["bonus"]
        if r["residual"]:
            assert 0 < sum(r["residual"]["probs"]) <= 1 + 1e-6


def test_stepper_refuses_greedy():
    with pytest.raises(ValueError, match="temperature"):
        RoundStepper(tiny_model(0), tiny_model(1), [1, 2], params=SamplingParams(0.0))


def test_forward_cost_and_show():
    assert forward_cost(tiny_model(0), 4, context=8, repeats=2, warmup=1) > 0
    assert "def forward_cost" in show(forward_cost).data
