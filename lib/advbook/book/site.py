"""Build the site: the reproducibility page, then ``jupyter-book build`` with warnings as errors.

``_build`` is kept between builds, so Sphinx re-reads only what changed; :func:`site_up_to_date`
skips starting it at all when no file a build reads is newer than the last successful build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..paths import Book
from . import finish, report

SITE_STAMP = Path("_build") / ".advbook-site"
"""Written after a successful build; its mtime is the build's start (see :func:`site_up_to_date`)."""
_NOT_SOURCES = {"_build", ".venv", ".cache", ".git", "__pycache__", ".pytest_cache", "node_modules", ".ipynb_checkpoints"}


def _toolchain() -> str:
    from importlib import metadata

    return json.dumps({name: metadata.version(name) for name in ("jupyter-book", "sphinx")}, sort_keys=True)


def site_up_to_date(book: Book) -> bool:
    """Whether the last successful build is newer than every file of the checkout that a build could read.

    Sphinx would find nothing to do either (its own check is per page); this skips starting it,
    which alone takes ~15 s on a busy two-core machine.
    """
    stamp = book.root / SITE_STAMP
    if not stamp.exists() or not (book.root / "_build" / "html" / "index.html").exists():
        return False
    try:
        if stamp.read_text() != _toolchain():
            return False
    except OSError:
        return False
    built = stamp.stat().st_mtime
    for folder, dirs, files in os.walk(book.root):
        dirs[:] = [d for d in dirs if d not in _NOT_SOURCES]
        for name in files:
            try:
                if os.stat(os.path.join(folder, name)).st_mtime > built:
                    return False
            except OSError:
                return False
    return True


def prepare(book: Book) -> None:
    """What the site shows besides the executed chapters: a page for every chapter that did not run
    (:func:`advbook.book.finish.ensure_all_pages`) and the reproducibility page (:mod:`advbook.book.report`)."""
    finish.ensure_all_pages(book)
    report.write_page(book)


def build_site(book: Book, log=print) -> int:
    """:func:`prepare`, then :func:`jupyter_book`; returns its exit code (``advbook build``)."""
    prepare(book)
    return jupyter_book(book, log)


def jupyter_book(book: Book, log=print) -> int:
    """``jupyter-book build`` with warnings as errors (the pages prepared); returns its exit code."""
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(book.root), "--warningiserror", "--keep-going"]
    log(f"building the site: {' '.join(cmd[1:])}")
    started = time.time()
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=book.root, capture_output=True, text=True)
    stamp = book.root / SITE_STAMP
    if proc.returncode != 0:
        stamp.unlink(missing_ok=True)
        log(proc.stdout[-6000:])
        log(proc.stderr[-6000:])
    else:
        stamp.write_text(_toolchain())
        os.utime(stamp, (started, started))  # a file edited during the build makes the next one run
        log(f"site written to {book.root / '_build' / 'html' / 'index.html'} ({time.perf_counter() - start:.0f} s)")
    return proc.returncode

