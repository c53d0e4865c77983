"""What the site generates at build time (mkdocs `hooks:`), so that nothing on it is typed twice.

- The chapters: every notebooks/NN_*.ipynb is a page chapters/NN_*.ipynb, rendered by
  mkdocs-jupyter with its stored outputs (never executed), listed in the nav and on the home page.
  The notebooks are copied, unchanged, into a temporary folder that the pages are read from (a
  notebook outside docs/ cannot be a page otherwise; a symlink would not survive every checkout).
- The API reference: one mkdocstrings page per public module of minispec/ (a new module appears
  by itself).
- Tables and lists that pages ask for with a marker such as `<!-- minispec:results -->`: the
  measured results from notebooks/results/*.json (each with the conditions it recorded), the
  README's headline run, what was measured where, the chapters, the modules; and sections of the
  README itself (`<!-- minispec:readme:Using it -->`), so the install page cannot drift from it.
- The link check: after the build, every relative href and src in every HTML file of the site
  must name a file of the site (mkdocs itself checks only the Markdown pages' links); a broken
  one is a warning, which fails a strict build.
"""
from __future__ import annotations

import ast
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.minispec")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "notebooks" / "results"


# ---------------------------------------------------------------- what the site is made of

def chapters() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def chapter_uri(nb: Path) -> str:
    return f"chapters/{nb.name}"


def chapter_title(nb: Path) -> str:
    """The notebook's first Markdown heading, e.g. '00 · The target model, and why decoding is slow'."""
    for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return nb.stem


def modules() -> list[str]:
    """The public modules of the package: minispec/*.py whose name does not start with '_', and
    its subpackages (minispec/NAME/__init__.py) followed by their public modules."""
    found = []
    for path in sorted((ROOT / "minispec").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if len(parts) > 1 and not any(part.startswith("_") for part in parts):
            found.append(".".join(parts))
    return found


def module_file(module: str) -> Path:
    """minispec.NAME -> minispec/NAME.py, or minispec/NAME/__init__.py for a package."""
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def module_summary(module: str) -> str:
    """The first line of a module's docstring, read without importing it."""
    source = module_file(module).read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def api_uri(module: str) -> str:
    return f"api/{module}.md"


ASSIGNMENTS = ROOT / "notebooks" / "assignments"


def assignments_page() -> str | None:
    """notebooks/assignments/README.md as a page of the site, if there is one: its links to files
    of the repository (which are not pages) become their paths in code."""
    readme = ASSIGNMENTS / "README.md"
    if not readme.exists():
        return None
    def path(match):
        text, target = match.group(1), match.group(2)
        if urlsplit(target).scheme or target.startswith("#"):
            return match.group(0)
        repo_path = (ASSIGNMENTS / target).resolve().relative_to(ROOT.resolve()).as_posix() \
            if (ASSIGNMENTS / target).resolve().is_relative_to(ROOT.resolve()) else target
        return f"{text} (`{repo_path}`)" if text.strip("`") != repo_path else f"`{repo_path}`"
    return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", path, readme.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- mkdocs events

def on_config(config):
    """The nav's empty 'Chapters' and 'API reference' sections get their pages."""
    fill = {"Chapters": [{chapter_title(nb): chapter_uri(nb)} for nb in chapters()],
            "API reference": [{"Overview": "api/index.md"}] + [{m: api_uri(m)} for m in modules()]}
    nav = config["nav"] or []
    for item in nav:
        if isinstance(item, dict):
            for key in item:
                if key in fill and not item[key]:
                    item[key] = fill[key]
    if (ASSIGNMENTS / "README.md").exists():   # the assignments' README, as a page after the instructors'
        at = next((i + 1 for i, item in enumerate(nav) if isinstance(item, dict) and "Instructors" in item), len(nav))
        nav.insert(at, {"Assignments": "assignments.md"})
    return config


_copies: list[tempfile.TemporaryDirectory] = []   # the chapters' folder of the current build


@event_priority(100)   # before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files, config):
    while _copies:
        _copies.pop().cleanup()
    _copies.append(tempfile.TemporaryDirectory(prefix="minispec-chapters-"))
    src = Path(_copies[0].name)
    for nb in chapters():
        (src / chapter_uri(nb)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(nb, src / chapter_uri(nb))
        files.append(File(chapter_uri(nb), str(src), config["site_dir"], config["use_directory_urls"]))
    if assignments_page() is not None:
        files.append(File.generated(config, "assignments.md", content=assignments_page()))
    files.append(File.generated(config, "api/index.md", content=(
        "# API reference\n\nThe package `minispec`, one page per public module, from its docstrings "
        "(the chapters show the code itself).\n\n" + MARKER.format("modules") + "\n")))
    for m in modules():
        files.append(File.generated(config, api_uri(m), content=f"# `{m}`\n\n::: {m}\n    options:\n"
                                    "      show_root_heading: false\n"))
    return files


MARKER = "<!-- minispec:{} -->"


def on_page_markdown(markdown, page, config, files):
    def replace(match):
        name, arg = match.group(1), match.group(2)
        if name not in GENERATORS:
            log.warning(f"{page.file.src_uri}: unknown marker {match.group(0)} (known: {', '.join(GENERATORS)})")
            return match.group(0)
        try:
            return GENERATORS[name](page, *([arg] if arg else []))
        except (KeyError, TypeError) as e:
            log.warning(f"{page.file.src_uri}: {match.group(0)}: {e}")
            return match.group(0)
    return re.sub(r"<!-- minispec:([\w-]+)(?::([^>]*?))? -->", replace, markdown)


def on_serve(server, config, builder):
    server.watch(str(ROOT / "notebooks"))   # `mkdocs serve` rebuilds when a chapter or a result changes
    server.watch(str(ROOT / "minispec"))
    return server


def on_shutdown():
    while _copies:
        _copies.pop().cleanup()


def on_post_build(config):
    site = Path(config["site_dir"])
    for problem in broken_links(site):
        log.warning(problem)


# ---------------------------------------------------------------- the link check

_LINK = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""")


def broken_links(site: Path) -> list[str]:
    """'page: link' for every relative href/src of an HTML file under `site` that names no file
    there. External links (with a scheme or //host), data: URIs and pure anchors are not checked;
    escaped markup inside code (href=&quot;...) is not a link and does not match."""
    problems = []
    for page in sorted(site.rglob("*.html")):
        text = page.read_text(encoding="utf-8", errors="replace")
        for link in sorted(set(_LINK.findall(text))):
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or not parts.path:
                continue
            path = unquote(parts.path)
            target = (site / path.lstrip("/")) if path.startswith("/") else (page.parent / path)
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"broken internal link in {page.relative_to(site)}: {link}")
    return problems


# ---------------------------------------------------------------- generated Markdown

def _link(page, uri: str, text: str) -> str:
    """A Markdown link from `page` to the site file `uri` (both relative to docs/)."""
    depth = page.file.src_uri.count("/")
    return f"[{text}]({'../' * depth}{uri})"


def chapters_table(page) -> str:
    rows = [f"| {_link(page, chapter_uri(nb), chapter_title(nb))} | `notebooks/{nb.name}` |" for nb in chapters()]
    return "\n".join(["| chapter | notebook |", "|---|---|", *rows])


_TEX = {r"\alpha": "α", r"\gamma": "γ", r"\tau": "τ", r"\sum_x": "Σ<sub>x</sub>", r"\prod": "∏", r"\log": "log",
        r"\min": "min", r"\le": "≤"}


def plain_math(text: str) -> str:
    """Inline TeX of a chapter's introduction as plain text, for a Markdown page (which loads no
    math renderer): '$\\alpha$' -> 'α'."""
    def one(match):
        tex = match.group(1)
        for k, v in _TEX.items():
            tex = tex.replace(k, v)
        return tex
    return re.sub(r"\$([^$]+)\$", one, text)


def _intro(nb: Path) -> str:
    return "".join(json.loads(nb.read_text(encoding="utf-8"))["cells"][0]["source"])


def syllabus(page) -> str:
    """Per chapter, from its notebook: what it teaches ('You will learn'), what it needs ('You
    need'), and the exercise graders it uses."""
    out = []
    for nb in chapters():
        intro = _intro(nb)
        learn = re.search(r"\*\*You will learn\*\*\n(.*?)(?:\n\n|\Z)", intro, re.S)
        need = re.search(r"\*\*You need\*\*\s*(.*?)(?:\n\n|\Z)", intro, re.S)
        graders = sorted(set(re.findall(r"exercises\.(grade_\w+)", nb.read_text(encoding="utf-8"))))
        out.append(f"### {_link(page, chapter_uri(nb), chapter_title(nb))}\n")
        if learn:
            out.append("You will learn:\n\n" + plain_math(learn.group(1).strip()) + "\n")
        if need:
            out.append("You need: " + plain_math(" ".join(need.group(1).split())) + "\n")
        if graders:
            out.append("Exercises with graders: " + ", ".join(f"`exercises.{g}`" for g in graders) + ".\n")
    return "\n".join(out)


def assignments_link(page) -> str:
    """A link to the assignments' README on the site where the repository has one, else its folder's path."""
    if assignments_page() is None:
        return "`notebooks/assignments/` in the repository"
    return _link(page, "assignments.md", "the assignments' README") + " (`notebooks/assignments/README.md`)"


def modules_list(page) -> str:
    return "\n".join(f"- {_link(page, api_uri(m), '`' + m + '`')}: {module_summary(m)}" for m in modules())


def _results():
    """(file name, parsed JSON) for every notebooks/results/*.json, in order."""
    return [(p.name, json.loads(p.read_text(encoding="utf-8"))) for p in sorted(RESULTS.glob("*.json"))]


def _is_summary(d: dict) -> bool:
    return "device" in d and isinstance(d.get("methods"), dict)


def _chapter_of(page, name: str) -> str:
    m = re.match(r"ch(\d\d)_", name)
    nb = [p for p in chapters() if m and p.name.startswith(m.group(1) + "_")]
    return f"chapter {int(m.group(1))} ({_link(page, chapter_uri(nb[0]), nb[0].stem)})" if nb else "no chapter"


def conditions(d: dict) -> str:
    """The conditions a summary recorded, in one line."""
    load = d.get("load_average") or ["?", "?"]
    prompts = d.get("prompts_per_domain") or {}
    per = ", ".join(f"{k} {v}" for k, v in prompts.items())
    return (f"device **{d['device']}**, torch {d['torch']}, {d.get('threads', '?')} decoding thread(s) "
            f"({d.get('interop_threads', '?')} inter-op) on {d.get('cpu_count', '?')} cores, load average "
            f"{load[0]} before and {load[1]} after the run, temperature {d['temperature']}, "
            f"{d['max_new_tokens']} new tokens, {d.get('repeats', 1)} repeat(s)" + (f", prompts per domain: {per}" if per else ""))


def summary_table(d: dict) -> str:
    from minispec.bench import format_summary   # the bench's own table, so the site and the CLI agree
    return format_summary(d, markdown=True)


def sweep_table(d: dict) -> str:
    rows = ["| gamma | method | tau (all) | speedup (all) | threads | load average (before, after) |", "|---|---|---|---|---|---|"]
    for gamma, run in d["runs"].items():
        for method, per in run["methods"].items():
            r = per["all"]
            rows.append(f"| {gamma} | {method} | {r['mean_acceptance_length']:.2f} | {r['speedup']:.2f}x | "
                        f"{run.get('threads', '?')} | {run.get('load_average')} |")
    first = next(iter(d["runs"].values()))
    return (f"Each gamma is one benchmark run: {conditions(first)} (the first run's conditions; each run's "
            f"threads and load average are in its row). Draft/target step cost c = {d['cost_ratio_c']:.3f}.\n\n"
            + "\n".join(rows))


def heads_table(d: dict) -> str:
    rows = ["| head | temperature | domain | tau | acceptance by position | lossless |", "|---|---|---|---|---|---|"]
    for head, by_t in d["heads"].items():
        for t, per in by_t.items():
            for domain, r in per.items():
                acc = ", ".join(f"{a:.2f}" for a in r["acceptance_per_pos"])
                rows.append(f"| {head} | {t} | {domain} | {r['tau']:.2f} | {acc} | {r['lossless']} |")
    train = ["| head | steps | training time | validation top-1 agreement | command |", "|---|---|---|---|---|"]
    for head, t in d.get("training", {}).items():
        top1 = ", ".join(f"{dom} {v['top1']:.2f}" for dom, v in t.get("val", {}).items())
        secs = f"{t['train_time_s']:.0f} s" if "train_time_s" in t else "?"
        train.append(f"| {head} | {t.get('steps', '?')} | {secs} | {top1} | `{t.get('command', '')}` |")
    return (f"Chains of gamma {d['gamma']}, {d['limit']} prompts per domain, {d['max_new_tokens']} new tokens. The "
            "device is not recorded in this file; tau and acceptance do not depend on the hardware, and the training "
            "times are those of the machine that trained the heads.\n\n" + "\n".join(rows) + "\n\n" + "\n".join(train))


def results_tables(page) -> str:
    out = []
    for name, d in _results():
        out.append(f"### `{name}`\n\nFrom `notebooks/results/{name}`, {_chapter_of(page, name)}.\n")
        if _is_summary(d):
            out.append(f"Recorded: {conditions(d)}.\n\n{summary_table(d)}\n")
        elif "runs" in d and "gammas" in d:
            out.append(sweep_table(d) + "\n")
        elif "heads" in d:
            out.append(heads_table(d) + "\n")
        else:
            out.append("No table is generated for this file's format; the chapter plots it.\n")
    return "\n".join(out)


def where_table(page) -> str:
    """One row per results file: where it was measured, as the file records it."""
    rows = ["| results file | device | torch | threads | cores | load average (before, after) | repeats |",
            "|---|---|---|---|---|---|---|"]
    for name, d in _results():
        s = d if _is_summary(d) else next(iter(d.get("runs", {}).values()), None)
        if s is None:
            rows.append(f"| `{name}` | not recorded (tau only) | | | | | |")
        else:
            if s["device"] != "cpu":
                log.warning(f"notebooks/results/{name} was measured on {s['device']}: docs/cpu-or-gpu.md says "
                            "every result comes from a CPU; update it")
            rows.append(f"| `{name}` | {s['device']} | {s['torch']} | {s.get('threads', '?')} | {s.get('cpu_count', '?')} | "
                        f"{s.get('load_average')} | {s.get('repeats', 1)} |")
    return "\n".join(rows)


def readme_section(heading: str) -> str:
    """A section of the README, without its heading ('top': what comes before the first '---')."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if heading == "top":
        return readme.split("\n---\n", 1)[0].split("\n", 1)[1].strip()
    marker = f"\n## {heading}\n"
    if marker not in readme:
        raise KeyError(f"the README has no section '## {heading}'")
    return readme.split(marker, 1)[1].split("\n## ", 1)[0].strip()


def readme(page, heading: str) -> str:
    """A README section on a page: its links into docs/ made relative to the page."""
    return readme_section(heading).replace("](docs/", "](" + "../" * page.file.src_uri.count("/"))


HEADLINE = RESULTS / "headline.json"     # the README's "Measured" run, as `bench` wrote it


def headline(page) -> str:
    """The headline run from its results file: the command and conditions it recorded, and its
    whole table (the README's "Measured" table is the short form, `headline_table`)."""
    d = json.loads(HEADLINE.read_text(encoding="utf-8"))
    return (f"From `notebooks/results/{HEADLINE.name}`, written by\n\n```bash\n{d['command']}\n```\n\n"
            f"Recorded: {conditions(d)}.\n\n{summary_table(d)}")


def headline_table(d: dict) -> str:
    """The README's short form of the headline run: tau / speedup by method and domain (a test
    holds the README's table to it)."""
    domains = [k for k in next(iter(d["methods"].values()))]
    rows = ["| method | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]
    for m, per in d["methods"].items():
        if m != "ar":
            rows.append(f"| `{m}` | " + " | ".join(f"{per[x]['mean_acceptance_length']:.2f} / {per[x]['speedup']:.2f}x"
                                                for x in domains) + " |")
    return "\n".join(rows)


def gpu_defaults(page) -> str:
    from minispec.eagle2 import DEFAULTS
    return "\n".join(["| device | total_tokens | depth | eagle_topk |", "|---|---|---|---|"]
                     + [f"| {dev} | {v['total_tokens']} | {v['depth']} | {v['eagle_topk']} |" for dev, v in DEFAULTS.items()])


def cost_curve(page) -> str:
    """T(n) / T(1) for the results files that measured the target's forward cost (bench --cost-curve)."""
    rows = []
    for name, d in _results():
        t = d.get("target_cost")
        if not t:
            continue
        cost = dict(zip(t["n"], t["median"]))
        ns = [n for n in (1, 2, 4, 8, 16, 32, 64) if n in cost]
        rows.append((name, d, ns, cost))
    if not rows:
        return "(no results file measured T(n))"
    ns = sorted({n for _, _, ns, _ in rows for n in ns})
    head = ["| results file | threads | T(1) | " + " | ".join(f"T({n}) / T(1)" for n in ns[1:]) + " |",
            "|---|---|---|" + "---|" * (len(ns) - 1)]
    return "\n".join(head + [f"| `{name}` | {d.get('threads', '?')} | {cost[1] * 1e3:.2f} ms | "
                             + " | ".join(f"{cost[n] / cost[1]:.2f}" if n in cost else "" for n in ns[1:]) + " |"
                             for name, d, _, cost in rows])


GENERATORS = {"chapters": chapters_table, "modules": modules_list, "results": results_tables, "where": where_table,
              "headline": headline, "eagle2-defaults": gpu_defaults,
              "cost-curve": cost_curve, "readme": readme,
              "syllabus": syllabus, "assignments": assignments_link}
