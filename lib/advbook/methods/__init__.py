"""One module per paper: the method each chapter reproduces, with its profiles.

Each module defines ``CHAPTER`` (the notebook it backs), ``PARAMETERS`` (every chapter parameter
declared once, :func:`advbook.params.declare`: its quick value, what it allows, a one-line doc and its
value in the ``long``, ``full`` and ``tiny`` profiles where it differs; ``PROFILES`` and ``SCHEMA`` are
read from it, and ``make strip`` writes the notebook's parameters cell from it) and ``FULL_PATH_TEST``
(what the test suite adds to ``tiny`` to run the full profile's code path); the chapter passes the
module to :func:`advbook.book.chapter.setup`.
Optional: ``check(cfg)`` for cross-parameter checks and ``RECIPE_OVERRIDES``: a chapter that trains
the book's reference models names it (the chapter parameters that change their recipe, ``()`` for
none), and :func:`advbook.book.chapter.setup` then resolves ``cfg.recipe`` from the profile
(:meth:`advbook.profiles.Profile.recipe`), refusing a dataset the profile has no recipe for.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def for_chapter(chapter_id: str) -> ModuleType:
    """The methods module whose ``CHAPTER`` is ``chapter_id``."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if getattr(module, "CHAPTER", None) == chapter_id:
            return module
        found.append(getattr(module, "CHAPTER", info.name))
    raise ValueError(f"no methods module backs chapter {chapter_id!r}; modules back: {', '.join(map(str, found))}")
