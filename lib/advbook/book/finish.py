"""Finish a chapter's page: what the runner does to an executed copy before the site is built.

The parameters cell is collapsed (``hide-cell``: what a reader can change), papermill's injected
parameters are removed (``remove-cell``: the rerun box states the values this run was given), the "Open in Colab" badge goes under the title
(:mod:`advbook.book.colab`), a failed or timed-out chapter gets a warning and its references to
values it never glued are replaced (:func:`unglue_missing`, so one failed chapter does not take the
site down with it), and the runner's record (cache key, status, build time, parameters) goes into
the notebook's ``metadata.advbook`` (read by :func:`advbook.book.buildcache.stored`).
:func:`ensure_all_pages` gives a chapter that never ran a page: its source with a warning.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..paths import Book
from . import colab

if TYPE_CHECKING:
    from .execute import Progress
    from .records import ChapterRun

HIDDEN_TAGS = {"parameters": "hide-cell", "injected-parameters": "remove-cell"}
"""What the executed copy hides: the parameters cell collapsed (a reader sees what can be changed), papermill's
injected parameters removed (the summary line and the rerun box above the chapter state them), so a page shows
its parameters as one collapsed bar, not two."""
NOT_EXECUTED_NOTE = (
    "```{warning}\nThis chapter has not been executed in this build: it shows the source without "
    "outputs. Run `make book` (or `advbook run {chapter}`) to execute it.\n```"
)
TIMED_OUT_NOTE = (
    "```{warning}\nThis chapter TIMED OUT: cell {cell} did not finish within {limit}, "
    "and the cells after it did not run. Rerun with a larger limit: `advbook run {chapter} --cell-timeout SECONDS`.\n```"
)



def _tag_hidden(nb) -> None:
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        for marker, hide in HIDDEN_TAGS.items():
            if marker in tags and hide not in tags:
                cell.metadata["tags"] = tags = [*tags, hide]


_GLUE_BLOCK = re.compile(r"^(?P<fence>`{3,}|:{3,})\{glue:?[a-z]*\}\s*(?P<key>\S+)\s*\n(?P<body>.*?)^(?P=fence)\s*$",
                         re.S | re.M)
_GLUE_ROLE = re.compile(r"\{glue(?::[a-z]*)?\}`(?P<key>[^`:]+)(?::[^`]*)?`")
_NAME_OPTION = re.compile(r"^:name:\s*(\S+)\s*$", re.M)
_REF_ROLE = re.compile(r"\{(?:numref|ref)\}`(?:[^`<]*<)?(?P<label>[^`>]+)>?`")


def glued_names(nb) -> set[str]:
    """The names glued in an executed notebook (myst-nb stores them as ``scrapbook`` output metadata)."""
    names = set()
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                names.add(name)
    return names


def unglue_missing(nb) -> int:
    """Replace references to values that were never glued (the chapter failed or never ran).

    A ``{glue:figure}`` block becomes a note, an inline ``{glue:text}`` role becomes
    *not computed*, and a ``{numref}`` to a removed figure becomes plain text, so that the
    page of a failed chapter still builds with warnings as errors instead of taking the
    site down with it. Returns the number of replacements.
    """
    present, removed_labels, count = glued_names(nb), set(), 0

    def block(match: re.Match) -> str:
        nonlocal count
        if match["key"] in present:
            return match[0]
        count += 1
        removed_labels.update(_NAME_OPTION.findall(match["body"]))
        return f"```{{note}}\nFigure `{match['key']}` was not computed in this build.\n```\n"

    def role(match: re.Match) -> str:
        nonlocal count
        if match["key"] in present:
            return match[0]
        count += 1
        return "*(not computed)*"

    cells = [c for c in nb.cells if c.cell_type == "markdown"]
    for cell in cells:
        cell.source = _GLUE_ROLE.sub(role, _GLUE_BLOCK.sub(block, cell.source))
    for cell in cells:
        cell.source = _REF_ROLE.sub(lambda m: "a figure not computed in this build" if m["label"] in removed_labels
                                    else m[0], cell.source)
    return count


def _badge(book: Book, chapter: str):
    """The Colab badge cell for ``chapter``, or ``None`` without a configured repository."""
    import nbformat

    try:
        repo = colab.repository(book.root)
    except (colab.NoRepository, OSError):
        return None
    if repo is None:
        return None
    return nbformat.v4.new_markdown_cell(colab.badge_markdown(repo, chapter), metadata={"tags": ["colab-badge"]})


def _insert_after_title(nb, cell) -> None:
    index = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0
    nb.cells.insert(index, cell)


def finish_page(book: Book, run: ChapterRun, parameters: dict, timeout: float | None, progress: Progress) -> None:
    """Hide the parameter cells, add the Colab badge and the timeout note, record the key."""
    import nbformat

    out = book.executed(run.chapter, parameters.get("profile"))
    if not out.exists():  # papermill failed before writing anything (e.g. no kernel)
        nb = nbformat.read(book.notebooks / f"{run.chapter}.ipynb", as_version=4)
    else:
        nb = nbformat.read(out, as_version=4)
    _tag_hidden(nb)
    if run.status != "ok":
        unglue_missing(nb)
    if run.status == "timed out":
        note = (TIMED_OUT_NOTE.replace("{cell}", f"{progress.done}/{progress.total}")
                .replace("{limit}", f"the {timeout:g} s limit of this build" if timeout
                                      else "the time the kernel is given to answer (no cell limit was set)").replace("{chapter}", run.chapter))
        _insert_after_title(nb, nbformat.v4.new_markdown_cell(note))
    badge = _badge(book, run.chapter)
    if badge is not None:
        _insert_after_title(nb, badge)
    nb.metadata["advbook"] = {"key": run.key, "status": run.status, "built": run.built,
                              "seconds": round(run.seconds, 1), "parameters": parameters}
    nbformat.write(nb, out)



def ensure_all_pages(book: Book) -> list[str]:
    """Give every chapter a page: unexecuted ones get their source plus a warning. Returns those ids."""
    import nbformat

    missing = []
    book.chapters.mkdir(parents=True, exist_ok=True)
    for chapter in book.available():
        target = book.chapters / f"{chapter}.ipynb"
        if target.exists():
            continue
        nb = nbformat.read(book.notebooks / f"{chapter}.ipynb", as_version=4)
        _tag_hidden(nb)
        unglue_missing(nb)
        _insert_after_title(nb, nbformat.v4.new_markdown_cell(NOT_EXECUTED_NOTE.replace("{chapter}", chapter)))
        badge = _badge(book, chapter)
        if badge is not None:
            _insert_after_title(nb, badge)
        nbformat.write(nb, target)
        missing.append(chapter)
    return missing

