"""Exercises with automatic graders, for learners and for instructors who grade them.

Each grader takes the learner's function, runs it on cases chosen to expose the usual
mistakes, compares it with the package's own implementation, and returns a Verdict that
says pass or fail and why.

    from minispec import exercises
    exercises.grade_cached_greedy(my_greedy)            # chapter 0
    exercises.grade_rollback(my_rollback)               # chapter 0
    exercises.grade_prompt_lookup(my_lookup)            # chapter 1
    exercises.grade_verifier(my_verify)                 # chapter 1 (about 10 s on a CPU)
    exercises.grade_eagle_pairs(my_pairs)               # chapter 2
    exercises.grade_tree_mask(my_mask)                  # chapter 3
    exercises.grade_tree_greedy(my_verify_tree)         # chapter 3
    exercises.grade_rerank(my_rerank)                   # chapter 4
    exercises.grade_ttt_mask(my_ttt_mask)               # chapter 5
    exercises.grade_draft_vocab(my_draft_vocab)         # chapter 5
    exercises.grade_suffix_grow(my_grow)                # chapter 6

One module per chapter, `ch00` ... `ch06`, holds that chapter's graders and, after them, the
reference solutions for instructors (`exercises.ch01.verify` passes `grade_verifier`);
`common` holds the Verdict and what the graders share.

Every grader is deterministic (fixed seeds, tiny random models on the CPU), so a grade does not
depend on the machine.
"""
from . import ch00, ch01, ch02, ch03, ch04, ch05, ch06
from .ch00 import grade_cached_greedy, grade_rollback
from .ch01 import grade_prompt_lookup, grade_verifier
from .ch02 import grade_eagle_pairs
from .ch03 import grade_tree_greedy, grade_tree_mask
from .ch04 import grade_rerank
from .ch05 import grade_draft_vocab, grade_ttt_mask
from .ch06 import grade_suffix_grow
from .common import Verdict

__all__ = ["Verdict", "grade_cached_greedy", "grade_rollback", "grade_prompt_lookup", "grade_verifier",
           "grade_eagle_pairs", "grade_tree_mask", "grade_tree_greedy", "grade_rerank", "grade_ttt_mask",
           "grade_draft_vocab", "grade_suffix_grow"]
