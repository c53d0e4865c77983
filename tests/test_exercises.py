"""The exercise graders: each passes its reference solution and fails the typical wrong answers,
with a message that points at the mistake."""
import pytest
import torch

from minispec import exercises
from minispec.exercises import ch00, ch01, ch02, ch03, ch04, ch05, ch06
from minispec.checks import verify_without_residual
from minispec.verify import residual
from minispec.sampling import sample


# ------------------------------------------------------------------ cached greedy decoding
def greedy_without_cache(model, prompt, n):
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt):]


def greedy_refeeding_everything(model, prompt, n):
    """Keeps a cache but feeds the whole sequence each step: entries are duplicated."""
    cache, seq = model.new_cache(), list(prompt)
    for _ in range(n):
        seq.append(int(model(torch.tensor([seq[-len(prompt):]]), cache=cache).logits[0, -1].argmax()))
    return seq[len(prompt):]


def greedy_off_by_one(model, prompt, n):
    """Takes the prediction of the second-to-last prompt position first."""
    cache = model.new_cache()
    logits = model(torch.tensor([prompt]), cache=cache).logits[0]
    out = [int(logits[max(len(prompt) - 2, 0)].argmax())]
    while len(out) < n:
        out.append(int(model(torch.tensor([[out[-1]]]), cache=cache).logits[0, -1].argmax()))
    return out


def test_cached_greedy_grader():
    assert exercises.grade_cached_greedy(ch00.cached_greedy)
    r = exercises.grade_cached_greedy(greedy_without_cache)
    assert not r and "without a cache" in r.message
    r = exercises.grade_cached_greedy(greedy_refeeding_everything)
    assert not r
    r = exercises.grade_cached_greedy(greedy_off_by_one)
    assert not r and "token 0" in r.message
    as_tensors = lambda model, prompt, n: [torch.tensor(t) for t in ch00.cached_greedy(model, prompt, n)]
    assert exercises.grade_cached_greedy(as_tensors)            # 0-d tensors are token ids too
    r = exercises.grade_cached_greedy(lambda model, prompt, n: greedy_without_cache(model.forward, prompt, n))
    assert not r and "never called" in r.message


# ------------------------------------------------------------------ KV-cache rollback
@pytest.mark.parametrize("wrong, words", [
    (lambda cache, L, n: cache.rollback(L + n + 1), "rejected"),
    (lambda cache, L, n: cache.rollback(L + n - 1), "too many"),
    (lambda cache, L, n: None, "not rolled back"),
    # the right length, but x_2..x_{n+1} kept in place of x_1..x_n
    (lambda cache, L, n: cache.compact([L - 1, *range(L + 1, min(L + n + 1, cache.length))], start=L - 1)
     if L + n < cache.length else cache.rollback(L + n), "contents"),
])
def test_rollback_grader(wrong, words):
    assert exercises.grade_rollback(ch00.rollback)
    r = exercises.grade_rollback(wrong)
    assert not r and words in r.message, r


# ------------------------------------------------------------------ prompt lookup
def lookup_earliest(tokens, k, max_ngram=3, min_ngram=1):
    for n in range(max_ngram, min_ngram - 1, -1):
        if n < len(tokens):
            for start in range(len(tokens) - n):
                if tokens[start:start + n] == tokens[-n:]:
                    return tokens[start + n:start + n + k]
    return []


def lookup_with_self_match(tokens, k, max_ngram=3, min_ngram=1):
    for n in range(max_ngram, min_ngram - 1, -1):
        for start in range(len(tokens) - n, -1, -1):  # includes the suffix itself: proposes nothing useful
            if start >= 0 and tokens[start:start + n] == tokens[-n:]:
                return tokens[start + n:start + n + k]
    return []


def lookup_shortest_first(tokens, k, max_ngram=3, min_ngram=1):
    for n in range(min_ngram, max_ngram + 1):
        if n < len(tokens):
            for start in range(len(tokens) - n - 1, -1, -1):
                if tokens[start:start + n] == tokens[-n:]:
                    return tokens[start + n:start + n + k]
    return []


def lookup_ignoring_min_ngram(tokens, k, max_ngram=3, min_ngram=1):
    return ch01.prompt_lookup(tokens, k, max_ngram, 1)


def test_prompt_lookup_grader():
    assert exercises.grade_prompt_lookup(ch01.prompt_lookup)
    for wrong in (lookup_earliest, lookup_with_self_match, lookup_shortest_first, lookup_ignoring_min_ngram):
        r = exercises.grade_prompt_lookup(wrong)
        assert not r and "expected" in r.message, wrong.__name__


# ------------------------------------------------------------------ the verifier
def verify_residual_unnormalised(drafts, q, p, generator=None):
    """Inverse-CDF sampling from max(0, p - q) without dividing by its sum: the missing mass
    falls on the last token."""
    for i, x in enumerate(drafts):
        if torch.rand(1, generator=generator) * q[i, x] >= p[i, x]:
            r = (p[i] - q[i]).clamp(min=0)
            u = torch.rand(1, generator=generator)
            return i, min(int(torch.searchsorted(r.cumsum(0), u)), p.shape[-1] - 1)
    return len(drafts), int(sample(p[len(drafts)], generator))


def verify_bonus_from_wrong_row(drafts, q, p, generator=None):
    """The bonus token drawn from p[k-1] (the last draft's row) instead of p[k]."""
    for i, x in enumerate(drafts):
        if torch.rand(1, generator=generator) * q[i, x] >= p[i, x]:
            return i, int(sample(residual(p[i], q[i]), generator))
    return len(drafts), int(sample(p[max(len(drafts) - 1, 0)], generator))


def verify_inverted_ratio(drafts, q, p, generator=None):
    """Accepts with probability min(1, q/p)."""
    for i, x in enumerate(drafts):
        if torch.rand(1, generator=generator) * p[i, x] >= q[i, x]:
            return i, int(sample(residual(p[i], q[i]), generator))
    return len(drafts), int(sample(p[len(drafts)], generator))


def verify_one_u_for_all_drafts(drafts, q, p, generator=None):
    """Draws a single uniform and reuses it for every draft: acceptances become correlated."""
    u = torch.rand(1, generator=generator)
    for i, x in enumerate(drafts):
        if u * q[i, x] >= p[i, x]:
            return i, int(sample(residual(p[i], q[i]), generator))
    return len(drafts), int(sample(p[len(drafts)], generator))


def test_verifier_grader_passes_the_solution():
    """Seconds of sampling: where nbgrader is installed, tests/test_assignments.py's autograde already
    runs exactly this grader on the solution (chapter 1's solved notebook) and checks its full marks."""
    import importlib.util
    if importlib.util.find_spec("nbgrader") is not None:
        pytest.skip("run by tests/test_assignments.py: nbgrader autogrades chapter 1's solution with this grader")
    assert exercises.grade_verifier(ch01.verify)


def test_a_copy_of_the_package_s_own_function_passes_its_grader():
    """The package's implementation of an exercise is switched off while a learner's function is
    graded (see the end of this file) by swapping ITS code object: a learner's copy of that code
    still runs, and passes. Shown on the tree verifier's grader (the same `judge` as every grader's;
    the verifier grader's distribution tests would take seconds more)."""
    import types
    from minispec.tree import DraftTree, verify_tree_greedy
    copy = types.FunctionType(verify_tree_greedy.__code__, verify_tree_greedy.__globals__, "my_verify_tree",
                              verify_tree_greedy.__defaults__)
    assert exercises.grade_tree_greedy(lambda tokens, parents, logits: copy(DraftTree(tokens, parents), logits))


def right_on_one_hot_inputs(wrong):
    """Behaves like the solution when p and q are one-hot (the grader's deterministic corner
    cases), like `wrong` otherwise: only the distribution test can catch it."""
    def verifier(drafts, q, p, generator=None):
        one_hot = bool((p.max(-1).values == 1).all()) and bool((q.max(-1).values == 1).all())
        return (ch01.verify if one_hot else wrong)(drafts, q, p, generator)
    return verifier


@pytest.mark.parametrize("wrong", [verify_residual_unnormalised, verify_bonus_from_wrong_row,
                                   verify_inverted_ratio, verify_without_residual, verify_one_u_for_all_drafts])
def test_verifier_grader_catches_wrong_verifiers_by_their_distribution(wrong):
    """Each caught by the model-free rounds already (their message), before any generation."""
    r = exercises.grade_verifier(right_on_one_hot_inputs(wrong))
    assert not r, wrong.__name__
    assert "p_0, p_1, p_2" in r.message and "distribution" in r.message and "FAIL" in repr(r)


def test_the_verifier_grader_s_generations_catch_a_bonus_from_the_wrong_row_on_their_own():
    """The model-free rounds catch every verifier above first; the whole generations of a small
    model, the grader's last check, must have power of their own (3.3-4.1x the critical value
    over five seeds at 1,000 generations, with the perfect draft)."""
    from minispec.exercises.ch01 import _verifier_generations
    from minispec.exercises.common import Fail
    with pytest.raises(Fail, match="perfect draft"):
        _verifier_generations(right_on_one_hot_inputs(verify_bonus_from_wrong_row), 1000)


def test_verifier_grader_reports_a_crash_and_a_bad_return():
    r = exercises.grade_verifier(lambda d, q, p, g: 1 / 0)
    assert not r and "ZeroDivisionError" in r.message
    r = exercises.grade_verifier(lambda d, q, p, g: len(d))
    assert not r and "(n_accepted, next_token)" in r.message


# ------------------------------------------------------------------ chapters 2 and 3
def test_eagle_pairs_grader():
    assert exercises.grade_eagle_pairs(ch02.eagle_pairs)
    assert not exercises.grade_eagle_pairs(lambda t, f: (t[:-1], f[:-1], f[1:]))      # no token shift
    assert not exercises.grade_eagle_pairs(lambda t, f: (t[1:], f[:-1], f[:-1]))      # predicts f_t
    assert not exercises.grade_eagle_pairs(lambda t, f: (t[1:], f[1:], f[1:]))        # reads f_{t+1}
    assert not exercises.grade_eagle_pairs(lambda t, f: (t, f, f))                     # no pairs at all


def test_tree_mask_grader():
    assert exercises.grade_tree_mask(ch03.tree_mask)

    def parent_only(parents):                      # forgets the grandparents
        n = len(parents) + 1
        m = torch.full((n, n), float("-inf"))
        m[:, 0] = 0.0
        for i, a in enumerate(parents):
            m[i + 1, i + 1] = m[i + 1, a + 1] = 0.0
        return m
    causal = lambda parents: torch.full((len(parents) + 1,) * 2, float("-inf")).triu(1)   # a chain's mask
    boolean = lambda parents: ch03.tree_mask(parents) == 0
    no_root = lambda parents: torch.cat([torch.full((len(parents) + 1, 1), float("-inf")),
                                         ch03.tree_mask(parents)[:, 1:]], 1)
    for wrong in (parent_only, causal, boolean, no_root):
        assert not exercises.grade_tree_mask(wrong), wrong


def test_tree_greedy_grader():
    assert exercises.grade_tree_greedy(ch03.tree_greedy)

    def first_child_only(tokens, parents, logits):   # never tries a second sibling
        acc, node = [], -1
        while True:
            c = int(logits[node + 1].argmax())
            kids = [i for i, a in enumerate(parents) if a == node]
            if not kids or tokens[kids[0]] != c:
                return acc, c
            acc.append(kids[0])
            node = kids[0]

    def bonus_from_last_row(tokens, parents, logits):
        acc, _ = ch03.tree_greedy(tokens, parents, logits)
        return acc, int(logits[-1].argmax())

    def any_depth(tokens, parents, logits):         # matches tokens against their own row
        acc, node = [], -1
        for i, a in enumerate(parents):
            if a == node and tokens[i] == int(logits[i + 1].argmax()):
                acc.append(i)
                node = i
        return acc, int(logits[node + 1].argmax())
    for wrong in (first_child_only, bonus_from_last_row, any_depth):
        assert not exercises.grade_tree_greedy(wrong), wrong


def test_rerank_grader():
    assert exercises.grade_rerank(ch04.rerank)

    def by_own_logq(parents, logq, n):              # ranks by the node's own q: not a tree
        return sorted(sorted(range(len(logq)), key=lambda i: -logq[i])[:n])

    def by_score_order(parents, logq, n):           # the right set, best first
        keep = ch04.rerank(parents, logq, n)
        s = []
        for a, lq in zip(parents, logq):
            s.append(lq + (s[a] if a >= 0 else 0.0))
        return sorted(keep, key=lambda i: -s[i])

    def one_too_many(parents, logq, n):
        return ch04.rerank(parents, logq, n + 1)

    def worst_first(parents, logq, n):              # sorts ascending: keeps the least likely
        s = []
        for a, lq in zip(parents, logq):
            s.append(lq + (s[a] if a >= 0 else 0.0))
        return sorted(sorted(range(len(s)), key=lambda i: s[i])[:n])
    def out_of_range(parents, logq, n):
        return [99] * n

    hints = {by_own_logq: "PATH score", by_score_order: "order", one_too_many: "exactly", worst_first: "LOWEST",
             out_of_range: "distinct candidate indices"}
    for wrong, words in hints.items():
        r = exercises.grade_rerank(wrong)
        assert not r and words in r.message, (wrong, r)


def test_ttt_mask_grader():
    assert exercises.grade_ttt_mask(ch05.ttt_mask)

    def all_causal(T, step):                         # every block causal: sees other chains' drafts
        return torch.cat([torch.full((T, T), float("-inf")).triu(1)] * (step + 1), dim=1)

    def prefix_only(T, step):                        # forgets its own chain's earlier steps
        m = ch05.ttt_mask(T, step)
        m[:, T:] = float("-inf")
        return m

    def diagonal_prefix(T, step):                    # block 0 as a diagonal too
        m = ch05.ttt_mask(T, step)
        m[:, :T] = ch05.ttt_mask(T, 1)[:, T:]
        return m

    def boolean(T, step):
        return ch05.ttt_mask(T, step) == 0

    def last_block_only(T, step):                    # one block: the current step's keys alone
        return ch05.ttt_mask(T, 0)

    hints = {all_causal: "only its own position", prefix_only: "must be visible", diagonal_prefix: "ALL the real",
             boolean: "ADDITIVE", last_block_only: "one block"}
    for wrong, words in hints.items():
        r = exercises.grade_ttt_mask(wrong)
        assert not r and words in r.message, (wrong, r)


def test_draft_vocab_grader():
    assert exercises.grade_draft_vocab(ch05.draft_vocab)

    def ids_not_offsets(counts, size):
        d2t, t2d = ch05.draft_vocab(counts, size)
        return d2t + torch.arange(size), t2d

    def by_frequency(counts, size):                  # draft ids numbered by rank, not by target id
        ranked = sorted(range(len(counts)), key=lambda i: (-counts[i], i))[:size]
        t2d = torch.zeros(len(counts), dtype=torch.bool)
        t2d[ranked] = True
        return torch.tensor([t - i for i, t in enumerate(ranked)]), t2d

    def least_frequent(counts, size):
        ranked = sorted(sorted(range(len(counts)), key=lambda i: (counts[i], i))[:size])
        t2d = torch.zeros(len(counts), dtype=torch.bool)
        t2d[ranked] = True
        return torch.tensor([t - i for i, t in enumerate(ranked)]), t2d

    def index_list(counts, size):                    # t2d as the kept ids, not a mask
        d2t, t2d = ch05.draft_vocab(counts, size)
        return d2t, t2d.nonzero().flatten()

    def ties_by_larger_id(counts, size):
        ranked = sorted(sorted(range(len(counts)), key=lambda i: (-counts[i], -i))[:size])
        t2d = torch.zeros(len(counts), dtype=torch.bool)
        t2d[ranked] = True
        return torch.tensor([t - i for i, t in enumerate(ranked)]), t2d

    hints = {ids_not_offsets: "OFFSETS", by_frequency: "increasing target-id order", least_frequent: "MOST frequent",
             index_list: "bool tensor", ties_by_larger_id: "ties"}
    for wrong, words in hints.items():
        r = exercises.grade_draft_vocab(wrong)
        assert not r and words in r.message, (wrong, r)


def test_suffix_grow_grader():
    """Passes the reference; fails the usual mistakes, each with its hint: a node scored by its
    own frequency, no cap by the match's length, level by level instead of best-first, nodes
    below min_token_prob kept."""
    import heapq
    assert exercises.grade_suffix_grow(ch06.suffix_grow)

    def grown(node, budget, p, own=False, level_by_level=False):
        tokens, parents, scores, heap, made = [], [], [], [], 0

        def push(below, parent, score):
            nonlocal made
            total = sum(c[0] for c in below[1].values())
            for t, child in sorted(below[1].items()):
                s = (1.0 if own else score) * child[0] / total
                if s >= p:
                    heapq.heappush(heap, ((made if level_by_level else -s), made, child, parent, t))
                    made += 1
        push(node, -1, 1.0)
        while heap and len(tokens) < budget:
            key, _, child, parent, t = heapq.heappop(heap)
            s = (-key if not level_by_level else None)
            tokens.append(t); parents.append(parent)
            if level_by_level:                                   # recompute the true path score
                s = (scores[parent] if parent >= 0 else 1.0) * child[0] / sum(
                    c[0] for c in (node if parent < 0 else _node_below(node, tokens, parents, parent))[1].values())
            scores.append(s)
            push(child, len(tokens) - 1, s)
        return tokens, parents, scores

    cap = lambda m, total, f: min(total, int(f * m))
    wrong = {
        "own": lambda n, m, total, f, p: grown(n, cap(m, total, f), p, own=True),
        "cap": lambda n, m, total, f, p: grown(n, total, p),
        "level": lambda n, m, total, f, p: grown(n, cap(m, total, f), p, level_by_level=True),
        "min_prob": lambda n, m, total, f, p: grown(n, cap(m, total, f), 0.0),
    }
    hints = {"own": "PRODUCT", "cap": "the cap", "level": "best-first", "min_prob": "min_token_prob"}
    for name, fn in wrong.items():
        r = exercises.grade_suffix_grow(fn)
        assert not r and hints[name] in r.message, (name, r)


def _node_below(node, tokens, parents, i):
    path = []
    while i >= 0:
        path.append(tokens[i])
        i = parents[i]
    for t in reversed(path):
        node = node[1][t]
    return node


# ------------------------------------------------------------------ no passing by calling the package
def _cheats():
    """For each grader, an answer that only calls the package's own implementation of it."""
    from minispec.eagle2 import rerank
    from minispec.eagle3 import Eagle3Head
    from minispec.eagle3_train import draft_vocab, ttt_mask
    from minispec.generation import autoregressive, generate
    from minispec.model import ModelConfig
    from minispec.sampling import SamplingParams
    from minispec.speculative import PromptLookupDrafter
    from minispec.suffix import grow
    from minispec.tree import DraftTree, verify_tree_greedy
    from minispec.verify import verify_sampling

    def path_rerank(parents, logq, n):
        s = []
        for a, lq in zip(parents, logq):
            s.append(lq + (s[a] if a >= 0 else 0.0))
        return rerank(parents, s, n)

    def maps_from_a_head(counts, size):
        cfg = ModelConfig(vocab_size=size, dim=8, n_layers=1, n_heads=2, ffn_dim=8, max_seq_len=8)
        head = Eagle3Head(cfg, len(counts))                    # builds its maps with set_vocab
        head.set_vocab(draft_vocab(torch.tensor(counts), size))
        return head.d2t, head.t2d

    def maps_from_draft_vocab(counts, size):
        ids = draft_vocab(torch.tensor(counts), size)
        t2d = torch.zeros(len(counts), dtype=torch.bool)
        t2d[ids] = True
        return ids - torch.arange(size), t2d

    return [
        (exercises.grade_cached_greedy, lambda model, prompt, n: generate(model, prompt, n).tokens, "generate"),
        (exercises.grade_cached_greedy, lambda model, prompt, n: autoregressive(
            model, prompt, n, SamplingParams(0.0), None, None)[0], "autoregressive"),
        (exercises.grade_prompt_lookup, lambda tokens, k, hi, lo: PromptLookupDrafter(
            64, max_ngram=hi, min_ngram=lo).lookup(tokens, k), "PromptLookupDrafter.lookup"),
        (exercises.grade_verifier, verify_sampling, "verify_sampling"),
        (exercises.grade_tree_mask, lambda parents: DraftTree([0] * len(parents), parents).mask(), "DraftTree.mask"),
        (exercises.grade_tree_greedy, lambda tokens, parents, logits: verify_tree_greedy(
            DraftTree(tokens, parents), logits), "verify_tree_greedy"),
        (exercises.grade_rerank, path_rerank, "rerank"),
        (exercises.grade_ttt_mask, ttt_mask, "ttt_mask"),
        (exercises.grade_draft_vocab, maps_from_a_head, "set_vocab"),
        (exercises.grade_draft_vocab, maps_from_draft_vocab, "draft_vocab"),
        (exercises.grade_suffix_grow, lambda node, m, total, f, p: grow(node, m, total, f, p, 10 ** 6), "grow"),
    ]


@pytest.mark.parametrize("grader, cheat, name", _cheats(), ids=[c[2] for c in _cheats()])
def test_a_grader_fails_an_answer_that_calls_the_package(grader, cheat, name):
    """While the learner's function runs, the package's own implementation of the exercise
    refuses (naming itself); afterwards it works again."""
    verdict = grader(cheat)
    assert not verdict and "switched off" in verdict.message and name in verdict.message, verdict
    assert exercises.grade_rerank(ch04.rerank)                  # graders still use the package
