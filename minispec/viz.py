"""Notebook helpers: show the package's own code, step through decoding, draw what happened.

The notebooks import these instead of keeping copies of the package's code: one concept, one
place. The steppers hold the logic of the notebooks' widgets, so that a normal cell (checked by
nbval) runs the same code a learner clicks through.
"""
from __future__ import annotations

import functools
import html
import inspect
import math
import threading

import torch

from .sampling import SamplingParams, sample, warp
from .verify import residual, verify_sampling


def show(obj) -> "IPython.display.Code":
    """Render the source of a function or class from the package, with highlighting."""
    from IPython.display import Code
    return Code(inspect.getsource(obj), language="python")


_CALLBACKS = threading.Lock()


def one_at_a_time(callback):
    """A widget callback that never runs beside another one. A Jupyter kernel may run widget
    callbacks on more than one thread (ipykernel 7 routes widget messages to subshells, and lets
    them in while a cell runs); two callbacks stepping one generation at once would corrupt its
    caches. Every callback wrapped here takes the same lock."""
    @functools.wraps(callback)
    def run(*args, **kwargs):
        with _CALLBACKS:
            return callback(*args, **kwargs)
    return run


def fmt_prob(x: float) -> str:
    """A probability that stays readable when small: 0.412, 0.003, 2.7e-05, 0."""
    return "0" if x == 0 else (f"{x:.3f}" if x >= 1e-3 else f"{x:.1e}")


class DecodeStepper:
    """Plain decoding one token at a time, with the distribution each token was drawn from.

    `params` may be changed between steps (the notebook's sliders do). step() returns the top
    tokens of the warped distribution p, their probabilities, and the token chosen.
    """

    def __init__(self, target, prompt_ids, params=SamplingParams(1.0), seed=0):
        from .generation import check_prompt
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
        p = warp(logits, self.params)                                               # (V,)
        tok = int(logits.argmax()) if self.params.greedy else int(sample(p, self.generator))
        probs, ids = p.topk(top)
        self.tokens.append(tok)
        self._pending = [tok]
        return {"top_tokens": ids.tolist(), "top_probs": probs.tolist(), "token": tok,
                "p_token": float(p[tok]), "entropy": float(-(p * p.clamp_min(1e-30).log()).sum())}


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
        from .generation import check_prompt
        from .methods import make_drafter
        self.target, self.gamma, self.params = target, gamma, params
        self.tokens = check_prompt(prompt_ids, 1, target.max_seq_len)
        self.prompt_len = len(self.tokens)
        self.drafter = make_drafter(method, target, draft, target.max_seq_len, gamma=gamma)
        self.cache = target.new_cache()
        self.generator = torch.Generator(device=target.device).manual_seed(seed)
        self.history: list[dict] = []
        self._u = None
        if len(self.tokens) > 1:
            with torch.inference_mode():
                target(torch.tensor([self.tokens[:-1]], device=target.device), cache=self.cache)

    def _verify_and_record_u(self, drafts, q, p, generator):
        """verify_sampling, after noting the uniforms it is about to draw (its first draw)."""
        state = generator.get_state()
        self._u = torch.rand(len(drafts), generator=generator, device=p.device).tolist()
        generator.set_state(state)
        return verify_sampling(drafts, q, p, generator)

    @torch.inference_mode()
    def step(self, top: int = 8) -> dict:
        from .speculative import speculative_round
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
        record = {"start": start, "last_token": self.tokens[start - 1], "drafts": rows, "n_accepted": n, "next_token": r.next_token,
                  "bonus": 0 < n == len(drafts), "residual": res, "greedy": greedy,
                  "bonus_choice": choices[len(drafts)]}
        self.history.append(record)
        return record


# ----------------------------------------------------------------------------- pictures
FATE_COLORS = {"accepted": "#b7e4c7", "rejected": "#f4a6a6", "unchecked": "#e9e9e9",
               "correction": "#ffd166", "bonus": "#a0c4ff", "plain": "#ffffff"}
FATE_HELP = {"accepted": "accepted draft", "rejected": "rejected draft",
             "unchecked": "draft after a rejection (never checked)",
             "correction": "target's correction (after a rejection)", "bonus": "bonus token (all accepted)",
             "plain": "target's token, nothing drafted"}


def round_fates(record: dict) -> list[tuple[int, str]]:
    """[(token, fate), ...] of one round, in order: its drafts, then the target's token."""
    out = [(row["token"], "accepted" if row["accepted"] else ("rejected" if row["checked"] else "unchecked"))
           for row in record["drafts"]]
    last = "bonus" if record["bonus"] else ("correction" if record["drafts"] else "plain")
    return out + [(record["next_token"], last)]


class Trace:
    """Speculative decoding, token by token, coloured by fate; renders as HTML in a notebook."""

    def __init__(self, tokenizer, prompt_ids, records, prompt_chars: int = 200):
        self.tokenizer, self.prompt_ids, self.records = tokenizer, list(prompt_ids), records
        self.prompt_chars = prompt_chars

    def counts(self) -> dict[str, int]:
        c = dict.fromkeys(FATE_COLORS, 0)
        for r in self.records:
            for _, fate in round_fates(r):
                c[fate] += 1
        return c

    def __repr__(self) -> str:
        return f"Trace of {len(self.records)} rounds: " + ", ".join(f"{v} {k}" for k, v in self.counts().items())

    def _repr_html_(self) -> str:
        piece = lambda t: html.escape(self.tokenizer.token_str(t)).replace("\n", "↵<br>")
        legend = " ".join(f'<span style="background:{c};padding:0 4px">{FATE_HELP[f]}</span>'
                          for f, c in FATE_COLORS.items())
        prompt = self.tokenizer.decode(self.prompt_ids)[-self.prompt_chars:]
        parts = [f'<div style="font-size:85%;margin-bottom:4px">{legend}</div>',
                 '<div style="font-family:monospace;white-space:pre-wrap;line-height:1.7">',
                 f'<span style="color:#888">{html.escape(prompt)}</span>']
        for i, r in enumerate(self.records):
            parts.append(f'<sub style="color:#999">{i + 1}</sub>')
            for t, fate in round_fates(r):
                strike = "text-decoration:line-through;" if fate in ("rejected", "unchecked") else ""
                parts.append(f'<span title="{fate}" style="background:{FATE_COLORS[fate]};{strike}'
                             f'border-radius:3px;padding:0 1px">{piece(t)}</span>')
            parts.append('<span style="color:#bbb">|</span>')
        return "".join(parts) + "</div>"


def plot_round(record: dict, tokenizer, ax=None):
    """One round as a picture: the target's input (the last token and the drafts), the output
    row that verifies each draft, and where the correction or bonus token comes from."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch
    rows, k = record["drafts"], len(record["drafts"])
    ax = ax or plt.subplots(figsize=(1.9 * (k + 1) + 1, 3.4))[1]
    name = lambda t: repr(tokenizer.token_str(t))[:12]
    fates = round_fates(record)

    def box(x, y, text, color, edge="#555"):
        ax.add_patch(FancyBboxPatch((x - 0.42, y - 0.2), 0.84, 0.4, boxstyle="round,pad=0.02",
                                    fc=color, ec=edge))
        ax.text(x, y, text, ha="center", va="center", fontsize=8)

    for j in range(k + 1):
        # bottom: the target's input at column j; middle: its output row p_{j+1}
        box(j, 0, ("last token\n" + name(record["last_token"])) if j == 0 else f"draft x{j}\n" + name(rows[j - 1]["token"]),
            "#ffffff" if j == 0 else FATE_COLORS[fates[j - 1][1]])
        ax.annotate("", (j, 0.8), (j, 0.2), arrowprops=dict(arrowstyle="->", color="#777"))
        top = record["bonus_choice"] if j == k else rows[j]["target_choice"]
        box(j, 1.0, f"p{j + 1}: top {name(top)}", "#f7f7f7")
        if j < k:  # p_{j+1} verifies draft x_{j+1} (the next column)
            row = rows[j]
            if not row["checked"]:
                verdict, color = "not checked", FATE_COLORS["unchecked"]
            elif record["greedy"]:
                verdict, color = ("x = top: keep" if row["accepted"] else "x != top: reject",
                                  FATE_COLORS["accepted" if row["accepted"] else "rejected"])
            else:
                verdict = (f"p={fmt_prob(row['p'])} q={fmt_prob(row['q'])}\nu={row['u']:.2f} "
                           + ("< p/q: keep" if row["accepted"] else ">= p/q: reject"))
                color = FATE_COLORS["accepted" if row["accepted"] else "rejected"]
            box(j + 0.5, 1.8, verdict, color)
            ax.annotate("", (j + 0.42, 1.6), (j, 1.2), arrowprops=dict(arrowstyle="->", color="#777"))
            ax.annotate("", (j + 0.58, 1.6), (j + 1, 0.2), arrowprops=dict(arrowstyle="->", color="#bbb",
                                                                            ls="--"))
    n = record["n_accepted"]
    kind = fates[-1][1]                       # bonus, correction, or plain (nothing drafted)
    src = "from norm(max(0, p%d - q%d))" % (n + 1, n + 1) if kind == "correction" else "from p%d" % (n + 1)
    if record["greedy"]:
        src = "argmax of p%d" % (n + 1)
    x = n if kind != "correction" else n + 0.5   # above p_{k+1}, or above the rejected draft's verdict
    box(x, 2.6, f"{kind}: {name(record['next_token'])}\n{src}", FATE_COLORS[kind])
    ax.annotate("", (x, 2.4), (x, 2.0 if kind == "correction" else 1.2),
                arrowprops=dict(arrowstyle="->", color="#333", lw=1.5))
    ax.set_xlim(-0.6, k + 0.6); ax.set_ylim(-0.35, 2.9); ax.axis("off")
    ax.set_title(f"one round: {k} drafts, {n} accepted, +1 {kind} token = {n + 1} tokens for one target pass",
                 fontsize=9)
    return ax


# ----------------------------------------------------------------------------- trees (chapter 3)
def tree_fates(tree, accepted: list[int]) -> list[str]:
    """The fate of every node of a verified tree: "accepted" (on the accepted path), "rejected"
    (tried and refused: children of a visited node tried before the accepted one, or all of the
    last visited node's children), "unchecked" (never looked at). Siblings are tried in order."""
    fates = ["unchecked"] * len(tree)
    visited = [-1] + list(accepted)
    for depth, node in enumerate(visited):
        nxt = accepted[depth] if depth < len(accepted) else None
        for child in tree.children(node):
            if child == nxt:
                fates[child] = "accepted"
                break
            fates[child] = "rejected"
    return fates


class TreeStepper(_Stepper):
    """One tree round at a time with an EAGLE-1 head (method "eagle1-tree", or "eagle1" for a
    chain; or any drafter given, e.g. EAGLE-2's), through the package's own speculative_round.
    step() returns a record with the tree, the accepted nodes, every node's fate, the target's
    top choice after the root and after every node, and the rows the coloured trace reads
    ("drafts": the accepted path)."""

    def __init__(self, target, head, prompt_ids, choices=None, params=SamplingParams(0.0), seed=0,
                 drafter=None):
        from .eagle import Eagle1Drafter
        from .generation import check_prompt
        self.target, self.params = target, params
        self.tokens = check_prompt(prompt_ids, 1, target.max_seq_len)
        self.prompt_len = len(self.tokens)
        self.generator = torch.Generator(device=target.device).manual_seed(seed)
        self.history: list[dict] = []
        self.set_drafter(drafter or Eagle1Drafter(head, target, target.max_seq_len, choices))

    @torch.inference_mode()
    def set_drafter(self, drafter) -> None:
        """Continue with another drafter (e.g. new settings): the target reads the text so far
        again, and the new drafter, which must be fresh (it has seen no text), is shown its
        features."""
        self.drafter = drafter
        self.cache = self.target.new_cache(self.target.max_seq_len + drafter.extra_nodes)
        if len(self.tokens) > 1:
            out = self.target(torch.tensor([self.tokens[:-1]], device=self.target.device), cache=self.cache,
                              hidden_layers=drafter.feature_layers, logits_to_keep=1)
            drafter.observe(self.tokens, {i: h[0] for i, h in out.hidden_states.items()})

    @torch.inference_mode()
    def step(self) -> dict:
        from .speculative import speculative_round
        k = min(self.drafter.gamma, self.target.max_seq_len - len(self.tokens) - 1)
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
                  "bonus": len(tree) > 0 and leaf}
        self.history.append(record)
        return record


def tree_layout(tree) -> dict[int, tuple[float, int]]:
    """(x, depth) of every node (-1 = the root): leaves side by side, parents centred above."""
    pos, nxt = {}, [0.0]

    def place(node, depth):
        kids = tree.children(node)
        if not kids:
            pos[node] = (nxt[0], depth)
            nxt[0] += 1.0
        else:
            for c in kids:
                place(c, depth + 1)
            pos[node] = (sum(pos[c][0] for c in kids) / len(kids), depth)
    place(-1, 0)
    return pos


def plot_tree(record: dict, tokenizer, ax=None):
    """A verified draft tree: the root (the last token) on top, each node's token, coloured by
    fate (accepted path, rejected, never checked), and the token the target added. When the
    drafter scored its nodes (EAGLE-2), each shows its path confidence exp(score) in percent."""
    import matplotlib.pyplot as plt
    tree, fates = record["tree"], record["fates"]
    pos = tree_layout(tree)
    width = max(x for x, _ in pos.values()) + 1
    depth = max(d for _, d in pos.values())
    ax = ax or plt.subplots(figsize=(max(5, 1.15 * width), 1.1 * (depth + 2)))[1]
    name = lambda t: repr(tokenizer.token_str(t))[:10]
    color = {"accepted": FATE_COLORS["accepted"], "rejected": FATE_COLORS["rejected"],
             "unchecked": FATE_COLORS["unchecked"]}
    for node, (x, d) in pos.items():
        if node >= 0:
            px, pd = pos[tree.parents[node]]
            on_path = fates[node] == "accepted"
            ax.plot([px, x], [-pd, -d], color="#2d6a4f" if on_path else "#bbb", lw=2.5 if on_path else 1, zorder=1)
    for node, (x, d) in pos.items():
        text = ("root\n" + name(record["last_token"])) if node < 0 else name(tree.tokens[node])
        if node >= 0 and tree.scores is not None:
            conf = 100 * math.exp(tree.scores[node])
            text += f"\n{conf:.0f}%" if conf >= 10 else f"\n{conf:.1f}%"
        fc = "#ffffff" if node < 0 else color[fates[node]]
        ax.text(x, -d, text, ha="center", va="center", fontsize=8, zorder=2,
                bbox=dict(boxstyle="round,pad=0.3", fc=fc, ec="#555"))
    last = record["accepted"][-1] if record["accepted"] else -1
    x, d = pos[last]
    kind = "bonus" if record["bonus"] else "correction"
    ax.annotate(f"{kind}: {name(record['next_token'])}", (x, -d - 0.25), (x, -d - 0.85), ha="center",
                fontsize=8, bbox=dict(boxstyle="round,pad=0.3", fc=FATE_COLORS[kind], ec="#555"),
                arrowprops=dict(arrowstyle="<-", color="#333"))
    ax.set_xlim(-0.7, width - 0.3); ax.set_ylim(-depth - 1.3, 0.6); ax.axis("off")
    ax.set_title(f"{len(tree)} drafted nodes, {len(record['accepted'])} accepted, +1 {kind} token", fontsize=9)
    return ax


def plot_tree_mask(tree, tokenizer=None, accepted=(), ax=None):
    """The tree's attention mask over [root, nodes]: a dark cell = the row's token may attend to
    the column's (the cached prefix, not drawn, is visible to every row). Rows of the accepted
    path are marked with a bar on the left."""
    import matplotlib.pyplot as plt
    visible = (tree.mask() == 0).float().numpy()
    n = visible.shape[0]
    ax = ax or plt.subplots(figsize=(0.32 * n + 2, 0.32 * n + 1.2))[1]
    ax.imshow(visible, cmap="Greens", vmin=0, vmax=1.3)
    labels = ["root"] + [f"{i}" + (f" {tokenizer.token_str(t)!r}"[:9] if tokenizer else "")
                         for i, t in enumerate(tree.tokens)]
    ax.set_xticks(range(n)); ax.set_yticks(range(n))
    ax.set_xticklabels(["root"] + [str(i) for i in range(n - 1)], fontsize=7)
    ax.set_yticklabels(labels, fontsize=7)
    for i in accepted:
        ax.add_patch(plt.Rectangle((-0.5, i + 0.5), n, 1, fill=False, ec="#d62828", lw=1.5))
    ax.set_xlabel("attends to (key)"); ax.set_ylabel("node (query)")
    return ax


def plot_ttt_mask(T: int = 6, steps: int = 3, ax=None):
    """EAGLE-3's training-time-test attention, all unrolled steps in one picture: rows are the
    queries of steps 0..steps-1 (T chains each), columns the keys of the same steps. A dark cell
    = visible. Step j's rows see step 0's keys causally (the real prefix) and, in each block
    1..j, only their own chain's position (minispec.eagle3.ttt_mask); later steps are unseen."""
    import matplotlib.pyplot as plt
    from .eagle3 import ttt_mask
    n = T * steps
    visible = torch.zeros(n, n)
    for j in range(steps):
        visible[j * T:(j + 1) * T, :(j + 1) * T] = (ttt_mask(T, j) == 0).float()
    ax = ax or plt.subplots(figsize=(0.3 * n + 2, 0.3 * n + 1.2))[1]
    ax.imshow(visible.numpy(), cmap="Greens", vmin=0, vmax=1.3)
    for j in range(1, steps):
        ax.axhline(j * T - 0.5, color="0.4", lw=0.8)
        ax.axvline(j * T - 0.5, color="0.4", lw=0.8)
    ticks = [j * T + (T - 1) / 2 for j in range(steps)]
    ax.set_xticks(ticks); ax.set_yticks(ticks)
    ax.set_xticklabels([f"step {j} keys" for j in range(steps)], fontsize=8)
    ax.set_yticklabels([f"step {j}\nchains t=0..{T - 1}" for j in range(steps)], fontsize=8)
    ax.set_title("training-time test: who sees whom")
    return ax
