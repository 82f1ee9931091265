"""Where the book lives on disk: the checkout's root and the default cache and data folders.

Every way of running a chapter (``make book``, ``advbook run``, plain ``papermill`` from
the repository, a test) must read and write the *same* model cache and datasets, or a
second run retrains what the first already trained. So the defaults are derived from the
checkout, found in one place (:func:`find_root`):

- the nearest parent of the current directory holding both ``_config.yml`` and
  ``notebooks/`` (papermill runs a chapter with ``--cwd notebooks``, the runner too);
- failing that, the checkout the library is installed from (``lib/advbook`` -> root),
  which covers ``pip install -e lib`` used from anywhere;
- outside any checkout, nothing: the caches fall back to ``~/.cache/advbook``.

``$ADVBOOK_CACHE`` and ``$ADVBOOK_DATA`` always override.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def is_root(path: Path) -> bool:
    """Whether ``path`` is a book checkout (``_config.yml`` beside ``notebooks/``)."""
    return (path / "_config.yml").is_file() and (path / "notebooks").is_dir()


def find_root(start: str | os.PathLike | None = None) -> Path | None:
    """The book's root above ``start`` (default: the cwd), else above the installed package; else ``None``."""
    for origin in (Path(start) if start is not None else Path.cwd(), PACKAGE_DIR):
        origin = origin.resolve()
        for candidate in (origin, *origin.parents):
            if is_root(candidate):
                return candidate
    return None


def cache_root() -> Path:
    """``$ADVBOOK_CACHE``, else ``<root>/.cache/advbook``, else ``~/.cache/advbook`` (not created here)."""
    if os.environ.get("ADVBOOK_CACHE"):
        return Path(os.environ["ADVBOOK_CACHE"])
    root = find_root()
    return root / ".cache" / "advbook" if root else Path.home() / ".cache" / "advbook"


def data_root() -> Path:
    """``$ADVBOOK_DATA``, else ``<root>/.cache/data``, else ``~/.cache/advbook/data``."""
    if os.environ.get("ADVBOOK_DATA"):
        return Path(os.environ["ADVBOOK_DATA"])
    root = find_root()
    return root / ".cache" / "data" if root else Path.home() / ".cache" / "advbook" / "data"
