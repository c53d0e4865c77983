"""The peers a user would pick instead of minispec: transformers' own decoding on the same
weights, exported to the Hugging Face Llama format (minispec.hf), for `bench --peers hf`.

    hf               model.generate, greedy (plain decoding: the yardstick of every peer)
    hf-assisted      assisted generation with the draft model as assistant_model, with the
                     assistant's default schedule (recent transformers: a constant 20 tokens
                     and a confidence threshold of 0.4 that stops drafting early)
    hf-assisted-gG   the same with exactly G assistant tokens per round and the confidence
                     stop turned off: speculative sampling with gamma = G, like minispec's sps
    hf-pld-gG        prompt lookup decoding (prompt_lookup_num_tokens = G)

Every peer is timed like minispec's methods (wall time of the whole call, prefill included),
on one sequence, greedy, float32, with the same prompts and stopping rule (max_new_tokens, or
the end-of-text token, which is kept).
"""
from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import torch

from .stats import GenerationStats


class HFPeers:
    """transformers models of the target (and the draft) and the peers' generate calls."""

    def __init__(self, target, draft=None, gamma: int = 2, pld_gamma: int = 6, eos_id: int | None = None):
        try:
            from transformers import AutoModelForCausalLM
        except ImportError:
            raise ValueError("--peers hf needs transformers: pip install -e '.[hf]'") from None
        from .hf import export_hf
        self.device, self.eos_id, self.gamma, self.pld_gamma = target.device, eos_id, gamma, pld_gamma
        with tempfile.TemporaryDirectory() as tmp:
            load = lambda m, name: AutoModelForCausalLM.from_pretrained(
                export_hf(m, Path(tmp) / name, eos_id), dtype=torch.float32).to(self.device).eval()
            self.model = load(target, "target")
            self.assistant = load(draft, "draft") if draft is not None else None
        self.names = ["hf"]
        if self.assistant is not None:
            self.default_config = copy.deepcopy(self.assistant.generation_config)
            self.fixed_config = copy.deepcopy(self.assistant.generation_config)
            self.fixed_config.num_assistant_tokens = gamma
            self.fixed_config.num_assistant_tokens_schedule = "constant"
            self.fixed_config.assistant_confidence_threshold = 0.0        # no early stop
            self.names += ["hf-assisted", f"hf-assisted-g{gamma}"]
        self.names.append(f"hf-pld-g{pld_gamma}")

    def describe(self) -> dict:
        """What ran: the transformers version and each peer's settings."""
        import transformers
        out = {"transformers": transformers.__version__, "hf": "generate, greedy",
               f"hf-pld-g{self.pld_gamma}": {"prompt_lookup_num_tokens": self.pld_gamma}}
        if self.assistant is not None:
            d = self.default_config
            out["hf-assisted"] = {"num_assistant_tokens": d.num_assistant_tokens,
                                  "num_assistant_tokens_schedule": d.num_assistant_tokens_schedule,
                                  "assistant_confidence_threshold": d.assistant_confidence_threshold}
            out[f"hf-assisted-g{self.gamma}"] = {"num_assistant_tokens": self.gamma,
                                                 "num_assistant_tokens_schedule": "constant",
                                                 "assistant_confidence_threshold": 0.0}
        return out

    @torch.inference_mode()
    def generate(self, name: str, ids: list[int], max_new_tokens: int):
        """One greedy generation by peer `name`: (new tokens, GenerationStats with the wall time)."""
        from .generation import Generation
        from .device import cpu_threads, inference_threads, synchronize
        kwargs = {}
        if name.startswith("hf-assisted"):
            self.assistant.generation_config = self.default_config if name == "hf-assisted" else self.fixed_config
            kwargs["assistant_model"] = self.assistant
        elif name.startswith("hf-pld"):
            kwargs["prompt_lookup_num_tokens"] = self.pld_gamma
        elif name != "hf":
            raise ValueError(f"unknown peer {name!r}; peers: {self.names}")
        x = torch.tensor([ids], device=self.device)
        with cpu_threads(inference_threads(self.device)):   # the threads minispec decodes with
            synchronize(self.device)
            t0 = time.perf_counter()
            out = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                                      do_sample=False, eos_token_id=self.eos_id, pad_token_id=self.eos_id, **kwargs)
            synchronize(self.device)
        stats = GenerationStats(wall_time=time.perf_counter() - t0)
        tokens = out[0, len(ids):].tolist()
        stats.new_tokens = len(tokens)
        return Generation(tokens, stats)


class ReferenceSuffix:
    """ArcticInference's SuffixDecoding drafter (the native suffix trees of the `arctic-inference`
    package, as its SuffixDecodingCache.speculate uses them), for comparing tau with minispec's
    on the same text (`studies.suffix_replays`): a tree over the request (prompt and output so far)
    and, optionally, a global tree of finished outputs shared by every request (`new_store()`,
    filled with `add_to_store`); the draft with the higher score wins, a tie going to the request's.
    The cache would also append the running request's output to its global tree; here the global
    tree holds finished outputs only, exactly what minispec's SuffixStore holds."""
    feature_layers = ()

    def __init__(self, prompt: list[int], store=None, total_tokens: int = 16, max_depth: int = 24,
                 max_spec_factor: float = 1.0, min_token_prob: float = 0.1, tree: bool = True,
                 vocab_size: int | None = None):
        self.SuffixTree = _reference_suffix_tree()
        self.store, self.settings = store, (total_tokens, max_spec_factor, 0.0, min_token_prob, tree)
        self.total_tokens = self.budget = self.depth = total_tokens
        self.extra_nodes, self.max_depth = total_tokens - 1, max_depth
        self.local, self.seen = self.SuffixTree(max_depth), len(prompt)
        self.local.extend(0, list(prompt))
        self.vocab_size = vocab_size         # needed only when sampling (a one-hot q per pick)

    @staticmethod
    def new_store(max_depth: int = 24):
        return {"tree": _reference_suffix_tree()(max_depth), "texts": 0}

    @staticmethod
    def add_to_store(store, output: list[int]) -> None:
        store["tree"].extend(store["texts"], list(output))
        store["texts"] += 1

    def propose(self, tokens: list[int], k: int, params, generator=None):
        from .speculative import one_hot
        from .tree import DraftTree
        if len(tokens) > self.seen:
            self.local.extend(0, list(tokens[self.seen:]))
            self.seen = len(tokens)
        context = list(tokens[-self.max_depth:])               # as the cache cuts it
        n, *rest = self.settings
        drafts = [tree.speculate(context, min(k, n), *rest) for tree in
                  [self.local] + ([self.store["tree"]] if self.store is not None else [])]
        best = drafts[0] if len(drafts) == 1 or drafts[0].score >= drafts[1].score else drafts[1]
        drafted = list(best.token_ids)                          # at most min(k, total_tokens) nodes
        q = None if params.greedy or not drafted else one_hot(drafted, self.vocab_size, "cpu")
        return DraftTree(drafted, list(best.parents), q)

    def observe(self, tokens, hidden) -> None:
        pass


def reference_version() -> str:
    """The reference's package and version; a clear error if its suffix trees are not built."""
    from importlib.metadata import PackageNotFoundError, version
    _reference_suffix_tree()
    try:
        return f"arctic-inference {version('arctic-inference')}"
    except PackageNotFoundError:
        return "arctic-inference (built from source)"


def _reference_suffix_tree():
    try:
        from arctic_inference.suffix_decoding._C import SuffixTree
    except ImportError:
        raise ValueError("the reference SuffixDecoding needs arctic-inference's suffix trees "
                         "(arctic_inference.suffix_decoding._C: C++ that builds on a CPU with CMake and nanobind "
                         "from the package's csrc/suffix_decoding)") from None
    return SuffixTree
