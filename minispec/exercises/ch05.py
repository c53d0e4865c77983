"""Chapter 5's exercises: the training-time test's attention mask, and EAGLE-3's vocabulary maps.

From notebooks/05_eagle3.ipynb: the graders, then the reference solutions (for instructors).

    from minispec import exercises
    from minispec.exercises import ch05
    exercises.grade_ttt_mask(ch05.ttt_mask)              # PASS
"""
from __future__ import annotations

import random

import torch

from .common import Fail, Verdict, call_student, judge


# ----------------------------------------------------------------------- the graders
def grade_ttt_mask(fn) -> Verdict:
    """fn(T, step) -> the (T, (step + 1) T) additive float mask of EAGLE-3's training-time test at
    unrolled step `step` (0 = real features). Row t is the draft chain started after real
    position t; the keys are the blocks of steps 0, 1, ..., step, T each. Row t sees block 0's
    columns 0..t (the real prefix, causally) and in each later block only column t (its own
    chain's earlier steps, and itself)."""
    from .. import eagle3_train   # the package's own ttt_mask; `ttt_mask` below is the reference solution

    def body():
        for T, step in [(1, 0), (4, 0), (1, 3), (3, 1), (5, 2), (6, 6), (2, 5)]:
            want = eagle3_train.ttt_mask(T, step)
            got = call_student(f"your function (T={T}, step={step})", fn, T, step)
            if not isinstance(got, torch.Tensor):
                raise Fail(f"return a torch.Tensor, got {type(got).__name__}")
            case = f"T={T}, step={step}"
            if got.dtype == torch.bool:
                raise Fail(f"{case}: a boolean mask; attention wants an ADDITIVE float mask (0 = visible, -inf = hidden)")
            if got.shape != want.shape:
                raise Fail(f"{case}: shape {tuple(got.shape)}, expected {tuple(want.shape)}: T rows, and one block "
                           "of T keys for each step 0..step")
            seen, should = got == 0, want == 0
            if torch.equal(seen, should):
                if not bool((got[~seen] <= -1e9).all()):
                    raise Fail(f"{case}: hidden entries must be -inf, so that softmax gives them no weight")
                continue
            r, c = (seen != should).nonzero()[0].tolist()
            block, col = divmod(c, T)
            if block == 0 and col > r:
                hint = "in block 0 (the real features) a chain sees the prefix up to its own start t, not after"
            elif block == 0:
                hint = "in block 0 a chain sees ALL the real positions up to t (causal), not only t"
            elif seen[r, c]:
                hint = (f"in the block of step {block} a chain sees only its own position (column t = row): "
                        "other chains' drafts never exist at inference")
            else:
                hint = (f"the block of step {block} is the chain's own earlier draft (or itself): column t of every "
                        "block 1..step must be visible")
            raise Fail(f"{case}: row {r}, block {block}, column {col} is {'visible' if seen[r, c] else 'hidden'}; {hint}")
        return "the training-time-test mask is right at every step (prefix causal, own chain on the diagonal)"
    return judge("training-time-test mask", body, switch_off=(eagle3_train.ttt_mask,))


def grade_draft_vocab(fn) -> Verdict:
    """fn(counts, size) -> (d2t, t2d) for the draft vocabulary of the `size` most frequent target
    ids (ties: the smaller id), numbered in increasing target-id order: d2t (size,) int64 with
    target id = draft id + d2t[draft id], and t2d (V,) bool marking the target ids kept."""
    from .. import eagle3_train   # the package's own draft_vocab; `draft_vocab` below is the reference solution
    from ..eagle3 import Eagle3Head

    def body():
        rng = random.Random(0)
        cases = [([5, 0, 3, 3, 9, 1], 3), ([1, 1, 1, 1], 2), ([0, 7, 0, 2, 7, 7, 1, 0], 4), ([4, 2], 2)]
        cases += [([rng.randrange(6) for _ in range(20)], rng.randrange(1, 20)) for _ in range(20)]
        for counts, size in cases:
            ids = eagle3_train.draft_vocab(counts, size)
            want_d2t = ids - torch.arange(size)
            want_t2d = torch.zeros(len(counts), dtype=torch.bool)
            want_t2d[ids] = True
            got = call_student(f"your function (counts {counts}, size {size})", fn, list(counts), size)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise Fail("return a pair (d2t, t2d)")
            d2t, t2d = (torch.as_tensor(x) for x in got)
            case = f"counts {counts}, size {size}"
            if t2d.dtype != torch.bool or t2d.shape != (len(counts),):
                raise Fail(f"{case}: t2d must be a bool tensor over the whole target vocabulary, shape "
                           f"({len(counts)},), got {t2d.dtype} {tuple(t2d.shape)}")
            if not torch.equal(t2d, want_t2d):
                hint = ("keep the `size` MOST frequent ids" if t2d.sum() == size else
                        f"keep exactly size = {size} ids")
                if t2d.sum() == size and sorted(counts[i] for i in want_t2d.nonzero().flatten().tolist()) == \
                        sorted(counts[i] for i in t2d.nonzero().flatten().tolist()):
                    hint = "break ties in the counts by the smaller target id"
                raise Fail(f"{case}: t2d marks {t2d.nonzero().flatten().tolist()}, expected "
                           f"{want_t2d.nonzero().flatten().tolist()}; {hint}")
            if d2t.shape != (size,) or d2t.is_floating_point():
                raise Fail(f"{case}: d2t must be an integer tensor of shape ({size},)")
            if torch.equal(d2t, want_d2t):
                continue
            if torch.equal(d2t, ids):
                hint = "d2t holds OFFSETS, not target ids: target id = draft id + d2t[draft id]"
            elif sorted((d2t + torch.arange(size)).tolist()) == ids.tolist():
                hint = "number the draft ids in increasing target-id order, not by frequency"
            elif sorted(d2t.tolist()) == ids.tolist():
                hint = ("d2t holds offsets (target id - draft id), and draft ids follow the target ids' order")
            else:
                hint = "target id = draft id + d2t[draft id]"
            raise Fail(f"{case}: d2t {d2t.tolist()}, expected {want_d2t.tolist()}; {hint}")
        return "d2t and t2d are right on every case (ties, uniform counts, a vocabulary kept whole)"
    return judge("draft vocabulary maps", body, switch_off=(eagle3_train.draft_vocab, Eagle3Head.set_vocab))


# ----------------------------------------------------------------------- the reference solutions
def ttt_mask(T: int, step: int) -> torch.Tensor:
    """Chapter 5: the training-time-test mask at unrolled step `step`: block 0 causal (the real
    prefix), then one block per earlier step where a chain sees only its own position."""
    blocks = []                                  # (T, T) each: step 0's keys, then steps 1..step
    ### BEGIN SOLUTION
    blocks.append(torch.full((T, T), float("-inf")).triu(1))
    for _ in range(step):
        diag = torch.full((T, T), float("-inf"))
        for t in range(T):
            diag[t, t] = 0.0
        blocks.append(diag)
    ### END SOLUTION
    return torch.cat(blocks, dim=1)


def draft_vocab(counts: list[int], size: int):
    """Chapter 5: EAGLE-3's draft vocabulary maps. The `size` most frequent target ids (ties: the
    smaller id), numbered in increasing target-id order; d2t[i] = target id - i, t2d marks them."""
    ### BEGIN SOLUTION
    ranked = sorted(range(len(counts)), key=lambda i: (-counts[i], i))[:size]
    ids = sorted(ranked)
    ### END SOLUTION
    t2d = torch.zeros(len(counts), dtype=torch.bool)
    ### BEGIN SOLUTION
    d2t = torch.tensor([t - i for i, t in enumerate(ids)], dtype=torch.long)
    t2d[ids] = True
    ### END SOLUTION
    return d2t, t2d
