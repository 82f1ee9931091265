"""What a chapter page shows of its code cells: the rule, in code (CONTRIBUTING.md, *Hiding cells*).

A reader learns a method from the prose, the equation and the library's own code shown with
``literalinclude``, and from short cells that call it. The rest of a notebook's code records
results (``res.grade``/``res.metric``/``res.save``, ``ch.glue``/``ch.figure``), draws figures, or
does both at length; shown in full it buries the method. So every code cell falls under one rule:

* a cell stays **visible** only when it is short (at most :data:`MAX_VISIBLE_LINES` lines of
  code) and calls the method: at least one of its statements is neither bookkeeping nor
  plotting (:func:`statement_kind`);
* every other cell carries one of :data:`HIDING_TAGS` (jupyter-book's cell tags):
  ``hide-input`` where its output matters or its code is worth a click (a long computation,
  the grading of the claims), ``remove-input`` where only its output matters (the run
  information), ``remove-cell`` where neither does (a cell that only glues values or draws a
  figure that a ``{glue:figure}`` shows elsewhere). The ``parameters`` cell is ``hide-cell``.

:func:`problems` checks a notebook against the rule (``tests/test_pages.py`` runs it on every
source notebook) and :func:`suggested_tag` says which tag a cell that needs one should get.
Glued values survive every tag: myst-nb reads them from all code cells before it drops any.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

MAX_VISIBLE_LINES = 12
"""The longest code cell (lines of code, without blank and comment lines) a page shows in full."""

HIDING_TAGS = ("hide-input", "remove-input", "remove-cell", "hide-cell")
"""The jupyter-book tags that keep a cell's code out of the reader's way."""

BOOKKEEPING = ("res.", "ch.glue", "ch.figure", "display", "Markdown", "print", "protocol.grade_family")
"""Calls that only record or show results (prefixes of the called name)."""

PLOTTING_ROOTS = ("plt", "fig", "plots", "sns", "cbar", "im", "leg", "mpl", "matplotlib")
"""Objects whose methods only draw (plus every name that starts with ``ax``: ``ax``, ``axes``, ``ax1``)."""

NEUTRAL_CALLS = {"len", "str", "int", "float", "bool", "round", "min", "max", "sorted", "list", "dict",
                 "set", "tuple", "zip", "enumerate", "range", "sum", "any", "all", "abs", "format",
                 "join", "items", "values", "keys", "get", "append", "extend", "update", "at"}
"""Calls that neither compute a result nor record one (formatting, containers)."""


def _called_name(func: ast.expr) -> str:
    """``res.grade`` for ``res.grade(...)``, ``axes.plot`` for ``axes[0].plot(...)``."""
    parts = []
    while True:
        if isinstance(func, ast.Attribute):
            parts.append(func.attr)
            func = func.value
        elif isinstance(func, ast.Subscript):
            func = func.value
        elif isinstance(func, ast.Call):
            func = func.func
        elif isinstance(func, ast.Name):
            parts.append(func.id)
            break
        else:
            break
    return ".".join(reversed(parts))


def _call_kind(call: ast.Call) -> str:
    """``bookkeeping``, ``plotting``, ``neutral`` or ``method`` for one call (outermost name only)."""
    name = _called_name(call.func)
    root = name.split(".")[0]
    if any(name == p.rstrip(".") or name.startswith(p) for p in BOOKKEEPING):
        return "bookkeeping"
    if root in PLOTTING_ROOTS or root.startswith("ax"):
        return "plotting"
    if name.split(".")[-1] in NEUTRAL_CALLS:
        return "neutral"
    return "method"


def _kinds_in(node: ast.AST) -> set[str]:
    """The kinds of the calls in ``node`` that are not arguments of a bookkeeping or plotting call.

    ``res.grade(C["k"], values(...))`` is bookkeeping however much its arguments compute: the
    grading cell's work is the record. A call inside a method call counts as the method call.
    """
    kinds: set[str] = set()

    def visit(n: ast.AST) -> None:
        if isinstance(n, ast.Call):
            kind = _call_kind(n)
            kinds.add(kind)
            if kind in ("bookkeeping", "plotting", "method"):
                return  # the arguments belong to this call
        for child in ast.iter_child_nodes(n):
            visit(child)

    visit(node)
    return kinds


def statement_kind(stmt: ast.stmt) -> str:
    """``method``, ``bookkeeping``, ``plotting`` or ``neutral`` for one top-level statement.

    A compound statement (``for``, ``if``, ``with``) is the strongest kind of its body:
    ``method`` over ``bookkeeping``/``plotting`` over ``neutral``. Definitions (``def``,
    ``class``) and imports are ``method`` (a helper written in the notebook is code to read).
    """
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return "method"
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return "neutral"
    kinds = _kinds_in(stmt)
    if "method" in kinds:
        return "method"
    for kind in ("bookkeeping", "plotting"):
        if kind in kinds:
            return kind
    return "neutral"


def code_lines(source: str) -> int:
    """Lines of code in a cell: without blank lines and comment-only lines."""
    return sum(1 for line in source.splitlines() if line.strip() and not line.strip().startswith("#"))


def cell_summary(source: str) -> dict:
    """``{"lines": n, "kinds": {kind: count}}`` of one code cell (a cell that does not parse: all method)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {"lines": code_lines(source), "kinds": {"method": 1}}
    kinds: dict[str, int] = {}
    for stmt in tree.body:
        k = statement_kind(stmt)
        kinds[k] = kinds.get(k, 0) + 1
    return {"lines": code_lines(source), "kinds": kinds}


def may_be_visible(source: str) -> bool:
    """The rule: short (<= :data:`MAX_VISIBLE_LINES` lines of code) and calls the method."""
    s = cell_summary(source)
    return s["lines"] <= MAX_VISIBLE_LINES and s["kinds"].get("method", 0) > 0


def _tags(cell: dict) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def is_hidden(cell: dict) -> bool:
    return any(t in HIDING_TAGS for t in _tags(cell))


def problems(notebook: dict | str | Path) -> list[str]:
    """Every code cell of ``notebook`` (a dict or a path) that breaks the rule, one line each."""
    nb = notebook if isinstance(notebook, dict) else json.loads(Path(notebook).read_text())
    found = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src, tags = _source(cell), _tags(cell)
        first = (src.strip().splitlines() or [""])[0][:70]
        if "parameters" in tags and "hide-cell" not in tags:
            found.append(f"cell {i} ({first!r}): the parameters cell must be tagged hide-cell")
        elif not is_hidden(cell) and not may_be_visible(src):
            s = cell_summary(src)
            why = (f"{s['lines']} lines of code (visible cells: at most {MAX_VISIBLE_LINES})"
                   if s["lines"] > MAX_VISIBLE_LINES else
                   "only bookkeeping/plotting (" + ", ".join(f"{k} {n}" for k, n in sorted(s["kinds"].items())) + ")")
            found.append(f"cell {i} ({first!r}): {why}; tag it {suggested_tag(src)} (advbook.book.pages)")
    return found


def suggested_tag(source: str, has_visible_output: bool | None = None) -> str:
    """The tag a cell that may not stay visible should get (see the module docstring).

    ``has_visible_output``: whether the cell shows something in place (a table, Markdown), as
    the executed copy says; ``None`` guesses from the code (a ``display``/``print`` call).
    """
    s = cell_summary(source)
    if has_visible_output is None:
        has_visible_output = any(w in source for w in ("display(", "print(", "tables.styled("))
    method = s["kinds"].get("method", 0) > 0
    if method:
        return "hide-input"
    return "remove-input" if has_visible_output else "remove-cell"
