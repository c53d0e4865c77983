"""Pictures of chapter 1's rounds: every token coloured by its fate, and one round drawn."""
from __future__ import annotations

import html

from .notebook import fmt_prob


FATE_COLORS = {"accepted": "#b7e4c7", "rejected": "#f4a6a6", "unchecked": "#e9e9e9",
               "correction": "#ffd166", "bonus": "#a0c4ff", "plain": "#ffffff"}
FATE_HELP = {"accepted": "accepted draft", "rejected": "rejected draft",
             "unchecked": "draft after a rejection (never checked)",
             "correction": "target's correction (after a rejection)", "bonus": "bonus token (all accepted)",
             "plain": "target's token, nothing drafted"}


def round_fates(record: dict) -> list[tuple[int, str]]:
    """[(token, fate), ...] of one round, in order: its drafts (a tree round lists its accepted
    path), then the target's token: the bonus, a correction (something was drafted and refused),
    or a plain step (nothing was drafted)."""
    out = [(row["token"], "accepted" if row["accepted"] else ("rejected" if row["checked"] else "unchecked"))
           for row in record["drafts"]]
    last = "bonus" if record["bonus"] else ("correction" if record["n_drafted"] else "plain")
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
