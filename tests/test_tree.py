"""Token trees: the mask and positions, scoring a tree in one pass equals decoding each path,
and tree verification is lossless (greedy: identical tokens; sampling: the exact distribution,
with siblings drawn independently, without replacement, or deterministically)."""
import pytest
import torch

from conftest import SMALL, TINY, tiny_model
from minispec import generate
from minispec.checks import chi_square_ok, exact_distribution
from minispec.model import ModelConfig
from minispec.sampling import SamplingParams, sample, warp
from minispec.speculative import speculative_round
from minispec.tree import DraftTree, verify_tree_greedy, verify_tree_sampling
from minispec.verify import residual

PROMPT = [3, 14, 15, 9, 2, 6]


class FixedTree:
    """A drafter that proposes a tree given in advance."""
    extra_nodes, feature_layers = 0, ()

    def __init__(self, tree):
        self.tree = tree

    def propose(self, tokens, k, params, generator=None):
        return self.tree

    def observe(self, tokens, hidden):
        pass


def tree_round(target, cache, tokens, tree, params, generator=None):
    """The package's round on a given tree: returns (accepted nodes, next token)."""
    r = speculative_round(target, cache, FixedTree(tree), tokens, len(tree), params, generator)
    return r.accepted, r.next_token
#        root
#       /    \
#      0      1
#     / \     |
#    2   3    4
#             |
#             5
SHAPE = [-1, -1, 0, 0, 1, 4]


def test_tree_structure():
    t = DraftTree([10, 11, 12, 13, 14, 15], SHAPE)
    assert t.depth == [1, 1, 2, 2, 2, 3]
    assert t.children(-1) == [0, 1] and t.children(0) == [2, 3] and t.children(5) == []
    assert t.paths() == [[0, 2], [0, 3], [1, 4, 5]]
    assert t.position_ids(10).tolist() == [9, 10, 10, 11, 11, 11, 12]
    visible = (t.mask() == 0).int()
    assert visible.tolist() == [[1, 0, 0, 0, 0, 0, 0],
                                [1, 1, 0, 0, 0, 0, 0],
                                [1, 0, 1, 0, 0, 0, 0],
                                [1, 1, 0, 1, 0, 0, 0],
                                [1, 1, 0, 0, 1, 0, 0],
                                [1, 0, 1, 0, 0, 1, 0],
                                [1, 0, 1, 0, 0, 1, 1]]
    chain = DraftTree.chain([7, 8, 9])
    assert chain.parents == [-1, 0, 1] and chain.paths() == [[0, 1, 2]]
    assert torch.equal(chain.mask(), torch.triu(torch.full((4, 4), float("-inf")), 1))
    with pytest.raises(ValueError, match="parents must come first"):
        DraftTree([1, 2], [1, -1])


def test_scoring_a_tree_equals_decoding_each_path(model):
    tree = DraftTree([10, 11, 12, 13, 14, 15], SHAPE)
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.tensor([PROMPT[:-1]]), cache=cache)
        logits = model(torch.tensor([[PROMPT[-1], *tree.tokens]]), cache=cache,
                       position_ids=tree.position_ids(len(PROMPT)), attn_mask=tree.mask()).logits[0]
        for path in tree.paths():
            seq = PROMPT + [tree.tokens[i] for i in path]
            want = model(torch.tensor([seq])).logits[0, len(PROMPT) - 1:]       # root, then the path
            got = logits[[0] + [1 + i for i in path]]
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def greedy_tree(model, tokens, wrong=False):
    """Two candidates at each of 3 levels below the root; the target's own choice among them
    (unless wrong), so greedy verification has a path to follow and siblings to skip."""
    with torch.no_grad():
        toks, parents, node, seq = [], [], -1, list(tokens)
        for _ in range(3):
            best = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            other = (best + 1) % model.vocab_size
            pair = [other, best] if not wrong else [other, (best + 2) % model.vocab_size]
            toks += pair
            parents += [node, node]
            node, seq = len(toks) - 1, seq + [pair[1]]
        return DraftTree(toks, parents)


def test_greedy_tree_rounds_equal_plain_greedy(model):
    want = generate(model, PROMPT, 30).tokens
    for wrong in (False, True):
        tokens, cache = list(PROMPT), model.new_cache()
        with torch.no_grad():
            model(torch.tensor([tokens[:-1]]), cache=cache)
            while len(tokens) - len(PROMPT) < 26:
                accepted, _ = tree_round(model, cache, tokens, greedy_tree(model, tokens, wrong),
                                         SamplingParams(0.0))
                assert len(accepted) == (0 if wrong else 3) and cache.length == len(tokens) - 1
        assert tokens[len(PROMPT):len(PROMPT) + 26] == want[:26]


def test_verify_tree_greedy_rule():
    tree = DraftTree([10, 11, 12, 13, 14, 15], SHAPE)
    logits = torch.zeros(7, 20)
    for row, tok in enumerate([11, 3, 14, 3, 3, 15, 7]):   # argmax after the root, node 0, ..., node 5
        logits[row, tok] = 1.0
    assert verify_tree_greedy(tree, logits) == ([1, 4, 5], 7)   # root -> 11 -> 14 -> 15, bonus 7
    logits[5, 15], logits[5, 9] = 0.0, 2.0
    assert verify_tree_greedy(tree, logits) == ([1, 4], 9)      # correction after node 4


# ------------------------------------------------------------------ sampling: exact distributions
DRAFT = ModelConfig(**{**SMALL.to_dict(), "n_layers": 1})


@pytest.fixture(scope="module")
def small():
    """A target concentrated enough for the test to have power at 3000 samples, a poor
    near-uniform draft (rejections everywhere) and a sharp draft that disagrees with the target
    (its first draw takes much of q's mass, so renormalising q for later siblings matters)."""
    target = tiny_model(2, SMALL)
    with torch.no_grad():
        target.lm_head.weight.mul_(3.0)
    return target, tiny_model(3, DRAFT, scale=1.0), tiny_model(3, DRAFT, scale=4.0)


def draw_children(q, n, how, g):
    """n siblings from q: 'iid', 'without' replacement (q renormalised over untried tokens), or
    'topk' (deterministic picks, one-hot q). Returns [(token, the q it was drawn from)]."""
    out, left = [], q.clone()
    for j in range(n):
        if how == "topk":
            x = int(q.topk(n).indices[j])
            out.append((x, torch.nn.functional.one_hot(torch.tensor(x), q.shape[0]).float()))
            continue
        dist = q if how == "iid" else left / left.sum()
        x = int(sample(dist, g))
        out.append((x, dist))
        left = left.clone(); left[x] = 0.0
    return out


def sampled_tree(draft, tokens, params, how, g, memo=None):
    """Root: 2 children; the first child: 2 children; the second: 1 child, which has 1 child.
    Branching at two depths, a leaf at depth 2 and a path to depth 3. `memo` keeps the draft's
    distribution per context across samples (the same numbers as scoring it again: the draft is
    deterministic, and nothing here changes a q in place), so thousands of samples score each
    context once."""
    memo = {} if memo is None else memo

    def q(seq):
        if tuple(seq) not in memo:
            memo[tuple(seq)] = warp(draft(torch.tensor([seq])).logits[0, -1], params)
        return memo[tuple(seq)]

    with torch.no_grad():
        toks, parents, qs = [], [], []
        for parent, ctx, n in [(-1, [], 2), (0, None, 2), (1, None, 1), (4, None, 1)]:
            ctx = [] if parent < 0 else [toks[i] for i in DraftTree(toks, parents).path(parent)]
            for x, dist in draw_children(q(tokens + ctx), n, how, g):
                toks.append(x); parents.append(parent); qs.append(dist)
        return DraftTree(toks, parents, torch.stack(qs))


def tree_sample_counts(target, draft, params, how, n_samples, verifier=verify_tree_sampling, n=3):
    """One tree round, then plain sampling from the target up to n tokens: the n-token
    sequences must follow the target's exact distribution."""
    import minispec.speculative as S
    V = target.vocab_size
    counts = torch.zeros((V,) * n)
    original, S.verify_tree_sampling = S.verify_tree_sampling, verifier
    memo = {}
    try:
        for i in range(n_samples):
            g = torch.Generator().manual_seed(i)
            tokens, cache = list(PROMPT), target.new_cache()
            with torch.inference_mode():
                target(torch.tensor([tokens[:-1]]), cache=cache)
                tree_round(target, cache, tokens, sampled_tree(draft, tokens, params, how, g, memo), params, g)
            out = tokens[len(PROMPT):][:n]
            if len(out) < n:
                out += generate(target, tokens, n - len(out), params.temperature, params.top_k, params.top_p,
                                seed=10_000 + i).tokens
            counts[tuple(out)] += 1
    finally:
        S.verify_tree_sampling = original
    return counts.flatten()


def test_tree_sampling_with_a_sharp_draft_without_replacement(small):
    target, _, sharp = small
    params = SamplingParams(1.0)
    exact = exact_distribution(target, PROMPT, params, 3).flatten()
    assert chi_square_ok(tree_sample_counts(target, sharp, params, "without", 3000), exact)


@pytest.mark.parametrize("how, params", [("iid", SamplingParams(1.0)), ("without", SamplingParams(1.0)),
                                         ("topk", SamplingParams(1.0)), ("without", SamplingParams(0.7, top_k=6)),
                                         ("iid", SamplingParams(1.2, top_p=0.8))])
def test_tree_sampling_matches_the_target_exactly(small, how, params):
    target, draft, _ = small
    exact = exact_distribution(target, PROMPT, params, 3).flatten()
    counts = tree_sample_counts(target, draft, params, how, 3000)
    assert counts[exact == 0].sum() == 0
    assert chi_square_ok(counts, exact)


def verify_residual_not_updated(tree, p, generator=None):
    """PLANTED BUG: a rejected sibling does not change p for the next sibling."""
    accepted, node = [], -1
    while True:
        r = p[node + 1]
        for child in tree.children(node):
            x, q = tree.tokens[child], tree.q[child]
            if torch.rand((), generator=generator) * q[x] < r[x]:
                accepted.append(child); node = child
                break
        else:
            return accepted, int(sample(residual(r, tree.q[tree.children(node)[-1]]) if tree.children(node) else r,
                                        generator))


def verify_rows_off_by_one(tree, p, generator=None):
    """PLANTED BUG: node i's distribution taken from row i instead of row i + 1 (row 0 is the
    root's), so each child is judged by its parent's parent's distribution."""
    accepted, node = [], -1
    while True:
        r = p[max(node, 0)]
        for child in tree.children(node):
            x, q = tree.tokens[child], tree.q[child]
            if torch.rand((), generator=generator) * q[x] < r[x]:
                accepted.append(child); node = child
                break
            r = residual(r, q)
        else:
            return accepted, int(sample(r, generator))


@pytest.mark.parametrize("bug", [verify_residual_not_updated, verify_rows_off_by_one])
def test_tree_sampling_check_catches_planted_bugs(small, bug):
    target, draft, _ = small
    params = SamplingParams(1.0)
    exact = exact_distribution(target, PROMPT, params, 3).flatten()
    counts = tree_sample_counts(target, draft, params, "without", 3000, verifier=bug)
    assert not chi_square_ok(counts, exact)


def verify_first_q_for_every_sibling(tree, p, generator=None):
    """PLANTED BUG: judges every sibling by the first sibling's q, i.e. forgets that siblings
    drawn without replacement come from q renormalised over the untried tokens."""
    kids = {}
    for i, a in enumerate(tree.parents):
        kids.setdefault(a, i)
    wrong = DraftTree(tree.tokens, tree.parents, tree.q[[kids[a] for a in tree.parents]])
    return verify_tree_sampling(wrong, p, generator)


def one_node_first_token_counts(verifier, p, q, n_children, trials=20_000, seed=0):
    """The root's children drawn from q without replacement, the first emitted token counted."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.zeros(p.shape[-1])
    for _ in range(trials):
        kids = draw_children(q, n_children, "without", g)
        tree = DraftTree([x for x, _ in kids], [-1] * n_children, torch.stack([d for _, d in kids]))
        accepted, nxt = verifier(tree, p, g)
        counts[tree.tokens[accepted[0]] if accepted else nxt] += 1
    return counts


@pytest.mark.parametrize("seed", [0, 1])
def test_siblings_without_replacement_need_renormalised_q(seed):
    g = torch.Generator().manual_seed(seed)
    p_root = torch.softmax(2 * torch.randn(8, generator=g), 0)
    q = torch.softmax(3 * torch.randn(8, generator=g), 0)
    p = torch.stack([p_root] + [p_root] * 3)     # rows after the children: unused for the first token
    assert chi_square_ok(one_node_first_token_counts(verify_tree_sampling, p, q, 3, seed=seed), p_root)
    # the bug is caught by a wide margin: at 5,000 trials its statistic was 32-340 times the critical
    # value (seeds 0 and 1, three draws each), so 2,000 suffice where the real rule gets 20,000
    bug = one_node_first_token_counts(verify_first_q_for_every_sibling, p, q, 3, trials=2_000, seed=seed)
    assert not chi_square_ok(bug, p_root)
