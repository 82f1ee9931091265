"""The chapter-level execution cache: rerun a chapter only when one of its inputs changed.

A chapter's executed copy (``book/chapters/<id>.ipynb``) is reused when its **key** matches.
The key is the SHA-256 of everything the run's outputs depend on:

- the source notebook's cells, type and source (code *and* Markdown: the page shows
  both), not outputs or metadata, and not the Colab install cell (it runs on Colab only);
- the resolved parameters the runner passes to papermill (``profile`` never ``auto``);
- the source files of the library modules the notebook imports, and of every library module
  those import, transitively (read statically from the notebook's code cells and the modules'
  import statements: :func:`chapter_modules`), plus the build code that writes the executed
  copy (:data:`BUILD_MODULES`): editing chapter 4's methods module reruns chapter 4 only,
  editing the attacks reruns every chapter that imports them;
- the versions of python, torch, torchvision, numpy, papermill and advbook, and the torch CPU
  thread count (``$ADVBOOK_THREADS``, 1 by default: it changes the numbers).

The runner stores the key, the build time and the status in the executed notebook's
metadata (``metadata.advbook``) and in the chapter's results JSON (``runner.key``); a
chapter is up to date when both carry the current key and the run succeeded.

Not in the key: the model cache (entries are keyed by their own configuration, the library
version and the code that computed them, see :mod:`advbook.cache`), the torch thread count and the device; a
chapter rerun by hand with ``--force`` picks those up.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import codehash
from ..paths import PACKAGE_DIR

PACKAGES = ("torch", "torchvision", "numpy", "papermill", "advbook")
BUILD_MODULES = frozenset({"advbook.book.execute", "advbook.book.finish", "advbook.book.colab", "advbook.book.buildcache",
                           "advbook.params", "advbook.methods"})
"""The build code behind every executed chapter: it resolves the parameters (``params``, the
profiles found through ``methods``) and writes the executed copy (``book.execute``, ``book.finish``, ``book.colab``)."""
AFTER_CHAPTERS = frozenset({"advbook.book.report", "advbook.book.build", "advbook.book.site"})
"""Build code that runs after the chapters (the reproducibility page): not part of a chapter's key."""
SKIP_TAGS = {"colab-install"}
"""Cells with these tags do not enter the key (the Colab install cell is a no-op elsewhere)."""


def _sha(blob: Any) -> str:
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def notebook_digest(path: str | Path) -> str:
    """Hash of a notebook's cell types and sources, in order (outputs and metadata ignored)."""
    nb = json.loads(Path(path).read_text())
    cells = []
    for cell in nb.get("cells", []):
        if SKIP_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            continue
        source = cell.get("source", "")
        cells.append([cell.get("cell_type"), "".join(source) if isinstance(source, list) else source])
    return _sha(cells)


def _code_cells(path: str | Path) -> list[str]:
    nb = json.loads(Path(path).read_text())
    return ["".join(c.get("source", "")) for c in nb.get("cells", []) if c.get("cell_type") == "code"
            and not SKIP_TAGS & set(c.get("metadata", {}).get("tags", []))]


def chapter_modules(notebook: str | Path) -> list[str] | None:
    """The library modules a chapter's code can run: those its code cells import, those they
    import, transitively, and :data:`BUILD_MODULES`; ``None`` if a cell is not plain Python
    (then the whole library counts)."""
    imported = set(BUILD_MODULES)
    for source in _code_cells(notebook):
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]  # IPython magics
        try:
            imported |= codehash.imported_modules("\n".join(lines))
        except SyntaxError:
            return None
    return codehash.module_closure(imported, neutral=AFTER_CHAPTERS)


def chapter_library_digest(notebook: str | Path) -> str:
    """Hash of the source files of :func:`chapter_modules` (module name and bytes), or of the whole library."""
    modules = chapter_modules(notebook)
    if modules is None:
        return library_digest()
    h = hashlib.sha256()
    for module in modules:
        path = codehash.source_file(module)
        h.update(module.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest() if path else b"")
    return h.hexdigest()


def library_digest(package_dir: Path | None = None) -> str:
    """Hash of every file of the library package (relative path and bytes), byte-code excluded."""
    return _installed_library() if package_dir is None else _digest_tree(package_dir)


@functools.lru_cache(maxsize=None)
def _installed_library() -> str:
    return _digest_tree(PACKAGE_DIR)  # once per process: a build does not edit the library


def _digest_tree(package_dir: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        h.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def package_versions() -> dict[str, str]:
    """Versions of python and :data:`PACKAGES` (from package metadata: nothing is imported)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def chapter_key(notebook: str | Path, parameters: dict) -> str:
    """The execution-cache key of one chapter run (see the module docstring)."""
    return _sha({
        "notebook": notebook_digest(notebook),
        "parameters": parameters,
        "library": chapter_library_digest(notebook),
        "versions": package_versions(),
        "threads": os.environ.get("ADVBOOK_THREADS") or "1",  # the torch CPU thread count changes the numbers
    })


def stored(executed: str | Path) -> dict:
    """The runner's record in an executed notebook (``metadata.advbook``), or ``{}``."""
    try:
        return json.loads(Path(executed).read_text()).get("metadata", {}).get("advbook", {}) or {}
    except (OSError, ValueError):
        return {}


def up_to_date(executed: Path, results: Path, key: str) -> dict | None:
    """The stored record when both the executed notebook and the results JSON carry ``key``
    from a successful run; else ``None`` (the chapter must run)."""
    record = stored(executed)
    if record.get("key") != key or record.get("status") != "ok":
        return None
    try:
        runner = json.loads(Path(results).read_text()).get("runner", {})
    except (OSError, ValueError):
        return None
    return record if runner.get("key") == key else None
