"""Chapter 3's exercises: the tree attention mask, and greedy tree verification.

From notebooks/03_token_trees.ipynb: the graders, then the reference solutions (for instructors).

    from minispec import exercises
    from minispec.exercises import ch03
    exercises.grade_tree_mask(ch03.tree_mask)            # PASS
"""
from __future__ import annotations

import numbers
import random

import torch

from .common import Fail, Verdict, as_ids, call_student, judge


# ----------------------------------------------------------------------- the graders
def _random_trees(n_trees: int = 40, seed: int = 0):
    rng = random.Random(seed)
    trees = [[], [-1], [-1, 0, 1], [-1, -1, -1], [-1, -1, 0, 0, 1, 4]]
    for _ in range(n_trees):
        parents = []
        for i in range(rng.randrange(1, 9)):
            parents.append(rng.randrange(-1, i))
        trees.append(parents)
    return trees


def grade_tree_mask(fn) -> Verdict:
    """fn(parents: list[int]) -> the (N+1, N+1) additive float mask over [root, node 0, ...,
    node N-1]: 0 where a row may look (the root, its ancestors, itself), -inf elsewhere.
    parents[i] is node i's parent, -1 for the root, and parents come first."""
    from ..tree import DraftTree

    def body():
        for parents in _random_trees():
            want = DraftTree([0] * len(parents), parents).mask()
            got = call_student(f"your function (parents {parents})", fn, list(parents))
            if not isinstance(got, torch.Tensor):
                raise Fail(f"return a torch.Tensor, got {type(got).__name__}")
            case = f"parents {parents}"
            if got.dtype == torch.bool:
                raise Fail(f"{case}: a boolean mask; attention wants an ADDITIVE float mask (0 = visible, "
                           "-inf = hidden): some implementations silently misread booleans")
            if got.shape != want.shape:
                raise Fail(f"{case}: shape {tuple(got.shape)}, expected {tuple(want.shape)} (the root is row 0)")
            seen, should = got == 0, want == 0
            if torch.equal(seen, should) and bool((got[~seen] <= -1e9).all()):
                continue
            if torch.equal(seen, should):
                raise Fail(f"{case}: hidden entries must be -inf (or as negative as "
                           "torch.finfo(torch.float32).min), so that softmax gives them no weight")
            bad = (seen != should).nonzero()[0].tolist()
            r, c = bad
            if should[r, c] and c == 0:
                hint = "every row sees the root (column 0): it is the last real token"
            elif should[r, c] and r == c:
                hint = "every node sees itself (the diagonal)"
            elif should[r, c]:
                hint = "a node sees ALL its ancestors, not only its parent: walk up the parents"
            elif c > r:
                hint = "a row sees nothing after it: children come after their parents"
            else:
                hint = "siblings and cousins are hidden: only the path from the root"
            raise Fail(f"{case}: row {r} column {c} is {'visible' if seen[r, c] else 'hidden'}; {hint}")
        return "the tree mask is right on every tree (chains, stars, deep and random shapes)"
    return judge("tree attention mask", body, switch_off=(DraftTree.mask,))


def grade_tree_greedy(fn) -> Verdict:
    """fn(tokens, parents, logits (N+1, V)) -> (accepted nodes, next token): greedy tree
    verification. Row 0 of logits is the target after the root, row 1 + i after node i. From
    the root, follow the child whose token is the target's argmax, as deep as it goes; then the
    next token is the argmax at the last accepted node (the bonus, or the correction)."""
    from ..tree import DraftTree, verify_tree_greedy

    def body():
        g = torch.Generator().manual_seed(0)
        V = 6
        cases = []
        for parents in _random_trees(120, seed=1):
            tokens = torch.randint(0, V, (len(parents),), generator=g).tolist()
            logits = torch.randn(len(parents) + 1, V, generator=g)
            cases.append((tokens, parents, logits))
        # a case where the right child is the SECOND sibling, and one where a deep path is accepted
        cases.append(([1, 2, 3], [-1, -1, 1], torch.eye(V)[[2, 0, 3, 5]] * 5))
        cases.append(([2, 2], [-1, 0], torch.eye(V)[[2, 2, 4]] * 5))
        for tokens, parents, logits in cases:
            want = verify_tree_greedy(DraftTree(tokens, parents), logits)
            got = call_student(f"your function (tokens {tokens}, parents {parents})", fn, list(tokens), list(parents), logits.clone())
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise Fail("return (accepted_nodes, next_token)")
            acc, nxt = as_ids(got[0], "accepted nodes"), got[1]
            nxt = int(nxt) if isinstance(nxt, (numbers.Integral, torch.Tensor)) else nxt
            if (acc, nxt) == (list(want[0]), want[1]):
                continue
            case = f"tokens {tokens}, parents {parents}, the target's argmax per row {logits.argmax(-1).tolist()}"
            if acc == list(want[0]):
                hint = ("the next token comes from the row of the LAST ACCEPTED node (row 0 if none), "
                        "not from the last row")
            elif len(acc) < len(want[0]) and acc == list(want[0])[:len(acc)]:
                hint = ("you stopped too early: when the first child does not match, try its siblings; "
                        "keep walking down from every accepted node")
            elif len(acc) > len(want[0]):
                hint = "accept a child only if its token equals the argmax at its PARENT's row"
            else:
                hint = "walk from the root: at node a, the target's choice is argmax(logits[a + 1])"
            raise Fail(f"{case}: got ({acc}, {nxt}), expected ({list(want[0])}, {want[1]}); {hint}")
        return f"greedy tree verification agrees on {len(cases)} trees"
    return judge("greedy tree verification", body, switch_off=(verify_tree_greedy,))


# ----------------------------------------------------------------------- the reference solutions
def tree_mask(parents: list[int]) -> torch.Tensor:
    """Chapter 3: the additive attention mask over [root, nodes] of a draft tree."""
    n = len(parents) + 1
    mask = torch.full((n, n), float("-inf"))
    for row in range(n):
        ### BEGIN SOLUTION
        mask[row, 0] = 0.0                      # the root
        node = row - 1
        while node >= 0:                        # the node itself, then its ancestors
            mask[row, node + 1] = 0.0
            node = parents[node]
        ### END SOLUTION
    return mask


def tree_greedy(tokens: list[int], parents: list[int], logits: torch.Tensor):
    """Chapter 3: greedy tree verification. Returns (accepted nodes, next token)."""
    accepted, node = [], -1
    while True:
        choice = int(logits[node + 1].argmax())            # the target's token after `node`
        ### BEGIN SOLUTION
        child = None
        for i, parent in enumerate(parents):
            if parent == node and tokens[i] == choice:
                child = i
                break
        if child is None:
            return accepted, choice
        accepted.append(child)
        node = child
        ### END SOLUTION
