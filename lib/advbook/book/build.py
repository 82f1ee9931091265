"""Run chapters through papermill and build the book: the engine behind ``advbook run`` and ``make book``.

1. validate the chapter names, the profile and every override (``-p`` / ``-y`` / ``-r``,
   parsed exactly as papermill's command line does) before anything runs, and resolve ``auto``
   once, here;
2. skip each chapter whose executed copy is up to date (:mod:`advbook.book.buildcache`:
   same notebook, parameters, library and package versions); ``--force`` reruns;
3. execute the rest (:func:`advbook.book.execute.execute`) into ``book/chapters/<id>.ipynb`` with
   ``--jobs`` workers, the primer (``00_*``, which trains the shared reference models) first, then
   the longest chapters first (:func:`schedule`); a failing or timed-out chapter is reported by
   name and the others still run;
4. each worker finishes its page (:mod:`advbook.book.finish`) and records the run in the results
   JSON (:mod:`advbook.book.records`);
5. write the reproducibility page (:mod:`advbook.book.report`) and build the site
   (:mod:`advbook.book.site`).

Step 3 runs on a local pool of workers (one GPU each when CUDA shows several), or, with
``--executor slurm``, as cluster jobs through submitit (:mod:`advbook.book.cluster`); steps 1, 2, 4
and 5 are the same either way. The runner passes a kernel its parameters; the kernel finds the
book's folders itself (:mod:`advbook.paths`).

The exit code is non-zero when any chapter or the build failed.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from .. import profiles
from ..params import COMMON, ParameterError
from ..paths import Book, repo_root
from . import buildcache, records, report, site
from .execute import ChapterRun, _clock, _locked, cell_timeout, execute, thread_env

PRIMER_PREFIX = "00_"


# --- parameters --------------------------------------------------------------------------------

def parse_value(text: str) -> Any:
    """A ``-p NAME VALUE`` value, typed exactly as papermill's CLI does (``papermill.cli._resolve_type``).

    ``True`` / ``False`` / ``None`` (these spellings only), then ``int(text)``, then
    ``float(text)``, else the string itself: ``1e-3`` is a float, ``true`` stays a string,
    and lists need ``-y`` (:func:`parse_yaml`).
    """
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_yaml(text: str) -> dict:
    """A ``-y 'YAML'`` mapping of parameters, read as papermill does (YAML without dates)."""
    import yaml
    from papermill.iorw import NoDatesSafeLoader

    try:
        value = yaml.load(text, Loader=NoDatesSafeLoader) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"-y {text!r} is not valid YAML: {exc}") from None
    if not isinstance(value, dict):
        raise ParameterError(f"-y {text!r} must be a YAML mapping of parameter names to values, "
                             "e.g. -y 'eps_grid: [0.1, 0.2]'")
    return value


def overrides_from_cli(yaml_texts: Iterable[str] = (), parameters: Iterable[tuple[str, str]] = (),
                       raw: Iterable[tuple[str, str]] = ()) -> dict:
    """Merge ``-y``, then ``-p``, then ``-r`` values (later wins), in papermill's order."""
    out: dict = {}
    for text in yaml_texts:
        out.update(parse_yaml(text))
    for name, value in parameters:
        out[name] = parse_value(value)
    for name, value in raw:
        out[name] = value
    return out


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
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def plan(book: Book, chapters: list[str], profile: str, overrides: dict) -> dict[str, dict]:
    """Per-chapter papermill parameters; raises :class:`ParameterError` on unknown names or bad common values.

    ``profile`` is the resolved profile (``auto`` was resolved by the caller, which also validated it)."""
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


def default_jobs(threads: int | None = None) -> int:
    """Parallel chapter workers: the number of GPUs on a CUDA machine (one chapter per GPU,
    :func:`advbook.book.cluster.gpu_slots`), else CPU cores // threads per worker (at least 1)."""
    from .cluster import visible_gpus

    gpus = len(visible_gpus())
    if gpus:
        return gpus
    threads = threads or int(os.environ.get("ADVBOOK_THREADS") or 1)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, threads))



def schedule(book: Book, todo: list[tuple[str, str]], profile: str) -> list[tuple[str, str]]:
    """The order in which the workers take chapters: the primer first, then the longest first.

    "Longest" is the wall time of the chapter's last run of this profile (its results JSON);
    chapters never run keep their number order after those. All chapters share one pool:
    the primer trains the reference models under the cache's per-entry lock
    (:func:`advbook.cache.cached`), so a chapter that asks for one while the primer trains it
    waits for it instead of training it twice, and a chapter that does not need them (the
    INN chapter trains its own networks first) uses the other core meanwhile.
    """
    def last_seconds(chapter: str) -> float:
        runner = records.read_json(book.results_file(chapter, profile)).get("runner", {})
        return float(runner.get("seconds") or 0.0) if runner.get("status") == "ok" else 0.0

    primer = [t for t in todo if t[0].startswith(PRIMER_PREFIX)]
    rest = [t for t in todo if not t[0].startswith(PRIMER_PREFIX)]
    return primer + sorted(rest, key=lambda t: -last_seconds(t[0]))



def _pool(book: Book, order: list[tuple[str, str]], per_chapter: dict, timeout: float | None, jobs: int,
          log, progress_every: float) -> dict[str, ChapterRun]:
    """Execute ``order`` on ``jobs`` local workers (threads, each driving one kernel), one GPU each when
    CUDA shows several (:func:`advbook.book.cluster.gpu_slots`)."""
    from .cluster import gpu_slots

    workers = min(jobs, len(order))
    slots = gpu_slots(workers)

    def one(item: tuple[str, str]) -> ChapterRun:
        chapter, key = item
        gpu = slots.get() if slots is not None else None
        log(f"[{chapter}] started" + (f" on GPU {gpu}" if gpu is not None else ""))
        try:
            result = execute(book, chapter, per_chapter[chapter], log, timeout=timeout, key=key,
                             progress_every=progress_every,
                             kernel_env={"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else None)
        except Exception as exc:  # a runner bug must not take the other chapters down either
            result = ChapterRun(chapter, "failed", error=f"runner: {exc.__class__.__name__}: {exc}"[:500], key=key)
        finally:
            if gpu is not None:
                slots.put(gpu)
        log(f"[{chapter}] {result.status} in {_clock(result.seconds)}" + (f" ({result.error})" if result.error else ""))
        return result

    if workers > 1:
        log(f"running {len(order)} chapter(s) with {workers} workers, "
            f"{thread_env()['ADVBOOK_THREADS']} torch thread(s) each"
            + (", one GPU each (CUDA_VISIBLE_DEVICES)" if slots is not None else "")
            + f", in the order {', '.join(c for c, _ in order)}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return {result.chapter: result for result in pool.map(one, order)}



def run(chapters: Iterable[str] | None = None, profile: str = "auto", overrides: dict | None = None,
        root: str | os.PathLike | None = None, build: bool = True, log=print, *, force: bool = False,
        jobs: int | None = None, cell_timeout_s: float | None = None, progress_every: float = 10.0,
        executor: "cluster.Options | None" = None) -> int:
    """Run the selected chapters (all by default) that are not up to date, then build the site.

    ``executor`` (:class:`advbook.book.cluster.Options`) sends the chapters to a cluster instead of the
    local pool. Returns an exit code: 0 when every chapter ran (or was reused) and the site built.
    """
    book = Book(Path(root) if root is not None else repo_root())
    chosen = select(book, chapters)
    profiles.check(profile)
    if jobs is not None and jobs < 1:
        raise ParameterError(f"--jobs {jobs} must be a positive integer")
    remote = executor is not None and executor.remote
    if remote:
        from . import cluster

        resolved = cluster.resolve_profile(profile, executor)
    else:
        resolved = profiles.resolve(profile)
    # the executed notebook records the profile that actually ran, not "auto"
    per_chapter = plan(book, chosen, resolved, overrides or {})
    timeout = cell_timeout(resolved, cell_timeout_s)
    log = _locked(log)
    if remote and jobs:
        log(f"--jobs {jobs} is not used with --executor {executor.executor}: the scheduler runs the jobs")
    jobs = jobs or (None if remote else default_jobs())

    runs: dict[str, ChapterRun] = {}
    todo = []
    for chapter in chosen:
        key = buildcache.chapter_key(book.notebooks / f"{chapter}.ipynb", per_chapter[chapter])
        record = None if force else buildcache.up_to_date(book.executed(chapter, resolved),
                                                           book.results_file(chapter, resolved), key)
        if record is not None:
            runs[chapter] = records.reuse(book, chapter, record, resolved)
        else:
            todo.append((chapter, key))
    reused = [c for c in chosen if c in runs]
    log(f"profile {resolved!r}, cell limit {f'{timeout:g} s' if timeout else 'none'}: "
        f"{len(todo)} chapter(s) to run, {len(reused)} up to date" + (f" ({', '.join(reused)})" if reused else ""))

    if todo:
        order = schedule(book, todo, resolved)
        if remote:
            runs.update(cluster.run_jobs(book, order, per_chapter, timeout, executor, log))
        else:
            runs.update(_pool(book, order, per_chapter, timeout, jobs, log, progress_every))

    code = 0
    ordered = [runs[c] for c in chosen]
    if build:
        site.prepare(book)
        if not force and site.site_up_to_date(book):
            log(f"site up to date: nothing changed since the last build of {book.root / '_build' / 'html'}")
        elif site.jupyter_book(book, log) != 0:
            log("the site build FAILED")
            code = 1
    else:
        report.write_page(book)
    log("summary: " + ", ".join(
        f"{r.chapter} reused (built {r.built})" if r.status == "reused" else f"{r.chapter} {r.status} ({_clock(r.seconds)}"
        + (f"; job {r.job}, log {r.log}" if r.job else "") + ")" for r in ordered))
    failed = [r.chapter for r in ordered if r.status == "failed"]
    timed_out = [r.chapter for r in ordered if r.status == "timed out"]
    cancelled = [r.chapter for r in ordered if r.status == "cancelled"]
    if failed:
        log(f"FAILED chapters: {', '.join(failed)} (their executed notebooks in {book.chapters} show the error)")
        code = 1
    if timed_out:
        log(f"TIMED OUT chapters: {', '.join(timed_out)} (a cell ran longer than {timeout or 0:g} s; "
            "raise the limit with --cell-timeout SECONDS)")
        code = 1
    if cancelled:
        log(f"CANCELLED chapters: {', '.join(cancelled)} (their jobs were cancelled before they finished)")
        code = 1
    return code
