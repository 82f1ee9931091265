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

``$ADVBOOK_CACHE``, ``$ADVBOOK_DATA`` and ``$ADVBOOK_RESULTS`` always override (a user's settings:
nothing in the library writes them).

This module is the one place that says where things are: the checkout (:func:`find_root`,
:func:`repo_root`), the caches (:func:`cache_root`, :func:`data_root`), the results JSONs
(:func:`results_dir`, :func:`results_filename`) and the folders of one book checkout (:class:`Book`:
source notebooks, executed copies, results, recorded runs). The runner and the chapter's kernel
both ask it, so they agree on the results folder without passing it to each other: the kernel runs
in ``<root>/notebooks`` and finds the same ``<root>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHAPTER_GLOB = "[0-9][0-9]_*.ipynb"
"""The source notebooks that are chapters: ``notebooks/NN_<name>.ipynb``; a chapter's id is the file's stem."""


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


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The book's root (:func:`find_root`); ``start`` (default: the cwd) outside any checkout."""
    return find_root(start) or (Path(start) if start is not None else Path.cwd()).resolve()


def results_dir(root: str | os.PathLike | None = None) -> Path:
    """Where chapters write their results JSONs: ``$ADVBOOK_RESULTS``, else ``<root>/book/results``
    (``root``: default :func:`repo_root`). Not created here."""
    if os.environ.get("ADVBOOK_RESULTS"):
        return Path(os.environ["ADVBOOK_RESULTS"])
    return (Path(root).resolve() if root is not None else repo_root()) / "book" / "results"


def recorded_dir(root: str | os.PathLike | None = None) -> Path:
    """``<root>/book/measurements/runs``: side-profile runs (``long``: 30-60 min) kept in git, so that a book
    built elsewhere shows them, labelled (``root``: default :func:`repo_root`)."""
    return (Path(root).resolve() if root is not None else repo_root()) / "book" / "measurements" / "runs"


def results_filename(chapter: str, profile: str | None) -> str:
    """``<chapter>.json``, or ``<chapter>.<profile>.json`` for a side profile such as ``long``
    (:attr:`advbook.profiles.Profile.side`: its results are kept beside the build's own)."""
    from .profiles import is_side

    return f"{chapter}.{profile}.json" if is_side(profile) else f"{chapter}.json"


@dataclass
class Book:
    """The folders of one book checkout (``root``: the repository root)."""

    root: Path
    notebooks: Path = field(init=False)
    chapters: Path = field(init=False)
    results: Path = field(init=False)
    recorded: Path = field(init=False)
    jobs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.notebooks = self.root / "notebooks"
        self.chapters = self.root / "book" / "chapters"
        self.results = results_dir(self.root)
        self.recorded = recorded_dir(self.root)
        self.jobs = self.root / ".cache" / "jobs"  # cluster job files and logs (advbook.book.cluster)

    def available(self) -> list[str]:
        """Chapter ids: the stems of ``notebooks/NN_*.ipynb``, in order."""
        return sorted(p.stem for p in self.notebooks.glob(CHAPTER_GLOB))

    def source(self, chapter: str) -> Path:
        """The chapter's source notebook, ``notebooks/<id>.ipynb``."""
        return self.notebooks / f"{chapter}.ipynb"

    def page(self, name: str) -> Path:
        """A Markdown page of the book that is not a chapter: ``book/<name>`` (``index.md``, ``reproducibility.md``)."""
        return self.root / "book" / name

    def executed(self, chapter: str, profile: str | None = None) -> Path:
        """The executed copy: ``book/chapters/<id>.ipynb`` (the page), or ``<id>.<profile>.ipynb`` for a
        side profile such as ``long``, whose run is kept beside the build's own and is not a page."""
        return self.chapters / results_filename(chapter, profile).replace(".json", ".ipynb")

    def results_file(self, chapter: str, profile: str | None = None) -> Path:
        """The chapter's results JSON for ``profile`` (:func:`results_filename`)."""
        return self.results / results_filename(chapter, profile)
