"""The notebooks' steppers: decoding one step or one round at a time, with everything the
verifier looked at. They hold the logic of the notebooks' widgets, so that a normal cell
(checked by nbval) runs the same code a learner clicks through, and they run the package's own
round (minispec.speculative.speculative_round).
"""
from __future__ import annotations

import torch

from ..drafting import HeadDrafter
from ..eagle import StaticTree
from ..generation import check_prompt
from ..methods import make_drafter
from ..sampling import SamplingParams, entropy, sample, warp
from ..speculative import prefill, speculative_round
from ..verify import residual, verify_sampling
from .trees import tree_fates


class DecodeStepper:
    """Plain decoding one token at a time, with the distribution each token was chosen from.

    `params` may be changed between steps (the notebook's sliders do). step() returns the top
    tokens of the distribution p, their probabilities, its entropy and the token chosen: p is the
    warped distribution the token is sampled from, or, when greedy, the model's own (softmax of
    the logits), whose argmax greedy decoding takes (its warped form, one-hot, shows nothing).
    """

    def __init__(self, target, prompt_ids, params=SamplingParams(1.0), seed=0):
        self.target, self.params = target, params
        self.tokens = check_prompt(prompt_ids, 1, target.max_seq_len)
        self.cache = target.new_cache()
        self.generator = torch.Generator(device=target.device).manual_seed(seed)
        self._pending = self.tokens  # tokens the target has not seen yet

    @torch.inference_mode()
    def step(self, top: int = 10) -> dict:
        if len(self.tokens) >= self.target.max_seq_len:
            raise ValueError("the context is full")
        x = torch.tensor([self._pending], device=self.target.device)
        logits = self.target(x, cache=self.cache, logits_to_keep=1).logits[0, -1]   # (V,)
        p = torch.softmax(logits.float(), -1) if self.params.greedy else warp(logits, self.params)   # (V,)
        tok = int(logits.argmax()) if self.params.greedy else int(sample(p, self.generator))
        probs, ids = p.topk(top)
        self.tokens.append(tok)
        self._pending = [tok]
        return {"top_tokens": ids.tolist(), "top_probs": probs.tolist(), "token": tok,
                "p_token": float(p[tok]), "entropy": abs(float(entropy(p))),      # abs: no -0.00
                "greedy": self.params.greedy}


class _Stepper:
    """What both steppers share: run rounds until enough tokens (or a full context)."""

    def run(self, max_new_tokens: int) -> list[dict]:
        """Rounds until at least max_new_tokens new tokens (or the context is full)."""
        while len(self.tokens) - self.prompt_len < max_new_tokens and len(self.tokens) < self.target.max_seq_len - 1:
            self.step()
        return self.history


class RoundStepper(_Stepper):
    """One speculative round at a time, with everything the verifier looked at.

    Runs the package's own round (speculative.speculative_round) with a draft model ("sps") or
    prompt lookup ("pld"), greedy or sampling. gamma and params may be changed between rounds.
    step() returns a record: for each draft x_i its p(x_i), q(x_i), the uniform u the verifier
    drew, min(1, p/q), the overlap sum_x min(p_i, q_i) (the chance that a draft from q_i is
    accepted), the target's own top choice at that position, and whether it was accepted;
    then the token the target added (a correction after a rejection, or the bonus token) and,
    at a rejection, the residual distribution it was drawn from. `history` keeps every record.
    """

    def __init__(self, target, draft, prompt_ids, gamma=4, params=SamplingParams(1.0), seed=0,
                 method="sps"):
        self.target, self.gamma, self.params = target, gamma, params
        self.tokens = check_prompt(prompt_ids, 1, target.max_seq_len)
        self.prompt_len = len(self.tokens)
        self.drafter = make_drafter(method, target, draft, target.max_seq_len, gamma=gamma)
        self.cache = target.new_cache()
        self.generator = torch.Generator(device=target.device).manual_seed(seed)
        self.history: list[dict] = []
        self._u = None
        with torch.inference_mode():
            prefill(target, self.cache, self.drafter, self.tokens)

    def _verify_and_record_u(self, drafts, q, p, generator):
        """verify_sampling, after noting the uniforms it is about to draw (its first draw)."""
        state = generator.get_state()
        self._u = torch.rand(len(drafts), generator=generator, device=p.device).tolist()
        generator.set_state(state)
        return verify_sampling(drafts, q, p, generator)

    @torch.inference_mode()
    def step(self, top: int = 8) -> dict:
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, int) or self.gamma < 1:
            raise ValueError(f"gamma must be an integer >= 1, got {self.gamma!r}")
        k = min(self.gamma, self.target.max_seq_len - len(self.tokens) - 1)
        if k < 1:
            raise ValueError("the context is full")
        start = len(self.tokens)
        self._u = None
        self.drafter.gamma = self.gamma
        r = speculative_round(self.target, self.cache, self.drafter, self.tokens, k, self.params,
                              self.generator, verifier=self._verify_and_record_u)
        drafts, q = r.tree.tokens, r.tree.q
        n, greedy = len(r.accepted), self.params.greedy
        choices = r.logits.argmax(-1).tolist()                       # (k+1,) the target's top picks
        rows = []
        for i, d in enumerate(drafts):
            p = 1.0 if greedy and d == choices[i] else (0.0 if greedy else float(r.p[i, d]))
            q_x = 1.0 if q is None else float(q[i, d])                # a deterministic drafter: q = 1
            overlap = None if greedy else float(torch.minimum(r.p[i], q[i]).sum())
            rows.append({"token": d, "p": p, "q": q_x, "u": None if greedy else self._u[i], "overlap": overlap,
                         "accept_prob": min(1.0, p / q_x), "target_choice": choices[i],
                         "accepted": i < n, "checked": i <= n})    # drafts after a rejection: unseen
        res = None
        if n < len(drafts) and not greedy:
            vals, ids = residual(r.p[n], q[n]).topk(top)
            res = {"tokens": ids.tolist(), "probs": vals.tolist()}
        record = {"start": start, "last_token": self.tokens[start - 1], "drafts": rows, "n_drafted": len(drafts),
                  "n_accepted": n, "next_token": r.next_token,
                  "bonus": 0 < n == len(drafts), "residual": res, "greedy": greedy,
                  "bonus_choice": choices[len(drafts)]}
        self.history.append(record)
        return record


class TreeStepper(_Stepper):
    """One tree round at a time with an EAGLE-1 head and a static tree of `choices` (method
    "eagle1-tree", or "eagle1" for a chain; or any drafter given, e.g. EAGLE-2's), through the
    package's own speculative_round. step() returns a record with the tree, the accepted nodes, every node's fate, the target's
    top choice after the root and after every node, and the rows the coloured trace reads
    ("drafts": the accepted path)."""

    def __init__(self, target, head, prompt_ids, choices=None, params=SamplingParams(0.0), seed=0,
                 drafter=None):
        self.target, self.params = target, params
        self.tokens = check_prompt(prompt_ids, 1, target.max_seq_len)
        self.prompt_len = len(self.tokens)
        self.generator = torch.Generator(device=target.device).manual_seed(seed)
        self.history: list[dict] = []
        self.set_drafter(drafter or HeadDrafter(head, target, target.max_seq_len, StaticTree(choices)))

    @torch.inference_mode()
    def set_drafter(self, drafter) -> None:
        """Continue with another drafter (e.g. new settings): the target reads the text so far
        again, and the new drafter, which must be fresh (it has seen no text), is shown its
        features."""
        self.drafter = drafter
        self.cache = self.target.new_cache(self.target.max_seq_len + drafter.extra_nodes)
        prefill(self.target, self.cache, drafter, self.tokens)

    @torch.inference_mode()
    def step(self) -> dict:
        k = min(self.drafter.depth, self.target.max_seq_len - len(self.tokens) - 1)
        if k < 1:
            raise ValueError("the context is full")
        start = len(self.tokens)
        r = speculative_round(self.target, self.cache, self.drafter, self.tokens, k, self.params, self.generator)
        tree, acc = r.tree, r.accepted
        leaf = not tree.children(acc[-1] if acc else -1)
        record = {"start": start, "last_token": self.tokens[start - 1], "tree": tree, "accepted": acc,
                  "fates": tree_fates(tree, acc), "next_token": r.next_token, "greedy": self.params.greedy,
                  "target_choice": r.logits.argmax(-1).tolist(), "n_accepted": len(acc),
                  "drafts": [{"token": tree.tokens[i], "accepted": True, "checked": True} for i in acc],
                  "n_drafted": len(tree), "bonus": len(tree) > 0 and leaf}
        self.history.append(record)
        return record


def suffix_round_text(record: dict, drafter, tokenizer, tokens: list[int]) -> str:
    """What a round of SuffixDecoding (chapter 6) matched and drafted, read from the drafter's
    `last` (a SuffixDraft) right after TreeStepper stepped it."""
    last, start, tree = drafter.last, record["start"], record["tree"]
    if not last.tokens:
        return "nothing drafted (no earlier continuation of the context scored enough): a plain step"
    return (f"matched the last {last.match_len} tokens, in the {last.source}: "
            f"{tokenizer.decode(tokens[start - last.match_len:start])!r}\n"
            f"{len(tree)} drafted nodes, expected accepted {last.expected:.2f}, accepted {record['n_accepted']}")
