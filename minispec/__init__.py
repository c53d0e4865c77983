"""minispec: a teaching reference implementation of lossless speculative decoding."""
from .checkpoint import CheckpointError, load_pretrained
from .data import DATA_DIR, DOMAINS, load_prompts
from .device import default_device
from .generation import Generation, generate
from .methods import METHODS
from .cache import KVCache
from .model import ModelConfig, Transformer
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


def load_eagle1(target, directory=None):
    """The shipped EAGLE-1 head of chapters 2 and 3 (data/eagle1), for `target` (which must be
    the target it was trained on), on the target's device."""
    return METHODS["eagle1"].load_draft(target, directory)


def load_eagle3(target, directory=None):
    """The shipped EAGLE-3 head of chapter 5 (data/eagle3), for `target` (which must be the
    target it was trained on), on the target's device."""
    return METHODS["eagle3"].load_draft(target, directory)
