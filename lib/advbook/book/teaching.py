"""The measured compute times on the *Teaching with this book* page (``book/teaching.md``).

The page's table of compute times is generated, never typed: ``make teaching-times``
(``python -m advbook.book.teaching``) rewrites the block between the page's
``<!-- times:start -->`` and ``<!-- times:end -->`` markers from

- the recorded ``long`` runs, ``book/measurements/runs/<id>.long.json`` (tracked by git): the
  runner's wall time, how many cache entries the run computed and how many it found cached,
  its date and git commit;
- this checkout's last build of each chapter, ``book/results/<id>.json`` (not tracked: the
  machine that regenerates the page measured it), the same fields;
- the words of each source notebook's Markdown cells, read at :data:`WORDS_PER_MINUTE`;
- the cache manifests of the reference models the chapters declare (:mod:`advbook.book.cachepack`):
  the wall and CPU seconds their training took, which is what a shared cache saves each student.

A run that found every entry cached is labelled as such: its time is a re-execution's, not a
cold run's. Where no run was recorded the table says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

START, END = "<!-- times:start -->", "<!-- times:end -->"
PAGE = Path("book") / "teaching.md"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def run_cell(record: dict | None) -> str:
    """One run as a table cell: wall time, computed / cached entries, commit and date (or why there is none)."""
    if not record:
        return "not recorded"
    seconds = (record.get("runner") or {}).get("seconds") or record.get("wall_seconds")
    stats = record.get("cache") or {}
    computed, cached = stats.get("misses"), stats.get("hits")
    prov = record.get("provenance") or {}
    when = f"{prov.get('git_sha', '')[:7]}, {str(prov.get('started', ''))[:10]}"
    if seconds is None:
        return f"no time recorded ({when})"
    if computed == 0:
        return f"{_minutes(seconds)}, every one of {cached} entries cached: a re-execution, not a cold run ({when})"
    if computed is None:
        return f"{_minutes(seconds)} ({when})"
    return f"{_minutes(seconds)}, {computed} entries computed, {cached} cached ({when})"


WORDS_PER_MINUTE = 120
"""An assumed pace for careful reading of technical prose with equations (figures and code not counted)."""


def prose_words(notebook: Path) -> int:
    """Words in the Markdown cells of a source notebook (a run of letters is a word; math and code are not prose)."""
    import re

    nb = _read(notebook) or {}
    text = "\n".join("".join(c.get("source", "")) for c in nb.get("cells", []) if c.get("cell_type") == "markdown")
    text = re.sub(r"\$\$.*?\$\$|\$[^$]*\$|```.*?```|`[^`]*`", " ", text, flags=re.S)
    return len(re.findall(r"[A-Za-z][A-Za-z'-]*", text))


def reference_cost(profile: str = "quick", root: str | Path | None = None) -> dict:
    """Wall and CPU seconds the cache manifests record for the declared reference models at ``profile``."""
    from .. import cache
    from . import cachepack

    found = cachepack.reference_stems(profile, root)
    folder = cache.cache_dir()
    wall = cpu = 0.0
    present = size = 0
    for stem in found.stems:
        manifest = _read(folder / f"{stem}.json")
        if manifest and "wall_seconds" in manifest:
            present += 1
            wall += manifest["wall_seconds"]
            cpu += manifest.get("cpu_seconds", 0.0)
            size += sum((folder / f"{stem}.{ext}").stat().st_size for ext in ("pt", "json"))
    return {"declared": len(found.stems), "measured": present, "wall_seconds": wall, "cpu_seconds": cpu,
            "bytes": size}


def folder_bytes(path: Path) -> int:
    """The size of the files under ``path`` (0 when it does not exist)."""
    import os

    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def times_markdown(root: str | Path, profile: str = "quick") -> str:
    """The generated block: one row per chapter (this checkout's last build, the recorded long run)
    and the training cost of the reference models a shared cache saves."""
    from ..paths import Book

    book = Book(Path(root))
    lines = [f"| Chapter | prose (reading at {WORDS_PER_MINUTE} words a minute) | last `quick` build on this machine "
             "| recorded `long` run |", "|---|---|---|---|"]
    for chapter in book.available():
        quick = _read(book.results / f"{chapter}.json")
        quick = quick if quick and quick.get("profile") == "quick" else None
        long = _read(book.recorded / f"{chapter}.long.json")
        words = prose_words(book.notebooks / f"{chapter}.ipynb")
        lines.append(f"| {chapter} | {words:,} words, {words / WORDS_PER_MINUTE:.0f} min | {run_cell(quick)} "
                     f"| {run_cell(long)} |")
    cost = reference_cost(profile, book.root)
    lines.append("")
    if cost["measured"]:
        lines.append(f"Training the {cost['measured']} reference models the chapters declare at `{profile}` "
                     f"(of {cost['declared']}) took {_minutes(cost['cpu_seconds'])} of CPU time "
                     f"({_minutes(cost['wall_seconds'])} of wall time on the machine that trained them), "
                     f"as their cache manifests record; their files hold {cost['bytes'] / 2**20:.1f} MiB. "
                     "That is what `make cache-unpack` saves each student.")
    else:
        lines.append(f"None of the {cost['declared']} reference models declared at `{profile}` is in this "
                     "machine's cache, so their training time was not measured here.")
    from ..paths import cache_root

    venv, cached = folder_bytes(book.root / ".venv"), folder_bytes(cache_root())
    if venv:
        lines.append("")
        lines.append(f"On this machine `.venv` takes {venv / 2**30:.1f} GiB (torch as pip installs it by default, "
                     f"with its CUDA libraries) and the cache `.cache/advbook` {cached / 2**20:.0f} MiB "
                     "(every entry every build here has computed, stale ones included).")
    return "\n".join(lines)


def update_page(root: str | Path, page: str | Path | None = None) -> bool:
    """Rewrite the block between the markers of ``book/teaching.md``; ``True`` when it changed."""
    path = Path(root) / (page or PAGE)
    text = path.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{path} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{times_markdown(root)}\n{END}{tail}"
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    from ..paths import repo_root

    root = Path(argv[0]) if argv else repo_root()
    changed = update_page(root)
    print(f"{root / PAGE}: compute times {'updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
