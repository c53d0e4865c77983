"""Training: the loss falls, checkpoints are atomic, and a resumed run ends identical."""
import numpy as np
import torch

from conftest import TINY
from minispec.checkpoint import load_pretrained, read_manifest
from minispec.model import Transformer
from minispec.train import TrainConfig, evaluate, get_batch, lr_at, train

# A learnable toy corpus: two "domains" with simple repeating patterns.
TOKENS = {"a": np.tile(np.arange(0, 16, dtype=np.uint16), 200), "b": np.tile(np.array([20, 21, 22, 21], dtype=np.uint16), 800)}
CFG = TrainConfig(steps=30, batch_size=4, seq_len=16, lr=1e-2, min_lr=1e-3, warmup=5, ckpt_every=10,
                  eval_windows=4, eval_every=10)


def run(tmp_path, name, **kw):
    return train("tiny", TINY, CFG, run_dir=tmp_path / name / "run", out_dir=tmp_path / name / "out",
                 progress=False, tokens=TOKENS, val_tokens=TOKENS, **kw)


def test_loss_falls_and_weights_are_shipped(tmp_path):
    torch.manual_seed(0)
    before = evaluate(Transformer(TINY), CFG, TOKENS)
    model = run(tmp_path, "x")
    after = evaluate(model, CFG, TOKENS)
    assert all(after[d] < before[d] - 1.0 for d in TOKENS), (before, after)
    shipped = load_pretrained(tmp_path / "x" / "out", "cpu")
    training = read_manifest(tmp_path / "x" / "out")["training"]
    assert training["tokens_seen"] == 30 * 4 * 16
    assert [h["step"] for h in training["history"]] == [10, 20, 30]
    assert all(set(h["val_loss"]) == set(TOKENS) for h in training["history"])
    assert training["history"][-1]["val_loss"]["a"] < training["history"][0]["val_loss"]["a"]
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(shipped(ids).logits, model.eval()(ids).logits)


def test_resume_after_interruption_gives_the_same_weights(tmp_path):
    straight = run(tmp_path, "straight")
    run(tmp_path, "resumed", stop_after=20)          # "interrupted" after the step-20 checkpoint
    assert (tmp_path / "resumed" / "run" / "state.pt").exists()
    assert not (tmp_path / "resumed" / "out").exists()
    resumed = run(tmp_path, "resumed")
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    history = lambda name: read_manifest(tmp_path / name / "out")["training"]["history"]
    assert history("resumed") == history("straight")  # the loss curve survives the interruption
    assert not list((tmp_path / "resumed" / "run").glob("*.tmp"))  # no half-written files left


def test_batches_depend_only_on_seed_and_step():
    assert torch.equal(get_batch(TOKENS, 7, CFG), get_batch(TOKENS, 7, CFG))
    assert not torch.equal(get_batch(TOKENS, 7, CFG), get_batch(TOKENS, 8, CFG))


def test_learning_rate_schedule():
    assert lr_at(0, CFG) < lr_at(4, CFG) == CFG.lr
    assert abs(lr_at(CFG.steps, CFG) - CFG.min_lr) < 1e-9
