"""Exercises with automatic checkers, for learners and for instructors who grade them.

Each checker takes the student's function, runs it on cases chosen to expose the usual
mistakes, compares it with the package's own implementation, and returns a CheckResult that
says pass or fail and why. Reference solutions: `minispec.solutions`.

    from minispec import exercises
    exercises.check_cached_greedy(my_greedy)            # chapter 0
    exercises.check_rollback(my_rollback)               # chapter 0
    exercises.check_prompt_lookup(my_lookup)            # chapter 1
    exercises.check_verifier(my_verify)                 # chapter 1 (about 20 s on a CPU)
    exercises.check_eagle_pairs(my_pairs)               # chapter 2
    exercises.check_tree_mask(my_mask)                  # chapter 3
    exercises.check_tree_greedy(my_verify_tree)         # chapter 3
    exercises.check_rerank(my_rerank)                   # chapter 4
    exercises.check_ttt_mask(my_ttt_mask)               # chapter 5
    exercises.check_draft_vocab(my_draft_vocab)         # chapter 5

Every check is deterministic (fixed seeds, tiny random models on the CPU), so a grade does not
depend on the machine.
"""
from __future__ import annotations

import numbers
import random
from dataclasses import dataclass

import torch

from .checks import chi_square_ok, exact_distribution, random_model, sequence_frequencies
from .model import ModelConfig
from .sampling import SamplingParams

# tiny models: a 64-token vocabulary for decoding checks, 16 tokens where 3-token
# continuations must be enumerated exactly (16^3 outcomes)
_TINY = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, ffn_dim=48, max_seq_len=64)
_SMALL = ModelConfig(**{**_TINY.to_dict(), "vocab_size": 16})


@dataclass
class CheckResult:
    exercise: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} [{self.exercise}] {self.message}"

    def _repr_html_(self) -> str:
        import html
        color = "#2d6a4f" if self.passed else "#b00020"
        return (f'<div style="border-left:4px solid {color};padding:2px 8px"><b style="color:{color}">'
                f'{"PASS" if self.passed else "FAIL"}</b> [{self.exercise}] {html.escape(self.message)}</div>')


class _Fail(Exception):
    """A failed check, with the message for the student."""


def _check(name, body) -> CheckResult:
    try:
        return CheckResult(name, True, body())
    except _Fail as e:
        return CheckResult(name, False, str(e))


def _call(what, fn, *args):
    """Call the student's function; an exception becomes a failed check that names it."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - any error in student code is a finding, not a crash
        raise _Fail(f"{what} raised {type(e).__name__}: {e}") from None


def _as_ids(x, what) -> list[int]:
    if isinstance(x, torch.Tensor):
        x = x.flatten().tolist()
    if isinstance(x, (list, tuple)):
        x = [int(t) if isinstance(t, torch.Tensor) and t.numel() == 1 and not t.is_floating_point() else t for t in x]
    if not isinstance(x, (list, tuple)) or not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in x):
        raise _Fail(f"{what} must return a list of int token ids, got {type(x).__name__}: {x!r:.80}")
    return [int(t) for t in x]


# ----------------------------------------------------------------------- chapter 0
def check_cached_greedy(fn) -> CheckResult:
    """fn(model, prompt: list[int], n: int) -> the n greedy tokens after the prompt, computed
    with the KV cache: one forward over the prompt, then one forward per new token."""
    from .generation import generate

    def body():
        for seed, prompt, n in [(0, [3, 1, 4, 1, 5], 12), (1, [7], 6), (2, [2, 7, 1, 8, 2, 8, 1, 8], 1),
                                (3, [9, 9, 9], 20)]:
            model = random_model(_TINY, seed)
            calls = []   # (tokens scored, cache length before) per forward pass

            def spy(module, args, kwargs):
                ids = args[0] if args else kwargs["input_ids"]
                cache = args[1] if len(args) > 1 else kwargs.get("cache")
                calls.append((ids.shape[-1], None if cache is None else cache.length))
            handle = model.register_forward_pre_hook(spy, with_kwargs=True)
            try:
                with torch.no_grad():
                    got = _as_ids(_call("your function", fn, model, list(prompt), n), "your function")
            finally:
                handle.remove()
            want = generate(model, prompt, n).tokens
            case = f"prompt {prompt}, n={n}"
            if len(got) != n:
                raise _Fail(f"{case}: returned {len(got)} tokens, expected {n} (return only the new ones)")
            if got != want:
                i = next(i for i in range(n) if got[i] != want[i])
                hint = ("off by one: your tokens are the right ones shifted by a position (which logits "
                        "predict the token after the prompt? the last row's)" if n > 1 and (
                            got[1:] == want[:-1] or got[:-1] == want[1:]) else
                        "the first token is right, later ones are not: after the first step feed only the "
                        "NEW token, and keep the cache" if i > 0 else
                        "the very first token is wrong: take the argmax of the logits at the prompt's last position")
                raise _Fail(f"{case}: token {i} is {got[i]}, greedy decoding gives {want[i]}; {hint}")
            if not calls:
                raise _Fail(f"{case}: right tokens, but the model was never called as model(ids, cache=...): "
                            "call the model itself (not model.forward), so the check can see the cache at work")
            if any(c is None for _, c in calls):
                raise _Fail(f"{case}: right tokens, but the model was called without a cache "
                            "(pass cache=model.new_cache() and reuse it)")
            scored = sum(t for t, _ in calls)
            if scored > len(prompt) + n:
                raise _Fail(f"{case}: right tokens, but {scored} token positions were scored where "
                            f"{len(prompt) + n - 1} suffice (one more is harmless): each step should score only the new token "
                            "(recomputing the sequence makes decoding quadratic)")
        return "cached greedy decoding matches minispec.generate and scores each token once"
    return _check("cached greedy decoding", body)


def check_rollback(fn) -> CheckResult:
    """fn(cache, n_tokens: int, n_accepted: int): after a verification round, leave the cache
    holding what the next round needs.

    Before the round the sequence had n_tokens tokens and the cache held all but the last
    (n_tokens - 1 entries). The target then scored [last token, x_1..x_k], so the cache grew by
    k + 1. The verifier kept x_1..x_n and added one token of its own, which becomes the new last
    token and is not in the cache.
    """
    def body():
        model = random_model(_TINY, 4)
        for L, k, n in [(5, 4, 2), (5, 4, 0), (9, 3, 3), (2, 1, 0), (7, 5, 4)]:
            g = torch.Generator().manual_seed(L * 10 + k + n)
            seq = torch.randint(0, _TINY.vocab_size, (L,), generator=g).tolist()
            drafts = torch.randint(0, _TINY.vocab_size, (k,), generator=g).tolist()
            nxt = int(torch.randint(0, _TINY.vocab_size, (1,), generator=g))
            cache = model.new_cache()
            with torch.no_grad():
                if L > 1:
                    model(torch.tensor([seq[:-1]]), cache=cache)
                model(torch.tensor([[seq[-1], *drafts]]), cache=cache)
            _call("your function", fn, cache, L, n)
            case = f"{L} tokens, {k} drafts, {n} accepted"
            want = L + n
            if cache.length != want:
                hint = {want + 1: "you kept the entry of x_{n+1}, the draft that was rejected",
                        want - 1: "you dropped one entry too many: the last token and the accepted drafts "
                                  "all stay, only the new last token is missing",
                        L + k: "the cache was not rolled back: the rejected drafts are still in it"}.get(
                            cache.length, "count: n_tokens - 1 entries before, + the last token, + n accepted drafts")
                raise _Fail(f"{case}: the cache holds {cache.length} entries, the next round needs {want}; {hint}")
            with torch.no_grad():
                cached = model(torch.tensor([[nxt]]), cache=cache).logits[0, -1]
                fresh = model(torch.tensor([seq + drafts[:n] + [nxt]])).logits[0, -1]
            if not torch.allclose(cached, fresh, atol=1e-4):
                raise _Fail(f"{case}: the length is right but the cache's contents are not those of "
                            "the accepted tokens (roll back; do not move or overwrite entries)")
        return "the cache holds exactly the accepted prefix after every round"
    return _check("KV-cache rollback", body)


# ----------------------------------------------------------------------- chapter 1
def check_prompt_lookup(fn) -> CheckResult:
    """fn(tokens: list[int], k: int, max_ngram: int, min_ngram: int) -> up to k draft tokens:
    what followed the LATEST earlier occurrence of the last n tokens, trying n from max_ngram
    down to min_ngram; [] when nothing matches."""
    from .speculative import PromptLookupDrafter

    cases = [([1, 2, 3, 9, 9, 1, 2, 3, 7, 7, 2, 3], 3, 3, 1), ([1, 2, 3, 4], 2, 3, 1), ([4, 5, 4], 5, 3, 1),
             ([5, 6, 1, 7, 8, 5, 6, 2, 9, 1, 5, 6], 2, 3, 1), ([1, 2, 8, 3, 1, 2, 9, 0, 2], 4, 3, 1),
             ([3, 3, 3, 3], 3, 2, 1), ([7, 1, 2, 7, 1, 2], 2, 2, 2), ([9], 3, 3, 1),
             ([1, 2, 3, 5, 3], 2, 3, 2), ([4, 1, 9, 1], 3, 2, 2)]          # no match of length >= min_ngram
    rng = random.Random(0)
    for _ in range(300):
        hi = rng.randrange(1, 4)
        cases.append(([rng.randrange(4) for _ in range(rng.randrange(1, 25))], rng.randrange(1, 6),
                      hi, rng.randrange(1, hi + 1)))

    def body():
        for tokens, k, hi, lo in cases:
            want = PromptLookupDrafter(100, max_ngram=hi, min_ngram=lo).lookup(tokens, k)
            got = _as_ids(_call(f"lookup({tokens}, k={k})", fn, list(tokens), k, hi, lo), "your function")
            if got == want:
                continue
            case = f"tokens {tokens}, k={k}, max_ngram={hi}, min_ngram={lo}"
            if len(got) > k:
                hint = f"propose at most k={k} tokens"
            elif not want:
                hint = ("nothing should match here: n-grams shorter than min_ngram do not count, and the "
                        "last n tokens themselves are not an earlier occurrence")
            elif not got:
                hint = "there is a match: look at every earlier start position, not only some"
            else:
                hint = ("for each n, take the LATEST earlier occurrence, and try long n-grams before "
                        "short ones; the continuation may run up to the end of the context")
            raise _Fail(f"{case}: got {got}, expected {want}. {hint}".rstrip(". ") + ".")
        return f"prompt lookup matches minispec on {len(cases)} cases"
    return _check("prompt lookup", body)


def _pair(fn, drafts, q, p, g):
    out = _call("your verifier", fn, list(drafts), q, p, g)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise _Fail(f"the verifier must return (n_accepted, next_token), got {out!r:.80}")
    n, nxt = (int(v) if isinstance(v, torch.Tensor) else v for v in out)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, nxt)):
        raise _Fail(f"n_accepted and next_token must be ints, got {out!r:.80}")
    if not 0 <= n <= len(drafts) or not 0 <= nxt < p.shape[-1]:
        raise _Fail(f"got n_accepted={n}, next_token={nxt} for {len(drafts)} drafts and {p.shape[-1]} tokens")
    return n, nxt


def check_verifier(fn, n_samples: int = 3000) -> CheckResult:
    """fn(drafts: list[int], q: (k, V), p: (k+1, V), generator) -> (n_accepted, next_token),
    the speculative-sampling rule. Checked on whole 3-token generations (two drafts per round,
    so later positions, the residual and the bonus token all count) against the target's exact
    distribution, with a poor draft (many rejections) and a perfect one (every round ends with
    the bonus token)."""
    def body():
        # 1. the interface and the deterministic corners
        V = 16
        one_hot = torch.eye(V)
        g = torch.Generator().manual_seed(0)
        n, nxt = _pair(fn, [3, 5], one_hot[[3, 5]], one_hot[[3, 5, 7]], g)
        if (n, nxt) != (2, 7):
            raise _Fail(f"p = q = one-hot at the drafts [3, 5]: both must be accepted and the bonus token "
                        f"is 7 (the only token of p_3); got n_accepted={n}, next_token={nxt}")
        n, nxt = _pair(fn, [3, 5], one_hot[[3, 5]], one_hot[[3, 6, 7]], g)
        if (n, nxt) != (1, 6):
            raise _Fail(f"drafts [3, 5] where p puts all mass on 3 then 6: accept 3, reject 5 and emit 6 "
                        f"from the residual; got n_accepted={n}, next_token={nxt}")
        # 2. a context-free target and draft (the same p and q at every position): then the tokens a
        #    round emits, continued by plain sampling from p, must be independent draws from p. Cheap
        #    (no model), so many samples: catches mistakes at later drafts (e.g. one u for all drafts).
        g = torch.Generator().manual_seed(1)
        pv = torch.tensor([0.30, 0.25, 0.20, 0.12, 0.08, 0.05])
        qv = torch.tensor([0.10, 0.15, 0.40, 0.05, 0.20, 0.10])
        k, trials = 3, 30_000
        counts = torch.zeros(6, 6, 6)
        for _ in range(trials):
            drafts = torch.multinomial(qv, k, replacement=True, generator=g).tolist()
            n, nxt = _pair(fn, drafts, qv.expand(k, 6), pv.expand(k + 1, 6), g)
            out = drafts[:n] + [nxt]
            while len(out) < 3:
                out.append(int(torch.multinomial(pv, 1, generator=g)))
            counts[tuple(out[:3])] += 1
        exact3 = pv[:, None, None] * pv[None, :, None] * pv[None, None, :]
        if not chi_square_ok(counts, exact3):
            raise _Fail("with the same p and q at every position, the first three emitted tokens should be "
                        f"independent draws from p; over {trials} rounds their distribution is not that. Check: a fresh u for "
                        "every draft, min(1, p/q) of THAT draft's row, stop at the first rejection")
        # 3. the distribution of whole generations
        target = random_model(_SMALL, 2)
        with torch.no_grad():
            target.lm_head.weight.mul_(3.0)  # concentrated enough for the test to have power
        prompt, params = [3, 14, 15, 9, 2, 6], SamplingParams(1.0)
        exact = exact_distribution(target, prompt, params, 3).flatten()
        for draft, what in [(random_model(ModelConfig(**{**_SMALL.to_dict(), "n_layers": 1}), 3, scale=1.0),
                             "a poor draft (rejections at every position)"),
                            (target, "a perfect draft (q = p: every draft accepted, then the bonus token)")]:
            counts = sequence_frequencies(target, prompt, params, n_samples, draft=draft, gamma=2,
                                          verifier=lambda d, q, p, gen: _pair(fn, d, q, p, gen))
            impossible = int(counts[exact == 0].sum())
            if impossible:
                raise _Fail(f"with {what}: {impossible} generations contain a token the target gives "
                            "probability 0")
            if not chi_square_ok(counts, exact):
                raise _Fail(f"with {what}: the 3-token outputs do not follow the target's distribution "
                            f"(chi-square test over {n_samples} generations). Check: accept with "
                            "probability min(1, p/q); at the first rejection sample norm(max(0, p - q)); "
                            "after all k are accepted sample the bonus token from p[k]")
        return f"3-token generations follow the target's exact distribution ({2 * n_samples} samples)"
    return _check("speculative sampling verifier", body)


# ----------------------------------------------------------------------- chapter 2
def check_eagle_pairs(fn) -> CheckResult:
    """fn(tokens (T,), features (T, D)) -> (input_tokens, input_features, target_features): the
    EAGLE-1 training pairs of one window. Position t reads the feature f_t with the token that
    was sampled FROM it, x_{t+1} (the token shift), and learns to predict f_{t+1}; so T - 1 pairs."""
    def body():
        for T, D in [(6, 3), (2, 4), (9, 2)]:
            g = torch.Generator().manual_seed(T)
            tokens = torch.arange(100, 100 + T)
            features = torch.randn(T, D, generator=g)
            got = _call(f"your function (T={T})", fn, tokens.clone(), features.clone())
            if not isinstance(got, (tuple, list)) or len(got) != 3:
                raise _Fail("return three things: (input_tokens, input_features, target_features)")
            toks, f_in, f_out = (torch.as_tensor(x) for x in got)
            if toks.shape != (T - 1,) or f_in.shape != (T - 1, D) or f_out.shape != (T - 1, D):
                raise _Fail(f"a window of T={T} gives T-1={T - 1} pairs: shapes ({T - 1},), ({T - 1}, {D}), "
                            f"({T - 1}, {D}); got {tuple(toks.shape)}, {tuple(f_in.shape)}, {tuple(f_out.shape)}")
            if torch.equal(toks, tokens[:-1]):
                raise _Fail("input token t is x_t: that is the ablation WITHOUT the token shift. Pair f_t "
                            "with x_{t+1}, the token sampled from f_t, so the head knows which token was chosen")
            if not torch.equal(toks, tokens[1:]):
                raise _Fail(f"input tokens should be x_1..x_{T - 1} (positions shifted one step ahead), "
                            f"got ids {toks.tolist()} for tokens {tokens.tolist()}")
            if not torch.equal(f_in, features[:-1]):
                raise _Fail("input features should be f_0..f_{T-2}: the head reads f_t at position t")
            if torch.equal(f_out, features[:-1]) or not torch.equal(f_out, features[1:]):
                raise _Fail("targets should be the NEXT features f_1..f_{T-1}: position t predicts f_{t+1}")
        return "the token-shifted pairs (x_{t+1}, f_t) -> f_{t+1} are right"
    return _check("EAGLE-1 training pairs", body)


# ----------------------------------------------------------------------- chapter 3
def _random_trees(n_trees: int = 40, seed: int = 0):
    rng = random.Random(seed)
    trees = [[], [-1], [-1, 0, 1], [-1, -1, -1], [-1, -1, 0, 0, 1, 4]]
    for _ in range(n_trees):
        parents = []
        for i in range(rng.randrange(1, 9)):
            parents.append(rng.randrange(-1, i))
        trees.append(parents)
    return trees


def check_tree_mask(fn) -> CheckResult:
    """fn(parents: list[int]) -> the (N+1, N+1) additive float mask over [root, node 0, ...,
    node N-1]: 0 where a row may look (the root, its ancestors, itself), -inf elsewhere.
    parents[i] is node i's parent, -1 for the root, and parents come first."""
    from .tree import DraftTree

    def body():
        for parents in _random_trees():
            want = DraftTree([0] * len(parents), parents).mask()
            got = _call(f"your function (parents {parents})", fn, list(parents))
            if not isinstance(got, torch.Tensor):
                raise _Fail(f"return a torch.Tensor, got {type(got).__name__}")
            case = f"parents {parents}"
            if got.dtype == torch.bool:
                raise _Fail(f"{case}: a boolean mask; attention wants an ADDITIVE float mask (0 = visible, "
                            "-inf = hidden): some implementations silently misread booleans")
            if got.shape != want.shape:
                raise _Fail(f"{case}: shape {tuple(got.shape)}, expected {tuple(want.shape)} (the root is row 0)")
            seen, should = got == 0, want == 0
            if torch.equal(seen, should) and bool((got[~seen] <= -1e9).all()):
                continue
            if torch.equal(seen, should):
                raise _Fail(f"{case}: hidden entries must be -inf (or as negative as "
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
            raise _Fail(f"{case}: row {r} column {c} is {'visible' if seen[r, c] else 'hidden'}; {hint}")
        return "the tree mask is right on every tree (chains, stars, deep and random shapes)"
    return _check("tree attention mask", body)


def check_tree_greedy(fn) -> CheckResult:
    """fn(tokens, parents, logits (N+1, V)) -> (accepted nodes, next token): greedy tree
    verification. Row 0 of logits is the target after the root, row 1 + i after node i. From
    the root, follow the child whose token is the target's argmax, as deep as it goes; then the
    next token is the argmax at the last accepted node (the bonus, or the correction)."""
    from .tree import DraftTree, verify_tree_greedy

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
            got = _call(f"your function (tokens {tokens}, parents {parents})", fn, list(tokens), list(parents), logits.clone())
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise _Fail("return (accepted_nodes, next_token)")
            acc, nxt = _as_ids(got[0], "accepted nodes"), got[1]
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
            raise _Fail(f"{case}: got ({acc}, {nxt}), expected ({list(want[0])}, {want[1]}); {hint}")
        return f"greedy tree verification agrees on {len(cases)} trees"
    return _check("greedy tree verification", body)


# ----------------------------------------------------------------------- chapter 4
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


def check_rerank(fn) -> CheckResult:
    """fn(parents, logq, total_tokens) -> the candidates EAGLE-2 keeps, as a list of candidate
    indices in ascending order (so parents precede children). parents[i] is candidate i's
    parent (-1 = the root; parents come first), logq[i] = log q(candidate i | its parent).
    Keep the total_tokens candidates (all, if fewer) whose PATH scores are highest: the score of
    a candidate is the sum of log q along its path from the root."""
    from .eagle2 import rerank

    def path_scores(parents, logq):
        s = []
        for a, lq in zip(parents, logq):
            s.append(lq + (s[a] if a >= 0 else 0.0))
        return s

    def body():
        cases = _candidates()
        for parents, logq, n in cases:
            want = rerank(parents, path_scores(parents, logq), n)
            got = _call(f"your function (parents {parents}, total_tokens {n})", fn, list(parents), list(logq), n)
            if isinstance(got, torch.Tensor):
                got = got.flatten().tolist()
            if not isinstance(got, (list, tuple)) or not all(isinstance(i, numbers.Integral) and not isinstance(i, bool)
                                                             for i in got):
                raise _Fail(f"return a list of candidate indices (ints), got {type(got).__name__}: {got!r:.80}")
            got = [int(i) for i in got]
            if got == want:
                continue
            case = f"parents {parents}, logq {[round(x, 2) for x in logq]}, total_tokens {n}"
            if any(not 0 <= i < len(parents) for i in got) or len(set(got)) != len(got):
                raise _Fail(f"{case}: got {got}; return distinct candidate indices in 0..{len(parents) - 1}")
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
            raise _Fail(f"{case}: got {got}, expected {want}; {hint}")
        return f"the rerank step agrees on {len(cases)} candidate sets"
    return _check("EAGLE-2 rerank", body)


# ----------------------------------------------------------------------- chapter 5
def check_ttt_mask(fn) -> CheckResult:
    """fn(T, step) -> the (T, (step + 1) T) additive float mask of EAGLE-3's training-time test at
    unrolled step `step` (0 = real features). Row t is the draft chain started after real
    position t; the keys are the blocks of steps 0, 1, ..., step, T each. Row t sees block 0's
    columns 0..t (the real prefix, causally) and in each later block only column t (its own
    chain's earlier steps, and itself)."""
    from .eagle3 import ttt_mask

    def body():
        for T, step in [(1, 0), (4, 0), (1, 3), (3, 1), (5, 2), (6, 6), (2, 5)]:
            want = ttt_mask(T, step)
            got = _call(f"your function (T={T}, step={step})", fn, T, step)
            if not isinstance(got, torch.Tensor):
                raise _Fail(f"return a torch.Tensor, got {type(got).__name__}")
            case = f"T={T}, step={step}"
            if got.dtype == torch.bool:
                raise _Fail(f"{case}: a boolean mask; attention wants an ADDITIVE float mask (0 = visible, -inf = hidden)")
            if got.shape != want.shape:
                raise _Fail(f"{case}: shape {tuple(got.shape)}, expected {tuple(want.shape)}: T rows, and one block "
                            "of T keys for each step 0..step")
            seen, should = got == 0, want == 0
            if torch.equal(seen, should):
                if not bool((got[~seen] <= -1e9).all()):
                    raise _Fail(f"{case}: hidden entries must be -inf, so that softmax gives them no weight")
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
            raise _Fail(f"{case}: row {r}, block {block}, column {col} is {'visible' if seen[r, c] else 'hidden'}; {hint}")
        return "the training-time-test mask is right at every step (prefix causal, own chain on the diagonal)"
    return _check("training-time-test mask", body)


def check_draft_vocab(fn) -> CheckResult:
    """fn(counts, size) -> (d2t, t2d) for the draft vocabulary of the `size` most frequent target
    ids (ties: the smaller id), numbered in increasing target-id order: d2t (size,) int64 with
    target id = draft id + d2t[draft id], and t2d (V,) bool marking the target ids kept."""
    from .eagle3 import draft_vocab

    def body():
        rng = random.Random(0)
        cases = [([5, 0, 3, 3, 9, 1], 3), ([1, 1, 1, 1], 2), ([0, 7, 0, 2, 7, 7, 1, 0], 4), ([4, 2], 2)]
        cases += [([rng.randrange(6) for _ in range(20)], rng.randrange(1, 20)) for _ in range(20)]
        for counts, size in cases:
            ids = draft_vocab(counts, size)
            want_d2t = ids - torch.arange(size)
            want_t2d = torch.zeros(len(counts), dtype=torch.bool)
            want_t2d[ids] = True
            got = _call(f"your function (counts {counts}, size {size})", fn, list(counts), size)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise _Fail("return a pair (d2t, t2d)")
            d2t, t2d = (torch.as_tensor(x) for x in got)
            case = f"counts {counts}, size {size}"
            if t2d.dtype != torch.bool or t2d.shape != (len(counts),):
                raise _Fail(f"{case}: t2d must be a bool tensor over the whole target vocabulary, shape "
                            f"({len(counts)},), got {t2d.dtype} {tuple(t2d.shape)}")
            if not torch.equal(t2d, want_t2d):
                hint = ("keep the `size` MOST frequent ids" if t2d.sum() == size else
                        f"keep exactly size = {size} ids")
                if t2d.sum() == size and sorted(counts[i] for i in want_t2d.nonzero().flatten().tolist()) == \
                        sorted(counts[i] for i in t2d.nonzero().flatten().tolist()):
                    hint = "break ties in the counts by the smaller target id"
                raise _Fail(f"{case}: t2d marks {t2d.nonzero().flatten().tolist()}, expected "
                            f"{want_t2d.nonzero().flatten().tolist()}; {hint}")
            if d2t.shape != (size,) or d2t.is_floating_point():
                raise _Fail(f"{case}: d2t must be an integer tensor of shape ({size},)")
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
            raise _Fail(f"{case}: d2t {d2t.tolist()}, expected {want_d2t.tolist()}; {hint}")
        return "d2t and t2d are right on every case (ties, uniform counts, a vocabulary kept whole)"
    return _check("draft vocabulary maps", body)
