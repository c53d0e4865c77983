"""Chapter 1's exercises: prompt lookup, and the speculative-sampling verifier.

From notebooks/01_speculative_sampling.ipynb: the graders, then the reference solutions (for instructors).

    from minispec import exercises
    from minispec.exercises import ch01
    exercises.grade_verifier(ch01.verify)                # PASS, in about 10 s on a CPU
"""
from __future__ import annotations

import random

import torch

from ..checks import chi_square_ok, exact_distribution, random_model, sequence_frequencies
from ..model import ModelConfig
from ..sampling import SamplingParams
from .common import SMALL, Fail, Verdict, as_ids, call_student, judge


# ----------------------------------------------------------------------- the graders
def grade_prompt_lookup(fn) -> Verdict:
    """fn(tokens: list[int], k: int, max_ngram: int, min_ngram: int) -> up to k draft tokens:
    what followed the LATEST earlier occurrence of the last n tokens, trying n from max_ngram
    down to min_ngram; [] when nothing matches."""
    from ..speculative import PromptLookupDrafter

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
            got = as_ids(call_student(f"lookup({tokens}, k={k})", fn, list(tokens), k, hi, lo), "your function")
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
            raise Fail(f"{case}: got {got}, expected {want}. {hint}".rstrip(". ") + ".")
        return f"prompt lookup matches minispec on {len(cases)} cases"
    return judge("prompt lookup", body, switch_off=(PromptLookupDrafter.lookup,))


def _pair(fn, drafts, q, p, g):
    """One round of the learner's verifier: (n_accepted, next_token), read and range-checked."""
    out = call_student("your verifier", fn, list(drafts), q, p, g)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise Fail(f"the verifier must return (n_accepted, next_token), got {out!r:.80}")
    n, nxt = (int(v) if isinstance(v, torch.Tensor) else v for v in out)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, nxt)):
        raise Fail(f"n_accepted and next_token must be ints, got {out!r:.80}")
    if not 0 <= n <= len(drafts) or not 0 <= nxt < p.shape[-1]:
        raise Fail(f"got n_accepted={n}, next_token={nxt} for {len(drafts)} drafts and {p.shape[-1]} tokens")
    return n, nxt


def _verifier_corners(fn):
    """The interface and the deterministic corners: p and q one-hot."""
    V = 16
    one_hot = torch.eye(V)
    g = torch.Generator().manual_seed(0)
    n, nxt = _pair(fn, [3, 5], one_hot[[3, 5]], one_hot[[3, 5, 7]], g)
    if (n, nxt) != (2, 7):
        raise Fail(f"p = q = one-hot at the drafts [3, 5]: both must be accepted and the bonus token "
                   f"is 7 (the only token of p_3); got n_accepted={n}, next_token={nxt}")
    n, nxt = _pair(fn, [3, 5], one_hot[[3, 5]], one_hot[[3, 6, 7]], g)
    if (n, nxt) != (1, 6):
        raise Fail(f"drafts [3, 5] where p puts all mass on 3 then 6: accept 3, reject 5 and emit 6 "
                   f"from the residual; got n_accepted={n}, next_token={nxt}")


def _verifier_rows(fn):
    """p and q that depend on the position only, not on the tokens before it (p_0, p_1, p_2 all
    different): then the first three tokens a generation emits must be independent draws from
    p_0, p_1 and p_2. Cheap (no model), so many samples: catches mistakes at later drafts (one u
    for all drafts) and rows mixed up (the bonus token drawn from the last draft's row). Two
    drafts a round, here as in the generations: a mistake only a third draft would show is not
    tested."""
    g = torch.Generator().manual_seed(1)
    p = torch.tensor([[0.30, 0.25, 0.20, 0.12, 0.08, 0.05],     # (3, V): the target at positions 0, 1, 2
                      [0.05, 0.10, 0.15, 0.20, 0.20, 0.30],
                      [0.50, 0.02, 0.28, 0.02, 0.16, 0.02]])
    q = torch.tensor([[0.10, 0.15, 0.40, 0.05, 0.20, 0.10],     # (2, V): the draft at positions 0, 1
                      [0.20, 0.05, 0.15, 0.30, 0.10, 0.20]])
    k, trials = 2, 20_000
    # every trial's drafts (from q) and plain continuations (from p), drawn up front: (trials, 2), (trials, 3)
    drafts = torch.stack([torch.multinomial(q[i], trials, replacement=True, generator=g) for i in range(k)], 1).tolist()
    plain = torch.stack([torch.multinomial(p[i], trials, replacement=True, generator=g) for i in range(3)], 1).tolist()
    counts = torch.zeros(6, 6, 6)
    for t in range(trials):
        n, nxt = _pair(fn, drafts[t], q, p, g)
        out = drafts[t][:n] + [nxt]
        out += plain[t][len(out):]                                # after a rejection, plain sampling goes on
        counts[tuple(out[:3])] += 1
    exact3 = p[0, :, None, None] * p[1, None, :, None] * p[2, None, None, :]
    if not chi_square_ok(counts, exact3):
        raise Fail("with p and q that depend on the position only, the first three emitted tokens should "
                   f"be independent draws from p_0, p_1, p_2; over {trials} rounds their distribution is not "
                   "that. Check: a fresh u for every draft, min(1, p/q) of THAT draft's row, the residual "
                   "of the rejected draft's row, the bonus token from p[k]")


def _verifier_generations(fn, n_samples: int):
    """The distribution of whole 3-token generations, with a poor draft and a perfect one."""
    target = random_model(SMALL, 2)
    with torch.no_grad():
        target.lm_head.weight.mul_(3.0)  # concentrated enough for the test to have power
    prompt, params = [3, 14, 15, 9, 2, 6], SamplingParams(1.0)
    exact = exact_distribution(target, prompt, params, 3).flatten()
    for draft, what in [(random_model(ModelConfig(**{**SMALL.to_dict(), "n_layers": 1}), 3, scale=1.0),
                         "a poor draft (rejections at every position)"),
                        (target, "a perfect draft (q = p: every draft accepted, then the bonus token)")]:
        counts = sequence_frequencies(target, prompt, params, n_samples, draft=draft, gamma=2,
                                      verifier=lambda d, q, p, gen: _pair(fn, d, q, p, gen))
        impossible = int(counts[exact == 0].sum())
        if impossible:
            raise Fail(f"with {what}: {impossible} generations contain a token the target gives "
                       "probability 0")
        if not chi_square_ok(counts, exact):
            raise Fail(f"with {what}: the 3-token outputs do not follow the target's distribution "
                       f"(chi-square test over {n_samples} generations). Check: accept with "
                       "probability min(1, p/q); at the first rejection sample norm(max(0, p - q)); "
                       "after all k are accepted sample the bonus token from p[k]")


def grade_verifier(fn, n_samples: int = 1000) -> Verdict:
    """fn(drafts: list[int], q: (k, V), p: (k+1, V), generator) -> (n_accepted, next_token),
    the speculative-sampling rule. Checked on one-hot corner cases, then on 20,000 rounds with
    position-dependent p and q and no model (each typical mistake of tests/test_exercises.py fails
    there, by 4 times the critical value or more), then on whole 3-token generations of a small
    model (two drafts per round, so later positions, the residual and the bonus token all count)
    against the target's exact distribution, with a poor draft (many rejections) and a perfect
    one (every round ends with the bonus token)."""
    def body():
        _verifier_corners(fn)
        _verifier_rows(fn)
        _verifier_generations(fn, n_samples)
        return (f"20000 rounds on position-dependent p and q, and {2 * n_samples} whole 3-token generations, "
                "follow the target's exact distribution")
    from ..tree import verify_tree_sampling
    from ..verify import verify_sampling
    return judge("speculative sampling verifier", body, switch_off=(verify_sampling, verify_tree_sampling))


# ----------------------------------------------------------------------- the reference solutions
def prompt_lookup(tokens: list[int], k: int, max_ngram: int = 3, min_ngram: int = 1) -> list[int]:
    """Chapter 1: the continuation of the latest earlier occurrence of the last n tokens."""
    for n in range(max_ngram, min_ngram - 1, -1):
        ### BEGIN SOLUTION
        if n >= len(tokens):
            continue  # an earlier occurrence needs at least one token before the suffix
        suffix = tokens[-n:]
        for start in reversed(range(len(tokens) - n)):
            if tokens[start:start + n] == suffix:
                return tokens[start + n:start + n + k]
        ### END SOLUTION
    return []


def verify(drafts: list[int], q: torch.Tensor, p: torch.Tensor, generator=None):
    """Chapter 1: speculative sampling. q (k, V), p (k+1, V). Returns (n_accepted, next_token)."""
    for i, x in enumerate(drafts):
        u = float(torch.rand(1, generator=generator, device=p.device))
        ### BEGIN SOLUTION
        if u < min(1.0, float(p[i, x] / q[i, x])):
            continue                                        # accepted: look at the next draft
        r = torch.clamp(p[i] - q[i], min=0)                 # rejected: the residual
        r = r / r.sum() if r.sum() > 0 else p[i]
        return i, int(torch.multinomial(r, 1, generator=generator))
        ### END SOLUTION
    ### BEGIN SOLUTION
    return len(drafts), int(torch.multinomial(p[len(drafts)], 1, generator=generator))  # bonus
    ### END SOLUTION
