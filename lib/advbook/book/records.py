"""The runner's bookkeeping in the chapters' results JSONs (``book/results/<id>.json``, written by the kernel).

After a run the runner adds its own view, ``runner`` (status, wall time with the kernel's start,
cache key, executed or reused), to the chapter's results JSON (:func:`annotate_results`); a stale
JSON of an earlier run is replaced, so a failed run is never shown with old numbers. A chapter
found up to date is marked reused (:func:`reuse`), and a side profile's run (``long``) is copied
to ``book/measurements/runs`` to be committed (:func:`record_side_run`). The reproducibility page
(:mod:`advbook.book.report`) reads what these write.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from dataclasses import dataclass

from .. import profiles
from ..paths import Book


@dataclass
class ChapterRun:
    """What happened to one chapter in a build (the runner's view, recorded by :func:`annotate_results`)."""

    chapter: str
    status: str = "not run"  # ok | reused | failed | timed out | cancelled (a cluster job) | not run
    seconds: float = 0.0
    error: str = ""
    key: str = ""
    built: str = ""
    job: str = ""  # the cluster job's id and log (advbook.book.cluster), empty for a local run
    log: str = ""



def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def annotate_results(book: Book, run: ChapterRun, parameters: dict, started: float) -> None:
    """Record the runner's view (status, wall time incl. kernel start, cache key) in the results JSON."""
    path = book.results_file(run.chapter, parameters.get("profile"))
    data = read_json(path)
    fresh = path.exists() and path.stat().st_mtime >= started - 1
    if run.status != "ok" or not data or not fresh:
        # a stale JSON from an earlier run must not be shown as this run's result
        data = {"chapter": run.chapter, "claims": [], "metrics": {}, "parameters": parameters}
    data["runner"] = {"status": run.status, "seconds": round(run.seconds, 1), "error": run.error,
                      "finished": run.built, "built": run.built, "execution": "executed", "key": run.key}
    write_json(path, data)
    if run.status == "ok" and profiles.is_side(parameters.get("profile")):
        record_side_run(book, path)


def record_side_run(book: Book, path: Path) -> Path:
    """Copy a side profile's results (``<id>.long.json``) to ``book/measurements/runs/`` (tracked in git).

    A ``long`` run takes 30-60 minutes, more than a build may spend; its results file in
    ``book/results`` (ignored by git) stays on the machine that ran it. The copy, once
    committed, lets the reproducibility page of a book built anywhere show the run beside
    the build's own, labelled *recorded run* with its date and git SHA: it is a record of
    code that ran, not a number computed by that build.
    """
    book.recorded.mkdir(parents=True, exist_ok=True)
    target = book.recorded / path.name
    write_json(target, {**read_json(path), "recorded_from": str(path.relative_to(book.root))
                         if path.is_relative_to(book.root) else path.name})
    return target


def reuse(book: Book, chapter: str, record: dict, profile: str | None = None) -> ChapterRun:
    """Mark an up-to-date chapter as reused in its results JSON (its notebook is left untouched)."""
    path = book.results_file(chapter, profile)
    data = read_json(path)
    runner = data.get("runner", {})
    if runner.get("execution") != "reused":
        data["runner"] = {**runner, "execution": "reused"}
        write_json(path, data)
    return ChapterRun(chapter, status="reused", seconds=0.0, key=record["key"], built=record.get("built", ""))

