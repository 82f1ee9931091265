"""A content-addressed cache for trained models and expensive results.

An entry is keyed by a hash of its name, its full configuration, the library version
and the code that computes it (:func:`advbook.codehash.code_identity` of the compute
function: its library modules and their imports, docstrings and comments aside, or a
notebook function's own code), so changing any setting or any line of code an entry ran
builds a new entry instead of silently reusing a stale one, and editing prose rebuilds
nothing. A torch CPU thread count other than 1 (:func:`advbook.runtime.cpu_threads`) is
part of the key as well, since it changes the numbers. Each entry is two files in :func:`cache_dir`:

``<name>-<key>.pt``
    the payload, written with ``torch.save`` and read with ``weights_only=True``
    (tensors, numbers, strings, lists and dicts only: no pickled code);
``<name>-<key>.json``
    the manifest: configuration, library version, the code digest and the modules it
    covers, creation time and the payload's SHA-256. It is written last, so an entry
    without one was interrupted.

Both are written to a temporary file and renamed into place (atomic on POSIX). On
load the checksum is verified; an entry that is missing its manifest, fails the
checksum or fails to load is reported, deleted and rebuilt, never used.

:func:`entry` (and so :func:`cached`, :func:`trained_model` and :func:`cached_result`) holds the
entry's lock around "load, else compute and save": when two processes (two chapters side by side,
a notebook and the test suite, two cluster jobs on different nodes) ask for the same entry,
one computes it and the other waits, then loads it. The lock is ``<name>-<key>.lock``,
created exclusively (``O_CREAT | O_EXCL``, atomic on a local disk and on NFS, where
``flock`` is not reliable) and holding its holder's host, pid and a token; it is removed on
release. The holder touches it every :data:`LOCK_HEARTBEAT_SECONDS`; a waiter breaks a lock
whose holder is gone (same host, no such pid: a killed run never blocks the next one) or
that nobody touched for :data:`LOCK_STALE_SECONDS` (a holder on another node that died).
Breaking a live lock by mistake costs a second computation, never a wrong entry: both files
of an entry are written by atomic renames, and a manifest is only trusted with its checksum.
"""


from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from . import __version__, codehash, precision

STATS = {"hits": 0, "misses": 0, "rebuilt_corrupt": 0, "computed_seconds": 0.0}
"""Counters for this process: a warm-cache rebuild of the book must show ``misses == 0``."""


def cache_dir() -> Path:
    """``$ADVBOOK_CACHE``, else ``<checkout>/.cache/advbook``, else ``~/.cache/advbook`` (see :mod:`advbook.paths`)."""
    from .paths import cache_root

    path = cache_root()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _canonical(config: Any) -> str:
    return json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))


_COMPUTING: list[str] = []
"""The entries being computed in this process, outermost first (an entry computed inside another one is
part of that one's time: :data:`STATS` ``computed_seconds`` counts outermost entries only)."""


def entry_key(name: str, config: dict, code: str = "") -> str:
    """SHA-256 (first 16 hex digits) of the name, the canonical JSON of ``config``, the library
    version, ``code`` (:func:`advbook.codehash.digest_of` the code identity of what computes the entry) and,
    when it is not 1, torch's CPU thread count: the count changes the order of floating-point
    sums, so an entry computed with another count holds other numbers (:func:`load` also refuses
    one whose manifest says so); and, when it is not ``fp32``, the training arithmetic
    (:func:`advbook.precision.training`), so entries trained in bf16 and in fp32 never mix."""
    threads, arithmetic = torch.get_num_threads(), precision.training()
    blob = _canonical({"name": name, "config": config, "library": __version__, **({"code": code} if code else {}),
                       **({"threads": threads} if threads != 1 else {}),
                       **({"training_precision": arithmetic} if arithmetic != "fp32" else {})})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _paths(name: str, config: dict, code: str = "") -> tuple[Path, Path]:
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"cache entry name {name!r} may hold only letters, digits, '-' and '_'")
    stem = f"{name}-{entry_key(name, config, code)}"
    root = cache_dir()
    return root / f"{stem}.pt", root / f"{stem}.json"


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights and buffers (part of the cache key of anything computed from a model)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).float().numpy().tobytes())
    return h.hexdigest()[:16]


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    """A short hash of tensors (per-sample sums, rounded): identifies the fitting / evaluation split in cache keys."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.flatten(1).double().sum(1).numpy().round(4).tobytes() if t.dim() > 1 else t.double().numpy().tobytes())
    return h.hexdigest()[:12]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save(name: str, config: dict, payload: Any, timing: dict | None = None, code: str = "",
         code_modules: Sequence[str] = ()) -> Path:
    """Store ``payload`` under (name, config); returns the payload path.

    ``timing`` (``{"wall_seconds": ..., "cpu_seconds": ...}`` of the computation, as
    :func:`cached` measures it) goes into the manifest, so a cold build's cache says where
    its time went (``python -m advbook.cache --timings``). ``code`` (the code digest) and
    ``code_modules`` (the library modules it covers), as :func:`cached` passes them, key the
    entry and go into the manifest.
    """
    payload_path, manifest_path = _paths(name, config, code)
    _atomic_write(payload_path, lambda tmp: torch.save(payload, tmp))
    manifest = {
        "name": name,
        "key": entry_key(name, config, code),
        "config": json.loads(_canonical(config)),
        "library": __version__,
        **({"code": code, "code_modules": list(code_modules)} if code else {}),
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sha256": _sha256(payload_path),
        "threads": torch.get_num_threads(),
        "training_precision": precision.training(),
        **(timing or {}),
    }

    def write_manifest(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(manifest, fh, indent=1)

    _atomic_write(manifest_path, write_manifest)
    return payload_path


def _discard(paths: tuple[Path, Path], why: str) -> None:
    warnings.warn(f"cache entry {paths[0].name} is unusable ({why}); rebuilding it", stacklevel=3)
    STATS["rebuilt_corrupt"] += 1
    for path in paths:
        path.unlink(missing_ok=True)


def load(name: str, config: dict, map_location: Any = "cpu", code: str = "") -> Any | None:
    """The payload stored under (name, config, code digest), or ``None`` if absent or unusable."""
    payload_path, manifest_path = paths = _paths(name, config, code)
    if not payload_path.exists() and not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        _discard(paths, f"manifest unreadable: {exc.__class__.__name__}")
        return None
    if not payload_path.exists() or _sha256(payload_path) != manifest.get("sha256"):
        _discard(paths, "checksum mismatch")
        return None
    threads = manifest.get("threads", 1)  # entries stored before manifests kept it: assumed 1
    if threads != torch.get_num_threads():  # stored before the count was part of the key
        warnings.warn(f"cache entry {payload_path.name} was computed with {threads} CPU threads, this "
                      f"run uses {torch.get_num_threads()}: computing it again", stacklevel=2)
        return None
    try:
        return torch.load(payload_path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a payload that passes the checksum but will not load
        _discard(paths, f"load failed: {exc.__class__.__name__}")
        return None


LOCK_STALE_SECONDS = 300.0
"""A lock file that nobody touched for this long is stale (its holder on another node died). The
holder touches it every :data:`LOCK_HEARTBEAT_SECONDS`; the margin covers NFS attribute caching
(up to 60 s by default) and clock skew between nodes. ``$ADVBOOK_LOCK_STALE`` overrides it."""
LOCK_HEARTBEAT_SECONDS = 30.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process, or a platform without signal 0
        return True
    return True


def _lock_holder(text: str) -> dict | None:
    try:
        holder = json.loads(text)
    except ValueError:  # empty: being written, or a lock file of the older flock-based cache
        return None
    return holder if isinstance(holder, dict) else None


def _stale_lock(lock_path: Path) -> tuple[str, str] | None:
    """``(why, content)`` when the lock at ``lock_path`` may be broken, else ``None``."""
    try:
        content = lock_path.read_text()
        age = time.time() - lock_path.stat().st_mtime
    except FileNotFoundError:
        return None  # released meanwhile: just try again
    holder = _lock_holder(content)
    if holder and holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        if not _pid_alive(holder["pid"]):  # same host: a killed run never blocks the next one
            return f"its holder, pid {holder['pid']}, has exited", content
    # another host, or a pid that lives on (possibly reused): a live holder keeps touching the file
    stale = float(os.environ.get("ADVBOOK_LOCK_STALE") or LOCK_STALE_SECONDS)
    if age > stale:
        who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "an unknown holder"
        return f"{who} has not touched it for {age:.0f} s (> {stale:g} s)", content
    return None


def _break_lock(lock_path: Path, why: str, content: str) -> None:
    """Remove a stale lock by renaming it aside first, so that of two waiters only one breaks it, and
    put back a lock that turns out to be a new holder's (created between our look and the rename)."""
    aside = lock_path.with_name(f"{lock_path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(lock_path, aside)
    except FileNotFoundError:
        return  # another waiter broke it first
    try:
        if aside.read_text() != content:  # not the lock we judged: a new holder's; give it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, lock_path)
            return
        warnings.warn(f"cache lock {lock_path.name} was stale ({why}); taking it over", stacklevel=4)
    finally:
        aside.unlink(missing_ok=True)


def _acquire(lock_path: Path) -> str:
    """Create ``lock_path`` exclusively, holding this process's host, pid and a token; wait while another holds it."""
    me = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
          "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    delay = 0.05
    while True:
        try:
            fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            stale = _stale_lock(lock_path)
            if stale is not None:
                _break_lock(lock_path, *stale)
                continue
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return me["token"]


def _heartbeat(lock_path: Path, token: str, stop: threading.Event) -> None:
    """Touch the lock while it is ours, so that no waiter on another node takes it for stale."""
    while not stop.wait(LOCK_HEARTBEAT_SECONDS):
        try:
            if (_lock_holder(lock_path.read_text()) or {}).get("token") != token:
                return
            os.utime(lock_path)
        except OSError:
            return


@contextlib.contextmanager
def entry_lock(name: str, config: dict, code: str = "") -> Iterator[Path]:
    """Hold the exclusive lock of entry (name, config, code digest) (blocking): ``<name>-<key>.lock`` in
    :func:`cache_dir`, created exclusively with the holder's host and pid, removed on release (see the module
    docstring for stale locks)."""
    lock_path = _paths(name, config, code)[0].with_suffix(".lock")
    token = _acquire(lock_path)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(lock_path, token, stop), daemon=True,
                            name=f"cache-lock-{lock_path.stem}")
    beat.start()
    try:
        yield lock_path
    finally:
        stop.set()
        beat.join()
        try:
            if (_lock_holder(lock_path.read_text()) or {}).get("token") == token:
                lock_path.unlink()
        except FileNotFoundError:
            pass


@dataclass
class Entry:
    """One cache entry, open (:func:`entry`): ``value`` is the stored payload, ``None`` until the block
    computes it on a miss; ``checkpoint`` is where a long computation may keep a resumable partial
    result meanwhile (named by the entry's own key, code included, so a checkpoint left by an
    interrupted run of other code is never resumed; removed once the entry is stored)."""

    name: str
    value: Any
    checkpoint: Path

    @property
    def missing(self) -> bool:
        """Whether the block has to compute the entry (nothing was stored yet)."""
        return self.value is None


@contextlib.contextmanager
def entry(name: str, config: dict, code: Sequence[Callable], map_location: Any = "cpu") -> Iterator[Entry]:
    """Open entry (name, config) of the code ``code``: load it, or let the block compute it, then store it.

    The key includes the code of the functions in ``code`` (:func:`advbook.codehash.code_identity`).
    The block runs under :func:`entry_lock`, so concurrent callers compute an entry once: the others
    wait for the lock and then load what the first one stored. On a miss the block sets
    ``entry.value``; leaving it ``None`` is an error, and an exception stores nothing::

        with cache.entry("fooling-rate", config, (fooling_rate,)) as e:
            if e.missing:
                e.value = fooling_rate(model, x, y, eps=0.1)
        rate = e.value
    """
    identity = codehash.code_identity(*code)
    digest = codehash.digest_of(identity)
    with entry_lock(name, config, digest):
        payload_path = _paths(name, config, digest)[0]
        opened = Entry(name, load(name, config, map_location, digest), payload_path.with_suffix(".partial.pt"))
        if not opened.missing:
            STATS["hits"] += 1
            yield opened
            return
        STATS["misses"] += 1
        wall, cpu = time.perf_counter(), time.process_time()
        outermost = not _COMPUTING
        _COMPUTING.append(name)
        try:
            yield opened
        finally:
            _COMPUTING.pop()
        if opened.missing:
            raise RuntimeError(f"cache entry {name!r} was missing and the block computed nothing (set entry.value)")
        if outermost:
            STATS["computed_seconds"] = round(STATS["computed_seconds"] + time.perf_counter() - wall, 2)
        timing = {"wall_seconds": round(time.perf_counter() - wall, 2),
                  "cpu_seconds": round(time.process_time() - cpu, 2), "threads": torch.get_num_threads()}
        save(name, config, opened.value, timing, digest, sorted(identity["modules"]))
        opened.checkpoint.unlink(missing_ok=True)


def cached(name: str, config: dict, compute: Callable[[], Any], map_location: Any = "cpu",
           code: Sequence[Callable] | None = None) -> Any:
    """Return the cached payload for (name, config), computing and storing it on a miss (:func:`entry`).

    The key includes the code of ``compute`` (or of the functions in ``code``, when ``compute``
    only wraps them).
    """
    with entry(name, config, code or (compute,), map_location) as e:
        if e.missing:
            e.value = compute()
    return e.value


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _model_list(models: Any) -> list:
    return list(models.values()) if isinstance(models, dict) else list(models) if isinstance(models, (list, tuple)) else [models]


def result_config(models: Any, tensors: Sequence[torch.Tensor], settings: dict) -> dict:
    """The cache configuration of a result computed from ``models`` on ``tensors`` with ``settings``.

    ``{"models": [model_fingerprint(m) ...], "data": tensor_fingerprint(*tensors),
    "settings": settings}``: retraining a model, changing the evaluation points or any
    setting (eps, steps, seed, budget...) gives a new entry.
    """
    models = _model_list(models)
    bad = [type(m).__name__ for m in models if not isinstance(m, torch.nn.Module)]
    if bad:
        raise TypeError(f"cached results are keyed by model weights: expected torch.nn.Module(s), got {', '.join(bad)}")
    if any(isinstance(v, torch.Tensor) for v in _leaves(settings)):
        raise TypeError("a tensor in the settings of a cached result would be keyed by its printed (truncated) "
                        "values; pass it among the tensors instead")
    return {"models": [model_fingerprint(m) for m in models], "data": tensor_fingerprint(*tensors),
            "settings": json.loads(_canonical(settings))}


def cached_result(name: str, models: Any, tensors: Sequence[torch.Tensor], settings: dict,
                  compute: Callable[[], Any], map_location: Any = "cpu") -> Any:
    """An evaluation result, cached like a model: computed once per (models, data, settings).

    The key is :func:`result_config`: the fingerprint of every model's weights
    (:func:`model_fingerprint`), of the evaluated tensors (:func:`tensor_fingerprint`,
    e.g. ``(x, y)``) and the canonical JSON of ``settings``, plus ``name``, the library
    version and the code of ``compute`` and of the models' classes (:mod:`advbook.codehash`).
    ``models`` is one module, a list of them or a dict ``{label: module}``.
    ``compute()`` must return what ``torch.load(weights_only=True)`` can read back:
    tensors, numbers, strings, lists, tuples and dicts. Re-executing a chapter after a
    prose edit then recomputes nothing::

        out = cache.cached_result("upi-fooling", model, (x, y), {"eps": 0.1, "seed": 0},
                                  lambda: fooling_rate(model, x, y, eps=0.1))
    """
    code = (compute, *{type(m) for m in _model_list(models)})  # the models' own code (their forward) counts too
    return cached(name, result_config(models, tensors, settings), compute, map_location, code=code)


@dataclass
class Training:
    """A model's cache entry, open (:func:`trained_model`): train ``model`` when ``needed``, set
    ``record``; ``checkpoint`` is :attr:`Entry.checkpoint`."""

    model: torch.nn.Module
    needed: bool
    checkpoint: Path
    record: Any = None


@contextlib.contextmanager
def trained_model(name: str, config: dict, model: torch.nn.Module, code: Sequence[Callable],
                  device: torch.device | str = "cpu") -> Iterator[Training]:
    """Load ``model``'s weights for entry (name, config), or let the block train it; store weights and record.

    ``model`` is built (and seeded) by the caller; ``code``, the functions that train it (their code is
    part of the key, :func:`entry`). On a hit the weights and the stored record are loaded before the
    block, and ``needed`` is false. On a miss the block trains the model and sets ``record`` (e.g. the
    training history as a list of dicts), which is stored beside the weights. Either way the model is on
    ``device`` in eval mode after the block::

        model = build()
        with cache.trained_model(name, config, model, (train_classifier,)) as t:
            if t.needed:
                t.record = fit(model, x, y, epochs=10, checkpoint=t.checkpoint).as_dict()
        return model, t.record
    """
    with entry(name, config, code) as e:
        run = Training(model.to(device), e.missing, e.checkpoint)
        if not run.needed:
            model.load_state_dict(e.value["state_dict"])
            run.record = e.value["record"]
        yield run
        if run.needed:
            e.value = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                       "record": run.record}
    model.to(device).eval()


def timings(root: str | os.PathLike | None = None) -> list[dict]:
    """Compute time of every entry in the cache (manifests that record it), slowest first.

    One row per entry: ``name``, ``key``, ``created``, ``wall_seconds``, ``cpu_seconds``, ``threads``.
    A cold build leaves one manifest per trained model or evaluation, so this is where its time went.
    """
    rows = []
    for path in Path(root or cache_dir()).glob("*.json"):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if "wall_seconds" in manifest:
            rows.append({k: manifest.get(k) for k in ("name", "key", "created", "wall_seconds", "cpu_seconds", "threads")})
    return sorted(rows, key=lambda r: -r["wall_seconds"])


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m advbook.cache", description="Where a cold build's time went: "
                                     "the compute time each cache entry recorded, by entry and by name.")
    parser.add_argument("--root", help="cache directory (default: the checkout's .cache/advbook)")
    parser.add_argument("--top", type=int, default=25, help="how many entries to list (default 25)")
    args = parser.parse_args(argv)
    rows = timings(args.root)
    if not rows:
        print("no cache entry records its compute time (entries made before this was recorded, or an empty cache)")
        return
    by_name: dict[str, list[float]] = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r["wall_seconds"])
    print(f"{'name':40s} {'entries':>7s} {'wall s':>8s}")
    for name, secs in sorted(by_name.items(), key=lambda kv: -sum(kv[1])):
        print(f"{name:40s} {len(secs):7d} {sum(secs):8.1f}")
    print(f"total {sum(r['wall_seconds'] for r in rows):.1f} s wall in {len(rows)} entries\n")
    print(f"{'entry':58s} {'wall s':>8s} {'cpu s':>8s} threads")
    for r in rows[:args.top]:
        print(f"{r['name'] + '-' + r['key']:58s} {r['wall_seconds']:8.1f} {r['cpu_seconds']:8.1f} {r['threads']}")


if __name__ == "__main__":
    _main()
