"""Prose that cannot drift: every measured number a chapter's text states (a decimal such as
2.87, 1.15x or 12.3 M, or a percentage) appears in that chapter's own outputs (what it prints
from its live runs and its results files), or is a count in millions ("12.3 M tokens", "5.1 M
parameters") of a shipped model's manifest (data/*/manifest.json) at the precision written, or is
marked as a paper's figure: followed, in the same sentence, by "[paper: <citation>]". A number
said to be approximate ("about 29%") may be a printed one rounded ("28.5%"); a percentage may be
printed as a fraction (22% as 0.22).

A number read off a figure must be printed beside it: matched against the values of the
results files themselves, a random two-decimal number passed 40 to 90% of the time (thousands of
values per chapter); against the printed outputs, 6 to 30% (one decimal or three: 0 to 7%).

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
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
            parts += ["".join(v) for k, v in out.get("data", {}).items() if k.startswith("text/")]
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


def _supported(number: str, millions: bool, outputs: str, values: list[float], approximate: bool = False) -> bool:
    digits = number.rstrip("%")
    if re.search(r"(?<![\d.])" + re.escape(digits) + r"(?![\d])", outputs):
        return True
    if number.endswith("%") and float(digits) < 100:     # 22% where a fraction 0.22 is printed
        fraction = f"{float(digits) / 100:.{len(digits.split('.')[1]) + 2 if '.' in digits else 2}f}"
        if re.search(r"(?<![\d.])" + re.escape(fraction) + r"(?![\d])", outputs):
            return True
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    x = float(digits)
    if approximate:       # "about 29%" for a printed 28.5%: a printed number with more decimals that rounds to it
        step = Decimal(1).scaleb(-decimals)
        printed = (Decimal(p) for p in re.findall(r"(?<![\w.])\d+\.\d+", outputs) if len(p.split(".")[1]) > decimals)
        if any(p.quantize(step, rounding=ROUND_HALF_UP) == Decimal(digits) for p in printed):
            return True
    return millions and any(abs(round(v / 1e6, decimals) - x) < 1e-9 for v in values)


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
