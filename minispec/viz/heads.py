"""Pictures of draft heads (chapters 2 and 5): what an EAGLE head reads, its layers with their
real sizes and parameter counts, and what it feeds back at the next drafting step."""
from __future__ import annotations

import re


def _count(module) -> str:
    return f"{sum(p.numel() for p in module.parameters()):,} parameters"


def head_blocks(head, target) -> tuple[list[tuple], list[tuple], tuple[str, str]]:
    """The diagram of `head` (an EAGLE-1 or EAGLE-3 head) drafting for `target`, read off the
    modules: boxes (name, text, x, y, kind), arrows (from, to), and the feedback arrow: the box
    the head's output re-enters at the next step, and its label.
    kind: "target" (the target's, frozen), "head" (trained), "tensor" (data)."""
    if getattr(head, "kind", None) not in ("eagle1", "eagle3"):
        raise ValueError(f"no diagram for a {type(head).__name__}: an EAGLE-1 or EAGLE-3 head draws one")
    D, V = head.config.dim, target.vocab_size
    emb = ("emb", f"target's embedding\n{V} x {D}", 1, 0, "target")
    tok = ("tok", ("token $x_{t+1}$\n(drafted or\nsampled)" if getattr(head, "token_shift", True) else
                   "token $x_t$\n(no token shift:\nnot $x_{t+1}$)"), 0, 0, "tensor")
    if head.kind == "eagle1":
        boxes = [tok, emb,
                 ("f", f"target's feature $f_t$\n(after its final norm)\n{D} wide", 1, 1, "tensor"),
                 ("fc", f"fc: [$e$, $f_t$] -> {D}\n{2 * D} -> {D}, with bias\n{_count(head.fc)}", 2, 0.5, "head"),
                 ("layer", f"one decoder layer\n(no input norm)\n{_count(head.layers[0])}", 3, 0.5, "head"),
                 ("out", f"$\\hat f_{{t+1}}$\npredicted feature\n{D} wide", 4, 0.5, "tensor"),
                 ("lm", f"target's LM head\n{D} -> {V}, not trained", 5, 0.5, "target"),
                 ("q", f"$\\hat q$ over all\n{V} tokens", 6, 0.5, "tensor")]
        arrows = [("tok", "emb"), ("emb", "fc"), ("f", "fc"), ("fc", "layer"), ("layer", "out"), ("out", "lm"), ("lm", "q")]
        return boxes, arrows, ("fc", "next step: $\\hat f_{t+1}$ replaces $f_t$ (drafting at the feature level)")
    if head.kind == "eagle3":
        N, layers = head.config.vocab_size, ", ".join(str(i) for i in head.layers)
        boxes = [tok, emb,
                 ("h", f"target's hidden states\nentering layers {layers}\n{len(head.layers)} x {D} wide", 0, 1, "tensor"),
                 ("fc", f"fc: fuse\n{len(head.layers) * D} -> {D}, no bias\n{_count(head.fc)}", 1, 1, "head"),
                 ("layer", f"midlayer: attention reads\n[norm($e$), norm($g_t$)], {2 * D} wide;\nresidual $g_t$; MLP\n"
                           f"{_count(head.midlayer)}", 2.5, 0.5, "head"),
                 ("out", f"$o_t$\n{D} wide", 3.7, 0.5, "tensor"),
                 ("lm", f"norm, own LM head\n{D} -> {N} (draft vocab.)\n{_count(head.lm_head)}", 4.8, 0.5, "head"),
                 ("q", f"$\\hat q$ over {N} tokens,\nd2t maps them to\ntarget ids of {V}", 6, 0.5, "tensor")]
        arrows = [("tok", "emb"), ("emb", "layer"), ("h", "fc"), ("fc", "layer"), ("layer", "out"), ("out", "lm"), ("lm", "q")]
        return boxes, arrows, ("layer", "next step (and the training-time test): $o_t$ replaces $g_t$")
    raise ValueError(f"no diagram for a {type(head).__name__}: an EAGLE-1 or EAGLE-3 head draws one")


def plot_head(head, target, ax=None):
    """An EAGLE head as boxes and arrows, sizes and parameter counts read from the real modules:
    blue for the target's parts (frozen), orange for what the head trains, white for tensors; the
    dashed arrow is what a head feeds back at its next drafting step."""
    import matplotlib.pyplot as plt
    boxes, arrows, (back_to, feedback) = head_blocks(head, target)
    ax = ax or plt.subplots(figsize=(14, 3.6))[1]
    colour = {"target": "#cde4f5", "head": "#f8d5b8", "tensor": "#ffffff"}
    at = {name: (x, -y) for name, _, x, y, _ in boxes}
    for name, text, x, y, kind in boxes:
        ax.text(x, -y, text, ha="center", va="center", fontsize=8, zorder=2,
                bbox=dict(boxstyle="round,pad=0.4", fc=colour[kind], ec="#444"))
    half = {name: 0.017 * max(len(re.sub(r"[$\\{}_]|hat ", "", ln)) for ln in text.split("\n")) + 0.1
            for name, text, *_ in boxes}                        # half a box's width, in data units
    for a, b in arrows:                                         # from the right edge of a to the left edge of b
        ax.annotate("", (at[b][0] - half[b], at[b][1]), (at[a][0] + half[a], at[a][1]), zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color="#333", lw=1.2, shrinkA=2, shrinkB=2))
    ax.annotate(feedback, at[back_to], ha="center", fontsize=8, color="#9d0208",
                xytext=(at["out"][0], at["out"][1] + 0.85),
                arrowprops=dict(arrowstyle="-|>", color="#9d0208", ls="--", connectionstyle="arc3,rad=0.4",
                                shrinkA=4, shrinkB=30))
    ax.set_xlim(-0.7, 6.7); ax.set_ylim(-1.6, 1.1); ax.axis("off")
    ax.set_title(f"the {head.kind.replace('eagle', 'EAGLE-')} head: blue = the target's (frozen), orange = trained", fontsize=9)
    return ax
