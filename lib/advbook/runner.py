"""Run chapters through papermill: the engine behind ``advbook run`` and ``make book``.

1. validate the chapter names, the profile and every override (``-p`` / ``-y`` / ``-r``,
   parsed exactly as papermill's command line does) before anything runs;
2. skip each chapter whose executed copy is up to date (:mod:`advbook.buildcache`:
   same notebook, parameters, library and package versions); ``--force`` reruns;
3. execute the rest with papermill into ``book/chapters/<id>.ipynb`` with ``--jobs`` workers,
   the primer (``00_*``, which trains the shared reference models) first, then the longest
   chapters first (:func:`schedule`). Each cell has a time limit per profile (:attr:`advbook.profiles.Profile.cell_timeout`,
   ``--cell-timeout``); a failing or timed-out chapter is reported by name and the
   others still run. Each running chapter prints a line when a cell starts (at most every 10 s,
   later ones deferred, never dropped) and, while a cell runs, a heartbeat at least every 30 s
   with the cell's elapsed time and its progress bar's position (:class:`Progress`);
4. finish each executed copy: hide the parameter cells, add the "Open in Colab" badge
   (:mod:`advbook.colab`) and record the cache key and build time in its metadata;
5. add the runner's status, wall time and cache key to each chapter's results JSON,
   write the reproducibility page (:mod:`advbook.report`) and build the site with
   ``jupyter-book build`` (warnings are errors; ``_build`` is kept, so Sphinx only
   re-reads what changed).

Step 3 runs on a local pool of workers (one GPU each when CUDA shows several), or, with
``--executor slurm``, as cluster jobs through submitit (:mod:`advbook.cluster`); steps 1, 2 and 5
are the same either way.

The exit code is non-zero when any chapter or the build failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from . import buildcache, colab
from . import profiles
from .params import COMMON, ParameterError
from .results import repo_root, results_filename

CHAPTER_GLOB = "[0-9][0-9]_*.ipynb"
PRIMER_PREFIX = "00_"
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=ERROR",)
"""Arguments of every chapter kernel: its own log shows errors only (ipykernel otherwise warns at each start
that a local kernel talks to papermill over TCP without encryption, in the middle of the progress lines)."""
HIDDEN_TAGS = ("parameters", "injected-parameters")
"""Cells that get the ``hide-cell`` tag in the executed copy: the page reads as prose."""
NOT_EXECUTED_NOTE = (
    "```{warning}\nThis chapter has not been executed in this build: it shows the source without "
    "outputs. Run `make book` (or `advbook run {chapter}`) to execute it.\n```"
)
TIMED_OUT_NOTE = (
    "```{warning}\nThis chapter TIMED OUT: cell {cell} did not finish within {limit}, "
    "and the cells after it did not run. Rerun with a larger limit: `advbook run {chapter} --cell-timeout SECONDS`.\n```"
)


@dataclass
class ChapterRun:
    chapter: str
    status: str = "not run"  # ok | reused | failed | timed out | cancelled (a cluster job) | not run
    seconds: float = 0.0
    error: str = ""
    key: str = ""
    built: str = ""
    job: str = ""  # the cluster job's id and log (advbook.cluster), empty for a local run
    log: str = ""


@dataclass
class Book:
    """Paths of one book checkout (the repository root by default)."""

    root: Path
    notebooks: Path = field(init=False)
    chapters: Path = field(init=False)
    results: Path = field(init=False)
    recorded: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.notebooks = self.root / "notebooks"
        self.chapters = self.root / "book" / "chapters"
        self.results = Path(os.environ.get("ADVBOOK_RESULTS", self.root / "book" / "results"))
        # side-profile runs (``long``: 30-60 min) kept in git, so a book built elsewhere shows them, labelled
        self.recorded = self.root / "book" / "measurements" / "runs"

    def available(self) -> list[str]:
        """Chapter ids: the stems of ``notebooks/NN_*.ipynb``, in order."""
        return sorted(p.stem for p in self.notebooks.glob(CHAPTER_GLOB))

    def executed(self, chapter: str, profile: str | None = None) -> Path:
        """The executed copy: ``book/chapters/<id>.ipynb`` (the page), or ``<id>.<profile>.ipynb`` for a
        side profile such as ``long``, whose run is kept beside the build's own and is not a page."""
        return self.chapters / results_filename(chapter, profile).replace(".json", ".ipynb")

    def results_file(self, chapter: str, profile: str | None = None) -> Path:
        """The chapter's results JSON for ``profile`` (:func:`advbook.results.results_filename`)."""
        return self.results / results_filename(chapter, profile)


def default_root() -> Path:
    """The checkout to run (:func:`advbook.results.repo_root`: the nearest checkout, else the current directory)."""
    return repo_root()


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


def cell_timeout(profile: str, override: float | None = None) -> float | None:
    """Seconds one cell may run: ``override`` if given (0: no limit), else the profile's ``cell_timeout``."""
    if override is not None:
        if override < 0:
            raise ParameterError(f"--cell-timeout {override} must be >= 0 seconds (0: no limit)")
        return override or None
    return profiles.PROFILES[profile].cell_timeout if profile in profiles.PROFILES else None


def default_jobs(threads: int | None = None) -> int:
    """Parallel chapter workers: the number of GPUs on a CUDA machine (one chapter per GPU,
    :func:`advbook.cluster.gpu_slots`), else CPU cores // threads per worker (at least 1)."""
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


# --- progress ----------------------------------------------------------------------------------

_LOG_LOCK = threading.RLock()
HEARTBEAT_SECONDS = 30.0
"""While a cell runs, its chapter prints a line at least this often (:class:`Progress`)."""
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BAR_GRAPHIC = re.compile(r"%\|[^|]*\|\s*")
_BAR_TIMES = re.compile(r"\[(?:\d+:)?\d\d:\d\d(?:<[^\]]*)?,[^\]]*\]")


def _clock(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes}m{sec:02d}s" if minutes else f"{sec}s"


def bar_position(text: str) -> str | None:
    """The position of the last progress bar in a chunk of a kernel's stderr, or ``None``.

    :func:`advbook.progress.bar` is a ``tqdm`` bar; in a kernel it redraws by writing
    ``"\\r" + "training:  45%|####5     | 450/1000 [00:40<00:50, 11.2batch/s]"`` to stderr, which
    reaches papermill as a stream output. This returns the last redraw without the bar graphic
    (``"training: 45% 450/1000 [00:40<00:50, 11.2batch/s]"``), ``""`` when the chunk clears the bar
    (a closed ``leave=False`` bar redraws as blanks), and ``None`` when the chunk holds no bar
    (ordinary warnings and prints on stderr).
    """
    found = None
    for segment in re.split(r"[\r\n]", _ANSI.sub("", text)):
        if not segment:
            continue
        if not segment.strip():
            found = ""  # a bar cleared by its close
            continue
        if _BAR_TIMES.search(segment) is None:  # tqdm's "[elapsed<remaining, rate]" or "[elapsed, rate]"
            continue
        found = " ".join(_BAR_GRAPHIC.sub("% ", segment.strip()).split())[:160]
    return found


class Progress:
    """The runner's lines for one chapter, so a long cell never goes silent.

    - When a code cell starts: ``[chapter] cell i/N (elapsed)``, at most every ``every`` seconds.
      A start that comes sooner is *deferred*, never dropped: the next line (at most ``every``
      seconds later, from :meth:`tick`) reports the latest cell and names the cells started in between.
    - While a cell runs: a heartbeat at least every ``heartbeat`` seconds,
      ``[chapter] cell i/N running for 1m30s (total 5m02s): training: 45% 450/1000 [00:40<00:50, ...]``,
      with the position of the progress bar the cell last drew on stderr (:func:`bar_position`),
      where it drew one.

    :meth:`start` runs :meth:`tick` on a daemon thread about once a second; ``clock`` (seconds,
    ``time.perf_counter`` by default) can be replaced, and :meth:`tick` called directly, in tests.
    """

    def __init__(self, chapter: str, total: int, log: Callable[[str], None], every: float = 10.0,
                 heartbeat: float = HEARTBEAT_SECONDS, clock: Callable[[], float] = time.perf_counter):
        self.chapter, self.total, self.log, self.every = chapter, total, log, every
        self.heartbeat = heartbeat
        self.clock = clock
        self.start_time = self.clock()
        self.last = -float("inf")  # when the last line was printed
        self.done = 0  # the ordinal of the cell that started last
        self.cell_started: float | None = None
        self.bar: str | None = None  # the running cell's last progress bar ("" or None: none shown)
        self.bar_time: float | None = None
        self.deferred: list[int] = []  # cells whose start line is still to be reported
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # the papermill engine's callbacks
    def cell(self, ordinal: int) -> None:
        """A code cell starts (the engine's ``cell_start``)."""
        with self._lock:
            now = self.clock()
            self.done = ordinal
            self.cell_started, self.bar, self.bar_time = now, None, None
            self.deferred.append(ordinal)
            if now - self.last >= self.every or ordinal in (1, self.total):
                self._report(now)

    def write(self, text: str) -> None:
        """A chunk of the kernel's stderr (papermill's ``stderr_file``): remember the bar's position."""
        position = bar_position(text)
        if position is not None:
            with self._lock:
                self.bar, self.bar_time = position, self.clock()

    def flush(self) -> None:
        pass

    def tick(self) -> None:
        """Print what is due: a deferred cell start after ``every`` s, else a heartbeat after ``heartbeat`` s."""
        with self._lock:
            now = self.clock()
            beat_due = self.cell_started is not None and now - self.last >= self.heartbeat
            if self.deferred and (beat_due or now - self.last >= self.every):
                self._report(now)  # a deferred start is reported before (and instead of) a bare heartbeat
            elif beat_due:
                self._beat(now)

    def finish(self) -> None:
        """The notebook ended (or failed): report a start still deferred; stop the heartbeat thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self.deferred:
                self._report(self.clock())
            self.cell_started = None

    def start(self) -> "Progress":
        """Run :meth:`tick` about once a second (never less often than ``every`` and ``heartbeat`` need)."""
        period = max(0.05, min(1.0, self.every or 1.0, self.heartbeat))

        def loop() -> None:
            while not self._stop.wait(period):
                try:
                    self.tick()
                except Exception:  # a progress line must never stop a chapter
                    pass

        self._thread = threading.Thread(target=loop, name=f"progress-{self.chapter}", daemon=True)
        self._thread.start()
        return self

    # the lines (called with the lock held)
    def _report(self, now: float) -> None:
        current, earlier = self.deferred[-1], self.deferred[:-1]
        line = f"[{self.chapter}] cell {current}/{self.total} ({_clock(self.cell_started - self.start_time)})"
        if earlier:
            cells = f"cell {earlier[0]}" if len(earlier) == 1 else f"cells {earlier[0]}-{earlier[-1]}"
            line += f"; {cells} also started since the last line"
        if current == self.done and now - self.cell_started >= 1:
            line += f", running for {_clock(now - self.cell_started)}"
        self.deferred.clear()
        self.last = now
        self.log(line)

    def _beat(self, now: float) -> None:
        line = (f"[{self.chapter}] cell {self.done}/{self.total} running for {_clock(now - self.cell_started)} "
                f"(total {_clock(now - self.start_time)})")
        if self.bar:
            line += f": {self.bar}"
            if now - self.bar_time >= 10:
                line += f" (as of {_clock(now - self.bar_time)} ago)"
        self.last = now
        self.log(line)


def _register_engine() -> str:
    """A papermill engine that reports each code cell's start to a ``progress`` callback."""
    from papermill.engines import NBClientEngine, papermill_engines

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, progress=None, kernel_env=None, **kwargs):
            if kernel_env:
                kwargs["kernel_manager_class"] = _kernel_manager_with(kernel_env)
            if progress is not None:
                ordinals, n = {}, 0
                for index, cell in enumerate(nb_man.nb.cells):
                    if cell.cell_type == "code":
                        n += 1
                        ordinals[index] = n
                progress.total = n
                start = nb_man.cell_start

                def cell_start(cell, cell_index=None, **kw):
                    if cell_index in ordinals:
                        progress.cell(ordinals[cell_index])
                    return start(cell, cell_index, **kw)

                nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register("advbook", ProgressEngine)
    return "advbook"


def _kernel_manager_with(env: dict[str, str]):
    """A kernel manager whose kernels start with ``env`` added to this process's environment
    (``CUDA_VISIBLE_DEVICES`` of one worker: ``os.environ`` is shared by all worker threads)."""
    from jupyter_client.manager import AsyncKernelManager

    class PinnedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw["env"] = {**os.environ, **kw.get("env", {}), **env}
            return await super().start_kernel(**kw)

    return PinnedKernelManager


def _locked(log: Callable[[str], None]) -> Callable[[str], None]:
    def write(line: str) -> None:
        with _LOG_LOCK:
            log(line)
            sys.stdout.flush()
    return write


# --- one chapter -------------------------------------------------------------------------------

PROFILE_LIMIT = "profile"
"""The default of :func:`execute`'s ``timeout``: the profile's limit (:attr:`advbook.profiles.Profile.cell_timeout`)."""


def execute(book: Book, chapter: str, parameters: dict, log=print, timeout: float | None | str = PROFILE_LIMIT,
            key: str | None = None, progress_every: float = 10.0, kernel_env: dict | None = None,
            heartbeat: float = HEARTBEAT_SECONDS) -> ChapterRun:
    """Execute one chapter with papermill; never raises for a failing or timed-out notebook.

    ``timeout`` is the per-cell limit in seconds, ``None`` for no limit, or by default the
    profile's (:func:`cell_timeout`); ``kernel_env``, variables added to the kernel's
    environment (a worker's GPU). ``log`` gets a line when a cell starts (at most every
    ``progress_every`` s, later lines deferred) and, while a cell runs, at least every ``heartbeat`` s
    with the position of the progress bar the kernel last drew on stderr (:class:`Progress`).
    """
    import papermill
    from nbclient.exceptions import CellTimeoutError

    if timeout == PROFILE_LIMIT:
        timeout = cell_timeout(parameters.get("profile"))
    key = key or buildcache.chapter_key(book.notebooks / f"{chapter}.ipynb", parameters)
    run = ChapterRun(chapter, key=key)
    book.chapters.mkdir(parents=True, exist_ok=True)
    book.results.mkdir(parents=True, exist_ok=True)
    out = book.executed(chapter, parameters.get("profile"))
    progress = Progress(chapter, 0, _locked(log), every=progress_every, heartbeat=heartbeat)
    started_wall = time.time()
    start = time.perf_counter()
    env_before = os.environ.get("ADVBOOK_RESULTS")
    os.environ["ADVBOOK_RESULTS"] = str(book.results)  # the kernel writes the results JSON here
    try:
        progress.start()
        papermill.execute_notebook(
            str(book.notebooks / f"{chapter}.ipynb"), str(out), parameters=parameters,
            cwd=str(book.notebooks), kernel_name="python3", progress_bar=False, log_output=False,
            execution_timeout=timeout, engine_name=_register_engine(), progress=progress,
            stderr_file=progress,  # the kernel's stderr: where its progress bars are drawn
            extra_arguments=list(KERNEL_ARGUMENTS), kernel_env=kernel_env,
        )
        run.status = "ok"
    except CellTimeoutError as exc:
        run.status = "timed out"
        # with no cell limit nbclient can still give up on a kernel that stops answering (a loaded machine)
        limit = f"ran longer than {timeout:g} s" if timeout else f"timed out with no cell limit: {exc}"
        run.error = f"cell {progress.done}/{progress.total} {limit} ({exc.__class__.__name__})"[:500]
    except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
        run.status = "failed"
        run.error = f"{exc.__class__.__name__}: {getattr(exc, 'evalue', exc)}"[:500]
    finally:
        progress.finish()
        if env_before != str(book.results):  # unchanged when run() set it for all workers
            if env_before is None:
                os.environ.pop("ADVBOOK_RESULTS", None)
            else:
                os.environ["ADVBOOK_RESULTS"] = env_before
    run.seconds = time.perf_counter() - start
    run.built = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _finish_page(book, run, parameters, timeout, progress)
    _annotate_results(book, run, parameters, started_wall)
    return run


def _tag_hidden(nb) -> None:
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if any(t in tags for t in HIDDEN_TAGS) and "hide-cell" not in tags:
            cell.metadata["tags"] = [*tags, "hide-cell"]


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


def _finish_page(book: Book, run: ChapterRun, parameters: dict, timeout: float | None, progress: Progress) -> None:
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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _annotate_results(book: Book, run: ChapterRun, parameters: dict, started: float) -> None:
    """Record the runner's view (status, wall time incl. kernel start, cache key) in the results JSON."""
    path = book.results_file(run.chapter, parameters.get("profile"))
    data = _read_json(path)
    fresh = path.exists() and path.stat().st_mtime >= started - 1
    if run.status != "ok" or not data or not fresh:
        # a stale JSON from an earlier run must not be shown as this run's result
        data = {"chapter": run.chapter, "claims": [], "metrics": {}, "parameters": parameters}
    data["runner"] = {"status": run.status, "seconds": round(run.seconds, 1), "error": run.error,
                      "finished": run.built, "built": run.built, "execution": "executed", "key": run.key}
    _write_json(path, data)
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
    _write_json(target, {**_read_json(path), "recorded_from": str(path.relative_to(book.root))
                         if path.is_relative_to(book.root) else path.name})
    return target


def reuse(book: Book, chapter: str, record: dict, profile: str | None = None) -> ChapterRun:
    """Mark an up-to-date chapter as reused in its results JSON (its notebook is left untouched)."""
    path = book.results_file(chapter, profile)
    data = _read_json(path)
    runner = data.get("runner", {})
    if runner.get("execution") != "reused":
        data["runner"] = {**runner, "execution": "reused"}
        _write_json(path, data)
    return ChapterRun(chapter, status="reused", seconds=0.0, key=record["key"], built=record.get("built", ""))


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


# --- the book ----------------------------------------------------------------------------------

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


def build_site(book: Book, log=print) -> int:
    """Write the reproducibility page, then ``jupyter-book build`` with warnings as errors; returns its exit code."""
    from . import report

    ensure_all_pages(book)
    report.write_page(book)
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


@contextlib.contextmanager
def _restored_env(*names: str):
    """Put these environment variables back as they were (the runner sets them for its kernels)."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
        runner = _read_json(book.results_file(chapter, profile)).get("runner", {})
        return float(runner.get("seconds") or 0.0) if runner.get("status") == "ok" else 0.0

    primer = [t for t in todo if t[0].startswith(PRIMER_PREFIX)]
    rest = [t for t in todo if not t[0].startswith(PRIMER_PREFIX)]
    return primer + sorted(rest, key=lambda t: -last_seconds(t[0]))


def _thread_env() -> None:
    """One torch/OpenMP thread per kernel (:data:`advbook.runtime.DEFAULT_THREADS`) unless
    ADVBOOK_THREADS says otherwise, however many chapters run: the count changes the numbers."""
    os.environ.setdefault("ADVBOOK_THREADS", "1")  # runtime.DEFAULT_THREADS (this module stays torch-free)
    os.environ.setdefault("OMP_NUM_THREADS", os.environ["ADVBOOK_THREADS"])


def run(chapters: Iterable[str] | None = None, profile: str = "auto", overrides: dict | None = None,
        root: str | os.PathLike | None = None, build: bool = True, log=print, *, force: bool = False,
        jobs: int | None = None, cell_timeout_s: float | None = None, progress_every: float = 10.0,
        executor: "cluster.Options | None" = None) -> int:
    """Run the selected chapters (all by default) that are not up to date, then build the site.

    ``executor`` (:class:`advbook.cluster.Options`) sends the chapters to a cluster instead of the
    local pool. Returns an exit code: 0 when every chapter ran (or was reused) and the site built.
    """
    with _restored_env("ADVBOOK_RESULTS", "ADVBOOK_THREADS", "OMP_NUM_THREADS"):
        return _run(chapters, profile, overrides, root, build, log, force=force, jobs=jobs,
                    cell_timeout_s=cell_timeout_s, progress_every=progress_every, executor=executor)


def _pool(book: Book, order: list[tuple[str, str]], per_chapter: dict, timeout: float | None, jobs: int,
          log, progress_every: float) -> dict[str, ChapterRun]:
    """Execute ``order`` on ``jobs`` local workers (threads, each driving one kernel), one GPU each when
    CUDA shows several (:func:`advbook.cluster.gpu_slots`)."""
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
            f"{os.environ.get('ADVBOOK_THREADS')} torch thread(s) each"
            + (", one GPU each (CUDA_VISIBLE_DEVICES)" if slots is not None else "")
            + f", in the order {', '.join(c for c, _ in order)}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return {result.chapter: result for result in pool.map(one, order)}


def _run(chapters, profile, overrides, root, build, log, *, force, jobs, cell_timeout_s, progress_every,
         executor=None) -> int:
    book = Book(Path(root) if root is not None else default_root())
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
    os.environ["ADVBOOK_RESULTS"] = str(book.results)  # for every kernel (Book read it from here already)

    runs: dict[str, ChapterRun] = {}
    todo = []
    for chapter in chosen:
        key = buildcache.chapter_key(book.notebooks / f"{chapter}.ipynb", per_chapter[chapter])
        record = None if force else buildcache.up_to_date(book.executed(chapter, resolved),
                                                           book.results_file(chapter, resolved), key)
        if record is not None:
            runs[chapter] = reuse(book, chapter, record, resolved)
        else:
            todo.append((chapter, key))
    reused = [c for c in chosen if c in runs]
    log(f"profile {resolved!r}, cell limit {f'{timeout:g} s' if timeout else 'none'}: "
        f"{len(todo)} chapter(s) to run, {len(reused)} up to date" + (f" ({', '.join(reused)})" if reused else ""))

    if todo:
        order = schedule(book, todo, resolved)
        _thread_env()
        if remote:
            runs.update(cluster.run_jobs(book, order, per_chapter, timeout, executor, log))
        else:
            runs.update(_pool(book, order, per_chapter, timeout, jobs, log, progress_every))

    code = 0
    ordered = [runs[c] for c in chosen]
    if build:
        from . import report

        ensure_all_pages(book)
        report.write_page(book)
        if not force and site_up_to_date(book):
            log(f"site up to date: nothing changed since the last build of {book.root / '_build' / 'html'}")
        elif build_site(book, log) != 0:
            log("the site build FAILED")
            code = 1
    else:
        from . import report

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


__all__ = ["Book", "ChapterRun", "run", "build_site", "select", "plan", "parse_value",
           "parse_yaml", "overrides_from_cli", "ensure_all_pages", "notebook_parameters", "execute", "default_jobs"]
