"""Remove outputs and execution counts from source notebooks (they are committed clean), and write each
chapter's ``parameters`` cell from its methods module's declaration (:func:`advbook.params.declare`).

Usage: ``python -m advbook.book.notebooks_strip notebooks/*.ipynb``
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def strip(path: str) -> bool:
    """Strip one notebook in place; return whether it changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count = [], None
            changed = True
    cell = parameters_cell(nb)
    declared = declared_cell(Path(path).stem)
    if cell is not None and declared is not None and cell.source != declared:
        cell.source = declared
        changed = True
    for key in ("papermill", "widgets"):
        if key in nb.metadata:
            del nb.metadata[key]
            changed = True
    if changed:
        nbformat.write(nb, path)
    return changed


def parameters_cell(nb):
    """The notebook's cell tagged ``parameters`` (``None`` if it has none)."""
    return next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)


def declared_cell(chapter: str) -> str | None:
    """The parameters cell ``chapter``'s methods module declares (``PARAMETERS.cell()``), or ``None`` when
    no methods module backs it or it declares no ``PARAMETERS``."""
    from .. import methods

    try:
        module = methods.for_chapter(chapter)
    except ValueError:
        return None
    declaration = getattr(module, "PARAMETERS", None)
    return None if declaration is None else declaration.cell()


if __name__ == "__main__":
    for p in sys.argv[1:]:
        if strip(p):
            print(f"stripped {p}")
