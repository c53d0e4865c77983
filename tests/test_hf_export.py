"""The Hugging Face export: transformers' Llama gives the same logits and greedy text."""
import pytest
import torch

from conftest import tiny_model
from minispec import generate
from minispec.hf import export_hf

transformers = pytest.importorskip("transformers")


def load_hf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.mark.parametrize("seed", [0, 1])
def test_logits_equal_on_random_inputs(tmp_path, seed):
    model = tiny_model(seed)
    hf = load_hf(export_hf(model, tmp_path / "hf"))
    ids = torch.randint(0, model.vocab_size, (2, 40), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids).logits, atol=1e-4, rtol=0)


def test_greedy_generations_agree(tmp_path):
    model = tiny_model(3)
    hf = load_hf(export_hf(model, tmp_path / "hf"))
    prompt = [5, 17, 2, 40, 9]
    ours = generate(model, prompt, max_new_tokens=30).tokens
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=30, do_sample=False,
                          eos_token_id=None, pad_token_id=0)
    assert out[0, len(prompt):].tolist() == ours


def test_shipped_target_exports(tmp_path):
    from minispec import load_target
    target = load_target("cpu")
    hf = load_hf(export_hf(target, tmp_path / "hf"))
    ids = torch.randint(0, target.vocab_size, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, target(ids).logits, atol=1e-4, rtol=0)
