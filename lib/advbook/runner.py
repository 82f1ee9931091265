"""Run chapters through papermill, collect their results and build the book.

``advbook run`` (see :mod:`advbook.cli`) is the one command behind ``make book``:

1. validate the chapter names, the profile and every ``-p NAME VALUE`` override before
   anything runs (unknown names stop with the list of what is allowed);
2. execute each chapter with papermill into ``book/chapters/<id>.ipynb``; a failing
   chapter is reported by name and the others still run;
3. add the runner's own wall time and status to each chapter's results JSON and write
   the reproducibility page from all of them;
4. build the site with ``jupyter-book build`` (warnings are errors).

The exit code is non-zero when any chapter or the build failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .params import COMMON, PROFILES, ParameterError, pick_profile

CHAPTER_GLOB = "[0-9][0-9]_*.ipynb"
NOT_EXECUTED_NOTE = (
    "```{warning}\nThis chapter has not been executed in this build: it shows the source without "
    "outputs. Run `make book` (or `advbook run {chapter}`) to execute it.\n```"
)


@dataclass
class ChapterRun:
    chapter: str
    status: str = "not run"
    seconds: float = 0.0
    error: str = ""


@dataclass
class Book:
    """Paths of one book checkout (the repository root by default)."""

    root: Path
    notebooks: Path = field(init=False)
    chapters: Path = field(init=False)
    results: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.notebooks = self.root / "notebooks"
        self.chapters = self.root / "book" / "chapters"
        self.results = Path(os.environ.get("ADVBOOK_RESULTS", self.root / "book" / "results"))

    def available(self) -> list[str]:
        """Chapter ids: the stems of ``notebooks/NN_*.ipynb``, in order."""
        return sorted(p.stem for p in self.notebooks.glob(CHAPTER_GLOB))


def parse_value(text: str) -> Any:
    """Parse a CLI parameter value the way papermill's ``-p`` does (YAML: numbers, lists, strings)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def notebook_parameters(path: Path) -> dict:
    """The names and defaults in a notebook's ``parameters`` cell (via papermill)."""
    import papermill

    return {name: spec["default"] for name, spec in papermill.inspect_notebook(str(path)).items()}


def select(book: Book, chapters: Iterable[str] | None) -> list[str]:
    """Resolve chapter names (ids, or unique prefixes such as ``00`` or ``01_excessive``)."""
    available = book.available()
    if not available:
        raise ParameterError(f"no chapters found in {book.notebooks}")
    if not chapters:
        return available
    chosen = []
    for name in chapters:
        matches = [c for c in available if c == name or c.startswith(name)]
        if len(matches) != 1:
            why = "is ambiguous" if matches else "is not a chapter"
            raise ParameterError(f"chapter {name!r} {why}; allowed: {', '.join(available)}")
        chosen.append(matches[0])
    return chosen


def plan(book: Book, chapters: list[str], profile: str, overrides: dict) -> dict[str, dict]:
    """Per-chapter papermill parameters; raises :class:`ParameterError` on unknown names or bad common values."""
    COMMON["profile"].check("profile", profile)
    for name, value in overrides.items():
        if name in COMMON and value is not None:
            COMMON[name].check(name, value)
    per_chapter, known = {}, set()
    for chapter in chapters:
        names = notebook_parameters(book.notebooks / f"{chapter}.ipynb")
        known |= set(names)
        per_chapter[chapter] = {"profile": profile, **{k: v for k, v in overrides.items() if k in names}}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown} for chapters {chapters}; allowed: {sorted(known)}")
    return per_chapter


def execute(book: Book, chapter: str, parameters: dict, log=print) -> ChapterRun:
    """Execute one chapter with papermill; never raises for a failing notebook."""
    import papermill

    run = ChapterRun(chapter)
    book.chapters.mkdir(parents=True, exist_ok=True)
    book.results.mkdir(parents=True, exist_ok=True)
    out = book.chapters / f"{chapter}.ipynb"
    start = time.perf_counter()
    env_before = os.environ.get("ADVBOOK_RESULTS")
    os.environ["ADVBOOK_RESULTS"] = str(book.results)
    try:
        papermill.execute_notebook(
            str(book.notebooks / f"{chapter}.ipynb"), str(out), parameters=parameters,
            cwd=str(book.notebooks), kernel_name="python3", progress_bar=False, log_output=False,
        )
        run.status = "ok"
    except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
        run.status = "failed"
        run.error = f"{exc.__class__.__name__}: {getattr(exc, 'evalue', exc)}"[:500]
    finally:
        if env_before is None:
            os.environ.pop("ADVBOOK_RESULTS", None)
        else:
            os.environ["ADVBOOK_RESULTS"] = env_before
    run.seconds = time.perf_counter() - start
    _annotate_results(book, run, parameters)
    return run


def _annotate_results(book: Book, run: ChapterRun, parameters: dict) -> None:
    """Record the runner's view (status, wall time incl. kernel start) in the chapter's results JSON."""
    path = book.results / f"{run.chapter}.json"
    data: dict = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
    if run.status == "failed" or not data:
        # a stale JSON from an earlier run must not be shown as this run's result
        data = {"chapter": run.chapter, "claims": [], "metrics": {}, "parameters": parameters}
    data["runner"] = {"status": run.status, "seconds": round(run.seconds, 1), "error": run.error,
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


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
        nb.cells.insert(1, nbformat.v4.new_markdown_cell(NOT_EXECUTED_NOTE.replace("{chapter}", chapter)))
        nbformat.write(nb, target)
        missing.append(chapter)
    return missing


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_reproducibility_page(book: Book) -> Path:
    """Aggregate every chapter's results JSON into ``book/reproducibility.md``."""
    rows, status_rows = [], []
    for chapter in book.available():
        path = book.results / f"{chapter}.json"
        if not path.exists():
            status_rows.append(f"| {chapter} | not run | | | | | | | |")
            continue
        data = json.loads(path.read_text())
        prov = data.get("provenance", {})
        runner = data.get("runner", {})
        status = runner.get("status", "ok")
        seconds = runner.get("seconds", data.get("wall_seconds", ""))
        device = prov.get("device", "")
        cache = data.get("cache", {})
        trained = f"{cache.get('misses', '')} / {cache.get('hits', '')}" if cache else ""
        status_rows.append(
            f"| [{chapter}](chapters/{chapter}.ipynb) | {status} | {data.get('profile', '')} | {data.get('dataset', '')} "
            f"| {_cell(device)} | {seconds} | {trained} | {data.get('seed', '')} | `{str(prov.get('git_sha', ''))[:12]}` |"
        )
        for claim in data.get("claims", []):
            rows.append(
                f"| {chapter[:2]} | **{claim['verdict']}** | {_cell(claim['claim'])} | {_cell(claim['paper'])} "
                f"| {_cell(claim['ours'])} |"
            )
    versions = ""
    for chapter in book.available():
        path = book.results / f"{chapter}.json"
        if path.exists():
            prov = json.loads(path.read_text()).get("provenance", {})
            if prov:
                versions = ", ".join(f"{k} {prov[k]}" for k in ("python", "torch", "torchvision", "numpy", "advbook") if k in prov)
                break
    text = [
        "# Reproducibility",
        "",
        "Every number on this page was produced by the build that rendered this site: each chapter",
        "was executed with papermill and wrote a results file, and this page was generated from those",
        "files. Verdicts are computed in the chapters from the measured values by thresholds stated there.",
        "",
        "## Claims and verdicts",
        "",
        "The profile, dataset, device and time of each chapter's run are in the next table.",
        "",
        "| Ch. | Verdict | Claim | Paper | This build |",
        "|---|---|---|---|---|",
        *(rows or ["| | | no chapter has recorded claims yet | | |"]),
        "",
        "## Chapter runs",
        "",
        "| Chapter | Status | Profile | Dataset | Device | Time (s) | Computed / from cache | Seed | Git SHA |",
        "|---|---|---|---|---|---|---|---|---|",
        *status_rows,
        "",
        f"Package versions: {versions or 'no chapter has run yet'}.",
        "",
        "*Computed / from cache* counts the models and expensive results each chapter computed in",
        "this build versus loaded from the cache: a rebuild with a warm cache computes none.",
        "",
    ]
    page = book.root / "book" / "reproducibility.md"
    page.write_text("\n".join(text))
    return page


def build_site(book: Book, log=print) -> int:
    """``jupyter-book build`` with warnings as errors; returns its exit code."""
    ensure_all_pages(book)
    write_reproducibility_page(book)
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(book.root), "--warningiserror", "--keep-going"]
    log(f"building the site: {' '.join(cmd[1:])}")
    proc = subprocess.run(cmd, cwd=book.root, capture_output=True, text=True)
    if proc.returncode != 0:
        log(proc.stdout[-6000:])
        log(proc.stderr[-6000:])
    else:
        log(f"site written to {book.root / '_build' / 'html' / 'index.html'}")
    return proc.returncode


def run(chapters: Iterable[str] | None = None, profile: str = "auto", overrides: dict | None = None,
        root: str | os.PathLike = ".", build: bool = True, log=print) -> int:
    """Run the selected chapters (all by default), then build the site. Returns an exit code."""
    book = Book(Path(root))
    chosen = select(book, chapters)
    COMMON["profile"].check("profile", profile)
    resolved = pick_profile(profile)
    # the executed notebook records the profile that actually ran, not "auto"
    per_chapter = plan(book, chosen, resolved, overrides or {})
    log(f"running {len(chosen)} chapter(s) with profile {resolved!r}: {', '.join(chosen)}")
    runs = []
    for i, chapter in enumerate(chosen, 1):
        log(f"[{i}/{len(chosen)}] {chapter} ...")
        result = execute(book, chapter, per_chapter[chapter], log)
        runs.append(result)
        log(f"[{i}/{len(chosen)}] {chapter}: {result.status} in {result.seconds:.0f} s" + (f" ({result.error})" if result.error else ""))
    code = 0
    failed = [r.chapter for r in runs if r.status != "ok"]
    if build:
        if build_site(book, log) != 0:
            log("the site build FAILED")
            code = 1
    else:
        write_reproducibility_page(book)
    log("summary: " + ", ".join(f"{r.chapter} {r.status} ({r.seconds:.0f} s)" for r in runs))
    if failed:
        log(f"FAILED chapters: {', '.join(failed)} (their executed notebooks in {book.chapters} show the error)")
        code = 1
    return code


__all__ = ["Book", "ChapterRun", "PROFILES", "run", "build_site", "select", "plan", "parse_value",
           "write_reproducibility_page", "ensure_all_pages", "notebook_parameters"]
