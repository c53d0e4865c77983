"""The exercises as nbgrader assignments: one source notebook per chapter, generated from the
reference solutions (beside the graders in minispec.exercises.ch00 ... ch06) and the points table
(minispec.grading.EXERCISES), so that the notebooks, the solutions and `python -m minispec grade`
cannot drift apart.

    python -m minispec.assignments notebooks/assignments/source     # rewrite the source notebooks

Each exercise is three cells: the task (markdown), the function (the reference solution, renamed
to the name the chapter uses) with the part the student writes between nbgrader's
`### BEGIN SOLUTION` and `### END SOLUTION` (the reference marks these regions itself, so that
the student version is a skeleton: the signature, the docstring and the scaffolding around
`raise NotImplementedError()`; unmarked, the whole body is the region), and an autograded test
cell that runs the exercise's grader and asserts that it passed.
notebooks/assignments/README.md says how to release, collect and grade them.
"""
from __future__ import annotations

import ast
import inspect
import json
import sys
from pathlib import Path

from .grading import CHAPTERS, Exercise, chapter_exercises

CHAPTER_NOTEBOOKS = {
    0: ("00_target_and_decoding.ipynb", "The target model, and why decoding is slow"),
    1: ("01_speculative_sampling.ipynb", "Speculative sampling with a draft model, and prompt lookup"),
    2: ("02_eagle1_features.ipynb", "EAGLE-1: drafting at the feature level"),
    3: ("03_token_trees.ipynb", "Token trees: many continuations, one verification pass"),
    4: ("04_dynamic_trees.ipynb", "EAGLE-2: a draft tree shaped by the head's confidence"),
    5: ("05_eagle3.ipynb", "EAGLE-3: training-time test, multi-layer features, direct token prediction"),
    6: ("06_suffix_decoding.ipynb", "SuffixDecoding: drafting from everything already said"),
}

# The task of each exercise: the chapter's exercise text, with what the grader holds the function to.
TASKS = {
    "my_greedy": """**Greedy decoding with the cache.** Write `my_greedy(model, prompt, n)` that returns the $n$
greedy tokens after `prompt` (a list of token ids): one forward over the prompt with
`cache=model.new_cache()`, then one forward per new token. Call the model itself,
`model(ids, cache=cache)`, so that the grader can see the cache at work; `.logits[0, -1]` is the
row of the last position. The grader compares your tokens with `minispec.generate` on tiny random
models and counts the positions you score: recomputing the whole sequence every step fails.""",
    "my_rollback": """**Rollback after a round.** Speculative decoding scores drafts the target may reject. Write
`my_rollback(cache, n_tokens, n_accepted)`: before the round the sequence had `n_tokens` tokens
and the cache held all but the last; the target then scored the last token and $k$ drafts; the
verifier kept `n_accepted` of them and added a token of its own (not yet in the cache). Leave the
cache holding what the next round needs (`cache.rollback(length)` forgets every entry from
position `length` on).""",
    "my_verify": """**Write the verifier yourself.** Implement `my_verify(drafts, q, p, generator)` from the three
rules of the chapter's section 1: `drafts` is a list of $k$ token ids, `q` the $(k, V)$
distributions they were drawn from, `p` the target's $(k+1, V)$; return
`(n_accepted, next_token)`. Draw every random number with `generator`. The grader runs 20,000
rounds on made-up $p$ and $q$, then whole 3-token generations through your verifier, with a poor
draft and a perfect one, and compares them with the target's exact distribution (about 10 s of
CPU time).""",
    "my_lookup": """**Prompt lookup.** Write `my_lookup(tokens, k, max_ngram, min_ngram)`: up to `k` draft tokens,
what followed the *latest* earlier occurrence of the last $n$ tokens, trying $n$ from `max_ngram`
down to `min_ngram`; `[]` when nothing matches (the last $n$ tokens themselves are not an
earlier occurrence).""",
    "my_pairs": """**The training pairs.** Write `my_pairs(tokens, features)` that returns the head's inputs and
targets for one window, `(input_tokens, input_features, target_features)`: `tokens` is $(T,)$ and
`features` $(T, D)$; position $t$ reads the feature $f_t$ with the token that was sampled from
it, $x_{t+1}$ (the token shift), and learns to predict $f_{t+1}$, so a window gives $T - 1$
pairs.""",
    "my_mask": """**The tree mask.** Write `my_mask(parents)` returning the $(N+1) \\times (N+1)$ additive float mask
over [root, node 0, ..., node $N-1$]: 0 where a row may look (the root, the node's ancestors,
itself), $-\\infty$ elsewhere. `parents[i]` is node $i$'s parent, $-1$ for the root, and parents
come before their children.""",
    "my_verify_tree": """**Greedy tree verification.** Write `my_verify_tree(tokens, parents, logits)` returning
`(accepted_nodes, next_token)`. `logits` is $(N+1, V)$: row 0 is the target after the root, row
$1 + i$ after node $i$. From the root, follow the child whose token is the target's argmax, as
deep as it goes; the next token is the argmax at the last accepted node (the bonus token, or the
correction).""",
    "my_rerank": """**Rerank.** Write `my_rerank(parents, logq, total_tokens)`: given each candidate's parent
($-1$ = the root, parents first) and its $\\log \\hat q$ given its parent, return the indices of
the `total_tokens` candidates (all, if there are fewer) with the highest **path** scores, the sum
of $\\log \\hat q$ along the path from the root, in ascending order.""",
    "my_ttt_mask": """**The training-time-test mask.** Write `my_ttt_mask(T, step)` returning the
$(T, (step+1)\\,T)$ additive mask of the chapter's section 3 at unrolled step `step` (0 = the real
features): 0 = visible, $-\\infty$ = hidden. Row $t$ is the draft chain started after real
position $t$; the keys are the blocks of steps $0, 1, ..., step$, $T$ each. Row $t$ sees block
0's columns $0..t$ (the real prefix, causally) and in each later block only column $t$ (its own
chain's earlier steps, and itself).""",
    "my_grow": """**Grow the suffix tree's draft.** Write `my_grow(node, match_len, total_tokens,
max_spec_factor, min_token_prob)` returning `(tokens, parents, scores)`: SuffixDecoding's draft
tree below `node`, a `SuffixTrie` node `[count, {token: child}]` reached by the context's last
`match_len` tokens. A continuation's score is the product, along its path, of
count(child) / (the counts of it and its siblings); grow best-first (always the highest-scoring
candidate next), never a node scoring below `min_token_prob`, and at most
`min(total_tokens, int(max_spec_factor * match_len))` nodes. `parents[i]` is node $i$'s parent
($-1$ = the matched node), parents first.""",
    "my_draft_vocab": """**The vocabulary maps.** Write `my_draft_vocab(counts, size)` returning `(d2t, t2d)` for the
`size` most frequent target ids (ties: the smaller id), numbered in increasing target-id order:
`d2t` a $(size,)$ int64 tensor with target id = draft id + `d2t[draft id]`, and `t2d` a $(V,)$
bool tensor marking the target ids kept.""",
}


def solution_cell(e: Exercise) -> str:
    """The reference solution under the exercise's name. Where the solution marks its own solution
    regions (the lines between `### BEGIN SOLUTION` and `### END SOLUTION`), the rest is the
    student's skeleton: the signature, the docstring and the scaffolding around the part to write.
    Otherwise the signature stays and the docstring and the body are the solution region."""
    source = inspect.getsource(e.reference())
    lines = source.splitlines()
    if "### BEGIN SOLUTION" in source:
        return source.rstrip("\n").replace(f"def {e.solution}(", f"def {e.name}(", 1)
    body_start = ast.parse(source).body[0].body[0].lineno - 1     # the docstring's first line
    header = "\n".join(lines[:body_start]).replace(f"def {e.solution}(", f"def {e.name}(", 1)
    return f"{header}\n    ### BEGIN SOLUTION\n" + "\n".join(lines[body_start:]) + "\n    ### END SOLUTION"


def grade_cell(e: Exercise) -> str:
    return (f"result = exercises.{e.grader}({e.name})\n"
            "print(result)\n"
            "assert result.passed, \"see the grader's message above\"")


def _cell(kind: str, cell_id: str, source: str, **nbgrader) -> dict:
    meta = {"grade": False, "locked": True, "schema_version": 3, "solution": False, "task": False,
            "grade_id": cell_id, **nbgrader}
    cell = {"cell_type": kind, "id": cell_id.replace("_", "-"), "metadata": {"nbgrader": meta},
            "source": source.splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def notebook(chapter: int) -> dict:
    """The nbgrader source notebook of `chapter`'s assignment (nbformat 4.5, as JSON data)."""
    exercises = chapter_exercises(chapter)
    chapter_file, title = CHAPTER_NOTEBOOKS[chapter]
    total = sum(e.points for e in exercises)
    listing = "\n".join(f"- `{e.name}` ({e.points} point{'s' if e.points > 1 else ''}), checked by "
                        f"`exercises.{e.grader}`" for e in exercises)
    intro = f"""# Chapter {chapter} assignment: {title}

The exercises of `notebooks/{chapter_file}` that have automatic graders, {total} points in all:

{listing}

Write each function where it says `raise NotImplementedError()`, keeping its name, signature and
the lines around it,
then run the cell after it: the grader says PASS, which earns the points, or FAIL with what went
wrong and a hint. Grading runs the same graders, on tiny models on the CPU with fixed seeds, so
the grade you see is the grade you get. Before you submit, restart the kernel and run all cells.
"""
    cells = [_cell("markdown", "intro", intro),
             _cell("code", "setup", "import torch\n\nfrom minispec import exercises")]
    for e in exercises:
        cells += [_cell("markdown", f"{e.name}_task", TASKS[e.name]),
                  _cell("code", e.name, solution_cell(e), locked=False, solution=True),
                  _cell("code", f"{e.name}_check", grade_cell(e), grade=True, points=e.points)]
    return {"cells": cells, "metadata": {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}


def assignment_id(chapter: int) -> str:
    return f"ch{chapter:02d}"


def notebook_text(chapter: int) -> str:
    return json.dumps(notebook(chapter), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write_sources(source_dir) -> list[Path]:
    """Write source_dir/chNN/chNN.ipynb for every chapter with exercises; return the paths."""
    paths = []
    for chapter in CHAPTERS:
        path = Path(source_dir) / assignment_id(chapter) / f"{assignment_id(chapter)}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(notebook_text(chapter), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m minispec.assignments SOURCE_DIR   (notebooks/assignments/source)")
    for p in write_sources(sys.argv[1]):
        print(p)
