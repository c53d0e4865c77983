"""minispec: a teaching reference implementation of lossless speculative decoding."""
from .checkpoint import CheckpointError, load_pretrained
from .data import DATA_DIR, DOMAINS, load_prompts
from .device import default_device, seed_everything
from .generation import Generation, generate
from .model import KVCache, ModelConfig, Transformer
from .sampling import SamplingParams
from .stats import GenerationStats
from .tokenizer import Tokenizer

__version__ = "0.1.0"


def load_tokenizer(path=None) -> Tokenizer:
    """The project's BPE tokenizer (data/tokenizer.json)."""
    return Tokenizer.load(path or DATA_DIR / "tokenizer.json")


def load_target(device=None) -> Transformer:
    """The shipped target model (data/target), on the best available device."""
    return load_pretrained(DATA_DIR / "target", device)


def load_draft(device=None) -> Transformer:
    """The shipped draft LM of chapter 1 (data/draft)."""
    return load_pretrained(DATA_DIR / "draft", device)
