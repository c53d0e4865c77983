"""Checkpoints: round trip, and a clear error for every kind of bad file."""
import json

import pytest
import torch

from conftest import TINY, tiny_model
from minispec.checkpoint import CheckpointError, load_pretrained, save_pretrained
from minispec.model import ModelConfig, Transformer


def test_round_trip(tmp_path, model):
    save_pretrained(model, tmp_path / "m", name="tiny")
    loaded = load_pretrained(tmp_path / "m", "cpu")
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["name"] == "tiny"


def test_corrupt_weights_are_detected(tmp_path, model):
    d = save_pretrained(model, tmp_path / "m")
    data = bytearray((d / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (d / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_pretrained(d, "cpu")


def test_truncated_file_is_a_clear_error(tmp_path, model):
    d = save_pretrained(model, tmp_path / "m")
    (d / "model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_pretrained(d, "cpu", verify=False)


def test_checkpoint_of_another_config_is_refused(tmp_path, model):
    d = save_pretrained(model, tmp_path / "m")
    other = Transformer(ModelConfig(**{**TINY.to_dict(), "dim": 48, "n_heads": 4}))
    info = json.loads((d / "manifest.json").read_text())
    info["config"] = other.config.to_dict()    # manifest says 48, weights are 32
    (d / "manifest.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="shape"):
        load_pretrained(d, "cpu")


def test_foreign_weights_are_refused(tmp_path, model):
    from safetensors.torch import save_file
    d = save_pretrained(model, tmp_path / "m")
    save_file({"encoder.weight": torch.zeros(3)}, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match="does not match this model"):
        load_pretrained(d, "cpu", verify=False)


def test_nan_weights_are_refused(tmp_path):
    m = tiny_model()
    with torch.no_grad():
        m.norm.weight[0] = float("nan")
    d = save_pretrained(m, tmp_path / "m")
    with pytest.raises(CheckpointError, match="NaN"):
        load_pretrained(d, "cpu")


@pytest.mark.parametrize("manifest, message", [
    (None, "no manifest.json"),
    ("{oops", "not valid JSON"),
    (json.dumps({"format": "pytorch"}), "not a minispec model"),
    (json.dumps({"format": "minispec-model", "config": {"dim": 30, "n_heads": 4}}), "invalid config"),
])
def test_bad_manifests(tmp_path, manifest, message):
    d = tmp_path / "m"
    d.mkdir()
    if manifest is not None:
        (d / "manifest.json").write_text(manifest)
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(d, "cpu")


def test_training_runs_unrolls_warm_restarts_first_run_first():
    """The provenance of a head trained in runs (the appendices of chapters 2 and 5): each row this
    run's tokens and minutes (the manifests record running totals) and the fingerprint of the
    weights it ended with (the next run's starting point); a record without numbers ends it."""
    import json
    from minispec.checkpoint import training_runs
    from minispec.data import DATA_DIR
    manifest = {"sha256": "c" * 64, "training": {
        "command": "train --init B", "tokens_seen": 300, "train_time_s": 420.0,
        "init": {"from": "B", "sha256": "b" * 64, "command": "train --init A", "tokens_seen": 200, "train_time_s": 300.0,
                 "init": {"from": "A", "sha256": "a" * 64, "command": "train", "tokens_seen": 100, "train_time_s": 60.0}}}}
    rows = training_runs(manifest)
    assert [(r["run"], r["command"], r["tokens"], r["tokens_total"], r["minutes"], r["fingerprint"]) for r in rows] == [
        (1, "train", 100, 100, 1.0, "a" * 64), (2, "train --init A", 100, 200, 4.0, "b" * 64),
        (3, "train --init B", 100, 300, 2.0, None)]
    specforge = {"training": {"command": "train --init S", "tokens_seen": 50, "train_time_s": 6.0,
                              "init": {"from": "S", "sha256": "s" * 64, "command": None, "tokens_seen": None,
                                       "train_time_s": None, "init": None}}}
    assert [(r["command"], r["tokens"], r["minutes"]) for r in training_runs(specforge)] == [("train --init S", 50, 0.1)]
    assert training_runs({"sha256": "d" * 64}) == []
    for head in ("eagle1", "eagle3"):
        shipped = json.loads((DATA_DIR / head / "manifest.json").read_text())
        rows = training_runs(shipped)
        assert len(rows) >= 2 and all(r["tokens"] > 0 and r["minutes"] > 0 for r in rows)
        assert all(r["fingerprint"] for r in rows[:-1]) and rows[-1]["fingerprint"] is None
