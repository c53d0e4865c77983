"""Pictures of draft trees (chapters 3 to 5): nodes by fate, the tree's attention mask, EAGLE-2's
expand and rerank level by level, and EAGLE-3's training-time-test mask."""
from __future__ import annotations

import math

import torch

from ..eagle2 import DynamicTree, rerank
from ..eagle3_train import ttt_mask
from .rounds import FATE_COLORS


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


class RecordedDynamicTree(DynamicTree):
    """EAGLE-2's policy, unchanged (the same trees), keeping what its last round did for
    `plot_expand_rerank`: every level's new candidates and the frontier picked from them
    (`levels`), all candidates (`cand`) and the ones rerank kept (`kept`). A round that drafts
    nothing (no head pass: nothing to catch up on) records nothing and leaves the last one."""

    def grow(self, cand, frontier, logits, params, generator):
        new = super().grow(cand, frontier, logits, params, generator)
        if frontier == [-1]:                  # the root's children: a new round
            self.levels = []
        self.levels.append({"new": new, "frontier": []})
        return new

    def frontier(self, cand, new):
        self.levels[-1]["frontier"] = chosen = super().frontier(cand, new)
        return chosen

    def tree(self, cand, params):
        self.cand, self.kept = cand, rerank(cand.parents, cand.scores, self.total_tokens)
        return super().tree(cand, params)


def plot_expand_rerank(policy: RecordedDynamicTree, tokenizer, ax=None):
    """One round of EAGLE-2 level by level: a column per expand step with every candidate it
    made, best score on top, joined to its parent; a thick border marks the frontier (expanded at
    the next step), a filled box a candidate rerank kept, a grey one a candidate it dropped. Each
    shows its token and path confidence exp(score)."""
    import matplotlib.pyplot as plt
    cand, kept = policy.cand, set(policy.kept)
    rows = max(len(lv["new"]) for lv in policy.levels)
    ax = ax or plt.subplots(figsize=(2.3 * (len(policy.levels) + 1), 0.42 * rows + 1.2))[1]
    pos = {-1: (0, (rows - 1) / 2)}
    for level, lv in enumerate(policy.levels, start=1):
        for row, i in enumerate(sorted(lv["new"], key=lambda i: (-cand.scores[i], i))):
            pos[i] = (level, row + (rows - len(lv["new"])) / 2)
    for i, (x, y) in pos.items():
        if i >= 0:
            px, py = pos[cand.parents[i]]
            ax.plot([px + 0.28, x - 0.28], [-py, -y], color="#2d6a4f" if i in kept else "#ccc", lw=1, zorder=1)
    frontier = {i for lv in policy.levels for i in lv["frontier"]}
    for i, (x, y) in pos.items():
        if i < 0:
            text, fc, lw = "root", "#ffffff", 1
        else:
            conf = 100 * math.exp(cand.scores[i])
            text = repr(tokenizer.token_str(cand.tokens[i])[:7]) + (f" {conf:.0f}%" if conf >= 10 else f" {conf:.2g}%")
            fc, lw = ("#a8dadc" if i in kept else "#eeeeee"), (2.2 if i in frontier else 0.6)
        ax.text(x, -y, text, ha="center", va="center", fontsize=7, zorder=2,
                bbox=dict(boxstyle="round,pad=0.25", fc=fc, ec="#333", lw=lw))
    ax.set_xticks(range(len(policy.levels) + 1))
    ax.set_xticklabels(["root"] + [f"step {k}\n{len(lv['new'])} candidates" for k, lv in enumerate(policy.levels, 1)],
                       fontsize=8)
    ax.tick_params(axis="x", length=0); ax.set_yticks([])
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_xlim(-0.5, len(policy.levels) + 0.5); ax.set_ylim(-rows + 0.4, 0.6)
    ax.set_title(f"expand: eagle_topk {policy.eagle_topk}, {len(policy.levels)} steps (thick border: the frontier); "
                 f"rerank keeps {len(kept)} of {len(cand.tokens)} (filled)", fontsize=9)
    return ax


def plot_ttt_mask(T: int = 6, steps: int = 3, ax=None):
    """EAGLE-3's training-time-test attention, all unrolled steps in one picture: rows are the
    queries of steps 0..steps-1 (T chains each), columns the keys of the same steps. A dark cell
    = visible. Step j's rows see step 0's keys causally (the real prefix) and, in each block
    1..j, only their own chain's position (minispec.eagle3_train.ttt_mask); later steps are unseen."""
    import matplotlib.pyplot as plt
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


def plot_trie(trie, name=str, suffix=(), draft=None, ax=None):
    """A suffix trie (chapter 6): every stretch of the text is a path down from the root, and each
    node shows its token and count (how often the stretch from the root to it occurs). `suffix`:
    a stretch whose path is outlined in blue (the context's matched suffix); `draft`: grow's
    (tokens, parents, scores) below it, whose nodes are filled green with their scores."""
    import matplotlib.pyplot as plt
    from ..tree import DraftTree
    nodes, tokens, parents, frontier = [], [], [], [(trie.root, -1)]
    while frontier:                                       # breadth first: parents before children
        node, parent = frontier.pop(0)
        for token, child in sorted(node[1].items()):
            nodes.append(child); tokens.append(token); parents.append(parent)
            frontier.append((child, len(nodes) - 1))
    pos = tree_layout(DraftTree(tokens, parents))
    index = {id(n): i for i, n in enumerate(nodes)}
    path, node = [], trie.root
    for t in suffix:
        node = node[1][t]
        path.append(index[id(node)])
    scored = {}
    if draft is not None:
        at = {-1: node}
        for i, (t, parent, score) in enumerate(zip(*draft)):
            at[i] = at[parent][1][t]
            scored[index[id(at[i])]] = score
    width, depth = max(x for x, _ in pos.values()) + 1, max(d for _, d in pos.values())
    ax = ax or plt.subplots(figsize=(max(5, 0.75 * width), 0.9 * (depth + 1)))[1]
    for i, (x, d) in pos.items():
        if i >= 0:
            px, pd = pos[parents[i]]
            ax.plot([px, x], [-pd, -d], color="#bbb", lw=1, zorder=1)
    for i, (x, d) in pos.items():
        text = "root" if i < 0 else f"{name(tokens[i])}\n{nodes[i][0]}"
        if i in scored:
            text += f"\n{scored[i]:.2f}"
        fc = FATE_COLORS["accepted"] if i in scored else "#ffffff"
        ax.text(x, -d, text, ha="center", va="center", fontsize=7, zorder=2,
                bbox=dict(boxstyle="round,pad=0.25", fc=fc, ec="#1f5fbf" if i in path else "#555",
                          lw=2.2 if i in path else 0.8))
    ax.set_xlim(-0.7, width - 0.3); ax.set_ylim(-depth - 0.6, 0.6); ax.axis("off")
    return ax
