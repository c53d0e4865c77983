"""Drive a real JupyterLab in headless Chromium (Playwright): open a notebook, run all its cells
from the Run menu, report cell errors and widgets that do not render, and use each widget once.

Used by tests/test_browser.py; nothing here is specific to one chapter. The chapters' widgets are
described there, in WIDGETS. Names used in messages: the notebook's file name, the widget's name
in that table, the cell index (0-based, as in the .ipynb file).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# Closed networks refuse Chromium's background connections; these flags stop it making them.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
CHROMIUM_ENV = "MINISPEC_CHROMIUM"
INSTALL_HINT = (f"install Chromium (Debian/Ubuntu: `sudo apt-get install chromium`; macOS: "
                f"`brew install --cask chromium`; or `python -m playwright install chromium`) or set {CHROMIUM_ENV} "
                f"to a Chromium or Chrome executable; deselect this test with -m 'not browser'")

LOAD_TIMEOUT_S = 90         # the page, the notebook and its kernel
RUN_TIMEOUT_S = 600         # Run All Cells, per notebook (each takes about a minute on a quiet 2 cores)
INTERACT_TIMEOUT_S = 60     # a widget's output changing after one interaction

# User settings for the throwaway JupyterLab: every cell in the DOM (no virtual scrolling, so
# every output can be inspected and photographed), no autosave (the notebook on disk stays as it
# is), no news pop-up over the notebook.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def find_chromium() -> str | None:
    """$MINISPEC_CHROMIUM, then chromium/chrome on PATH and in the usual places, then a browser
    that `playwright install chromium` downloaded."""
    if os.environ.get(CHROMIUM_ENV):
        return os.environ[CHROMIUM_ENV] if os.access(os.environ[CHROMIUM_ENV], os.X_OK) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    for path in ("/usr/bin/chromium", "/usr/lib/chromium/chromium", "/snap/bin/chromium",
                 "/Applications/Chromium.app/Contents/MacOS/Chromium",
                 "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"):
        if os.access(path, os.X_OK):
            return path
    try:
        from playwright.sync_api import sync_playwright
        with sync_playwright() as pw:
            path = pw.chromium.executable_path
        return path if os.access(path, os.X_OK) else None
    except Exception:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server serving `root`, on a free port, with a token, its own config and runtime
    folders under `home`, no browser of its own. Use as a context manager."""

    def __init__(self, root: Path, home: Path):
        self.root, self.home = Path(root), Path(home)
        self.token = os.urandom(16).hex()
        self.port = _free_port()
        self.log_path = self.home / "jupyterlab.log"
        self.proc = None

    def __enter__(self):
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.home / "config"
        for name, values in LAB_SETTINGS.items():
            path = cfg / "lab" / "user-settings" / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(cfg), JUPYTER_RUNTIME_DIR=str(self.home / "runtime"),
                   PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--ServerApp.token={self.token}",
               f"--ServerApp.root_dir={self.root}", "--ServerApp.terminals_enabled=False",
               "--LabApp.extension_manager=readonly",
               # window.jupyterapp, as JupyterLab's own UI tests (Galata) use it: the notebook's model
               # tells an error output from a warning on stderr, and which outputs are widgets.
               "--LabApp.expose_app_in_browser=True"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"JupyterLab exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/status?token={self.token}", timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"JupyterLab did not answer within {LOAD_TIMEOUT_S} s:\n{self.log_tail()}")
            time.sleep(0.5)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, rel_path: str) -> str:
        """The notebook in a workspace of its own: JupyterLab would otherwise reopen the tabs of the
        previous page (workspaces are kept on the server), kernels and all."""
        self._pages = getattr(self, "_pages", 0) + 1
        return f"{self.base}/lab/workspaces/check{self._pages}/tree/{rel_path}?token={self.token}"

    def shutdown_kernels(self) -> None:
        """Shut down every kernel the server runs (after a check that broke off, its kernel may
        still be computing)."""
        try:
            with urllib.request.urlopen(f"{self.base}/api/kernels?token={self.token}", timeout=10) as r:
                kernels = json.loads(r.read())
            for k in kernels:
                req = urllib.request.Request(f"{self.base}/api/kernels/{k['id']}?token={self.token}", method="DELETE")
                urllib.request.urlopen(req, timeout=30).close()
        except OSError:
            pass

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __exit__(self, *exc):
        """Stop the server (it shuts its kernels down), then anything left in its process group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # its own session: only what it started
        except (ProcessLookupError, PermissionError, AttributeError):
            pass
        self.proc.wait()
        self._log.close()
        self.proc = None


def launch_chromium(pw, executable: str):
    return pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)


# ---------------------------------------------------------------------------------------------
# What a chapter's table says about a widget.

@dataclass(frozen=True)
class Slide:
    """Drag the slider whose description is `control` to `value`."""
    control: str
    value: float

    def __str__(self):
        return f"moving the slider {self.control!r} to {self.value}"


@dataclass(frozen=True)
class Click:
    """Click the button whose description is `control`."""
    control: str

    def __str__(self):
        return f"clicking {self.control!r}"


@dataclass(frozen=True)
class Expect:
    """What the widget's output must show after the interaction: `check(output)` is true, where
    output is a dict with `text` (the text it shows), `images` (number of <img>), `html`
    (number of rendered HTML outputs) and `coloured_spans` (spans with a background colour)."""
    says: str
    check: Callable[[dict], bool]


@dataclass(frozen=True)
class Widget:
    """An interactive widget of a chapter: its name (for messages), the descriptions of its
    controls (all must render), one interaction, and what its output must then show."""
    name: str
    controls: tuple[str, ...]
    interact: tuple
    expect: tuple[Expect, ...]


def shows_text(fragment: str, says: str) -> Expect:
    return Expect(says, lambda out: fragment in out["text"])


def shows_line_starting(prefix: str, says: str) -> Expect:
    return Expect(says, lambda out: any(line.lstrip().startswith(prefix) for line in out["text"].splitlines()))


def shows_image(says: str) -> Expect:
    return Expect(says, lambda out: out["images"] > 0)


def shows_coloured_html(says: str) -> Expect:
    return Expect(says, lambda out: out["html"] > 0 and out["coloured_spans"] > 0)


# ---------------------------------------------------------------------------------------------
# The page.

_PANEL_JS = """(path) => {
  const app = window.jupyterapp;
  if (!app) return null;
  for (const w of app.shell.widgets('main')) if (w.context && w.context.path === path && w.content) return w;
  return null;
}"""

_STATE_JS = """([path, widgetMime]) => {
  const findPanel = %s;
  const panel = findPanel(path);
  if (!panel) return null;
  const session = panel.sessionContext.session;
  const kernel = session && session.kernel;
  const cells = panel.content.widgets.map((cell, index) => {
    if (cell.model.type !== 'code') return {index, code: false};
    const prompt = (cell.node.querySelector('.jp-InputPrompt') || {}).textContent || '';
    const source = cell.model.sharedModel.getSource();
    const children = cell.outputArea ? Array.from(cell.outputArea.node.children)
        .filter(c => c.classList.contains('jp-OutputArea-child')) : [];
    const outputs = cell.model.outputs.toJSON().map((o, i) => {
      const dom = children[i];
      const rendered = dom && dom.querySelector('.jp-OutputArea-output');
      const out = {type: o.output_type, mimes: Object.keys(o.data || {}),
                   domMime: rendered ? (rendered.getAttribute('data-mime-type') || '') : '',
                   widgetDom: !!(rendered && rendered.querySelector('.jupyter-widgets')),
                   domText: dom ? dom.innerText.slice(0, 400) : ''};
      if (o.output_type === 'error') {
        out.ename = o.ename; out.evalue = o.evalue; out.traceback = (o.traceback || []).join('\\n');
      }
      if (o.data && o.data[widgetMime]) out.modelId = o.data[widgetMime].model_id;
      return out;
    });
    return {index, code: true, empty: !source.trim(), prompt: prompt.trim(),
            count: cell.model.executionCount, outputs};
  });
  return {kernel: kernel ? kernel.status : 'none', cells};
}""" % _PANEL_JS

# What Run All's wait loop polls once a second: counts only (the full state above copies every
# output, images included, and lays out their text: costly at that rate, so it is read once, at the end).
_PROGRESS_JS = """(path) => {
  const findPanel = %s;
  const panel = findPanel(path);
  if (!panel) return null;
  const session = panel.sessionContext.session;
  const kernel = session && session.kernel;
  let code = 0, running = 0, done = 0, errored = false;
  panel.content.widgets.forEach(cell => {
    if (cell.model.type !== 'code' || !cell.model.sharedModel.getSource().trim()) return;
    code += 1;
    const prompt = (cell.node.querySelector('.jp-InputPrompt') || {}).textContent || '';
    if (prompt.trim().startsWith('[*]')) running += 1;
    if (cell.model.executionCount !== null) done += 1;
    const outputs = cell.model.outputs;
    for (let i = 0; i < outputs.length; i++) if (outputs.get(i).type === 'error') errored = true;
  });
  return {kernel: kernel ? kernel.status : 'none', code, running, done, errored};
}""" % _PANEL_JS

# Finds the top-level widgets in the outputs, lists their controls by description and tags them
# (data-labcheck-widget on the widget, data-labcheck-control on each control) for Playwright.
_WIDGETS_JS = """(path) => {
  const findPanel = %s;
  const panel = findPanel(path);
  const found = [];
  panel.content.widgets.forEach((cell, index) => {
    if (!cell.outputArea) return;
    const roots = Array.from(cell.outputArea.node.querySelectorAll('.jp-OutputArea-output > .jupyter-widgets'))
        .filter(r => !r.parentElement.closest('.jupyter-widgets'));   // not those inside an Output widget
    roots.forEach((root, k) => {
      const id = `cell${index}-${k}`;
      root.setAttribute('data-labcheck-widget', id);
      const controls = [];
      root.querySelectorAll('.widget-slider, .widget-dropdown, .widget-text, .widget-checkbox, .widget-toggle-buttons, .widget-select')
        .forEach(el => {
          const label = el.querySelector(':scope > label.widget-label');
          const name = label ? label.textContent.trim() : '';
          if (name) { el.setAttribute('data-labcheck-control', name); controls.push(name); }
        });
      root.querySelectorAll('button.widget-button').forEach(el => {
        const name = el.textContent.trim() || el.getAttribute('title') || '';
        if (name) { el.setAttribute('data-labcheck-control', name); controls.push(name); }
      });
      const text = root.innerText.slice(0, 300);
      found.push({id, cell: index, controls, text});
    });
  });
  return found;
}""" % _PANEL_JS

# What the first Output widget inside a widget shows.
_OUTPUT_JS = """(root) => {
  const out = root.querySelector('.widget-output') || root;
  const errors = Array.from(out.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]'))
      .map(e => e.innerText);
  const html = out.querySelectorAll('.jp-RenderedHTMLCommon');
  let coloured = 0;
  html.forEach(h => h.querySelectorAll('span').forEach(s => { if (s.style.background || s.style.backgroundColor) coloured++; }));
  return {text: out.innerText, images: out.querySelectorAll('img').length, html: html.length,
          coloured_spans: coloured, stderr: errors};
}"""


def _short(text: str, n: int = 300) -> str:
    text = ANSI.sub("", text or "").strip()
    return text if len(text) <= n else text[:n] + " ..."


def _json_css(value: str) -> str:
    return json.dumps(value)  # a double-quoted CSS string


@dataclass
class Report:
    notebook: str
    problems: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    screenshots: list[Path] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    widget_cells: list[int] = field(default_factory=list)   # cells whose widget outputs were checked

    def fail(self, message: str):
        self.problems.append(f"{self.notebook}: {message}")


def strip_outputs(src: Path, dst: Path):
    """Copy a notebook without outputs, execution counts or saved widget state, so everything the
    page shows afterwards comes from this run."""
    nb = json.loads(src.read_text())
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb.get("metadata", {}).pop("widgets", None)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(nb))


class LabPage:
    """One browser page of JupyterLab for every notebook checked: the app loads once (seconds of
    Chromium's time per load), each notebook then opens in it, runs, and is closed with its kernel
    shut down. After a check that broke off, the next one starts on a fresh page."""

    def __init__(self, lab: Lab, browser):
        self.lab, self.browser = lab, browser
        self.context = self.page = None
        self.report: Report | None = None      # the check under way: console messages go to it

    def _console(self, message: str):
        if self.report is not None:
            self.report.console.append(message)

    def open(self, rel: str):
        """The page with notebook `rel` opened in it (loading JupyterLab on the first call)."""
        if self.page is None:
            self.context = self.browser.new_context(viewport={"width": 1400, "height": 1000})
            self.page = self.context.new_page()
            self.page.on("console", lambda m: self._console(f"{m.type}: {m.text}")
                         if m.type in ("error", "warning") else None)
            self.page.on("pageerror", lambda e: self._console(f"page error: {e}"))
            self.page.goto(self.lab.url(rel), timeout=LOAD_TIMEOUT_S * 1000)
        else:
            self.page.evaluate("async (path) => { await window.jupyterapp.commands.execute('docmanager:open', "
                               "{path, factory: 'Notebook'}); }", rel)
        return self.page

    def close_notebook(self, rel: str) -> bool:
        """Shut the notebook's kernel down and close its tab (discarding the run's outputs). False
        where the page is not clean afterwards (a dialog still open): then reset it."""
        self.page.evaluate("""async (path) => { const p = (%s)(path); if (!p) return;
            if (p.sessionContext.session) await p.sessionContext.shutdown();
            p.context.model.dirty = false; p.dispose(); }""" % _PANEL_JS, rel)
        self.page.set_viewport_size({"width": 1400, "height": 1000})
        return self.page.locator(".jp-Dialog").count() == 0

    def reset(self):
        """A fresh page for the next notebook; every kernel the server still runs is shut down."""
        if self.context is not None:
            self.context.close()
        self.context = self.page = None
        self.lab.shutdown_kernels()

    def close(self):
        if self.context is not None:
            self.context.close()
        self.context = self.page = None


def check_notebook(lab_page: LabPage, notebook: Path, widgets: list[Widget], artifacts: Path) -> Report:
    """Open `notebook` (a stripped copy under the lab's root, notebooks/NAME) in JupyterLab, Run All
    Cells, and check: no cell shows an error; every widget output renders as a widget; each widget
    of `widgets` has its controls, and one interaction changes its output as its table says.
    Screenshots go to `artifacts`. Returns a Report; its problems are empty when all is well."""
    name = notebook.name
    rel = f"notebooks/{name}"
    strip_outputs(notebook, lab_page.lab.root / rel)
    report = Report(name)
    artifacts.mkdir(parents=True, exist_ok=True)
    lab_page.report = report
    t0 = time.monotonic()
    page, broke_off = None, False
    try:
        page = lab_page.open(rel)
        _open(page, lab_page.lab, rel, report)
        report.seconds["open"] = round(time.monotonic() - t0, 1)
        if report.problems:
            return report
        t1 = time.monotonic()
        state = _run_all(page, rel, report)
        report.seconds["run all"] = round(time.monotonic() - t1, 1)
        if state is None:
            return report
        stopped_at = _check_cells(state, report)
        t2 = time.monotonic()
        _check_widgets(page, rel, widgets, report, stopped_at, artifacts)
        report.seconds["widgets"] = round(time.monotonic() - t2, 1)
    except Exception as e:   # a Playwright timeout or a page that went away: still a clear message
        broke_off = True
        report.fail(f"the browser check stopped: {type(e).__name__}: {_short(str(e), 600)}")
    finally:
        if page is not None:
            try:   # the whole notebook where something failed (a tall page costs seconds to draw), else the window
                report.screenshots.append(_screenshot_notebook(page, artifacts / f"{notebook.stem}.png",
                                                               whole=bool(report.problems)))
            except Exception as e:
                report.console.append(f"(no screenshot: {e})")
            try:
                broke_off |= not lab_page.close_notebook(rel)
            except Exception:
                broke_off = True
        lab_page.report = None
        if broke_off or report.problems:
            lab_page.reset()          # the next notebook on a fresh page
        report.seconds["total"] = round(time.monotonic() - t0, 1)
    return report


def _open(page, lab: Lab, rel: str, report: Report):
    try:
        page.wait_for_function(
            """(path) => { const p = (%s)(path);
                 return p && p.content.widgets.length > 0 && p.sessionContext.session
                        && p.sessionContext.session.kernel && p.sessionContext.session.kernel.status === 'idle'; }"""
            % _PANEL_JS, arg=rel, timeout=LOAD_TIMEOUT_S * 1000, polling=500)
    except Exception:
        report.fail(f"the notebook or its kernel did not come up in JupyterLab within {LOAD_TIMEOUT_S} s "
                    f"(server log:\n{lab.log_tail(15)})")
        return
    # the notebook's tab in front (the only one)
    page.evaluate("(path) => { const p = (%s)(path); window.jupyterapp.shell.activateById(p.id); }" % _PANEL_JS, rel)


def _run_all(page, rel: str, report: Report):
    """Run > Run All Cells, from the menu bar, then wait until no cell runs or waits and the kernel
    is idle. Returns the final state, or None (and a problem) on timeout."""
    panel_id = page.evaluate("(path) => (%s)(path).id" % _PANEL_JS, rel)
    page.locator(f"[id={_json_css(panel_id)}] .jp-Notebook").first.click(position={"x": 5, "y": 5})  # focus
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    started, state = False, None
    while time.monotonic() < deadline:
        p = page.evaluate(_PROGRESS_JS, rel)
        started = started or bool(p["running"] or p["done"])
        if started and not p["running"] and p["kernel"] == "idle" and (p["done"] == p["code"] or p["errored"]):
            return page.evaluate(_STATE_JS, [rel, WIDGET_MIME])
        time.sleep(1.0)
    state = page.evaluate(_STATE_JS, [rel, WIDGET_MIME])
    busy = [c["index"] for c in state["cells"] if c["code"] and c["prompt"].startswith("[*]")] if state else []
    report.fail(f"Run All Cells did not finish within {RUN_TIMEOUT_S} s"
                + (f"; cell {busy[0]} was still running" if busy else "")
                + ("" if started else "; no cell ever started (did the Run menu work?)"))
    return None


def _check_cells(state, report: Report):
    """Cell errors, and widget outputs that are not rendered as widgets. Returns the index of the
    cell where the run stopped with an error, or None."""
    stopped_at = None
    for c in state["cells"]:
        if not c["code"]:
            continue
        for o in c["outputs"]:
            if o["type"] == "error":
                stopped_at = c["index"] if stopped_at is None else stopped_at
                tb = _short(o.get("traceback", ""), 1500)
                report.fail(f"cell {c['index']} shows an error: {o['ename']}: {_short(o['evalue'], 400)}\n{tb}")
            elif WIDGET_MIME in o["mimes"]:
                report.widget_cells.append(c["index"])
                bad = ("Loading widget", "Error displaying widget", "model not found", "Failed to load")
                if not o["widgetDom"] or any(b in o["domText"] for b in bad):
                    report.fail(f"cell {c['index']}: a widget output (model {o.get('modelId')}) is not rendered as a "
                                f"widget (rendered as {o['domMime'] or 'nothing'!r}); the page shows: "
                                f"{_short(o['domText'], 200)!r}. Is the ipywidgets frontend (jupyterlab_widgets) "
                                f"installed and matching ipywidgets?")
    return stopped_at


def _check_widgets(page, rel: str, widgets: list[Widget], report: Report, stopped_at, artifacts: Path):
    if stopped_at is not None:
        if widgets:
            report.fail(f"widgets {[w.name for w in widgets]} not checked: the run stopped at cell {stopped_at}")
        return
    found, claimed = [], set()
    deadline = time.monotonic() + 20     # widget views render asynchronously after the run
    while True:
        found = page.evaluate(_WIDGETS_JS, rel)
        if all(any(set(w.controls) <= set(f["controls"]) for f in found) for w in widgets) \
                or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    for w in widgets:
        match = [f for f in found if set(w.controls) <= set(f["controls"])]
        if not match:
            partial = [f for f in found if set(w.controls) & set(f["controls"])]
            seen = partial[0] if partial else None
            report.fail(f"widget {w.name!r} did not render: no widget on the page has all of its controls "
                        f"{list(w.controls)}"
                        + (f"; cell {seen['cell']} has only {seen['controls']}" if seen else
                           f"; widgets on the page: {[(f['cell'], f['controls']) for f in found]}"))
            continue
        root_info = match[0]
        claimed.add(root_info["id"])
        _interact(page, w, root_info, report, artifacts)
    for f in found:
        if f["controls"] and f["id"] not in claimed:
            report.fail(f"cell {f['cell']} shows a widget with controls {f['controls']} that the table of widgets "
                        f"(WIDGETS in tests/test_browser.py) does not describe: add it there")


def _interact(page, w: Widget, info: dict, report: Report, artifacts: Path):
    where = f"widget {w.name!r} (cell {info['cell']})"
    root = page.locator(f"[data-labcheck-widget={_json_css(info['id'])}]")
    root.scroll_into_view_if_needed()
    before = root.evaluate(_OUTPUT_JS)
    for action in w.interact:
        control = root.locator(f"[data-labcheck-control={_json_css(action.control)}]").first
        if isinstance(action, Slide):
            problem = _slide(page, control, action.value)
            if problem:
                report.fail(f"{where}: {action} failed: {problem}")
                return
        elif isinstance(action, Click):
            control.click()
        else:
            raise TypeError(f"unknown interaction {action!r}")
    what = ", then ".join(str(a) for a in w.interact)
    deadline = time.monotonic() + INTERACT_TIMEOUT_S
    missing = list(w.expect)
    while True:
        out = root.evaluate(_OUTPUT_JS)
        bad_lines = [ln for ln in out["text"].splitlines() if ln.strip().startswith("error:")]
        tracebacks = [t for t in out["stderr"] if _looks_like_error(t)]   # not warnings on stderr
        if tracebacks or bad_lines or "Traceback (most recent call last)" in out["text"]:
            text = ANSI.sub("", "\n".join(tracebacks) or "\n".join(bad_lines) or out["text"]).strip()
            report.fail(f"{where}: after {what}, its output shows an error: {text.splitlines()[-1]}\n"
                        f"{_short(text, 1500)}")
            break
        missing = [e for e in w.expect if not e.check(out)]
        if not missing and out != before:
            break
        if time.monotonic() > deadline:
            if out == before:
                said = f"its output did not change within {INTERACT_TIMEOUT_S} s (a dead callback?)"
            else:
                said = f"its output does not show what it should within {INTERACT_TIMEOUT_S} s"
            report.fail(f"{where}: after {what}, {said}; expected: "
                        f"{'; '.join(e.says for e in missing) or 'a change'}. It shows: {_short(out['text'], 400)!r}"
                        + _console_hint(report))
            break
        time.sleep(0.5)
    try:
        root.scroll_into_view_if_needed()
        path = artifacts / f"{Path(report.notebook).stem}__{re.sub(r'[^A-Za-z0-9]+', '_', w.name)}.png"
        root.screenshot(path=str(path))
        report.screenshots.append(path)
    except Exception as e:
        report.console.append(f"(no screenshot of {w.name}: {e})")


def _looks_like_error(text: str) -> bool:
    text = ANSI.sub("", text)
    return "Traceback" in text or any(re.match(r"[A-Za-z_.]*(Error|Exception)(:|$)", ln.strip())
                                      for ln in text.splitlines())


def _console_hint(report: Report) -> str:
    errors = [m for m in report.console if m.startswith(("error", "page error"))]
    return f" Browser console errors: {errors[-3:]}" if errors else ""


def _slide(page, control, value: float) -> str | None:
    """Drag the slider's handle to `value` with the mouse; fine-tune with the arrow keys."""
    handle = control.locator(".noUi-handle").first
    track = control.locator(".noUi-base").first
    handle.scroll_into_view_if_needed()
    lo, hi = float(handle.get_attribute("aria-valuemin")), float(handle.get_attribute("aria-valuemax"))
    h, t = handle.bounding_box(), track.bounding_box()
    if not h or not t:
        return "the slider has no visible handle"
    y = h["y"] + h["height"] / 2
    page.mouse.move(h["x"] + h["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(t["x"] + (value - lo) / (hi - lo) * t["width"], y, steps=10)
    page.mouse.up()
    now = lambda: float(handle.get_attribute("aria-valuenow"))
    for _ in range(100):
        if abs(now() - value) < 1e-6 * max(1.0, abs(value)):
            return None
        handle.press("ArrowRight" if now() < value else "ArrowLeft")
    return f"it shows {now()} instead"


def _screenshot_notebook(page, path: Path, whole: bool = True) -> Path:
    """The notebook scrolled to the top; whole: the window made as tall as the notebook (capped)."""
    if not whole:
        page.evaluate("""() => document.querySelectorAll('.jp-NotebookPanel-notebook, .jp-WindowedPanel-outer')
            .forEach(n => { n.scrollTop = 0; })""")
        page.screenshot(path=str(path))
        return path
    height = page.evaluate("""() => Math.max(0, ...Array.from(document.querySelectorAll(
        '.jp-NotebookPanel-notebook, .jp-NotebookPanel-notebook .jp-WindowedPanel-outer'), n => n.scrollHeight))""")
    page.set_viewport_size({"width": 1400, "height": int(min(max(height + 200, 1000), 30000))})
    page.wait_for_timeout(1000)
    page.evaluate("""() => { if (window.jupyterapp) window.jupyterapp.shell.collapseLeft();
        document.querySelectorAll('.jp-NotebookPanel-notebook, .jp-NotebookPanel-notebook .jp-WindowedPanel-outer')
          .forEach(n => { n.scrollTop = 0; }); }""")
    page.wait_for_timeout(500)
    page.screenshot(path=str(path))
    return path
