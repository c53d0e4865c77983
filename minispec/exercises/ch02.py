"""Chapter 2's exercise: EAGLE-1's token-shifted training pairs.

From notebooks/02_eagle1_features.ipynb: the grader, then the reference solution (for instructors).

    from minispec import exercises
    from minispec.exercises import ch02
    exercises.grade_eagle_pairs(ch02.eagle_pairs)        # PASS
"""
from __future__ import annotations

import torch

from .common import Fail, Verdict, call_student, judge


# ----------------------------------------------------------------------- the graders
def grade_eagle_pairs(fn) -> Verdict:
    """fn(tokens (T,), features (T, D)) -> (input_tokens, input_features, target_features): the
    EAGLE-1 training pairs of one window. Position t reads the feature f_t with the token that
    was sampled FROM it, x_{t+1} (the token shift), and learns to predict f_{t+1}; so T - 1 pairs."""
    def body():
        for T, D in [(6, 3), (2, 4), (9, 2)]:
            g = torch.Generator().manual_seed(T)
            tokens = torch.arange(100, 100 + T)
            features = torch.randn(T, D, generator=g)
            got = call_student(f"your function (T={T})", fn, tokens.clone(), features.clone())
            if not isinstance(got, (tuple, list)) or len(got) != 3:
                raise Fail("return three things: (input_tokens, input_features, target_features)")
            toks, f_in, f_out = (torch.as_tensor(x) for x in got)
            if toks.shape != (T - 1,) or f_in.shape != (T - 1, D) or f_out.shape != (T - 1, D):
                raise Fail(f"a window of T={T} gives T-1={T - 1} pairs: shapes ({T - 1},), ({T - 1}, {D}), "
                           f"({T - 1}, {D}); got {tuple(toks.shape)}, {tuple(f_in.shape)}, {tuple(f_out.shape)}")
            if torch.equal(toks, tokens[:-1]):
                raise Fail("input token t is x_t: that is the ablation WITHOUT the token shift. Pair f_t "
                           "with x_{t+1}, the token sampled from f_t, so the head knows which token was chosen")
            if not torch.equal(toks, tokens[1:]):
                raise Fail(f"input tokens should be x_1..x_{T - 1} (positions shifted one step ahead), "
                           f"got ids {toks.tolist()} for tokens {tokens.tolist()}")
            if not torch.equal(f_in, features[:-1]):
                raise Fail("input features should be f_0..f_{T-2}: the head reads f_t at position t")
            if torch.equal(f_out, features[:-1]) or not torch.equal(f_out, features[1:]):
                raise Fail("targets should be the NEXT features f_1..f_{T-1}: position t predicts f_{t+1}")
        return "the token-shifted pairs (x_{t+1}, f_t) -> f_{t+1} are right"
    return judge("EAGLE-1 training pairs", body)


# ----------------------------------------------------------------------- the reference solutions
def eagle_pairs(tokens: torch.Tensor, features: torch.Tensor):
    """Chapter 2: EAGLE-1's training pairs with the token shift: (x_{t+1}, f_t) -> f_{t+1}."""
    return tokens[1:], features[:-1], features[1:]
