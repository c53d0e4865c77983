"""Prose that cannot drift: every measured number a chapter's text states (a decimal such as
2.87, 1.15x or 12.3 M, or a percentage) is printed by that chapter (its streams and plain-text
results: what it prints from its live runs and its results files; a percentage as a percentage),
or is a count in millions ("12.3 M tokens", "5.1 M parameters") of a shipped model's manifest
(data/*/manifest.json) at the precision written, or is marked as a paper's figure: followed, in
the same sentence, by "[paper: <citation>]". A number said to be approximate ("about 29%") may be
a printed one with one decimal more, rounded ("28.5%").

A number read off a figure must be printed beside it. Matched against the values of the results
files themselves, a random two-decimal number passed 40 to 90% of the time (thousands of values
per chapter); against what the chapters print, 7 to 27% (one decimal: 1 to 12%; three: 0 to 3%;
a percentage: 0 to 17%). The "about" rule is lenient (a random "about 4.2" passed 29 to 50%):
it is for numbers the text really rounds.

Integers are left out (chapter, section and step numbers, gamma, token counts: settings, not
measurements); so are code, math ($...$) and link targets. Re-executing a chapter changes its
outputs: a number the text kept from the old run then fails here, naming the cell."""
import json
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# A decimal or a percentage, not inside a longer token (a version, a path, a date, an id),
# then an optional unit of millions (" M", " million").
NUMBER = re.compile(r"(?<![\w.\-/])(\d+(?:\.\d+)?%|\d+\.\d+)(?![\w.]\d)( ?M\b| million\b)?")
PAPER = "[paper:"
APPROX = re.compile(r"\b(about|around|roughly|nearly|almost)\s+$|~\s*$")


def prose(cell_source: str) -> str:
    """A markdown cell without fenced code, inline code, math and link targets."""
    text = re.sub(r"```.*?```", " ", cell_source, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"\$[^$]*\$", " ", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def output_text(nb: dict) -> str:
    """What the chapter prints: its streams and plain-text results (not HTML, whose markup holds
    numbers of its own)."""
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
            parts.append("".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def numeric_values(obj, out: list[float]) -> list[float]:
    """Every number in a manifest but its training history and settings (thousands of values that
    would match almost any number by chance)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k not in ("history", "config"):
                numeric_values(v, out)
    elif isinstance(obj, list):
        for v in obj:
            numeric_values(v, out)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out.append(float(obj))
    return out


def chapter_sources(notebook: Path) -> tuple[str, list[float]]:
    """The chapter's output text, and the values of the shipped models' manifests."""
    values: list[float] = []
    for path in (ROOT / "data").glob("*/manifest.json"):
        numeric_values(json.loads(path.read_text(encoding="utf-8")), values)
    return output_text(json.loads(notebook.read_text(encoding="utf-8"))), values


def unsupported_numbers(nb: dict, outputs: str, values: list[float]) -> list[str]:
    """'cell N: <number> in "...context..."' for every stated number found in none of the sources."""
    found = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        text = prose("".join(cell["source"]))
        for m in NUMBER.finditer(text):
            number, millions = m.group(1), bool(m.group(2))
            sentence_end = re.search(r"[.;!?](\s|$)", text[m.end():])
            rest = text[m.end():m.end() + (sentence_end.start() if sentence_end else len(text))]
            if PAPER in rest:
                continue
            approximate = APPROX.search(text[max(0, m.start() - 12):m.start()]) is not None
            if _supported(number, millions, outputs, values, approximate):
                continue
            context = " ".join(text[max(0, m.start() - 40):m.end() + 30].split())
            found.append(f"cell {index}: {m.group(0).strip()} in \"...{context}...\"")
    return found


def _printed(literal: str, outputs: str, percent: bool) -> bool:
    """`literal` printed as a number of its own: not part of a longer one (14 is not in 14.2 or
    5,114), followed by % where it is a percentage."""
    unit = "%" if percent else r"(?!%)"
    return re.search(r"(?<![\d.])(?<!\d,)" + re.escape(literal) + r"(?!\d|[.,]\d)" + unit, outputs) is not None


def _supported(number: str, millions: bool, outputs: str, values: list[float], approximate: bool = False) -> bool:
    percent = number.endswith("%")
    digits = number.rstrip("%")
    if _printed(digits, outputs, percent):
        return True
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    if approximate:       # "about 29%" for a printed 28.5%: a printed number, same unit, one decimal more, rounds to it
        step = Decimal(1).scaleb(-decimals)
        pattern = r"(?<![\w.])(?<!\d,)(\d+\.\d{%d})" % (decimals + 1) + ("%" if percent else r"(?![\d%])")
        if any(Decimal(p).quantize(step, rounding=ROUND_HALF_UP) == Decimal(digits) for p in re.findall(pattern, outputs)):
            return True
    return millions and any(abs(round(v / 1e6, decimals) - float(digits)) < 1e-9 for v in values)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_every_number_in_a_chapter_is_in_its_outputs_or_results(notebook):
    outputs, values = chapter_sources(notebook)
    missing = unsupported_numbers(json.loads(notebook.read_text(encoding="utf-8")), outputs, values)
    assert not missing, (f"{notebook.name}: numbers its text states that none of its outputs, results files "
                         "or the models' manifests shows (re-executed? update the text; a paper's figure: "
                         "add [paper: citation] after it):\n  " + "\n  ".join(missing))


def test_a_planted_wrong_number_fails_and_a_paper_figure_passes():
    notebook = NOTEBOOKS[3]                   # chapter 3: its text quotes its tables
    outputs, values = chapter_sources(notebook)
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    assert unsupported_numbers(nb, outputs, values) == []
    cell = {"cell_type": "markdown", "source": ["A tree reaches tau 9.87 here; a percentage too: 97.5% of rounds.\n",
                                                "The paper reaches 6.47x [paper: Li et al. 2025, Table 1]."]}
    nb["cells"].append(cell)
    missing = unsupported_numbers(nb, outputs, values)
    assert [m.split(" in ")[0] for m in missing] == [f"cell {len(nb['cells']) - 1}: 9.87",
                                                     f"cell {len(nb['cells']) - 1}: 97.5%"]
