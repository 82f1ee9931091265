"""Execute one chapter with papermill (the job of a worker of ``advbook run``, local or on a cluster).

:func:`execute` runs ``notebooks/<id>.ipynb`` into ``book/chapters/<id>.ipynb`` with the chapter's
parameters and a per-cell time limit (the profile's :attr:`advbook.profiles.Profile.cell_timeout`,
or ``--cell-timeout``), prints a line when a cell starts and a heartbeat while it runs
(:class:`Progress`), then finishes the page (:func:`advbook.book.finish.finish_page`) and records
its status in the results JSON (:func:`advbook.book.records.annotate_results`). It never raises for a
failing or timed-out notebook. The kernel finds the book's folders itself (:mod:`advbook.paths`);
what it gets from the runner is its parameters and, in its environment, the thread count
(:func:`thread_env`) and a worker's GPU.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from typing import Callable

from .. import profiles
from ..params import ParameterError
from ..paths import Book
from . import buildcache, finish, records
from .records import ChapterRun

KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=ERROR",)
"""Arguments of every chapter kernel: its own log shows errors only (ipykernel otherwise warns at each start
that a local kernel talks to papermill over TCP without encryption, in the middle of the progress lines)."""


def cell_timeout(profile: str, override: float | None = None) -> float | None:
    """Seconds one cell may run: ``override`` if given (0: no limit), else the profile's ``cell_timeout``."""
    if override is not None:
        if override < 0:
            raise ParameterError(f"--cell-timeout {override} must be >= 0 seconds (0: no limit)")
        return override or None
    return profiles.PROFILES[profile].cell_timeout if profile in profiles.PROFILES else None



def thread_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Variables added to a chapter kernel's environment: one torch/OpenMP thread per kernel
    (:data:`advbook.runtime.DEFAULT_THREADS`) unless the user's ``$ADVBOOK_THREADS`` says otherwise,
    however many chapters run (the count changes the numbers), and ``extra`` (a worker's GPU).
    The runner's own environment is left as it is."""
    threads = os.environ.get("ADVBOOK_THREADS") or "1"  # runtime.DEFAULT_THREADS (this module stays torch-free)
    return {"ADVBOOK_THREADS": threads, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or threads,
            **(extra or {})}


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
        def execute_managed_notebook(cls, nb_man, kernel_name, progress=None, kernel_env=None, kernel_cwd=None,
                                     **kwargs):
            if kernel_env or kernel_cwd:
                kwargs["kernel_manager_class"] = _kernel_manager_with(kernel_env or {}, kernel_cwd)
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


def _kernel_manager_with(env: dict[str, str], cwd: str | None = None):
    """A kernel manager whose kernels start with ``env`` added to this process's environment
    (``CUDA_VISIBLE_DEVICES`` of one worker: ``os.environ`` is shared by all worker threads)."""
    from jupyter_client.manager import AsyncKernelManager

    class PinnedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw["env"] = {**os.environ, **kw.get("env", {}), **env}
            if cwd is not None:  # the kernel's own working folder; the runner's stays as it is
                kw["cwd"] = cwd
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
    environment (a worker's GPU) besides the thread count (:func:`thread_env`). ``log`` gets a line when a cell starts (at most every
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
    try:
        progress.start()
        papermill.execute_notebook(
            str(book.notebooks / f"{chapter}.ipynb"), str(out), parameters=parameters,
            kernel_cwd=str(book.notebooks), kernel_name="python3", progress_bar=False, log_output=False,
            execution_timeout=timeout, engine_name=_register_engine(), progress=progress,
            stderr_file=progress,  # the kernel's stderr: where its progress bars are drawn
            extra_arguments=list(KERNEL_ARGUMENTS), kernel_env=thread_env(kernel_env),
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
    run.seconds = time.perf_counter() - start
    run.built = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    finish.finish_page(book, run, parameters, timeout, progress)
    records.annotate_results(book, run, parameters, started_wall)
    return run

