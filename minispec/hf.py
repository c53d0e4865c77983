"""The bridge to Hugging Face: export a minispec model in the Llama format.

minispec's parameter names are LlamaForCausalLM's without the "model." prefix, and its
rotary layout is Llama's "rotate half", so the export is a renaming plus a config.json.
The result loads with transformers.AutoModelForCausalLM.from_pretrained(out_dir).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import atomic_write
from .model import Transformer


def hf_config(model: Transformer, eos_token_id: int | None = None) -> dict:
    c = model.config
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": c.vocab_size, "hidden_size": c.dim, "intermediate_size": c.ffn_dim,
        "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_heads, "head_dim": c.head_dim, "hidden_act": "silu",
        "max_position_embeddings": c.max_seq_len, "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,  # transformers 4.x reads this ...
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},  # ... 5.x this
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
        "bos_token_id": None, "eos_token_id": eos_token_id, "torch_dtype": "float32",
    }


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    return {(k if k.startswith("lm_head.") else "model." + k): v.detach().to("cpu", torch.float32).contiguous()
            for k, v in model.state_dict().items()}


def export_hf(model: Transformer, out_dir, eos_token_id: int | None = None) -> Path:
    """Write out_dir/config.json and out_dir/model.safetensors (Llama format)."""
    from safetensors.torch import save_file
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = hf_state_dict(model)
    atomic_write(out_dir / "model.safetensors", lambda p: save_file(state, p, metadata={"format": "pt"}))
    cfg = json.dumps(hf_config(model, eos_token_id), indent=1) + "\n"
    atomic_write(out_dir / "config.json", lambda p: Path(p).write_text(cfg))
    return out_dir
