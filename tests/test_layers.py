"""The package's layering, as docs/design.md's table states it: every module sits in one row, and
imports (at the top of a file or inside a function body) go only to its own row or the rows
above it in the table (lower layers), never in a circle."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minispec"


def layers(design: str) -> list[list[str]]:
    """The modules named in each row of the table under '## Layers' (`x.py`, or `x/` for a
    subpackage), bottom layer first."""
    section = design.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[2] for line in section.splitlines() if line.startswith("| ") and "`" in line]
    return [[a or b for a, b in re.findall(r"`(\w+)\.py`|`(\w+)/`", row)] for row in rows]


def module_name(path: Path, package: Path) -> str:
    """minispec/eagle.py -> eagle; minispec/viz/trees.py -> viz (a subpackage is one module)."""
    rel = path.relative_to(package)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports(path: Path, package: Path) -> set[str]:
    """The package modules a file imports, anywhere in it (function bodies included)."""
    tree, out = ast.parse(path.read_text()), set()
    pkg = ("minispec",) + path.relative_to(package).parts[:-1]        # e.g. ("minispec", "viz")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("minispec.")}
        elif isinstance(node, ast.ImportFrom):
            base = list(pkg[:len(pkg) - node.level + 1]) if node.level else []
            full = base + (node.module.split(".") if node.module else [])
            if full[:1] != ["minispec"]:
                continue
            if len(full) > 1:
                out.add(full[1])
            else:                  # from . import x: a module, or a name the package's face hands on
                out |= {a.name if (package / f"{a.name}.py").exists() or (package / a.name).is_dir()
                        else "__init__" for a in node.names}
    return out


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports. The package's __init__ only hands names on: it
    is no row of its own, and a module that imports a name from it imports what it imports."""
    g: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        name = module_name(path, package)
        g.setdefault(name, set()).update(imports(path, package) - {name})
    face = g.pop("__init__")          # importing a name from the face imports what the face imports
    return {m: (deps - {"__init__"}) | (face if "__init__" in deps else set()) for m, deps in g.items()}


def upward_imports(g, rows) -> list[str]:
    row_of = {m: i for i, row in enumerate(rows) for m in row}
    where = lambda m: f"row {row_of[m] + 1}" if m in row_of else "no row"
    return [f"{a} ({where(a)}) imports {b} ({where(b)})" for a, deps in g.items() for b in sorted(deps)
            if row_of.get(b, len(rows)) > row_of.get(a, -1)]


def cycle(g) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        state[n] = 2
        stack.pop()
    for n in sorted(g):
        if n not in state and (found := visit(n)):
            return found
    return None


ROWS = layers((ROOT / "docs" / "design.md").read_text())


def test_every_module_sits_in_exactly_one_row():
    listed = [m for row in ROWS for m in row]
    assert len(listed) == len(set(listed)), "a module is listed twice in docs/design.md's layers"
    assert set(listed) == set(graph()), "docs/design.md's layers and minispec/ list different modules"


def test_no_module_imports_from_a_higher_layer_or_in_a_circle():
    g = graph()
    assert upward_imports(g, ROWS) == []
    assert cycle(g) is None


def test_the_check_sees_an_import_inside_a_function_body(tmp_path):
    """Planted: the bottom layer's device.py imports the CLI (the top) inside a function body, as
    the studies once imported the benchmark from inside the drafter modules."""
    fake = tmp_path / "minispec"
    for path in PACKAGE.rglob("*.py"):
        (fake / path.relative_to(PACKAGE)).parent.mkdir(parents=True, exist_ok=True)
        (fake / path.relative_to(PACKAGE)).write_text(path.read_text())
    with open(fake / "device.py", "a") as f:
        f.write("\n\ndef planted():\n    from .__main__ import main\n    return main\n")
    g = graph(fake)
    assert upward_imports(g, ROWS) == ["device (row 1) imports __main__ (row %d)" % len(ROWS)]
    assert cycle(g) is not None
