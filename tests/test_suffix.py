"""SuffixDecoding (minispec.suffix): the trie counts what it should, the drafts follow the counts
and the caps, and the method is lossless (greedy: identical tokens; sampling: the exact
distribution, with a planted bug that the same test catches)."""
import pytest
import torch

from conftest import SMALL, tiny_model
from minispec import generate
from minispec.checks import chi_square_ok, exact_distribution, sequence_frequencies
from minispec.sampling import SamplingParams
from minispec.suffix import SuffixDrafter, SuffixStore, SuffixTrie, grow, replay_greedy


def stretch_count(trie, stretch):
    node = trie.root
    for t in stretch:
        node = node[1].get(t)
        if node is None:
            return 0
    return node[0]


def test_the_trie_counts_every_stretch_up_to_max_depth_token_by_token_as_at_once():
    text = [1, 2, 3, 1, 2, 4, 1, 2, 3, 1]
    whole, step = SuffixTrie(max_depth=4), SuffixTrie(max_depth=4)
    whole.add(text)
    for t in text:
        step.append(t)
    for n in range(1, 5):
        for i in range(len(text) - n + 1):
            s = text[i:i + n]
            want = sum(text[j:j + n] == s for j in range(len(text) - n + 1))
            assert stretch_count(whole, s) == want == stretch_count(step, s), s
    assert stretch_count(whole, text[:5]) == 0                     # longer than max_depth: not counted
    other = SuffixTrie(4)
    other.add([1, 2]); other.add([3, 4])
    assert stretch_count(other, [2, 3]) == 0                       # texts added apart do not join


def test_suffix_nodes_are_the_context_suffixes_the_trie_holds_and_active_is_the_same_list():
    trie = SuffixTrie(8)
    trie.add([5, 6, 7, 8, 9, 6, 7, 1])
    assert trie.active == []                                        # add() keeps no suffix nodes
    nodes = trie.suffix_nodes([0, 9, 6, 7])                         # 7, 6 7, 9 6 7 are held; 0 9 6 7 is not
    assert len(nodes) == 3 and set(nodes[1][1]) == {8, 1} and set(nodes[2][1]) == {1}
    assert trie.suffix_nodes([4, 4]) == []
    step, text = SuffixTrie(4), [5, 6, 7, 8, 9, 6, 7, 8, 5, 6, 7]
    for n, t in enumerate(text, 1):                                 # the drafter's shortcut = walks from the root
        step.append(t)
        assert all(a is b for a, b in zip(step.active, step.suffix_nodes(text[:n]), strict=False))
        assert len(step.suffix_nodes(text[:n])) == min(n, 3)        # at most max_depth - 1 tokens


def test_the_drafter_proposes_the_best_scoring_match_not_the_longest():
    """Chapter 6's example: in a trie of depth 4 over "the cat sat . the cat ran . the cat sat .
    the dog sat", the context "... . the cat" matches 1, 2 and 3 tokens. The 3-token match leaves
    one level below it (ran, sat: 1/2 each, sum 1), the 1-token match may draft 2 nodes (sum 4/3),
    the 2-token match 4 (both branches, sum 2): the drafter takes the 2-token match."""
    the, cat, sat, dot, ran, dog = range(6)
    text = [the, cat, sat, dot, the, cat, ran, dot, the, cat, sat, dot, the, dog, sat]
    store = SuffixStore(4)
    store.add(text)
    drafter = SuffixDrafter(6, total_tokens=16, max_depth=4, max_spec_factor=2.0, min_token_prob=0.1, store=store)
    tree = drafter.propose([the, dog, ran, dot, the, cat], 16, SamplingParams(0.0))
    last = drafter.last
    assert (last.source, last.match_len) == ("store", 2) and last.expected == pytest.approx(2.0)
    assert sorted(tree.tokens) == sorted([sat, dot, ran, dot]) and len(tree.children(-1)) == 2
    for m, want in ((1, 4 / 3), (3, 1.0)):                          # the other matches score less
        node = store.trie.suffix_nodes([the, dog, ran, dot, the, cat])[m - 1]
        assert sum(grow(node, m, 16, 2.0, 0.1, 16)[2]) == pytest.approx(want)
    tied = SuffixDrafter(6, 16, 4, 2.0, 0.1, store)                  # the request says the same: a tie goes to it
    assert tied.propose(text + [dot, the, cat], 16, SamplingParams(0.0)).tokens and tied.last.source == "request"
    small = SuffixDrafter(6, 1, 4, 2.0, 0.1, store)                  # total_tokens 1: the 3-token match's single
    small.propose([the, dog, ran, dot, the, cat], 16, SamplingParams(0.0))   # best node scores 1/2, then the
    assert small.last.match_len == 2 and small.last.expected == pytest.approx(2 / 3)   # 2-token match's 2/3 wins


def test_the_draft_tree_is_best_first_by_frequency_and_capped():
    trie = SuffixTrie(8)
    for text in ([1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 6, 7]):
        trie.add(text)
    node, m = trie.suffix_nodes([9, 1, 2])[-1], 2
    tokens, parents, scores = grow(node, m, 10, 10.0, 0.0, 8)
    assert tokens[:2] == [3, 4] and parents[:2] == [-1, 0]
    assert scores[0] == pytest.approx(3 / 4) and scores[1] == pytest.approx(3 / 4 * 2 / 3)
    assert all(p < i for i, p in enumerate(parents)) and scores == sorted(scores, reverse=True)
    assert len(grow(node, m, 10, 1.0, 0.0, 8)[0]) == 2            # max_spec_factor x the match's length
    assert len(grow(node, m, 3, 10.0, 0.0, 8)[0]) == 3             # total_tokens
    assert all(s >= 0.3 for s in grow(node, m, 10, 10.0, 0.3, 8)[2])   # min_token_prob
    assert max(len(_path(p, i)) for p, i in [(grow(node, m, 10, 10.0, 0.0, 1)[1], 0)]) == 1


def _path(parents, i):
    out = []
    while i >= 0:
        out.append(i)
        i = parents[i]
    return out


@pytest.mark.parametrize("prompt", [[3, 1, 4, 1, 5, 3, 1, 4, 1, 5, 3, 1], [7, 7, 7, 7], [2, 9, 4]])
def test_greedy_suffix_equals_plain_greedy_with_and_without_a_store(prompt):
    target = tiny_model()
    want = generate(target, prompt, 40).tokens
    store = SuffixStore()
    store.add(want[5:30])                                          # an "earlier output" that repeats this one
    for draft in (None, store):
        g = generate(target, prompt, 40, method="suffix", draft=draft, min_token_prob=0.0, max_spec_factor=3.0)
        assert g.tokens == want
    assert generate(target, prompt, 40, method="suffix", draft=store).stats.num_accepted_tokens > 0


@pytest.mark.parametrize("method", ["suffix", "pld"])
def test_a_greedy_replay_counts_what_generation_counts(method):
    """replay_greedy (the chapter's and the reference comparison's shortcut: no target passes)
    gives the very counters of a real greedy generation, round by round."""
    from minispec.methods import make_drafter
    target = tiny_model()
    for prompt in ([3, 1, 4, 1, 5, 3, 1, 4, 1, 5, 3, 1], [7, 7, 7, 7], [2, 9, 4]):
        g = generate(target, prompt, 40, method=method, max_spec_factor=2.0) if method == "suffix" else \
            generate(target, prompt, 40, method=method)
        opts = {"max_spec_factor": 2.0} if method == "suffix" else {}
        r = replay_greedy(make_drafter(method, target, None, len(prompt) + 40, **opts), prompt, g.tokens)
        for key in ("num_drafts", "num_draft_tokens", "num_accepted_tokens", "accepted_per_pos", "accept_lengths",
                    "target_calls", "new_tokens"):
            assert getattr(r, key) == getattr(g.stats, key), key
    with pytest.raises(ValueError, match="ended early"):           # an output cut by end of text: not exact
        replay_greedy(make_drafter(method, target, None, 50), [1, 2], [3, 4, 5], max_new_tokens=40)


def test_the_hybrid_compares_the_expected_accepted_drafts_not_the_log_scores():
    """The suffix tree's DraftTree keeps log-scores; the hybrid's threshold is on their
    probabilities' sum (its expected accepted drafts): here 1/2 + 1/2 = 1."""
    from minispec.suffix import HybridDrafter

    class Head:                                                      # a stand-in that only counts its rounds
        feature_layers, depth, budget, extra_nodes = (), 1, 1, 0
        def propose(self, tokens, k, params, generator=None):
            from minispec.tree import DraftTree
            return DraftTree([], [])
    store = SuffixStore(4)
    store.add([1, 2, 3]); store.add([1, 2, 4])                       # after "1 2": 3 or 4, one in two each
    for threshold, used in ((0.9, "suffix"), (1.1, "head")):
        h = HybridDrafter(SuffixDrafter(8, 16, 4, 2.0, 0.1, store), Head(), threshold)
        h.propose([0, 1, 2], 8, SamplingParams(0.0))
        assert h.used[used] == 1, (threshold, h.used)


def uniform(tokens, vocab_size, device="cpu"):
    """PLANTED BUG: deterministic picks verified as if drawn from a uniform q."""
    return torch.full((len(tokens), vocab_size), 1.0 / vocab_size, device=device) if tokens else None


SUFFIX_PROMPT = [4, 1, 2]
STORE_TEXTS = ([1, 2, 5, 5, 9], [1, 2, 6, 6, 9], [1, 2, 5, 7, 9], [9, 12, 15, 13, 12])


def suffix_store():
    store = SuffixStore()
    for text in STORE_TEXTS:
        store.add(text)
    return store


def sharp_target():
    """A tiny target whose mass sits on few continuations (the exact test has power), sampled at T = 1."""
    target = tiny_model(2, SMALL)
    with torch.no_grad():
        target.lm_head.weight.mul_(3.0)
    return target, SamplingParams(1.0)


def sampled_suffix(n=1000):
    """3-token continuations of a sharp tiny target through suffix drafts from a store whose texts
    continue "1 2" two ways (so the first round drafts siblings), and the exact distribution. A
    uniform q claimed for the picks (the planted bug below) fails at 25 times the critical value,
    the real rule stays at 0.26-0.29 of it (measured with the drafter that tries every match length)."""
    target, params = sharp_target()
    exact = exact_distribution(target, SUFFIX_PROMPT, params, 3).flatten()
    counts = sequence_frequencies(target, SUFFIX_PROMPT, params, n, method="suffix", draft=suffix_store(),
                                  min_token_prob=0.0, max_spec_factor=4.0, total_tokens=6)
    return counts, exact


def test_suffix_sampling_matches_the_target_exactly():
    drafter = SuffixDrafter(16, total_tokens=6, max_spec_factor=4.0, min_token_prob=0.0, store=suffix_store())
    first = drafter.propose(list(SUFFIX_PROMPT), 3, SamplingParams(1.0))
    assert first.children(-1) and len(first.children(-1)) == 2          # siblings: 5 and 6 after "1 2"
    counts, exact = sampled_suffix()
    assert int(counts[exact == 0].sum()) == 0
    assert chi_square_ok(counts, exact)


def test_the_exact_test_catches_drafts_claimed_as_sampled_from_uniform(monkeypatch):
    import minispec.suffix as S
    monkeypatch.setattr(S, "one_hot", uniform)
    counts, exact = sampled_suffix()
    assert not chi_square_ok(counts, exact)


def test_bad_suffix_settings_and_drafts_get_clear_errors():
    target = tiny_model()
    for bad in ({"total_tokens": 0}, {"max_depth": 1}, {"max_spec_factor": 0.0}, {"min_token_prob": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            generate(target, [1, 2, 3], 5, method="suffix", **bad)
    with pytest.raises(ValueError, match="SuffixStore"):
        generate(target, [1, 2, 3], 5, method="suffix", draft=tiny_model())


# ------------------------------------------------------------------ the hybrid: suffix or EAGLE-3, round by round
def hybrid_drafter(target, head, threshold, **suffix):
    from minispec.drafting import HeadDrafter
    from minispec.eagle2 import DynamicTree
    from minispec.suffix import HybridDrafter
    return HybridDrafter(SuffixDrafter(target.vocab_size, **suffix),
                         HeadDrafter(head, target, 64, DynamicTree(6, 3, 3)), threshold)


@pytest.mark.parametrize("threshold", [0.0, 1.0, 100.0])
def test_greedy_hybrid_equals_plain_greedy_and_uses_both_drafters(threshold):
    from test_eagle3 import random_eagle3
    from minispec.speculative import speculative_generate
    target = tiny_model()
    prompt = [3, 1, 4, 1, 5, 3, 1, 4, 1, 5, 3, 1]
    want = generate(target, prompt, 40).tokens
    drafter = hybrid_drafter(target, random_eagle3(target), threshold, min_token_prob=0.0, max_spec_factor=3.0)
    with torch.no_grad():
        tokens, _ = speculative_generate(target, list(prompt), 40, SamplingParams(0.0), None, None, drafter)
    assert tokens == want
    if threshold == 0.0:
        assert drafter.used["suffix"] > 0 and drafter.used["head"] > 0   # no match: the head drafts
    if threshold == 100.0:
        assert drafter.used["suffix"] == 0
    assert generate(target, prompt, 40, method="hybrid", draft=random_eagle3(target), threshold=threshold).tokens == want


HYBRID_PROMPT = [1, 2, 3, 1, 2]


def sampled_hybrid(n=1000):
    """3-token continuations through the hybrid (threshold 0: the suffix tree whenever the request
    repeats itself, else an untrained EAGLE-3 head's dynamic tree), and the exact distribution. The
    planted uniform q below fails at 7.1 times the critical value, the real rule stays at 0.19 of
    it (measured with the drafter that tries every match length)."""
    from test_eagle3 import random_eagle3
    target, params = sharp_target()
    exact = exact_distribution(target, HYBRID_PROMPT, params, 3).flatten()
    counts = sequence_frequencies(target, HYBRID_PROMPT, params, n, method="hybrid", draft=random_eagle3(target),
                                  threshold=0.0, min_token_prob=0.0, max_spec_factor=4.0, suffix_tokens=6,
                                  total_tokens=6, depth=3, eagle_topk=3)
    return counts, exact


def test_hybrid_sampling_matches_the_target_exactly():
    counts, exact = sampled_hybrid()
    assert int(counts[exact == 0].sum()) == 0
    assert chi_square_ok(counts, exact)


def test_the_exact_test_catches_a_hybrid_whose_suffix_drafts_claim_a_uniform_q(monkeypatch):
    import minispec.suffix as S
    monkeypatch.setattr(S, "one_hot", uniform)
    counts, exact = sampled_hybrid()
    assert not chi_square_ok(counts, exact)
