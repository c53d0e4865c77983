"""Decoding statistics, with the counter names vLLM reports.

    tau (mean acceptance length) = 1 + num_accepted_tokens / num_drafts
counts the bonus token, so plain decoding has tau = 1 and a round that accepts all gamma
drafts yields gamma + 1 tokens. Per-position acceptance = accepted_per_pos[i] / num_drafts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class GenerationStats:
    new_tokens: int = 0
    target_calls: int = 0            # target forward passes, prefill included
    wall_time: float = 0.0           # seconds, prefill included
    num_drafts: int = 0              # drafting rounds
    num_draft_tokens: int = 0        # tokens proposed by the drafter
    num_accepted_tokens: int = 0     # proposed tokens the verifier accepted
    accepted_per_pos: list[int] = field(default_factory=list)  # [i]: rounds accepting >= i+1
    accept_lengths: list[int] = field(default_factory=list)    # tokens per target step (Spec-Bench)
    # where the time goes (seconds; exact on a CPU, on a GPU queued work is paid at the next sync)
    prefill_time: float = 0.0        # the target's pass over the prompt
    draft_time: float = 0.0          # drafters proposing
    target_time: float = 0.0         # the target's verification passes
    verify_time: float = 0.0         # the verification rules

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0

    @property
    def mean_acceptance_length(self) -> float:
        """tau: tokens per drafting round, bonus token included (1.0 without drafting)."""
        return 1.0 + self.num_accepted_tokens / self.num_drafts if self.num_drafts else 1.0

    @property
    def acceptance_per_pos(self) -> list[float]:
        return [a / self.num_drafts for a in self.accepted_per_pos] if self.num_drafts else []

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_time if self.wall_time > 0 else 0.0

    @property
    def bookkeeping_time(self) -> float:
        """Everything else: building tensors, rolling caches back, the loop itself."""
        return self.wall_time - self.prefill_time - self.draft_time - self.target_time - self.verify_time

    def record_round(self, num_proposed: int, num_accepted: int, depth: int | None = None) -> None:
        """One drafting round: num_proposed drafted, num_accepted of them kept (a chain's first
        ones, or a tree's path from the root). depth: the tree's depth (a chain: num_proposed);
        accepted_per_pos counts positions along the path, so it has one entry per level."""
        self.num_drafts += 1
        self.num_draft_tokens += num_proposed
        self.num_accepted_tokens += num_accepted
        levels = num_proposed if depth is None else depth
        if len(self.accepted_per_pos) < levels:
            self.accepted_per_pos.extend([0] * (levels - len(self.accepted_per_pos)))
        for i in range(num_accepted):
            self.accepted_per_pos[i] += 1
        self.accept_lengths.append(num_accepted + 1)

    def merge(self, other: "GenerationStats") -> "GenerationStats":
        """Sum of two runs' counters (for per-domain totals)."""
        out = GenerationStats(**{k: v for k, v in asdict(self).items()})
        for k in ("new_tokens", "target_calls", "wall_time", "num_drafts", "num_draft_tokens",
                  "num_accepted_tokens", "prefill_time", "draft_time", "target_time", "verify_time"):
            setattr(out, k, getattr(self, k) + getattr(other, k))
        n = max(len(self.accepted_per_pos), len(other.accepted_per_pos))
        pad = lambda a: a + [0] * (n - len(a))
        out.accepted_per_pos = [x + y for x, y in zip(pad(self.accepted_per_pos), pad(other.accepted_per_pos))]
        out.accept_lengths = self.accept_lengths + other.accept_lengths
        return out
