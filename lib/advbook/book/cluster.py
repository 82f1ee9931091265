"""Where chapters run past the local worker pool: SLURM jobs through submitit, and the GPUs of one node.

The runner (:mod:`advbook.book.build`) keeps the local pool as the default. With ``--executor slurm``
it hands the chapters that are not up to date to :func:`run_jobs`, which submits each as one job
through `submitit <https://github.com/facebookincubator/submitit>`_; the job runs
:func:`chapter_job`, which is the papermill execution of the local path
(:func:`advbook.book.execute.execute`) in the checkout, on the shared filesystem. The runner then
watches the jobs, prints each chapter's state (queued, running, done, failed, cancelled) with its
job id and log, and builds the site once all are done (or ``advbook build`` does, later).
``--executor submitit-local`` runs the same submission code with submitit's local executor
(jobs are local processes): the test suite uses it, and so can anyone without a cluster.

With ``--prefetch`` the reference models the chapters declare (:func:`reference_entries`: zoo
recipe x kind x seed) are trained first, as one array job with one cache entry per task
(:func:`prefetch_job`), and the chapters after it then load them from the cache.

On one node with several GPUs, the local pool pins each worker to one of them
(:func:`gpu_slots`, ``CUDA_VISIBLE_DEVICES``), and the default number of workers is the number
of GPUs (:func:`visible_gpus`).
"""

from __future__ import annotations

import os
import queue
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .. import profiles
from ..params import ParameterError

EXECUTORS = ("local", "slurm", "submitit-local")
"""``local``: the runner's worker pool (default); ``slurm``: one SLURM job per chapter through submitit;
``submitit-local``: the same submission code with submitit's local executor (local processes)."""

PHASES = {
    "queued": ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
               "READY", "UNKNOWN", "NO PROCESS AND NO RESULT"),
    "running": ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"),
    "done": ("COMPLETED", "FINISHED"),
    "cancelled": ("CANCELLED", "INTERRUPTED", "PREEMPTED", "REVOKED"),
}
"""SLURM's job states (``sacct``) and submitit's local ones, by what the runner reports; anything else
(``FAILED``, ``TIMEOUT``, ``OUT_OF_MEMORY``, ``NODE_FAIL``, ...) is ``failed``."""

JOB_ENV = ("ADVBOOK_CACHE", "ADVBOOK_DATA", "ADVBOOK_DOWNLOAD", "ADVBOOK_RESULTS", "ADVBOOK_THREADS",
           "OMP_NUM_THREADS", "ADVBOOK_LOCK_STALE", "ADVBOOK_PROGRESS")
"""Environment variables a job gets from the runner as they are when it submits (one cache, one data
folder, one results folder and the same thread count on every node)."""


def phase(state: str) -> str:
    """``queued | running | done | failed | cancelled`` for a submitit / SLURM job state
    (``CANCELLED by 1234`` is ``cancelled``)."""
    word = (state or "UNKNOWN").split()[0].upper().rstrip("+")
    for name, states in PHASES.items():
        if word in states:
            return name
    return "failed"


# --- options -----------------------------------------------------------------------------------

@dataclass
class Options:
    """How to run chapters: the executor and, for a cluster, the resources of each job."""

    executor: str = "local"
    partition: str | None = None
    gpus: int | None = None  # per job; default 1 on slurm, 0 with submitit-local
    cpus: int | None = None
    mem_gb: float | None = None
    time_min: int = 24 * 60
    account: str | None = None
    sbatch: tuple[str, ...] = ()  # extra sbatch flags: "--qos=high", "--constraint=a100", "--exclusive"
    prefetch: bool = False
    poll_s: float | None = None  # seconds between state checks; default 30 on slurm, 0.5 locally
    folder: Path | None = None  # job files and logs; default <checkout>/.cache/jobs

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ParameterError(f"--executor {self.executor!r} is not known; allowed: {', '.join(EXECUTORS)}")
        if self.gpus is not None and self.gpus < 0:
            raise ParameterError(f"--gpus-per-job {self.gpus} must be >= 0")
        if self.time_min < 1:
            raise ParameterError(f"--time-limit {self.time_min} must be at least 1 minute")
        if self.prefetch and not self.remote:
            raise ParameterError("--prefetch submits an array job: it needs --executor slurm (or submitit-local)")
        if self.remote:
            self.sbatch_parameters()  # fails now on a malformed flag, not after the first submission

    @property
    def remote(self) -> bool:
        """Whether chapters go to submitit (any executor but the local pool)."""
        return self.executor != "local"

    @property
    def gpus_per_job(self) -> int:
        return self.gpus if self.gpus is not None else (1 if self.executor == "slurm" else 0)

    def sbatch_parameters(self) -> dict:
        """``--sbatch`` flags as submitit's ``slurm_additional_parameters``: ``--qos=high`` -> ``{"qos": "high"}``,
        ``--exclusive`` -> ``{"exclusive": True}``."""
        out: dict[str, Any] = {}
        for flag in self.sbatch:
            name, sep, value = flag.lstrip("-").partition("=")
            if not flag.startswith("--") or not name or " " in name:
                raise ParameterError(f"--sbatch {flag!r} must be a long sbatch flag, --NAME=VALUE or --NAME "
                                     "(e.g. --sbatch=--qos=high)")
            out[name.replace("-", "_")] = value if sep else True
        return out


def options_from_env(**given: Any) -> Options:
    """:class:`Options` from the command line, with ``$ADVBOOK_EXECUTOR`` and ``$ADVBOOK_SLURM_*`` as
    defaults (``PARTITION``, ``ACCOUNT``, ``GPUS``, ``TIME`` in minutes, ``FLAGS``: sbatch flags
    separated by spaces), so that ``make book EXECUTOR=slurm`` takes them from the environment."""
    env = os.environ.get

    def number(name: str, kind: type):
        text = env(f"ADVBOOK_SLURM_{name}")
        try:
            return kind(text) if text else None
        except ValueError:
            raise ParameterError(f"ADVBOOK_SLURM_{name}={text!r} must be a number") from None

    values = {"executor": env("ADVBOOK_EXECUTOR") or "local", "partition": env("ADVBOOK_SLURM_PARTITION"),
              "account": env("ADVBOOK_SLURM_ACCOUNT"), "gpus": number("GPUS", int), "time_min": number("TIME", int),
              "sbatch": tuple((env("ADVBOOK_SLURM_FLAGS") or "").split())}
    values.update({k: v for k, v in given.items() if v not in (None, (), [])})
    values = {k: v for k, v in values.items() if v is not None}
    values["sbatch"] = tuple(values.get("sbatch", ()))
    return Options(**values)


def resolve_profile(profile: str, options: Options) -> str:
    """``auto`` for jobs: ``full`` when each job gets a GPU, else ``quick``. The machine that submits
    (a login node) usually has no GPU, so its own CUDA says nothing about where the chapters run."""
    if profiles.check(profile) != profiles.AUTO:
        return profile
    return "full" if options.gpus_per_job > 0 else "quick"


def executor(options: Options, folder: Path, name: str):
    """A submitit executor for ``options``: job files and logs in ``folder/<job id>``."""
    import submitit

    cluster = "slurm" if options.executor == "slurm" else "local"
    try:
        ex = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    except RuntimeError as exc:  # submitit: 'Could not detect "srun"': not on a SLURM login node
        raise ParameterError(f"--executor {options.executor}: {exc} (run it on the cluster's login node, "
                             "or use --executor submitit-local to try the jobs on this machine)") from None
    ex.update_parameters(name=name, timeout_min=int(options.time_min), gpus_per_node=options.gpus_per_job,
                         cpus_per_task=options.cpus, mem_gb=options.mem_gb, slurm_partition=options.partition,
                         slurm_account=options.account,
                         slurm_additional_parameters=options.sbatch_parameters() or None)
    return ex


def job_env() -> dict[str, str]:
    """The :data:`JOB_ENV` variables of this process that are set."""
    return {name: os.environ[name] for name in JOB_ENV if name in os.environ}


# --- the jobs ----------------------------------------------------------------------------------

def chapter_job(root: str, chapter: str, parameters: dict, timeout: float | None, key: str,
                env: dict[str, str]) -> dict:
    """What one chapter's job runs: :func:`advbook.book.execute.execute` (papermill, the page, the results JSON)
    in the checkout at ``root``; returns the :class:`advbook.book.records.ChapterRun` as a dict."""
    from ..paths import Book
    from .execute import execute

    os.environ.update(env)
    run = execute(Book(Path(root)), chapter, parameters, print, timeout=timeout, key=key,
                         progress_every=60.0)
    return asdict(run)


def prefetch_job(item: dict, env: dict[str, str]) -> dict:
    """What one task of the prefetch array runs: load the data and get one reference model through
    :func:`advbook.zoo.reference_model` (trained and stored on a miss, loaded on a hit)."""
    os.environ.update(env)
    from .. import cache, data, runtime, zoo

    device = runtime.resolve_device("auto")  # also sets the thread count, which keys the entry
    ds = data.load(item["dataset"], device=device, n_train=item.get("n_train"), n_test=item.get("n_test"),
                   seed=item.get("data_seed", 0))
    start = time.perf_counter()
    zoo.reference_model(ds, item["recipe"], item["kind"], item["seed"], item.get("tag", ""))
    return {"label": entry_label(item), "seconds": round(time.perf_counter() - start, 1), **cache.STATS}


# --- prefetch: what a chapter will load, listed without running it ------------------------------

def chapter_module(chapter: str):
    """The methods module behind ``chapter`` (:func:`advbook.methods.for_chapter`)."""
    from .. import methods

    return methods.for_chapter(chapter)


def entry_label(item: dict) -> str:
    return (f"{item['kind']} {item['recipe']['arch']} on {item['dataset']}, seed {item['seed']}"
            + (f", tag {item['tag']}" if item.get("tag") else ""))


PREFETCH_FIELDS = ("dataset", "n_train", "n_test", "data_seed", "recipe", "kind", "seed", "tag")
"""What one prefetch task gets: the arguments of :func:`advbook.data.load` and :func:`advbook.zoo.reference_model`."""


def _literal(text: Any) -> Any:
    """A parameters-cell default as papermill reports it (the source text, ``'200'``, ``'"auto"'``) as a value."""
    import ast

    try:
        return ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        return text


def reference_entries(notebook: Path, chapter: str, parameters: dict) -> tuple[list[dict], str]:
    """The reference models ``chapter`` will load through :mod:`advbook.zoo`, and why none when it cannot list them.

    A methods module lists them with ``REFERENCE_MODELS``, a function of the resolved parameters
    returning ``(kind, seed)`` or ``(kind, seed, tag)`` tuples, or dicts that also name the data
    (``n_train``, ``n_test``, ``data_seed``: the arguments of :func:`advbook.data.load`) where the
    chapter loads another split than ``cfg.n_train`` / ``cfg.n_test`` with the default seed.
    The recipe and the dataset are the chapter's own (``cfg.recipe``, ``cfg.dataset``), resolved as
    :func:`advbook.book.chapter.setup` resolves them. A listed entry that differs from what the chapter then
    asks for is only wasted work: the chapter's cache key (data fingerprint, recipe, code) decides. Everything else a chapter caches is keyed by what
    only running it produces (the weights of a model it trained, the code of a function defined in
    the notebook), so it cannot be listed beforehand.
    """
    from . import chapter as chapters
    from .. import params, profiles, zoo
    from . import build

    try:
        module = chapter_module(chapter)
    except ValueError:
        return [], "no methods module backs it"
    declared = getattr(module, "REFERENCE_MODELS", None)
    if declared is None:
        return [], f"{module.__name__} does not declare REFERENCE_MODELS"
    namespace = {**{k: _literal(v) for k, v in build.notebook_parameters(notebook).items()}, **parameters}
    given = {name: namespace[name] for name in chapters.chapter_parameters(module) if name in namespace}
    cfg = params.resolve(given, module.PROFILES, getattr(module, "SCHEMA", {}))
    if getattr(module, "check", None) is not None:
        module.check(cfg)
    if cfg.get("dataset") is None:
        return [], "it trains on no dataset of the reference recipes"
    recipe = profiles.get(cfg.profile).recipe(cfg.dataset,
                                              **{k: cfg.get(k) for k in getattr(module, "RECIPE_OVERRIDES", ())})
    items = []
    for entry in declared(cfg):
        if not isinstance(entry, dict):
            entry = dict(zip(("kind", "seed", "tag"), entry))
        item = {"dataset": cfg.dataset, "n_train": cfg.get("n_train"), "n_test": cfg.get("n_test"), "data_seed": 0,
                "recipe": recipe, "tag": "", **entry}
        if item["kind"] not in zoo.REFERENCE_KINDS or set(item) != set(PREFETCH_FIELDS):
            raise ParameterError(f"{module.__name__}.REFERENCE_MODELS lists {entry!r}: a (kind, seed[, tag]) tuple "
                                 f"or a dict of {', '.join(PREFETCH_FIELDS)}, kind one of {', '.join(zoo.REFERENCE_KINDS)}")
        item["seed"] = int(item["seed"])
        if item not in items:
            items.append(item)
    return items, ""


# --- submitting and watching --------------------------------------------------------------------

@dataclass
class Watched:
    label: str
    job: Any
    phase: str = ""
    log: str = ""


def _watch(jobs: list[Watched], options: Options, log: Callable[[str], None],
           on_end: Callable[[Watched], None]) -> None:
    """Poll the jobs until each has ended, printing every change of phase; ``on_end`` gets each ended job once."""
    poll = options.poll_s if options.poll_s is not None else (30.0 if options.executor == "slurm" else 0.5)
    pending = list(jobs)
    try:
        while pending:
            for w in list(pending):
                now = phase(w.job.state)
                if now != w.phase:
                    w.phase = now
                    log(f"[{w.label}] {now} (job {w.job.job_id}, log {w.log})")
                if now in ("done", "failed", "cancelled"):
                    pending.remove(w)
                    on_end(w)
            if pending:
                time.sleep(poll)
    except KeyboardInterrupt:
        ids = " ".join(str(w.job.job_id) for w in pending)
        log(f"stopped watching; the jobs still queued or running go on ({ids}): `scancel {ids}` stops them, "
            "`advbook build` renders the site once they are done")
        raise


def _error(job: Any, state: str) -> str:
    try:
        job.result()
    except Exception as exc:  # submitit's FailedJobError / UncompletedJobError carry the traceback or the reason
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        return f"job {job.job_id} {state}: {lines[-1] if lines else exc.__class__.__name__}"[:500]
    return f"job {job.job_id} {state}"


def prefetch(book, items: list[dict], options: Options, log: Callable[[str], None]) -> dict[str, int]:
    """Train ``items`` (:func:`reference_entries`) as one array job; returns counts of tasks done and failed."""
    ex = executor(options, book.jobs if options.folder is None else options.folder,
                  "advbook-prefetch")
    env = job_env()
    with ex.batch():
        jobs = [ex.submit(prefetch_job, item, env) for item in items]
    watched = [Watched(f"prefetch {entry_label(i)}", j, log=str(j.paths.stdout)) for i, j in zip(items, jobs)]
    log(f"prefetch: {len(items)} reference model(s) as one array job ({jobs[0].job_id.split('_')[0]})")
    counts = {"done": 0, "failed": 0, "computed": 0}

    def ended(w: Watched) -> None:
        if w.phase == "done":
            try:
                out = w.job.result()
            except Exception as exc:  # a pickled result that cannot be read back: still an end
                out = {"misses": 0, "error": str(exc)}
            counts["done"] += 1
            counts["computed"] += int(out.get("misses", 0))
        else:
            counts["failed"] += 1
            log(f"[{w.label}] {_error(w.job, w.phase)}; the chapter will train it itself")

    _watch(watched, options, log, ended)
    log(f"prefetch: {counts['done']} of {len(items)} done ({counts['computed']} trained, "
        f"{counts['done'] - counts['computed']} already cached), {counts['failed']} failed")
    return counts


def run_jobs(book, order: list[tuple[str, str]], per_chapter: dict[str, dict], timeout: float | None,
             options: Options, log: Callable[[str], None]) -> dict:
    """Submit each chapter of ``order`` as a job (after the prefetch array, with ``options.prefetch``),
    watch them and return ``{chapter: ChapterRun}``, as the local pool does.

    A job that ends normally returns the chapter's own :class:`~advbook.book.records.ChapterRun` (``ok``,
    ``failed`` or ``timed out``, as a local run); a job that SLURM ends (cancelled, out of time or
    memory, a node failure) gives ``cancelled`` or ``failed`` with the reason and its log, recorded in
    the chapter's results JSON by the runner, since the job could not.
    """
    from . import records
    from .execute import _clock

    folder = book.jobs if options.folder is None else options.folder
    if options.prefetch:
        items, notes = [], []
        for chapter, _ in order:
            listed, why = reference_entries(book.notebooks / f"{chapter}.ipynb", chapter, per_chapter[chapter])
            items += [i for i in listed if i not in items]
            if why:
                notes.append(f"{chapter} ({why})")
        if notes:
            log("prefetch: nothing listed for " + "; ".join(notes) + ": these train what they need themselves")
        if items:
            prefetch(book, items, options, log)
    ex = executor(options, folder, "advbook")
    env = job_env()
    watched, started = [], {}
    for chapter, key in order:
        job = ex.submit(chapter_job, str(book.root), chapter, per_chapter[chapter], timeout, key, env)
        started[chapter] = time.time()
        watched.append(Watched(chapter, job, log=str(job.paths.stdout)))
        log(f"[{chapter}] submitted as job {job.job_id} ({options.executor}"
            + (f", partition {options.partition}" if options.partition else "")
            + f", {options.gpus_per_job} GPU(s), {options.time_min} min), log {job.paths.stdout}")
    runs: dict[str, Any] = {}
    keys = dict(order)

    def ended(w: Watched) -> None:
        run = None
        if w.phase == "done":
            try:
                run = records.ChapterRun(**w.job.result())
            except Exception:  # an ended job without a readable result: report it as failed
                w.phase = "failed"
        if run is None:
            run = records.ChapterRun(w.label, "cancelled" if w.phase == "cancelled" else "failed",
                                    seconds=time.time() - started[w.label], error=_error(w.job, w.phase),
                                    key=keys[w.label], built=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            records.annotate_results(book, run, per_chapter[w.label], started[w.label])
        run.job, run.log = str(w.job.job_id), w.log
        runs[w.label] = run
        log(f"[{w.label}] {run.status} in {_clock(run.seconds)}" + (f" ({run.error})" if run.error else ""))

    _watch(watched, options, log, ended)
    return runs


# --- one node, several GPUs ----------------------------------------------------------------------

def visible_gpus() -> list[str]:
    """The CUDA devices this process sees, as ``CUDA_VISIBLE_DEVICES`` names them (``["0", "1"]``;
    ``["2", "3"]`` when it says ``2,3``); ``[]`` without CUDA."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    named = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return named[:count] if len(named) >= count else [str(i) for i in range(count)]


def gpu_slots(workers: int) -> "queue.Queue[str] | None":
    """One GPU per local worker when CUDA shows more than one: a queue of device names that a worker takes
    before a chapter and gives back after it (``workers`` > GPUs shares them round-robin). ``None`` with
    one GPU or none (nothing to pin)."""
    gpus = visible_gpus()
    if len(gpus) < 2:
        return None
    slots: queue.Queue[str] = queue.Queue()
    for i in range(workers):
        slots.put(gpus[i % len(gpus)])
    return slots


__all__ = ["EXECUTORS", "Options", "options_from_env", "resolve_profile", "run_jobs", "prefetch", "reference_entries",
           "chapter_job", "prefetch_job", "phase", "visible_gpus", "gpu_slots"]
