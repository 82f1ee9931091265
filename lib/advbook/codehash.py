"""The code a cached computation ran: a hash that is part of every cache key.

A trained model or a cached evaluation depends on its configuration *and* on the code that
computed it. :mod:`advbook.cache` keys an entry by both, so that changing a training loop,
an attack or a chapter's compute function rebuilds exactly the entries that ran it, and
nothing else: editing the prose, a docstring or a comment rebuilds nothing.

The code of a computation (:func:`code_identity` of its functions, hashed by :func:`digest_of`) is

* for a function of the library (``advbook.*``): its module and every library module that
  module imports, transitively (read statically from the ``from . import`` /
  ``from .. import`` / ``from advbook import`` statements of each file, imports inside
  functions included);
* for a function defined elsewhere (a notebook cell, a test): its own compiled code, the code
  of the functions of the same namespace it calls (by global name or through its closure),
  and the library modules that namespace imported (every ``advbook`` module, function or class
  among its globals: a notebook's import cell, so the set does not grow as later cells make
  objects), closed over imports the same way.

Modules that cannot change a computed number (the cache itself, progress bars, paths,
parameter parsing, plotting, grading claims, and all of :mod:`advbook.book` and :mod:`advbook.tools`: :data:`NEUTRAL`) are neither
included nor followed when reached through an import. Every module enters as its abstract
syntax tree without docstrings (attribute docstrings included), so formatting, comments and
docstrings do not count; every statement does. Compiled code enters as its byte-code, names and constants (not line
numbers), so moving a notebook cell does not count either.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import types
from pathlib import Path
from typing import Any, Callable, Iterable

PACKAGE = "advbook"
NEUTRAL_PACKAGES = (f"{PACKAGE}.book", f"{PACKAGE}.tools")
"""The book machinery and the developer tools: no computed number depends on them (every module
under them is neutral, :func:`is_neutral`)."""
NEUTRAL = frozenset(f"{PACKAGE}.{name}" for name in (
    "cache", "codehash", "progress", "paths", "params", "plots", "results", "__main__",
    "protocol", "profiles",
)) | {PACKAGE, *NEUTRAL_PACKAGES}
"""Modules that do not change a computed number, so not part of any entry's code (``advbook``
itself holds only the version string, which is a separate part of the key; what :mod:`advbook.profiles`
holds, recipes and AutoAttack budgets, enters a key by value, as a model's configuration or an attack's
settings), besides everything under :data:`NEUTRAL_PACKAGES`."""


def is_neutral(module: str, neutral: frozenset = NEUTRAL) -> bool:
    """Whether ``module`` is in ``neutral`` or, for the default set, under one of :data:`NEUTRAL_PACKAGES`."""
    return module in neutral or (neutral is NEUTRAL and module.startswith(tuple(p + "." for p in NEUTRAL_PACKAGES)))


def _is_library(name: str | None) -> bool:
    return bool(name) and (name == PACKAGE or name.startswith(PACKAGE + "."))


@functools.lru_cache(maxsize=None)
def source_file(module: str) -> Path | None:
    """The ``.py`` file of an importable module (``None`` for a built-in, a namespace package or a
    name that is not a module, such as ``advbook.data.batches``)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None


class _DropStrings(ast.NodeTransformer):
    """Removes every statement that is a bare string: docstrings, and the attribute docstrings
    (a string under an assignment) this library writes; neither runs."""

    def visit_Expr(self, node: ast.Expr):
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return None
        return node


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    return _DropStrings().visit(tree)


@functools.lru_cache(maxsize=None)
def _parsed(module: str) -> tuple[str, tuple[str, ...]]:
    """(hash of the module's docstring-free syntax tree, the library modules it imports)."""
    path = source_file(module)
    if path is None:
        return "", ()
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    return syntax_digest(tree), tuple(sorted(set(_imports(tree, package))))


def syntax_digest(source: str | ast.AST) -> str:
    """SHA-256 of Python source as a syntax tree without docstrings: comments, formatting and
    docstrings (attribute docstrings too) do not change it, any statement or expression does."""
    tree = ast.parse(source) if isinstance(source, str) else source
    return hashlib.sha256(ast.dump(_strip_docstrings(tree), annotate_fields=False).encode()).hexdigest()


def imported_modules(source: str, package: str = "") -> set[str]:
    """The library modules that Python ``source`` imports (absolute imports, or relative to ``package``)."""
    return set(_imports(ast.parse(source), package.split(".") if package else [])) if source.strip() else set()


def _imports(tree: ast.AST, package: list[str]) -> Iterable[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            origin = ".".join(base + ([node.module] if node.module else []))
            if not _is_library(origin):
                continue
            for alias in node.names:  # `from . import attacks` names a module, `from .data import batches` does not
                candidate = f"{origin}.{alias.name}"
                yield candidate if source_file(candidate) else origin
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if _is_library(alias.name))


def module_closure(modules: Iterable[str], neutral: frozenset = NEUTRAL) -> list[str]:
    """The given library modules and every library module they import, transitively, less ``neutral``.

    A module given explicitly is kept even if it is neutral (it is the computation's own code);
    neutral modules reached through imports are neither kept nor followed.
    """
    keep, todo = set(), [m for m in modules if _is_library(m)]
    given = set(todo)
    while todo:
        module = todo.pop()
        if module in keep or (is_neutral(module, neutral) and module not in given):
            continue
        keep.add(module)
        todo.extend(_parsed(module)[1])
    return sorted(keep)


def _const_fingerprint(value: Any) -> Any:
    if isinstance(value, types.CodeType):
        return _code_fingerprint(value)
    if isinstance(value, (tuple, list)):
        return [_const_fingerprint(v) for v in value]
    if isinstance(value, frozenset):  # its iteration order varies with the string-hash seed
        return sorted(repr(_const_fingerprint(v)) for v in value)
    return repr(value)


def _code_fingerprint(code: types.CodeType) -> list:
    consts = [_const_fingerprint(c) for c in code.co_consts]
    return [code.co_code.hex(), list(code.co_names), list(code.co_varnames), list(code.co_freevars), consts]


def _library_module_of(value: Any) -> str | None:
    if isinstance(value, types.ModuleType):
        name = value.__name__
    elif isinstance(value, (types.FunctionType, type)):
        name = getattr(value, "__module__", None)
    else:
        name = type(value).__module__
    return name if _is_library(name) else None


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _visit(fn: Any, modules: set, codes: list, seen: set) -> None:
    if id(fn) in seen:
        return
    seen.add(id(fn))
    if isinstance(fn, functools.partial):
        _visit(fn.func, modules, codes, seen)
        for arg in (*fn.args, *fn.keywords.values()):
            if callable(arg):
                _visit(arg, modules, codes, seen)
        return
    fn = getattr(fn, "__func__", fn)  # a bound method: its function
    if not isinstance(fn, types.FunctionType):
        name = _library_module_of(fn)
        if name:
            modules.add(name)
        return
    cells = [c.cell_contents for c in fn.__closure__ or () if _filled(c)]
    if _is_library(fn.__module__):
        modules.add(fn.__module__)
    else:
        codes.append([fn.__qualname__, _code_fingerprint(fn.__code__)])
        namespace = fn.__globals__
        modules.update(m for name, value in namespace.items()  # what the namespace imported, not objects it made
                       if isinstance(value, (types.ModuleType, types.FunctionType, type)) and not name.startswith("_")
                       for m in [_library_module_of(value)] if m and not is_neutral(m))
        for name in sorted(_names(fn.__code__)):
            value = namespace.get(name)
            if isinstance(value, types.FunctionType) and value.__module__ == fn.__module__:
                _visit(value, modules, codes, seen)
    for value in cells:  # callables handed in from outside (a notebook's compute inside a library wrapper)
        if isinstance(value, (types.FunctionType, functools.partial, types.MethodType)):
            _visit(value, modules, codes, seen)


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # an empty cell (a name assigned after the function was made)
        return False
    return True


def code_identity(*functions: Callable) -> dict:
    """The code ``functions`` run: ``{"modules": {module: digest}, "functions": [...]}`` (see the module docstring)."""
    modules: set = set()
    codes: list = []
    seen: set = set()
    for fn in functions:
        _visit(fn, modules, codes, seen)
    return {"modules": {m: _parsed(m)[0] for m in module_closure(modules)}, "functions": codes}


def digest_of(identity: dict) -> str:
    """SHA-256 (16 hex digits) of a :func:`code_identity`: equal exactly when the code that counts is equal."""
    blob = repr((sorted(identity["modules"].items()), identity["functions"]))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
