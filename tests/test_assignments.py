"""The exercises as gradable assignments (notebooks/assignments): the source notebooks are the
reference solutions written out; nbgrader releases a student version without them and autogrades
submissions; the solutions get full marks, the unsolved student version zero, and
`python -m minispec grade` gives the same scores as nbgrader on the same files."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minispec import assignments, grading
from minispec.__main__ import main

COURSE = Path(__file__).resolve().parents[1] / "notebooks" / "assignments"
IDS = [assignments.assignment_id(c) for c in grading.CHAPTERS]
UNSOLVED = assignments.assignment_id(1)   # the one student version nbgrader autogrades


def test_source_notebooks_are_generated_from_the_solutions():
    source = COURSE / "source"
    assert sorted(p.name for p in source.iterdir()) == IDS
    for chapter, aid in zip(grading.CHAPTERS, IDS):
        committed = json.loads((source / aid / f"{aid}.ipynb").read_text(encoding="utf-8"))
        assert committed == assignments.notebook(chapter), (
            f"{aid}.ipynb differs from the solutions in minispec.exercises and minispec.grading.EXERCISES; "
            "regenerate it with: python -m minispec.assignments notebooks/assignments/source")


def test_every_grader_is_an_assignment():
    from minispec import exercises
    graders = {name for name in dir(exercises) if name.startswith("grade_")}
    assert {e.grader for e in grading.EXERCISES} == graders
    assert all(callable(e.reference()) for e in grading.EXERCISES)


# ------------------------------------------------------------------ nbgrader, in a course of its own
def nbgrader(course: Path, *args: str):
    """Run nbgrader in `course`, away from the user's own Jupyter configuration and data."""
    home = course.parent / "home"
    env = dict(os.environ, HOME=str(home), JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_DATA_DIR=str(home / "data"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               IPYTHONDIR=str(home / "ipython"),
               OMP_NUM_THREADS="1")   # the kernels' graders run tiny models: threads only contend
    env.pop("JUPYTER_PATH", None)
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Every chapter's assignment released, then two students autograded: `solved` submits every
    source notebook (the reference solutions), `unsolved` the released student version of chapter
    1 as is (each autograde starts a kernel, about 3 s of CPU; `python -m minispec grade` checks
    every chapter's student version below, with the same graders).
    Returns the course folder and nbgrader's scores, {(assignment, student): (score, max_score)}."""
    pytest.importorskip("nbgrader", reason="nbgrader is not installed (pip install -e '.[test]' installs it)")
    from nbgrader.api import Gradebook
    course = tmp_path_factory.mktemp("assignments") / "course"
    course.mkdir()
    shutil.copy(COURSE / "nbgrader_config.py", course)
    shutil.copytree(COURSE / "source", course / "source")
    nbgrader(course, "generate_assignment", "*")
    for aid in IDS:
        for student, version in [("solved", "source"), ("unsolved", "release")]:
            if student == "unsolved" and aid != UNSOLVED:
                continue
            (course / "submitted" / student / aid).mkdir(parents=True)
            shutil.copy(course / version / aid / f"{aid}.ipynb", course / "submitted" / student / aid)
    nbgrader(course, "autograde", "*")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {(a.name, s.student.id): (s.score, s.max_score) for a in gb.assignments for s in a.submissions}
    return course, scores


def test_release_has_no_solutions(course):
    root, _ = course
    for aid in IDS:
        text = (root / "release" / aid / f"{aid}.ipynb").read_text(encoding="utf-8")
        assert "BEGIN SOLUTION" not in text and "raise NotImplementedError()" in text


def test_released_exercises_are_skeletons_where_the_solution_marks_its_regions(course):
    """A reference solution that marks the part to write gives the student the rest: every line
    outside its solution regions is in the released notebook, no line inside them is."""
    import inspect
    root, _ = course
    marked = 0
    for e in grading.EXERCISES:
        source = inspect.getsource(e.reference())
        if "### BEGIN SOLUTION" not in source:
            continue
        marked += 1
        release = json.loads((root / "release" / assignments.assignment_id(e.chapter) /
                              f"{assignments.assignment_id(e.chapter)}.ipynb").read_text(encoding="utf-8"))
        cell = next("".join(c["source"]) for c in release["cells"] if c["metadata"]["nbgrader"]["grade_id"] == e.name)
        inside, kept, hidden = False, [], []
        for line in source.splitlines()[1:]:                  # the def line is renamed
            if line.strip() in ("### BEGIN SOLUTION", "### END SOLUTION"):
                inside = line.strip() == "### BEGIN SOLUTION"
            elif line.strip():
                (hidden if inside else kept).append(line)
        assert all(line in cell.splitlines() for line in kept), (e.name, cell)
        assert not any(line in cell.splitlines() for line in hidden), (e.name, cell)
        assert len(kept) > 2                                  # more than a docstring: a skeleton
    assert marked >= 6


def test_nbgrader_gives_the_solutions_full_marks_and_the_student_version_zero(course):
    _, scores = course
    for chapter, aid in zip(grading.CHAPTERS, IDS):
        total = sum(e.points for e in grading.chapter_exercises(chapter))
        assert scores[aid, "solved"] == (total, total), aid
        if aid == UNSOLVED:
            assert scores[aid, "unsolved"] == (0, total), aid


# Chapter 1's solved submission is left out here: its verifier check costs seconds of CPU time,
# and nbgrader has just run it on that notebook (the one run of that grader on the solution:
# tests/test_exercises.py leaves it to this file where nbgrader is installed). The student
# versions are the released notebooks: zero marks each, as nbgrader gave chapter 1's.
@pytest.mark.parametrize("student", ["solved", "unsolved"])
def test_minispec_grade_agrees_with_nbgrader_and_gives_every_student_version_zero(course, student, capsys):
    root, scores = course
    for chapter, aid in zip(grading.CHAPTERS, IDS):
        if (aid, student) == ("ch01", "solved"):
            continue
        folder = root / "submitted" / student if student == "solved" else root / "release"
        main(["grade", str(folder / aid / f"{aid}.ipynb")])
        out = capsys.readouterr().out
        score, max_score = map(int, re.search(r"^score: (\d+) / (\d+)$", out, re.M).groups())
        total = sum(e.points for e in grading.chapter_exercises(chapter))
        want = scores[aid, student] if student == "solved" or aid == UNSOLVED else (0, total)
        assert (score, max_score) == want, out


# ------------------------------------------------------------------ minispec grade on its own
def test_grade_a_module(tmp_path):
    module = tmp_path / "answers.py"
    module.write_text("from minispec.exercises.ch03 import tree_mask as my_mask\n\n"
                      "def my_verify_tree(tokens, parents, logits):\n"
                      "    print('noise the grader drops')\n"
                      "    return [], int(logits[-1].argmax())   # the last row: wrong\n")
    report = grading.grade(module)
    assert [(g.exercise.name, g.passed) for g in report.grades] == [("my_mask", True), ("my_verify_tree", False)]
    assert (report.score, report.max_score) == (2, 4)
    assert "noise" not in grading.format_report(report)


def test_grade_reports_missing_functions_raising_cells_and_the_time_limit(tmp_path):
    nb = assignments.notebook(5)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    code[1]["source"] = "while True:\n    pass\n"                      # my_ttt_mask never finishes
    code[3]["source"] = "%timeit 1\nfrom minispec.exercises.ch05 import draft_vocab as my_draft_vocab\n"
    path = tmp_path / "ch05.ipynb"
    path.write_text(json.dumps(nb))
    with pytest.raises(ValueError, match="no graded exercises"):
        grading.grade(path, chapter=9)                                   # before running anything
    report = grading.grade(path, chapter=5, timeout=1)
    assert any("TimeoutError" in n for n in report.notes) and any("magics" in n for n in report.notes)
    assert [g.passed for g in report.grades] == [False, False]
    assert "not defined" in report.grades[0].message
