"""Chapter 6's exercise: growing SuffixDecoding's draft tree from a matched trie node.

From notebooks/06_suffix_decoding.ipynb: the grader, then the reference solution (for instructors).

    from minispec import exercises
    from minispec.exercises import ch06
    exercises.grade_suffix_grow(ch06.suffix_grow)        # PASS
"""
from __future__ import annotations

import math
import numbers
import random

from .common import Fail, Verdict, call_student, judge


# ----------------------------------------------------------------------- the graders
def _cases(n_cases: int = 60, seed: int = 0):
    """(trie, matched suffix, total_tokens, max_spec_factor, min_token_prob): tries over short
    texts of a small vocabulary (so that continuations repeat and branch), the node of a suffix
    the trie holds with a continuation, and settings where each cap binds in some case."""
    from ..suffix import SuffixTrie
    rng = random.Random(seed)
    cases = []
    fixed = [([1, 2, 3, 4, 1, 2, 3, 5, 1, 2, 6, 7, 1, 2, 3, 4], [1, 2], 10, 10.0, 0.0),   # siblings 3 x3, 6 x1
             ([1, 2, 3, 4, 1, 2, 3, 5, 1, 2, 6, 7, 1, 2, 3, 4], [1, 2], 10, 1.0, 0.0),    # the cap: 1 x 2 tokens
             ([5, 6, 5, 7, 5, 6, 5, 8, 5, 6], [5], 10, 10.0, 0.3),                          # min_token_prob cuts
             ([1, 2, 9, 9, 9, 9, 1, 3, 1, 2, 9, 9, 9, 9], [1], 4, 10.0, 0.0)]              # total_tokens binds
    for text, suffix, total, factor, p in fixed:
        trie = SuffixTrie(12)
        trie.add(text)
        cases.append((trie, suffix, total, factor, p))
    while len(cases) < n_cases:
        trie = SuffixTrie(rng.randrange(4, 10))
        for _ in range(rng.randrange(1, 4)):
            trie.add([rng.randrange(5) for _ in range(rng.randrange(5, 30))])
        text = [rng.randrange(5) for _ in range(3)]
        nodes = trie.suffix_nodes(text)
        held = [m for m in range(1, len(nodes) + 1) if nodes[m - 1][1]]
        if held:
            m = rng.choice(held)
            cases.append((trie, text[len(text) - m:], rng.randrange(1, 12), rng.choice([0.5, 1.0, 2.0, 4.0]),
                          rng.choice([0.0, 0.0, 0.1, 0.25])))
    return cases


def _node(trie, suffix):
    node = trie.root
    for t in suffix:
        node = node[1][t]
    return node


def _paths(node, tokens, parents):
    """Each drafted node's token path below `node`, or a Fail naming the first invalid one."""
    paths = []
    for i, (t, a) in enumerate(zip(tokens, parents)):
        if not -1 <= a < i:
            raise Fail(f"node {i} has parent {a}: parents come first (-1 = the matched node)")
        path = (paths[a] if a >= 0 else ()) + (t,)
        below = node
        for step in path:
            below = below[1].get(step)
            if below is None:
                raise Fail(f"node {i} (token path {list(path)}) never followed the matched suffix in the trie")
        paths.append(path)
    if len(set(paths)) != len(paths):
        raise Fail("a continuation is drafted twice: each trie node at most once")
    return paths


def grade_suffix_grow(fn) -> Verdict:
    """fn(node, match_len, total_tokens, max_spec_factor, min_token_prob) -> (tokens, parents,
    scores): SuffixDecoding's draft tree below `node` (a SuffixTrie node [count, {token: child}],
    the matched suffix of match_len tokens), best-first by score, the product along the path of
    count(child) / (the counts of it and its siblings); no node scoring below min_token_prob; at
    most min(total_tokens, int(max_spec_factor * match_len)) nodes; parents[i] is node i's parent
    (-1 = the matched node), parents first."""
    from .. import suffix   # the package's own grow; `suffix_grow` below is the reference solution

    def body():
        cases = _cases()
        for trie, sfx, total, factor, p in cases:
            node, m = _node(trie, sfx), len(sfx)
            want = suffix.grow(node, m, total, factor, p, 10 ** 6)
            case = f"suffix {sfx}, total_tokens {total}, max_spec_factor {factor}, min_token_prob {p}"
            got = call_student(f"your function ({case})", fn, node, m, total, factor, p)
            if not (isinstance(got, (tuple, list)) and len(got) == 3):
                raise Fail(f"return (tokens, parents, scores), three lists; got {type(got).__name__}: {got!r:.80}")
            tokens, parents, scores = (list(x) for x in got)
            if not (len(tokens) == len(parents) == len(scores)):
                raise Fail(f"{case}: tokens, parents and scores must have one entry per node")
            if not all(isinstance(x, numbers.Integral) for x in tokens + parents) or \
                    not all(isinstance(s, numbers.Real) for s in scores):
                raise Fail(f"{case}: tokens and parents are ints, scores numbers")
            paths = _paths(node, tokens, parents)
            true = [_path_score(node, path) for path in paths]
            budget = min(total, int(factor * m))
            if any(not math.isclose(s, t, rel_tol=1e-6) for s, t in zip(scores, true)):
                own = [_path_score(node, path[-1:], _node_at(node, path[:-1])) for path in paths]
                hint = ("a node's score is the PRODUCT of the frequencies along its path, not its own frequency"
                        if all(math.isclose(s, o, rel_tol=1e-6) for s, o in zip(scores, own)) else
                        "score = product over the path of count(child) / (the counts of it and its siblings)")
                raise Fail(f"{case}: scores {[round(s, 3) for s in scores]}, expected "
                           f"{[round(t, 3) for t in true]} for those nodes; {hint}")
            if any(t < p - 1e-12 for t in true):
                raise Fail(f"{case}: a node scores {min(true):.3f} < min_token_prob {p}: never draft it")
            if len(tokens) > budget:
                raise Fail(f"{case}: {len(tokens)} nodes, at most {budget} = min(total_tokens, "
                           f"int(max_spec_factor x match_len)): the cap")
            if [round(s, 9) for s in sorted(true, reverse=True)] != [round(s, 9) for s in sorted(want[2], reverse=True)]:
                hint = ("too few nodes: keep growing while candidates at or above min_token_prob remain"
                        if len(tokens) < len(want[0]) else
                        "best-first: always take the highest-scoring candidate of all so far (a heap), "
                        "not level by level")
                raise Fail(f"{case}: drafted scores {[round(s, 3) for s in sorted(true, reverse=True)]}, expected "
                           f"{[round(s, 3) for s in sorted(want[2], reverse=True)]}; {hint}")
        return f"the draft trees agree on {len(cases)} matched suffixes"
    return judge("SuffixDecoding's draft tree", body, switch_off=(suffix.grow,))


def _node_at(node, path):
    for t in path:
        node = node[1][t]
    return node


def _path_score(node, path, start=None):
    """The product of count(child) / (its and its siblings' counts) along path below node."""
    at, score = start if start is not None else node, 1.0
    for t in path:
        score *= at[1][t][0] / sum(c[0] for c in at[1].values())
        at = at[1][t]
    return score


# ----------------------------------------------------------------------- the reference solutions
def suffix_grow(node, match_len: int, total_tokens: int, max_spec_factor: float, min_token_prob: float):
    """Chapter 6: the draft tree below a matched trie node, best-first by path frequency."""
    import heapq
    budget = min(total_tokens, int(max_spec_factor * match_len))
    tokens, parents, scores = [], [], []
    ### BEGIN SOLUTION
    heap, made = [], 0                           # (-score, order made, trie node, parent index, token)

    def push(below, parent, score):
        nonlocal made
        total = sum(child[0] for child in below[1].values())
        for token, child in below[1].items():
            s = score * child[0] / total
            if s >= min_token_prob:
                heapq.heappush(heap, (-s, made, child, parent, token))
                made += 1
    push(node, -1, 1.0)
    while heap and len(tokens) < budget:
        neg, _, child, parent, token = heapq.heappop(heap)
        tokens.append(token); parents.append(parent); scores.append(-neg)
        push(child, len(tokens) - 1, -neg)
    ### END SOLUTION
    return tokens, parents, scores
