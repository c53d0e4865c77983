"""Every chapter runs in a real JupyterLab, in a real (headless) Chromium, widgets included.

For each notebooks/NN_*.ipynb: a JupyterLab server (free port, token, no browser of its own)
serves a copy of the notebook without outputs; Playwright opens it in the one JupyterLab page all
chapters share (loaded once; each notebook is closed, its kernel shut down, after its check), runs
Run > Run All Cells and
checks that no cell shows an error, that every widget output renders as a widget (not a text
fallback, "Loading widget..." or a model-not-found message; tqdm progress bars included), and
that one interaction with each widget of WIDGETS changes its output as the chapter says.
Screenshots (each widget after its interaction; the whole notebook where a check failed, else its
first screen) go to $MINISPEC_BROWSER_ARTIFACTS (default test-artifacts/browser/).

Marked `browser`: deselect with `-m "not browser"`. Skipped, with how to install it, where no
Chromium is found ($MINISPEC_CHROMIUM names one explicitly). Check any notebook by hand with
`python tests/test_browser.py path/to/NN_name.ipynb` (its file name picks its WIDGETS entry).
"""
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from labdriver import (INSTALL_HINT, Click, Expect, Lab, LabPage, Slide, Widget, check_notebook,  # noqa: E402
                       find_chromium, launch_chromium, shows_coloured_html, shows_image, shows_line_starting, shows_text)

# The `browser` fixture (headless Chromium, or a skip that says how to install one) is in conftest.py,
# shared with tests/test_site.py.

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _drafts_listed(n):
    """The round table lists n drafts: the lines between its header and its 'next token' line."""
    def check(out):
        lines = out["text"].splitlines()
        head = [i for i, ln in enumerate(lines) if "min(1,p/q)" in ln]
        nxt = [i for i, ln in enumerate(lines) if ln.lstrip().startswith("next token")]
        return bool(head and nxt) and nxt[0] - head[0] - 1 == n
    return check


def _table_rows(header: str, n: int):
    """The table under the line containing `header` has n rows (up to the next blank line)."""
    def check(out):
        lines = out["text"].splitlines()
        head = [i for i, ln in enumerate(lines) if header in ln]
        if not head:
            return False
        rows = 0
        for ln in lines[head[0] + 1:]:
            if not ln.strip():
                break
            rows += 1
        return rows == n
    return check


# notebook -> its interactive widgets: name, the descriptions of its controls (all must render),
# one interaction, and what its output must then show. A new chapter adds one entry (an empty list
# if it has no widget); progress bars need no entry, they are checked for rendering anyway.
WIDGETS = {
    "00_target_and_decoding.ipynb": [
        Widget("decoding explorer",
               controls=("prompt", "temperature", "top_k (0=off)", "top_p", "next token", "restart"),
               interact=(Slide("temperature", 0.0), Click("next token")),
               expect=(shows_image("a bar chart of the next-token distribution"),
                       shows_text("\u2502", "the text so far ('prompt\u2502generated')"))),
    ],
    "01_speculative_sampling.ipynb": [
        Widget("round stepper",
               controls=("prompt", "gamma", "temperature", "next round", "restart"),
               interact=(Slide("gamma", 2), Click("next round")),
               expect=(shows_text("min(1,p/q)", "the round's table (header with 'min(1,p/q)')"),
                       shows_line_starting("next token", "a line starting 'next token'"),
                       Expect("2 drafts in the table (gamma moved to 2)", _drafts_listed(2)),
                       shows_coloured_html("the coloured trace (HTML spans)"))),
    ],
    "02_eagle1_features.ipynb": [
        Widget("EAGLE-1 stepper",
               controls=("prompt", "gamma", "temperature", "next round", "restart"),
               interact=(Slide("gamma", 2), Click("next round")),
               expect=(shows_text("target wanted", "the round's table (header with 'target wanted')"),
                       Expect("2 drafts in the table (gamma moved to 2)", _table_rows("target wanted", 2)),
                       shows_coloured_html("the coloured trace (HTML spans)"))),
    ],
    "03_token_trees.ipynb": [
        Widget("tree stepper",
               controls=("prompt", "tree", "temperature", "next round", "restart"),
               interact=(Click("next round"),),
               expect=(shows_image("the verified tree, drawn"),
                       shows_coloured_html("the coloured trace (HTML spans)"))),
    ],
    "04_dynamic_trees.ipynb": [
        Widget("dynamic tree explorer",
               controls=("prompt", "total_tokens", "depth", "eagle_topk", "next round", "restart"),
               interact=(Slide("total_tokens", 5), Click("next round")),
               expect=(shows_image("the verified tree, drawn"),
                       shows_line_starting("5 drafted nodes", "a line starting '5 drafted nodes' (total_tokens moved to 5)"),
                       shows_coloured_html("the coloured trace (HTML spans)"))),
    ],
    "05_eagle3.ipynb": [
        Widget("EAGLE-3 tree explorer",
               controls=("prompt", "head", "draft vocabulary", "next round", "restart"),
               interact=(Slide("draft vocabulary", 256), Click("next round")),
               expect=(shows_image("the verified tree, drawn"),
                       shows_text("draft vocabulary 256", "'draft vocabulary 256' (the slider moved to 256)"),
                       shows_coloured_html("the coloured trace (HTML spans)"))),
    ],
    "06_suffix_decoding.ipynb": [
        Widget("suffix explorer",
               controls=("prompt", "store", "max_spec_factor", "next round", "restart"),
               interact=(Slide("max_spec_factor", 1.0), Click("next round")),
               expect=(shows_text("max_spec_factor 1.0", "'max_spec_factor 1.0' (the slider moved to 1.0)"),
                       Expect("what the round matched ('matched the last' or 'nothing drafted')",
                              lambda out: "matched the last" in out["text"] or "nothing drafted" in out["text"]),
                       shows_coloured_html("the coloured trace (HTML spans)"))),
    ],
}


def artifacts_dir() -> Path:
    return Path(os.environ.get("MINISPEC_BROWSER_ARTIFACTS", ROOT / "test-artifacts" / "browser"))


@pytest.fixture(scope="module")
def lab_page(tmp_path_factory, browser):
    """One JupyterLab server and one page of it for every chapter (each opens, runs and closes in it)."""
    home = tmp_path_factory.mktemp("jupyterlab")
    with Lab(home / "root", home) as server:
        page = LabPage(server, browser)
        yield page
        page.close()


def run_check(lab_page, notebook: Path):
    """The core: check one notebook (any path; its file name picks its WIDGETS entry)."""
    report = check_notebook(lab_page, notebook, WIDGETS[notebook.name], artifacts_dir())
    (artifacts_dir() / f"{notebook.stem}.json").write_text(json.dumps(
        {"problems": report.problems, "seconds": report.seconds, "widget_cells": report.widget_cells,
         "console": report.console[-50:]}, indent=1))
    return report


def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb found"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_chapter_runs_in_jupyterlab(lab_page, notebook):
    assert notebook.name in WIDGETS, (
        f"{notebook.name} has no entry in WIDGETS in tests/test_browser.py: add one that lists its widgets "
        f"(an empty list if it has none)")
    report = run_check(lab_page, notebook)
    print(f"{notebook.name}: seconds {report.seconds}; widget outputs in cells {report.widget_cells}; "
          f"screenshots {[str(p) for p in report.screenshots]}")
    assert not report.problems, (f"{notebook.name} in JupyterLab ({len(report.problems)} problems; screenshots in "
                                 f"{artifacts_dir()}):\n" + "\n".join(report.problems))


if __name__ == "__main__":   # python tests/test_browser.py NOTEBOOK...: the same check, by hand
    import tempfile
    from playwright.sync_api import sync_playwright
    executable = find_chromium() or sys.exit("no Chromium found: " + INSTALL_HINT)
    failed = False
    with tempfile.TemporaryDirectory() as tmp, Lab(Path(tmp) / "root", Path(tmp)) as server, \
            sync_playwright() as pw:
        chromium = launch_chromium(pw, executable)
        lab_page = LabPage(server, chromium)
        for arg in sys.argv[1:]:
            r = run_check(lab_page, Path(arg))
            print(f"{r.notebook}: {'FAIL' if r.problems else 'ok'} {r.seconds}, widget outputs in cells {r.widget_cells}")
            for problem in r.problems:
                print("  " + problem.replace("\n", "\n    "))
            failed |= bool(r.problems)
        lab_page.close()
        chromium.close()
    sys.exit(1 if failed else 0)
