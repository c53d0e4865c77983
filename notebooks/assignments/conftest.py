# The assignments are not nbval tests. Their source notebooks are generated from
# the reference solutions in minispec/exercises/ and committed without outputs (nbgrader releases them without outputs);
# tests/test_assignments.py runs them the way a course does, through nbgrader's autograde and
# `python -m minispec grade`. Under nbval they would only run the same graders a second time
# (chapter 1's verifier check costs about 10 s of CPU time). This also keeps out the
# release/, submitted/, autograded/ and feedback/ copies nbgrader writes here.
collect_ignore_glob = ["*.ipynb"]
