"""The two layers of the library, and the one direction of their imports.

The science library (``advbook``: data, models, attacks, train, evaluation, stats, plots, cache,
methods, ...) must never import the book machinery (``advbook.book``) nor the developer tools
(``advbook.tools``): a student who copies the science gets no papermill runner or site checker, and
the book can change without touching a cached number. The imports are read from each module's
syntax tree (absolute or relative, at the top or inside a function), so an import that only runs on
some path is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "lib" / "advbook"
UPPER = ("advbook.book", "advbook.tools")
"""Packages the science layer may not import."""
ENTRY_POINT = "__main__.py"
"""``python -m advbook`` (the ``advbook`` command, :mod:`advbook.book.cli`): run, never imported, so it
belongs to the book layer though it sits at the package's top."""


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in ``source``, relative ones resolved against ``module``;
    ``from X import name`` gives both ``X`` and ``X.name`` (the name may be a submodule)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level > len(package):
                    raise ValueError(f"{module}:{node.lineno}: a relative import above the package")
                base = package[: len(package) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.append((node.lineno, origin))
            found += [(node.lineno, f"{origin}.{alias.name}") for alias in node.names]
    return found


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """The imports of a science-layer module that reach into :data:`UPPER`."""
    return [f"{module}:{line} imports {name}" for line, name in imported(source, module, is_package)
            if any(name == upper or name.startswith(upper + ".") for upper in UPPER)]


def science_modules(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    upper_dirs = [package_dir / name.split(".")[1] for name in UPPER]
    return sorted(p for p in package_dir.rglob("*.py")
                  if not any(p.is_relative_to(d) for d in upper_dirs) and "__pycache__" not in p.parts
                  and p.relative_to(package_dir).as_posix() != ENTRY_POINT)


def test_the_layers_exist_and_the_science_layer_is_the_one_named():
    names = {module_name(p) for p in science_modules()}
    # the science the issue names, and the contract the methods modules import, are on this side
    assert {"advbook.data", "advbook.models", "advbook.attacks", "advbook.train", "advbook.evaluation",
            "advbook.stats", "advbook.plots", "advbook.cache", "advbook.zoo", "advbook.codehash",
            "advbook.params", "advbook.profiles", "advbook.protocol", "advbook.results", "advbook.paths",
            "advbook.methods", "advbook.universal", "advbook.methods.primer"} <= names
    # the book machinery is not
    for machinery in ("runner", "chapter", "cli", "report", "buildcache", "scaffold", "colab", "sitecheck",
                      "sphinxext", "pages", "student", "teaching", "cluster", "cachepack", "notebooks_strip", "bench"):
        assert f"advbook.{machinery}" not in names, f"advbook.{machinery} belongs under advbook.book or advbook.tools"
    assert (PACKAGE_DIR / "book" / "build.py").is_file() and (PACKAGE_DIR / "book" / "chapter.py").is_file()


def test_nothing_imports_the_entry_point():
    """The one top-level module left out of the science layer is the command's entry point: nothing imports it."""
    for path in PACKAGE_DIR.rglob("*.py"):
        module = module_name(path)
        assert not [name for _, name in imported(path.read_text(), module, path.name == "__init__.py")
                    if name == "advbook.__main__"], f"{module} imports advbook.__main__"


@pytest.mark.parametrize("path", science_modules(), ids=lambda p: module_name(p))
def test_the_science_layer_never_imports_the_book(path):
    found = violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not found, "the science layer imports the book layer: " + "; ".join(found)


@pytest.mark.parametrize("source, module, is_package", [
    ("from advbook.book import chapter\n", "advbook.zoo", False),                      # absolute, top level
    ("import advbook.book.build\n", "advbook.zoo", False),                            # plain import
    ("from .book import report\n", "advbook.results", False),                         # relative, one dot
    ("from ..book.execute import execute\n", "advbook.methods.primer", False),        # relative, two dots
    ("def f():\n    from ..book import cli\n    return cli\n", "advbook.methods.upi", False),  # inside a function
    ("from . import book\n", "advbook", True),                                         # the package itself
    ("from advbook import data, tools\n", "advbook.train", False),                     # the tools, by name
    ("class A:\n    def m(self):\n        import advbook.tools.bench as b\n", "advbook.models", False),
])
def test_a_planted_violation_is_found(source, module, is_package):
    assert violations(source, module, is_package), f"missed: {source!r} in {module}"


@pytest.mark.parametrize("source, module", [
    ("from . import cache, data\nfrom .paths import repo_root\n", "advbook.zoo"),
    ("from .. import stats, universal\n", "advbook.methods.upi"),
    ("import bookkeeping\nfrom notadvbook.book import x\n", "advbook.data"),
    ("from .bookish import x\n", "advbook.data"),  # a name that only starts like the book
])
def test_clean_imports_pass(source, module):
    assert violations(source, module) == []


def test_a_planted_module_fails_the_scan(tmp_path):
    """The scan over a package tree (what the parametrized test runs on the real one) fails on a planted module."""
    package = tmp_path / "advbook"
    (package / "book").mkdir(parents=True)
    (package / "methods").mkdir()
    (package / "__init__.py").write_text("")
    (package / "book" / "__init__.py").write_text("")
    (package / "book" / "build.py").write_text("from .. import data\n")  # the book may import the science
    (package / "data.py").write_text("import torch\n")
    (package / "methods" / "__init__.py").write_text("")
    (package / "methods" / "planted.py").write_text(
        '"""A paper."""\n\ndef method(x):\n    from ..book.chapter import setup  # the violation\n    return setup\n')
    found = [v for p in science_modules(package)
             for v in violations(p.read_text(), module_name(p, package), p.name == "__init__.py")]
    assert found == ["advbook.methods.planted:4 imports advbook.book.chapter",
                     "advbook.methods.planted:4 imports advbook.book.chapter.setup"]
    assert module_name(package / "book" / "build.py", package) not in {module_name(p, package) for p in science_modules(package)}
