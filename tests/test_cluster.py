"""Chapters as cluster jobs (advbook.book.cluster): submitit's local executor runs each job as a local
process through the same submission code as SLURM. Also: local workers pinned one per GPU."""

import json
import os
import signal
import types

import pytest

from advbook.book import build, cli, cluster
from advbook.params import Number, ParameterError
from conftest import ROOT


def _book(tmp_path, monkeypatch):
    root = tmp_path / "book"
    (root / "notebooks").mkdir(parents=True)
    (root / "_config.yml").write_text("title: t\n")
    monkeypatch.setenv("ADVBOOK_RESULTS", str(root / "book" / "results"))
    for name in ("ADVBOOK_THREADS", "OMP_NUM_THREADS", "ADVBOOK_EXECUTOR"):
        monkeypatch.delenv(name, raising=False)
    return root


RESULTS = '''
out = pathlib.Path(os.environ["ADVBOOK_RESULTS"])
out.mkdir(parents=True, exist_ok=True)
(out / "{name}.json").write_text(json.dumps({{"chapter": "{name}", "profile": profile, "metrics": metrics, "claims": []}}))'''


def _chapter(root, name, code="metrics = {}", parameters=""):
    """A fake chapter: a parameters cell, ``code`` (which sets ``metrics``), then its results JSON."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(f"# Chapter {name}"),
                nbformat.v4.new_code_cell(f'profile = "auto"\nseed = 0\n{parameters}', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import json, os, pathlib, time\n" + code + RESULTS.format(name=name))]
    nbformat.write(nb, root / "notebooks" / f"{name}.ipynb")


def _results(root, chapter):
    return json.loads((root / "book" / "results" / f"{chapter}.json").read_text())


LOCAL_JOBS = cluster.Options(executor="submitit-local", time_min=5, poll_s=0.2)


# --- options, states and the sbatch script -------------------------------------------------------

def test_job_states_options_and_profile():
    assert [cluster.phase(s) for s in ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED by 1042", "TIMEOUT",
                                       "OUT_OF_MEMORY", "NODE_FAIL", "FINISHED", "INTERRUPTED", "UNKNOWN")] == [
        "queued", "running", "done", "failed", "cancelled", "failed", "failed", "failed", "done", "cancelled", "queued"]
    options = cluster.Options(executor="slurm", sbatch=("--qos=high", "--exclusive", "--mail-type=END"))
    assert options.sbatch_parameters() == {"qos": "high", "exclusive": True, "mail_type": "END"}
    assert options.gpus_per_job == 1 and cluster.Options(executor="submitit-local").gpus_per_job == 0
    # the login node has no GPU: auto means the profile of the nodes the jobs get
    assert cluster.resolve_profile("auto", options) == "full"
    assert cluster.resolve_profile("auto", cluster.Options(executor="slurm", gpus=0)) == "quick"
    assert cluster.resolve_profile("tiny", options) == "tiny"
    for bad, match in ((dict(executor="pbs"), "allowed: local, slurm"), (dict(executor="slurm", sbatch=("qos=high",)), "--NAME=VALUE"),
                       (dict(prefetch=True), "needs --executor slurm"), (dict(executor="slurm", gpus=-1), ">= 0")):
        with pytest.raises(ParameterError, match=match):
            cluster.Options(**bad)


def test_slurm_job_script_carries_the_options(tmp_path, monkeypatch):
    # no SLURM here: a stand-in `srun` lets submitit build the sbatch script, which is checked, never submitted
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ADVBOOK_SLURM_PARTITION", "gpu")  # what `make book EXECUTOR=slurm` reads
    monkeypatch.setenv("ADVBOOK_SLURM_FLAGS", "--qos=high --constraint=a100")
    options = cluster.options_from_env(executor="slurm", account="proj42", time_min=720, gpus=2)
    script = cluster.executor(options, tmp_path / "jobs", "advbook")._executor._make_submission_file_text("CMD", "u")
    for line in ("--partition=gpu", "--account=proj42", "--time=720", "--gpus-per-node=2", "--qos=high",
                 "--constraint=a100", "--job-name=advbook", f"--output={tmp_path / 'jobs'}/%j/%j_0_log.out"):
        assert f"#SBATCH {line}\n" in script


def test_cli_passes_cluster_options_and_explains_a_missing_slurm(tmp_path, monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(build, "run", lambda chapters, profile, overrides, root, **kw: seen.update(kw) or 0)
    assert cli.main(["run", "03", "--executor", "slurm", "--partition", "gpu", "--gpus-per-job", "1", "--time-limit",
                     "600", "--account", "a", "--sbatch=--qos=high", "--prefetch", "--root", str(tmp_path)]) == 0
    options = seen["executor"]
    assert (options.executor, options.partition, options.gpus, options.time_min, options.account, options.sbatch,
            options.prefetch) == ("slurm", "gpu", 1, 600, "a", ("--qos=high",), True)
    seen.clear()
    assert cli.main(["run", "03", "--root", str(tmp_path)]) == 0 and "executor" not in seen  # the pool, as before
    monkeypatch.setattr(build, "run", lambda *a, **kw: cluster.executor(kw["executor"], tmp_path, "x"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    assert cli.main(["run", "03", "--executor", "slurm", "--root", str(tmp_path)]) == 2
    assert "login node" in capsys.readouterr().err


# --- jobs through submitit's local executor --------------------------------------------------------

def test_chapters_run_as_jobs_a_failing_one_and_a_cancelled_job_are_named(tmp_path, monkeypatch):
    # one submission (the jobs run side by side: three process starts, not six, on two busy cores)
    root = _book(tmp_path, monkeypatch)
    _chapter(root, "00_ok", "metrics = {'pid': os.getpid()}")
    _chapter(root, "01_fails", "raise RuntimeError('boom in 01')")
    _chapter(root, "02_cancelled", "time.sleep(30)")
    lines = []

    def log(line):  # `scancel` of the running job: submitit's local job id is its process id. SIGKILL, not
        lines.append(line)  # SIGINT: Python may catch a SIGINT and exit 1 (a failed job) depending on timing
        if line.startswith("[02_cancelled] running (job "):
            os.kill(int(line.split("(job ")[1].split(",")[0]), signal.SIGKILL)

    assert build.run(profile="tiny", root=root, build=False, log=log, executor=LOCAL_JOBS) == 1
    text = "\n".join(lines)
    status = {c: _results(root, c)["runner"]["status"] for c in ("00_ok", "01_fails", "02_cancelled")}
    assert status == {"00_ok": "ok", "01_fails": "failed", "02_cancelled": "cancelled"}
    for chapter in status:  # each chapter's state, with its job id and log
        assert f"[{chapter}] submitted as job " in text and f"[{chapter}] running (job " in text
    assert "[00_ok] done (job " in text and "[01_fails] done (job " in text  # the job ended; the notebook failed
    assert "[02_cancelled] cancelled (job " in text
    assert "FAILED chapters: 01_fails" in text and "boom in 01" in text
    assert "CANCELLED chapters: 02_cancelled" in text
    assert "| cancelled |" in (root / "book" / "reproducibility.md").read_text()

    ok = _results(root, "00_ok")
    assert ok["runner"]["execution"] == "executed" and ok["metrics"]["pid"] != os.getpid()  # ran in the job
    assert (root / "book" / "chapters" / "00_ok.ipynb").exists()
    summary = next(line for line in lines if line.startswith("summary: "))
    assert summary.count("; job ") == 3 and summary.count(str(root / ".cache" / "jobs")) == 3
    log_file = summary.split("00_ok ok (")[1].split(", log ")[1].split(")")[0]
    assert "[00_ok] cell 1/3" in open(log_file).read()  # the job's own progress lines are in its log

    # the up-to-date check runs before submission: nothing unchanged is submitted again
    lines.clear()
    assert build.run(["00"], profile="tiny", root=root, build=False, log=lines.append, executor=LOCAL_JOBS) == 0
    assert not any("submitted" in line for line in lines) and "0 chapter(s) to run, 1 up to date" in lines[0]


def test_prefetch_trains_the_declared_models_then_the_chapter_has_no_cache_miss(tmp_path, monkeypatch):
    root = _book(tmp_path, monkeypatch)
    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path / "cache"))
    _chapter(root, "00_ref", parameters="n_train = 200\nn_test = 50", code=(
        "from advbook import cache, data, profiles, runtime, zoo\n"
        "ds = data.load('mnist5k', device=runtime.resolve_device('cpu'), n_train=n_train, n_test=n_test)\n"
        "zoo.reference_model(ds, profiles.get(profile).recipe('mnist5k'), 'standard', seed)\n"
        "metrics = dict(cache.STATS)\n"))
    module = types.SimpleNamespace(
        __name__="fake_methods", PROFILES={"tiny": {"dataset": "mnist5k", "n_train": 100, "n_test": 20}},
        SCHEMA={"n_train": Number(int, 50, 60000), "n_test": Number(int, 20, 10000)},
        REFERENCE_MODELS=lambda cfg: [("standard", cfg.seed), ("standard", cfg.seed)])
    monkeypatch.setattr(cluster, "chapter_module", lambda chapter: module)
    items, why = cluster.reference_entries(root / "notebooks" / "00_ref.ipynb", "00_ref", {"profile": "tiny"})
    assert why == "" and len(items) == 1  # listed once; the notebook's n_train / n_test, the tiny recipe
    assert items[0]["n_train"] == 200 and items[0]["recipe"]["arch"] == "smallcnn" and items[0]["kind"] == "standard"
    lines = []
    options = cluster.Options(executor="submitit-local", time_min=5, poll_s=0.2, prefetch=True)
    assert build.run(profile="tiny", root=root, build=False, log=lines.append, executor=options) == 0
    text = "\n".join(lines)
    assert "prefetch: 1 reference model(s) as one array job" in text and "(1 trained, 0 already cached)" in text
    assert text.index("prefetch: 1 of 1 done") < text.index("[00_ref] submitted")  # the chapter after the array
    assert _results(root, "00_ref")["metrics"] == {"hits": 1, "misses": 0, "rebuilt_corrupt": 0, "computed_seconds": 0.0}
    # an entry may name the chapter's own split; a malformed one is refused before anything is submitted
    nb = root / "notebooks" / "00_ref.ipynb"
    module.REFERENCE_MODELS = lambda cfg: [{"kind": "adversarial", "seed": 3, "n_train": 0, "data_seed": cfg.seed}]
    (item,), _ = cluster.reference_entries(nb, "00_ref", {"profile": "tiny", "seed": 7})
    assert (item["kind"], item["seed"], item["n_train"], item["n_test"], item["data_seed"]) == ("adversarial", 3, 0, 50, 7)
    for bad in ([("robust", 0)], [{"kind": "standard", "seed": 0, "lr": 1}]):
        module.REFERENCE_MODELS = lambda cfg, bad=bad: bad
        with pytest.raises(ParameterError, match="REFERENCE_MODELS lists"):
            cluster.reference_entries(nb, "00_ref", {"profile": "tiny"})
    # a chapter that declares nothing is said so, and runs as it is
    monkeypatch.setattr(cluster, "chapter_module", lambda chapter: types.SimpleNamespace(__name__="other"))
    assert cluster.reference_entries(root / "notebooks" / "00_ref.ipynb", "00_ref", {})[1] == \
        "other does not declare REFERENCE_MODELS"


# --- one node, several GPUs --------------------------------------------------------------------------

def test_local_workers_are_pinned_one_per_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(build.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(cluster, "visible_gpus", lambda: ["0", "1", "2", "3"])
    assert build.default_jobs() == 4  # one chapter per GPU, not 16 chapters on them
    monkeypatch.setattr(cluster, "visible_gpus", lambda: [])
    assert build.default_jobs() == 16 and cluster.gpu_slots(4) is None
    monkeypatch.setattr(cluster, "visible_gpus", lambda: ["0"])
    assert build.default_jobs() == 1 and cluster.gpu_slots(1) is None  # one GPU: nothing to pin

    root = _book(tmp_path, monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # what the runner's own process sees must not leak
    monkeypatch.setattr(cluster, "visible_gpus", lambda: ["2", "3"])
    for name in ("00_a", "01_b"):
        _chapter(root, name, "metrics = {'gpu': os.environ.get('CUDA_VISIBLE_DEVICES')}")
    lines = []
    assert build.run(profile="tiny", root=root, build=False, log=lines.append) == 0
    assert sorted(_results(root, c)["metrics"]["gpu"] for c in ("00_a", "01_b")) == ["2", "3"]
    assert "with 2 workers, 1 torch thread(s) each, one GPU each" in "\n".join(lines)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_the_primer_lists_both_reference_models_of_every_training_seed():
    items, why = cluster.reference_entries(ROOT / "notebooks" / "00_primer.ipynb", "00_primer", {"profile": "tiny"})
    assert why == "" and [(i["kind"], i["seed"]) for i in items] == [
        ("standard", 0), ("adversarial", 0), ("standard", 1), ("adversarial", 1)]
