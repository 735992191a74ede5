"""The part of an experiment file that `xval` executes.

The original scripts' experiment files end with a driver block below the line
`#DON'T TOUCH WHAT IS WRITTEN BELOW THIS LINE` (it reads sys.argv, writes files, loops over the
instances calling the old machinery) and import that machinery (`import xval_instance as xval`)
after putting its folder on sys.path. None of that may run under `xval`: the text is cut at the
marker before it is even parsed, and the old imports and sys.path lines are removed from the
syntax tree. Everything else (settings, loops, helper functions) runs as written.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

DRIVER_MARKER = re.compile(r"^\s*#+\s*DON'?T\s+TOUCH\b", re.IGNORECASE)
OLD_MACHINERY = re.compile(r"^xval_instance\w*$")


@dataclass
class ExperimentSource:
    tree: ast.Module
    driver_line: int | None = None  # 1-based line of the marker, when there was a driver block
    removed: list[str] = field(default_factory=list)  # what was dropped, e.g. 'import xval_instance'

    @property
    def torch_variant(self) -> bool:
        """It imported a torch variant of the old machinery (xval_instance_torch...)."""
        return any("torch" in name.lower() for name in self.removed if name.startswith(("import", "from")))

    @property
    def old_style(self) -> bool:
        return self.driver_line is not None or bool(self.removed)

    def note(self, path) -> str:
        """One line saying what was not run."""
        parts = []
        if self.removed:
            parts.append(", ".join(dict.fromkeys(self.removed)))
        if self.driver_line is not None:
            parts.append(f"the driver block from line {self.driver_line} on (#DON'T TOUCH ...)")
        return f"{path}: original-scripts experiment file: read its settings; not run: {'; '.join(parts)}"


def _is_sys_path(node: ast.AST) -> bool:
    """`sys.path` itself (an Attribute `path` of the Name `sys`)."""
    return isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name) \
        and node.value.id == "sys"


def _touches_sys_path(stmt: ast.stmt) -> bool:
    """sys.path.append(...) / insert / extend / remove, sys.path = ..., sys.path += ..."""
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        func = stmt.value.func
        return isinstance(func, ast.Attribute) and _is_sys_path(func.value)
    if isinstance(stmt, ast.Assign):
        return any(_is_sys_path(t) for t in stmt.targets)
    if isinstance(stmt, ast.AugAssign):
        return _is_sys_path(stmt.target)
    return False


def _strip(body: list[ast.stmt], removed: list[str]) -> list[ast.stmt]:
    """`body` less the old machinery's imports and the sys.path lines (also inside if / try)."""
    kept = []
    for stmt in body:
        if isinstance(stmt, ast.Import):
            old = [a for a in stmt.names if OLD_MACHINERY.match(a.name)]
            removed += [f"import {a.name}" for a in old]
            stmt.names = [a for a in stmt.names if a not in old]
            if not stmt.names:
                continue
        elif isinstance(stmt, ast.ImportFrom) and stmt.module and OLD_MACHINERY.match(stmt.module.split(".")[0]):
            removed.append(f"from {stmt.module} import ...")
            continue
        elif _touches_sys_path(stmt):
            removed.append("sys.path changes")
            continue
        for name in ("body", "orelse", "finalbody"):
            block = getattr(stmt, name, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                setattr(stmt, name, _strip(block, removed) or [ast.Pass()])
        for handler in getattr(stmt, "handlers", []):
            handler.body = _strip(handler.body, removed) or [ast.Pass()]
        kept.append(stmt)
    return kept


def read_source(text: str, filename: str) -> ExperimentSource:
    """The experiment file's syntax tree without the driver block and the old imports.

    Raises SyntaxError for a file that does not parse (above the marker).
    """
    lines = text.splitlines(keepends=True)
    driver_line = next((n for n, line in enumerate(lines, 1) if DRIVER_MARKER.match(line)), None)
    if driver_line is not None:
        text = "".join(lines[:driver_line - 1])
    tree = ast.parse(text, filename=filename)
    removed: list[str] = []
    tree.body = _strip(tree.body, removed)
    ast.fix_missing_locations(tree)
    return ExperimentSource(tree, driver_line, removed)
