"""One module per paper: the method each chapter reproduces, with its profiles.

Each module defines ``PROFILES`` (defaults for the ``quick``, ``full`` and ``tiny``
profiles) and ``SCHEMA`` (the chapter-specific parameters and what values they allow),
which the chapter's notebook passes to :func:`advbook.params.resolve`.
"""
