"""The cache's per-entry lock (two real processes) and cached evaluation results."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from advbook import cache, evaluation

# Each process waits at a file barrier until both are ready, then asks for the same entry;
# compute() records its call and is slow, so without the lock both would compute.
WORKER = r"""
import sys, time
from pathlib import Path
import torch
from advbook import cache

log, barrier, factor = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
with open(barrier, "a") as fh:
    fh.write("ready\n")
while barrier.read_text().count("ready") < 2:
    time.sleep(0.01)

def compute():
    with open(log, "a") as fh:
        fh.write(f"computed {factor}\n")
    time.sleep(1.5)
    return {"w": torch.arange(4.0) * factor}

out = cache.cached("lock-test", {"k": 1}, compute)
print(out["w"].tolist(), cache.STATS["hits"], cache.STATS["misses"])
"""


def _env(tmp_path):
    return {**os.environ, "ADVBOOK_CACHE": str(tmp_path / "cache"), "ADVBOOK_THREADS": "1", "OMP_NUM_THREADS": "1"}


def test_two_processes_compute_an_entry_once(tmp_path):
    log, barrier = tmp_path / "calls.log", tmp_path / "barrier"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(log), str(barrier), str(factor)], env=_env(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for factor in (1, 2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert len(log.read_text().splitlines()) == 1  # exactly one compute
    payloads = [out.split("]")[0] + "]" for out, _ in outs]
    assert payloads[0] == payloads[1]  # the waiting process loaded the first one's payload
    counts = sorted(out.split("]")[1].split() for out, _ in outs)
    assert counts == [["0", "1"], ["1", "0"]]  # one miss, one hit
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_a_killed_holder_releases_the_lock(tmp_path, monkeypatch):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from advbook import cache\n"
         "with cache.entry_lock('crash-test', {}):\n    print('locked', flush=True); time.sleep(600)"],
        env=_env(tmp_path), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path / "cache"))
        start = time.perf_counter()
        assert cache.cached("crash-test", {}, lambda: {"w": torch.ones(2)})["w"].sum() == 2
        assert time.perf_counter() - start < 10
    finally:
        if holder.poll() is None:
            holder.kill()


def _ones():
    return {"w": torch.ones(3)}


def _lock_of(name, compute=_ones):
    """The lock file that ``cache.cached(name, {}, compute)`` takes."""
    digest = cache.codehash.digest_of(cache.codehash.code_identity(compute))
    return cache._paths(name, {}, digest)[0].with_suffix(".lock"), digest


def test_the_lock_file_is_created_exclusively_names_its_holder_and_goes(tmp_path, monkeypatch):
    import json
    import socket

    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path / "cache"))
    with cache.entry_lock("holder-test", {}) as path:
        holder = json.loads(path.read_text())
        assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid() and holder["token"]
        with pytest.raises(FileExistsError):  # what a second process (on any node) runs into
            os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    assert not path.exists()  # removed on release
    assert not list((tmp_path / "cache").glob("*.lock*"))


def test_a_lock_left_by_another_node_is_broken_only_once_stale(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path / "cache"))
    lock, _ = _lock_of("node-test")
    # a holder on another node whose heartbeat is fresh: wait; here it stops beating, and after the
    # stale timeout (1.5 s for the test) the waiter takes the lock over and computes the entry
    lock.write_text(json.dumps({"host": "node-that-died", "pid": 12345, "token": "t"}))
    monkeypatch.setenv("ADVBOOK_LOCK_STALE", "1.5")
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="node-that-died has not touched it"):
        out = cache.cached("node-test", {}, _ones)
    assert 1.0 < time.perf_counter() - start < 10 and out["w"].sum() == 3
    assert not lock.exists()
    # an empty lock file of the older flock-based cache (kept after every entry): stale by its age
    lock.write_text("")
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    monkeypatch.delenv("ADVBOOK_LOCK_STALE")
    with pytest.warns(UserWarning, match="unknown holder"):
        assert cache.cached("node-test", {}, _ones)["w"].sum() == 3
    assert cache.STATS["hits"] >= 1 and not lock.exists()


def test_a_live_lock_on_another_node_is_waited_for(tmp_path, monkeypatch):
    import json
    import threading

    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ADVBOOK_LOCK_STALE", "1.0")
    lock, digest = _lock_of("live-test")
    lock.write_text(json.dumps({"host": "busy-node", "pid": 1, "token": "t"}))
    stop = threading.Event()

    def beat():  # the other node's heartbeat, faster than the stale timeout
        while not stop.wait(0.2):
            os.utime(lock)

    beater = threading.Thread(target=beat)
    beater.start()
    try:
        got = []
        waiter = threading.Thread(target=lambda: got.append(cache.cached("live-test", {}, _ones)))
        waiter.start()
        waiter.join(2.5)
        assert waiter.is_alive() and not got  # still waiting for the live holder
        cache.save("live-test", {}, {"w": torch.full((3,), 7.0)}, code=digest)  # the holder stores the entry...
    finally:
        stop.set()
        beater.join()
    lock.unlink()  # ...and releases the lock
    waiter.join(10)
    assert got and got[0]["w"].sum() == 21  # the waiter loaded what the holder stored: computed once


def test_cached_result_keys_on_models_data_and_settings():
    torch.manual_seed(0)
    model, other = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    x, y = torch.rand(5, 3), torch.arange(5) % 2
    calls = []

    def compute():
        calls.append(1)
        return {"value": torch.tensor(len(calls))}

    first = cache.cached_result("result-test", model, (x, y), {"eps": 0.1}, compute)
    again = cache.cached_result("result-test", model, (x, y), {"eps": 0.1}, compute)
    assert len(calls) == 1 and torch.equal(first["value"], again["value"])
    cache.cached_result("result-test", other, (x, y), {"eps": 0.1}, compute)
    cache.cached_result("result-test", model, (x + 1, y), {"eps": 0.1}, compute)
    cache.cached_result("result-test", model, (x, y), {"eps": 0.2}, compute)
    cache.cached_result("result-test", {"a": model, "b": other}, (x, y), {"eps": 0.1}, compute)
    assert len(calls) == 5
    with pytest.raises(TypeError, match="torch.nn.Module"):
        cache.cached_result("result-test", lambda t: t, (x, y), {}, compute)
    with pytest.raises(TypeError, match="among the tensors"):
        cache.cached_result("result-test", model, (x, y), {"mask": [torch.ones(3)]}, compute)


def test_pgd_accuracy_is_cached_by_model_data_and_eps(trained, mnist):
    x, y = mnist.x_test[:40], mnist.y_test[:40]
    before = dict(cache.STATS)
    a = evaluation.pgd_accuracy(trained, x, y, 0.11, steps=3)
    assert cache.STATS["misses"] == before["misses"] + 1
    b = evaluation.pgd_accuracy(trained, x, y, 0.11, steps=3)
    assert a == b and cache.STATS["hits"] == before["hits"] + 1
    assert cache.STATS["computed_seconds"] > before["computed_seconds"]  # the miss's time, not the hit's
    computed = cache.STATS["computed_seconds"]
    evaluation.pgd_accuracy(trained, x, y, 0.11, steps=3)
    assert cache.STATS["computed_seconds"] == computed
    evaluation.pgd_accuracy(trained, x, y, 0.12, steps=3)  # another eps
    evaluation.pgd_accuracy(trained, x[:30], y[:30], 0.11, steps=3)  # other points
    assert cache.STATS["misses"] == before["misses"] + 3
    assert evaluation.pgd_accuracy(trained, x, y, 0.11, steps=3, cache=False) == a
    assert cache.STATS["misses"] == before["misses"] + 3


def test_autoattack_is_cached_with_its_tensors(trained, mnist):
    x, y = mnist.x_test[:30], mnist.y_test[:30]
    budget = {"components": ("apgd-ce", "square"), "n_iter": 3, "n_queries": 20, "n_target_classes": 1}
    before = dict(cache.STATS)
    first = evaluation.autoattack(trained, x, y, 0.1, **budget)
    second = evaluation.autoattack(trained, x, y, 0.1, **budget)
    assert cache.STATS["misses"] == before["misses"] + 1 and cache.STATS["hits"] == before["hits"] + 1
    assert torch.equal(first["x_adv"], second["x_adv"]) and torch.equal(first["robust_mask"], second["robust_mask"])
    assert first["after"] == second["after"] and first["robust"] == second["robust"]
    retrained = _perturbed_copy(trained)
    evaluation.autoattack(retrained, x, y, 0.1, **budget)  # another model
    evaluation.autoattack(trained, x, y, 0.12, **budget)  # another eps
    assert cache.STATS["misses"] == before["misses"] + 3


def _perturbed_copy(model):
    import copy

    twin = copy.deepcopy(model)
    with torch.no_grad():
        next(twin.parameters()).add_(1e-3)
    return twin.eval()


def test_an_entry_records_its_compute_time_and_timings_lists_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path))

    def slow():
        time.sleep(0.2)
        return {"w": torch.zeros(1)}

    cache.cached("timed-entry", {"k": 1}, slow)
    cache.cached("timed-entry", {"k": 1}, slow)  # a hit records nothing new
    rows = cache.timings(tmp_path)
    assert [r["name"] for r in rows] == ["timed-entry"]
    assert 0.2 <= rows[0]["wall_seconds"] < 5 and rows[0]["threads"] >= 1
    cache._main(["--root", str(tmp_path)])
    assert "timed-entry" in capsys.readouterr().out


def test_the_thread_count_is_part_of_an_entrys_identity(tmp_path, monkeypatch):
    """Another torch thread count sums in another order: its numbers are another entry."""
    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(torch.get_num_threads())
        return {"w": torch.ones(2) * len(calls)}

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cache.entry_key("threads-entry", {"k": 1})
        assert cache.cached("threads-entry", {"k": 1}, compute)["w"][0] == 1
        torch.set_num_threads(2)
        assert cache.entry_key("threads-entry", {"k": 1}) != one
        assert cache.cached("threads-entry", {"k": 1}, compute)["w"][0] == 2  # computed again, not reused
        torch.set_num_threads(1)
        assert cache.cached("threads-entry", {"k": 1}, compute)["w"][0] == 1  # the 1-thread entry is intact
        # an entry stored before the count was in the key, by a 2-thread run, is not used by a 1-thread run
        manifest = next(m for m in tmp_path.glob("threads-entry-*.json") if '"threads": 1' in m.read_text())
        manifest.write_text(manifest.read_text().replace('"threads": 1', '"threads": 2'))
        with pytest.warns(UserWarning, match="computed with 2 CPU threads"):
            assert cache.cached("threads-entry", {"k": 1}, compute)["w"][0] == 3
        assert calls == [1, 2, 1]
    finally:
        torch.set_num_threads(before)


def test_chapters_run_with_one_thread_unless_told_otherwise(monkeypatch):
    from advbook import runtime

    monkeypatch.delenv("ADVBOOK_THREADS", raising=False)
    assert runtime.cpu_threads() == runtime.DEFAULT_THREADS == 1
    monkeypatch.setenv("ADVBOOK_THREADS", "3")
    assert runtime.cpu_threads() == 3
    monkeypatch.setenv("ADVBOOK_THREADS", "two")
    with pytest.raises(ValueError, match="ADVBOOK_THREADS"):
        runtime.cpu_threads()
