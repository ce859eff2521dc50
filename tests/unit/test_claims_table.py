"""docs/claims.md stays true to the suite: every test it names exists (a rename or a move
that forgets the table fails here), and every row has a test or says why it has none."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLAIMS = ROOT / "docs" / "claims.md"
# `tests/unit/test_x.py::test_name`, also `tests/x.py::Class::test` and `::test_name`
# continuing the file named before it in the same cell.
REFERENCE = re.compile(r"(tests/[\w/]+\.py)?::(\w+)")


def _rows() -> list[list[str]]:
    rows = []
    for line in CLAIMS.read_text().splitlines():
        if line.startswith("|") and not line.startswith("| ---"):
            cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))  # not an escaped \|
            rows.append([c.strip() for c in cells])
    return rows[1:]  # minus the first header


def test_every_named_test_exists():
    missing = []
    named = 0
    for row in _rows():
        current: str | None = None
        for path, name in REFERENCE.findall(row[-1]):
            current = path or current
            if name in {"name", "test_name"} or current is None:
                continue
            named += 1
            source = (ROOT / current).read_text() if (ROOT / current).exists() else ""
            if not re.search(rf"^\s*(async )?def {name}\b|^class {name}\b", source, re.M):
                missing.append(f"{current}::{name}")
    assert named > 300
    assert not missing, missing


def test_every_row_has_a_test_or_says_why_not():
    silent = [
        row[0]
        for row in _rows()
        if len(row) >= 3
        and row[0] not in {"Promise"}
        and "tests/" not in row[-1]
        and "::" not in row[-1]
        and "*" not in row[-1]
    ]
    assert not silent, silent


def _sleeps_outside_a_loop() -> list[tuple[Path, int, str]]:
    """`time.sleep(x)` / `asyncio.sleep(x)` (x not 0) whose nearest enclosing loop or
    function is a function: not a polling loop's pause."""
    import ast

    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "sleep"
                and node.args
                and not (isinstance(node.args[0], ast.Constant) and node.args[0].value == 0)
            ):
                continue
            up = parents.get(node)
            while up is not None and not isinstance(
                up, ast.While | ast.For | ast.AsyncFor | ast.FunctionDef | ast.AsyncFunctionDef
            ):
                up = parents.get(up)
            if not isinstance(up, ast.While | ast.For | ast.AsyncFor):
                found.append((path, node.lineno, ast.unparse(node)))
    return found


def test_no_sleep_synchronises_every_other_sleep_says_what_it_lasts_for():
    """A sleep in a polling loop (with its deadline) is a pause; any other sleep must be a
    duration of the scenario (a load that runs 1 s, an outage, an absence watched for a
    while), said in a comment on its line or the line before, never a wait for something
    to happen."""
    unexplained = []
    sleeps = _sleeps_outside_a_loop()
    for path, line, call in sleeps:
        lines = path.read_text().splitlines()
        around = lines[line - 1] + (lines[line - 2] if line >= 2 else "")
        if "#" not in around:
            unexplained.append(f"{path.relative_to(ROOT)}:{line}: {call}")
    assert sleeps  # the scan sees the suite's sleeps
    assert not unexplained, unexplained
