"""Chapter 4's exercise: EAGLE-2's rerank step.

From notebooks/04_dynamic_trees.ipynb: the grader, then the reference solution (for instructors).

    from minispec import exercises
    from minispec.exercises import ch04
    exercises.grade_rerank(ch04.rerank)                  # PASS
"""
from __future__ import annotations

import numbers
import random

import torch

from .common import Fail, Verdict, call_student, judge


# ----------------------------------------------------------------------- the graders
def _candidates(n_cases: int = 60, seed: int = 0):
    """Random candidate sets as EAGLE-2's expansion makes them: parents first, each with the
    head's log q given its parent (<= 0)."""
    rng = random.Random(seed)
    cases = [([-1, -1, 0, 0, 1, 2], [-0.1, -2.0, -0.2, -2.9, -0.1, -0.2], 3),   # a deep confident chain
             ([-1, -1, 0], [-1.5, -0.3, -0.01], 2),                              # a child whose own q beats its uncle's, its path's does not
             ([-1, 0], [-0.5, -0.5], 5)]                                          # fewer candidates than asked
    for _ in range(n_cases):
        parents, logq = [], []
        for i in range(rng.randrange(1, 14)):
            parents.append(rng.randrange(-1, i))
            logq.append(-rng.expovariate(1.0))
        cases.append((parents, logq, rng.randrange(1, len(parents) + 2)))
    return cases


def grade_rerank(fn) -> Verdict:
    """fn(parents, logq, total_tokens) -> the candidates EAGLE-2 keeps, as a list of candidate
    indices in ascending order (so parents precede children). parents[i] is candidate i's
    parent (-1 = the root; parents come first), logq[i] = log q(candidate i | its parent).
    Keep the total_tokens candidates (all, if fewer) whose PATH scores are highest: the score of
    a candidate is the sum of log q along its path from the root."""
    from .. import eagle2   # the package's own rerank; `rerank` below is the reference solution

    def path_scores(parents, logq):
        s = []
        for a, lq in zip(parents, logq):
            s.append(lq + (s[a] if a >= 0 else 0.0))
        return s

    def body():
        cases = _candidates()
        for parents, logq, n in cases:
            want = eagle2.rerank(parents, path_scores(parents, logq), n)
            got = call_student(f"your function (parents {parents}, total_tokens {n})", fn, list(parents), list(logq), n)
            if isinstance(got, torch.Tensor):
                got = got.flatten().tolist()
            if not isinstance(got, (list, tuple)) or not all(isinstance(i, numbers.Integral) and not isinstance(i, bool)
                                                             for i in got):
                raise Fail(f"return a list of candidate indices (ints), got {type(got).__name__}: {got!r:.80}")
            got = [int(i) for i in got]
            if got == want:
                continue
            case = f"parents {parents}, logq {[round(x, 2) for x in logq]}, total_tokens {n}"
            if any(not 0 <= i < len(parents) for i in got) or len(set(got)) != len(got):
                raise Fail(f"{case}: got {got}; return distinct candidate indices in 0..{len(parents) - 1}")
            score = path_scores(parents, logq)
            by_local = sorted(sorted(range(len(logq)), key=lambda i: (-logq[i], i))[:n])
            worst = sorted(sorted(range(len(score)), key=lambda i: (score[i], -i))[:n])
            if sorted(got) == want:
                hint = "the right candidates, in the wrong order: return them in ascending index order (parents first)"
            elif len(got) != len(want):
                hint = f"keep exactly min(total_tokens, number of candidates) = {len(want)} candidates"
            elif sorted(got) == worst and worst != want:
                hint = "you kept the LOWEST scores: sort by score from the highest down"
            elif sorted(got) == by_local or any(parents[i] >= 0 and parents[i] not in got for i in got):
                hint = ("rank by the PATH score (sum of log q from the root down), not by a candidate's own "
                        "log q: then a child never outscores its parent, and the kept set is a tree")
            else:
                hint = "keep the candidates with the highest path scores"
            raise Fail(f"{case}: got {got}, expected {want}; {hint}")
        return f"the rerank step agrees on {len(cases)} candidate sets"
    return judge("EAGLE-2 rerank", body, switch_off=(eagle2.rerank,))


# ----------------------------------------------------------------------- the reference solutions
def rerank(parents: list[int], logq: list[float], total_tokens: int) -> list[int]:
    """Chapter 4: EAGLE-2's rerank. Path score = sum of log q along the path; keep the best
    total_tokens, in candidate order (parents first). Unlike minispec.eagle2.rerank it takes each
    candidate's own log q, and needs no closing under parents: with log q <= 0 a child never
    outscores its parent, and on a tie the parent, made first, sorts first."""
    score = []                                   # score[i]: candidate i's path score
    ### BEGIN SOLUTION
    for parent, lq in zip(parents, logq):
        score.append(lq + (score[parent] if parent >= 0 else 0.0))
    best = sorted(range(len(score)), key=lambda i: (-score[i], i))[:total_tokens]
    return sorted(best)
    ### END SOLUTION
