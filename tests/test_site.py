"""The book (mkdocs.yml, docs/): it builds with --strict, a broken internal link fails the build, and
in headless Chromium the home page links to every chapter and a chapter shows its figures.

The site is built once per session into a temporary folder, or taken from $MINISPEC_SITE_DIR where
a strict build already wrote it (.ci/run builds it before the tests, so CI builds it once). Needs
the `docs` extra (pip install -e ".[docs]"); skipped, saying so, without it.
"""
import json
import os
import shutil
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BROWSER_CHAPTER = "01_speculative_sampling.ipynb"   # the chapter opened in Chromium: the most figures

sys.path.insert(0, str(ROOT / "docs"))


def mkdocs_build(config: Path, site_dir: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("mkdocs", reason="the docs tools are not installed: pip install -e '.[docs]'")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site_dir)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    given = os.environ.get("MINISPEC_SITE_DIR")
    if given:
        assert (Path(given) / "index.html").exists(), f"MINISPEC_SITE_DIR={given} holds no built site"
        return Path(given)
    out = tmp_path_factory.mktemp("site")
    r = mkdocs_build(ROOT / "mkdocs.yml", out)
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stdout}\n{r.stderr}"
    return out


def png_outputs(notebook: Path) -> int:
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    return sum("image/png" in out.get("data", {}) for cell in nb["cells"] for out in cell.get("outputs", []))


def test_every_chapter_is_a_page_with_its_figures(site):
    for nb in NOTEBOOKS:
        page = site / "chapters" / f"{nb.stem}.html"
        assert page.exists(), f"{nb.name} has no page in the built site"
        html = page.read_text(encoding="utf-8")
        assert html.count('src="data:image/png') == png_outputs(nb), f"{page.name}: not every stored figure is shown"


def test_every_public_module_has_an_api_page(site):
    for module in sorted((ROOT / "minispec").glob("*.py")):
        if not module.stem.startswith("_"):
            assert (site / "api" / f"minispec.{module.stem}.html").exists(), f"no API page for minispec.{module.stem}"


def test_a_planted_broken_link_fails_the_strict_build(tmp_path):
    """The real configuration and pages, plus one page with a link to a page that does not exist."""
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    (docs / "planted.md").write_text("# Planted\n\nSee [the missing page](no-such-page.md).\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"INHERIT: {ROOT / 'mkdocs.yml'}\ndocs_dir: {docs}\nhooks: [{ROOT / 'docs' / 'hooks.py'}]\n")
    r = mkdocs_build(config, tmp_path / "site")
    assert r.returncode != 0, "the strict build passed with a broken link"
    assert "no-such-page.md" in r.stdout + r.stderr, r.stdout + r.stderr


def test_the_html_link_check_names_broken_links(tmp_path):
    """docs/hooks.py's check of the built HTML (notebook and API pages too, which mkdocs does not check)."""
    pytest.importorskip("mkdocs", reason="the docs tools are not installed: pip install -e '.[docs]'")
    from hooks import broken_links
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text('<a href="sub/page.html#x">ok</a> <img src="missing.png"> '
                                         '<a href="https://example.org/">external</a> <a href="#top">anchor</a>')
    (tmp_path / "sub" / "page.html").write_text('<a href="../index.html">ok</a> <a href="../gone.html">bad</a> '
                                                '<code>&lt;a href=&quot;nowhere.html&quot;&gt;</code>')
    assert broken_links(tmp_path) == ["broken internal link in index.html: missing.png",
                                      "broken internal link in sub/page.html: ../gone.html"]


def test_the_readmes_headline_table_is_the_results_file():
    """The README's "Measured" table is typed for readers of the repository, but it must say what
    notebooks/results/headline.json (the run's own summary) says, cell for cell."""
    pytest.importorskip("mkdocs", reason="the docs tools are not installed: pip install -e '.[docs]'")
    from hooks import HEADLINE, headline_table, readme_section
    table = headline_table(json.loads(HEADLINE.read_text(encoding="utf-8")))
    assert table in readme_section("Measured"), f"the README's table should read:\n{table}"


@pytest.fixture(scope="module")
def served(site):
    """The built site over HTTP on loopback (as `mkdocs serve` or any static host would serve it)."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def open_page(browser, url: str):
    """A page that may load nothing from outside loopback: the site must work offline."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("http://127.0.0.1")
               or route.request.url.startswith("data:") else route.abort())
    page.goto(url, wait_until="load")
    return page


@pytest.mark.browser
def test_home_page_links_to_every_chapter(browser, served):
    page = open_page(browser, served + "/index.html")
    try:
        links = page.eval_on_selector_all("article a[href]", "els => els.map(e => e.getAttribute('href'))")
        for nb in NOTEBOOKS:
            assert f"chapters/{nb.stem}.html" in links, f"the home page does not link to {nb.name}: {links}"
    finally:
        page.close()


@pytest.mark.browser
def test_a_chapter_page_shows_its_figures(browser, served):
    nb = ROOT / "notebooks" / BROWSER_CHAPTER
    page = open_page(browser, served + f"/chapters/{nb.stem}.html")
    try:
        figures = page.eval_on_selector_all(
            "article img[src^='data:image/png']", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
        assert len(figures) == png_outputs(nb), f"{len(figures)} figures shown, {png_outputs(nb)} stored"
        assert all(done and w > 0 and h > 0 for done, w, h in figures), f"a figure did not decode: {figures}"
        heading = page.inner_text("article h1")
        assert heading.startswith(BROWSER_CHAPTER[:2]), heading
        artifacts = Path(os.environ.get("MINISPEC_BROWSER_ARTIFACTS", ROOT / "test-artifacts" / "browser"))
        artifacts.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(artifacts / f"site-{nb.stem}.png"))
    finally:
        page.close()
