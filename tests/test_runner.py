import json

import pytest

from advbook import paths, profiles
from advbook.book import build, cli, execute, finish, site as sitebuild
from advbook.params import ParameterError

from conftest import ROOT


def test_chapters_are_discovered_in_order():
    chapters = paths.Book(ROOT).available()
    assert chapters[0] == "00_primer" and chapters == sorted(chapters)


def test_select_accepts_prefixes_and_rejects_unknown():
    book = paths.Book(ROOT)
    assert build.select(book, ["00"]) == ["00_primer"]
    with pytest.raises(ParameterError, match="allowed: 00_primer"):
        build.select(book, ["99_nothing"])


def test_plan_validates_profile_and_parameter_names():
    book = paths.Book(ROOT)
    plan = build.plan(book, ["00_primer"], "quick", {"epochs": 2})
    assert plan == {"00_primer": {"profile": "quick", "epochs": 2}}
    with pytest.raises(ParameterError, match="'quick'"):  # the profile is validated once, before planning
        build.run(["00_primer"], profile="fast", root=ROOT, build=False)
    with pytest.raises(ParameterError, match="unknown parameter"):
        build.plan(book, ["00_primer"], "quick", {"epoch": 2})
    with pytest.raises(ParameterError, match="'epochs'"):
        build.plan(book, ["00_primer"], "quick", {"epochs": -3})


def test_cli_reports_bad_input_with_exit_code_2(capsys):
    assert cli.main(["run", "--profile", "huge", "--root", str(ROOT)]) == 2
    assert "allowed" in capsys.readouterr().err
    assert cli.main(["run", "nope", "--root", str(ROOT)]) == 2


def test_parse_value_exactly_like_papermill_cli():
    from papermill.cli import _resolve_type

    samples = ["3", "-3", "0.1", "1e-3", "true", "True", "False", "None", "none", "cifar10", "[0.1, 0.2]", "1_000", "inf"]
    for text in samples:
        ours, theirs = build.parse_value(text), _resolve_type(text)
        assert ours == theirs and type(ours) is type(theirs), text
    assert build.parse_value("1e-3") == 0.001 and build.parse_value("true") == "true"
    assert build.parse_value("None") is None and build.parse_value("True") is True
    assert build.parse_value("[0.1, 0.2]") == "[0.1, 0.2]"  # a list needs -y, as in papermill


def test_yaml_and_raw_parameters_like_papermill():
    merged = build.overrides_from_cli(["eps_grid: [0.1, 0.2]\nseed: 4", "dataset: mnist5k"],
                                       [("seed", "5"), ("eps", "1e-3")], [("dataset", "3")])
    assert merged == {"eps_grid": [0.1, 0.2], "seed": 5, "eps": 0.001, "dataset": "3"}
    with pytest.raises(ParameterError, match="YAML mapping"):
        build.overrides_from_cli(["[0.1, 0.2]"])
    with pytest.raises(ParameterError, match="not valid YAML"):
        build.overrides_from_cli(["a: [1"])


def test_cli_passes_typed_overrides_to_the_runner(monkeypatch):
    seen = {}
    monkeypatch.setattr(build, "run", lambda chapters, profile, overrides, root, **kw: seen.update(
        overrides=overrides, kw=kw) or 0)
    assert cli.main(["run", "00", "-p", "eps", "1e-3", "-p", "seed", "None", "-y", "eps_grid: [0.1, 0.2]",
                     "--force", "--jobs", "3", "--cell-timeout", "60", "--root", str(ROOT)]) == 0
    assert seen["overrides"] == {"eps_grid": [0.1, 0.2], "eps": 0.001, "seed": None}
    assert seen["kw"] == {"build": True, "force": True, "jobs": 3, "cell_timeout_s": 60.0}


def test_cell_timeout_per_profile_and_override():
    assert execute.cell_timeout("tiny") == 300 and execute.cell_timeout("quick") == 1200
    assert execute.cell_timeout("full") == 7200 and execute.cell_timeout("long") == 3600
    assert execute.cell_timeout("quick", 5) == 5
    assert execute.cell_timeout("quick", 0) is None
    with pytest.raises(ParameterError, match="cell-timeout"):
        execute.cell_timeout("quick", -1)


def test_default_jobs_is_cores_over_threads(monkeypatch):
    monkeypatch.setattr(build.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("ADVBOOK_THREADS", raising=False)
    assert build.default_jobs() == 8
    monkeypatch.setenv("ADVBOOK_THREADS", "4")
    assert build.default_jobs() == 2
    monkeypatch.setenv("ADVBOOK_THREADS", "16")
    assert build.default_jobs() == 1


def _checkout(root):
    (root / "notebooks").mkdir(parents=True)
    (root / "_config.yml").write_text("title: t\n")
    return root


def test_one_cache_and_data_location_for_every_way_of_running(tmp_path, monkeypatch):
    from advbook import cache, data, paths

    root = _checkout(tmp_path / "book")
    monkeypatch.delenv("ADVBOOK_CACHE", raising=False)
    monkeypatch.delenv("ADVBOOK_DATA", raising=False)
    monkeypatch.chdir(root / "notebooks")  # papermill --cwd notebooks, and the runner's kernels
    assert paths.find_root() == root.resolve()
    assert cache.cache_dir() == root.resolve() / ".cache" / "advbook"
    assert paths.data_root() == root.resolve() / ".cache" / "data" and data.data_root is paths.data_root  # what data.load reads
    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("ADVBOOK_DATA", str(tmp_path / "d"))
    assert cache.cache_dir() == tmp_path / "elsewhere" and paths.data_root() == tmp_path / "d"


def test_root_falls_back_to_the_installed_checkout_then_home(tmp_path, monkeypatch):
    from advbook import paths

    monkeypatch.delenv("ADVBOOK_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)  # not a checkout
    assert paths.find_root() == ROOT.resolve()  # the package lives in ROOT/lib/advbook
    monkeypatch.setattr(paths, "PACKAGE_DIR", tmp_path / "site-packages" / "advbook")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.find_root() is None
    assert paths.cache_root() == tmp_path / "home" / ".cache" / "advbook"
    assert paths.data_root() == tmp_path / "home" / ".cache" / "advbook" / "data"


# --- the runner on tiny fake chapters (a kernel start each, no torch) -----------------------------

CHAPTER_CODE = '''import json, os, pathlib, time
time.sleep(sleep)
if fail:
    raise RuntimeError("boom in {name}")
with open(pathlib.Path("..") / "runs.log", "a") as f:
    f.write("{name}\\n")
from advbook.paths import results_dir  # the path policy, as a chapter's results.save() asks it
out = results_dir()
out.mkdir(parents=True, exist_ok=True)
(out / ("{name}.long.json" if profile == "long" else "{name}.json")).write_text(json.dumps({{"chapter": "{name}", "profile": profile, "metrics": {{}},
    "claims": [{{"claim": "c", "paper": "1", "ours": "1", "verdict": "reproduced", "note": ""}}]}}))'''


def _fake_chapter(root, name, sleep=0.0, fail=False):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# Chapter {name}\n\nSome prose."),
        nbformat.v4.new_code_cell(f'profile = "auto"\nseed = 0\nsleep = {sleep}\nfail = {fail}',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(CHAPTER_CODE.format(name=name)),
        nbformat.v4.new_markdown_cell("The end."),
    ]
    nbformat.write(nb, root / "notebooks" / f"{name}.ipynb")


@pytest.fixture
def fake_book(tmp_path, monkeypatch):
    root = _checkout(tmp_path / "book")
    (root / "_config.yml").write_text("title: t\nrepository:\n  url: https://github.com/someone/advbook-demo\n")
    monkeypatch.delenv("ADVBOOK_RESULTS", raising=False)  # the kernel finds <root>/book/results itself
    monkeypatch.delenv("ADVBOOK_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return root


def _runs(root):
    path = root / "runs.log"
    return path.read_text().split() if path.exists() else []


def test_the_runner_passes_the_kernel_no_state_through_its_own_environment(fake_book, monkeypatch):
    """The results folder reaches the kernel through the path policy (advbook.paths: the kernel runs in
    <root>/notebooks and finds <root>), the thread count through the kernel's own environment: the
    runner's environment is the same after a run as before, and the results are where the runner reads them."""
    import os

    _fake_chapter(fake_book, "00_a")
    monkeypatch.chdir(fake_book.parent)  # not the checkout: the kernel finds it from its own cwd
    before = dict(os.environ)
    assert build.run(profile="tiny", root=fake_book, build=False, log=lambda line: None, jobs=1) == 0
    assert dict(os.environ) == before and os.getcwd() == str(fake_book.parent)  # nor its working folder
    assert not {"ADVBOOK_RESULTS", "ADVBOOK_THREADS", "OMP_NUM_THREADS"} & set(os.environ)
    book = paths.Book(fake_book)
    assert book.results == fake_book.resolve() / "book" / "results"
    assert json.loads(book.results_file("00_a").read_text())["runner"]["status"] == "ok"
    assert execute.thread_env() == {"ADVBOOK_THREADS": "1", "OMP_NUM_THREADS": "1"}
    monkeypatch.setenv("ADVBOOK_THREADS", "3")  # a user's setting reaches the kernels, and the GPU of a worker
    assert execute.thread_env({"CUDA_VISIBLE_DEVICES": "1"}) == {
        "ADVBOOK_THREADS": "3", "OMP_NUM_THREADS": "3", "CUDA_VISIBLE_DEVICES": "1"}


def test_execution_cache_reuses_unchanged_chapters(fake_book):
    import nbformat

    _fake_chapter(fake_book, "00_a")
    _fake_chapter(fake_book, "01_b")
    lines = []
    assert build.run(profile="tiny", root=fake_book, build=False, log=lines.append, jobs=1) == 0
    assert sorted(_runs(fake_book)) == ["00_a", "01_b"]
    book = paths.Book(fake_book)
    first = json.loads((book.results / "01_b.json").read_text())
    assert first["runner"]["execution"] == "executed" and first["runner"]["key"]
    executed = nbformat.read(book.chapters / "01_b.ipynb", as_version=4)
    assert executed.metadata["advbook"]["key"] == first["runner"]["key"]

    # nothing changed: nothing runs, the results JSON keeps its claims and says "reused"
    lines.clear()
    assert build.run(profile="tiny", root=fake_book, build=False, log=lines.append, jobs=1) == 0
    assert len(_runs(fake_book)) == 2
    again = json.loads((book.results / "01_b.json").read_text())
    assert again["runner"]["execution"] == "reused" and again["claims"] == first["claims"]
    assert any("0 chapter(s) to run, 2 up to date" in line for line in lines)
    page = (fake_book / "book" / "reproducibility.md").read_text()
    assert f"reused from build {first['runner']['built']}, same inputs" in page

    # a Markdown edit in one chapter reruns that chapter only; new parameters or --force rerun
    nb = nbformat.read(fake_book / "notebooks" / "01_b.ipynb", as_version=4)
    nb.cells[3].source = "The end, reworded."
    nbformat.write(nb, fake_book / "notebooks" / "01_b.ipynb")
    assert build.run(profile="tiny", root=fake_book, build=False, log=lines.append, jobs=1) == 0
    assert _runs(fake_book)[2:] == ["01_b"]
    assert build.run(["00"], profile="tiny", overrides={"seed": 1}, root=fake_book, build=False,
                      log=lines.append, jobs=1) == 0
    assert build.run(["00"], profile="tiny", overrides={"seed": 1}, root=fake_book, build=False,
                      log=lines.append, jobs=1, force=True) == 0
    assert _runs(fake_book)[3:] == ["00_a", "00_a"]
    page = (fake_book / "book" / "reproducibility.md").read_text()
    assert "executed in this build" in page


def test_key_covers_cells_parameters_library_and_versions(fake_book, monkeypatch, tmp_path):
    from advbook.book import buildcache

    _fake_chapter(fake_book, "00_a")
    nb = fake_book / "notebooks" / "00_a.ipynb"
    key = buildcache.chapter_key(nb, {"profile": "tiny"})
    assert key == buildcache.chapter_key(nb, {"profile": "tiny"})
    assert key != buildcache.chapter_key(nb, {"profile": "quick"})
    data = json.loads(nb.read_text())
    data["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x"}]
    data["metadata"]["foo"] = 1
    nb.write_text(json.dumps(data))
    assert buildcache.chapter_key(nb, {"profile": "tiny"}) == key  # outputs and metadata do not count
    data["cells"][2]["source"] += "\n# changed"
    nb.write_text(json.dumps(data))
    assert buildcache.chapter_key(nb, {"profile": "tiny"}) != key
    lib = tmp_path / "pkg"
    lib.mkdir()
    (lib / "m.py").write_text("x = 1")
    before = buildcache.library_digest(lib)
    (lib / "template.md").write_text("t")
    assert buildcache.library_digest(lib) != before
    now = buildcache.chapter_key(nb, {"profile": "tiny"})
    assert set(buildcache.package_versions()) == {"python", "torch", "torchvision", "numpy", "papermill", "advbook"}
    monkeypatch.setattr(buildcache, "package_versions", lambda: {"torch": "0.0"})
    assert buildcache.chapter_key(nb, {"profile": "tiny"}) != now


def test_a_chapter_key_covers_the_library_modules_it_runs_and_no_others(monkeypatch, tmp_path):
    from advbook import codehash
    from advbook.book import buildcache

    ch4, ch5 = ROOT / "notebooks" / "04_dominant_patterns.ipynb", ROOT / "notebooks" / "05_universal_interpretation.ipynb"
    m4, m5 = set(buildcache.chapter_modules(ch4)), set(buildcache.chapter_modules(ch5))
    assert "advbook.methods.dominant" in m4 - m5 and "advbook.methods.upi" in m5 - m4
    assert {"advbook.attacks", "advbook.train", "advbook.book.execute", "advbook.book.finish", "advbook.book.colab"} <= m4 & m5
    assert "advbook.book.report" not in m4 | m5  # the reproducibility page is written after the chapters
    before = {nb: buildcache.chapter_key(nb, {"profile": "tiny"}) for nb in (ch4, ch5)}
    edited = tmp_path / "dominant.py"
    edited.write_text(codehash.source_file("advbook.methods.dominant").read_text() + "\n# edited\n")
    real = codehash.source_file
    monkeypatch.setattr(codehash, "source_file", lambda m: edited if m == "advbook.methods.dominant" else real(m))
    assert buildcache.chapter_key(ch4, {"profile": "tiny"}) != before[ch4]  # chapter 4 reruns
    assert buildcache.chapter_key(ch5, {"profile": "tiny"}) == before[ch5]  # chapter 5 does not
    magic = tmp_path / "magic.ipynb"
    magic.write_text(json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "source": "%matplotlib inline\n"
                                            "!echo hi\nfrom advbook.methods import upi"}], "metadata": {}}))
    assert "advbook.methods.upi" in buildcache.chapter_modules(magic)
    broken = tmp_path / "broken.ipynb"
    broken.write_text(json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "source": "x = ("}], "metadata": {}}))
    assert buildcache.chapter_modules(broken) is None  # then the whole library counts


def test_parallel_run_names_failed_and_timed_out_chapters(fake_book):
    import os

    import nbformat

    _fake_chapter(fake_book, "00_a")
    _fake_chapter(fake_book, "01_b", fail=True)
    _fake_chapter(fake_book, "02_c", sleep=60)
    _fake_chapter(fake_book, "03_d")
    lines = []
    code = build.run(profile="tiny", root=fake_book, build=False, log=lines.append, jobs=2, cell_timeout_s=4,
                      progress_every=0)
    assert code == 1
    assert "ADVBOOK_THREADS" not in os.environ and "OMP_NUM_THREADS" not in os.environ  # set for the kernels only
    ran = _runs(fake_book)
    assert ran[0] == "00_a" and sorted(ran) == ["00_a", "03_d"]  # the primer first; 01 failed, 02 stopped
    book = paths.Book(fake_book)
    status = {c: json.loads((book.results / f"{c}.json").read_text())["runner"]["status"] for c in book.available()}
    assert status == {"00_a": "ok", "01_b": "failed", "02_c": "timed out", "03_d": "ok"}
    text = "\n".join(lines)
    assert "01_b failed" in text and "02_c timed out" in text and "boom in 01_b" in text
    assert "FAILED chapters: 01_b" in text and "TIMED OUT chapters: 02_c" in text
    assert "with 2 workers, 1 torch thread(s) each" in text
    assert "[03_d] cell 1/3 (" in text and "[03_d] cell 3/3 (" in text  # parameters, injected, code
    timed = nbformat.read(book.chapters / "02_c.ipynb", as_version=4)
    assert "TIMED OUT" in "".join(c.source for c in timed.cells) and "--cell-timeout" in timed.cells[2].source
    page = (fake_book / "book" / "reproducibility.md").read_text()
    assert "| timed out |" in page and "| failed |" in page


def test_executed_copy_hides_parameter_cells_and_links_to_colab(fake_book):
    import nbformat

    _fake_chapter(fake_book, "00_a")
    assert build.run(profile="tiny", root=fake_book, build=False, log=lambda s: None) == 0
    nb = nbformat.read(paths.Book(fake_book).chapters / "00_a.ipynb", as_version=4)
    tagged = {t: c.metadata["tags"] for c in nb.cells for t in c.metadata.get("tags", [])
              if t in ("parameters", "injected-parameters")}
    assert set(tagged) == {"parameters", "injected-parameters"}
    assert "hide-cell" in tagged["parameters"] and "remove-cell" in tagged["injected-parameters"]
    assert nb.cells[0].source.startswith("# Chapter 00_a")
    assert "colab.research.google.com/github/someone/advbook-demo/blob/main/notebooks/00_a.ipynb" in nb.cells[1].source


def test_unexecuted_pages_hide_parameters_and_have_no_badge_without_repository(fake_book):
    import nbformat

    _fake_chapter(fake_book, "00_a")
    (fake_book / "_config.yml").write_text("title: t\n")
    book = paths.Book(fake_book)
    assert finish.ensure_all_pages(book) == ["00_a"]
    nb = nbformat.read(book.chapters / "00_a.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "hide-cell" in params.metadata["tags"] and "not been executed" in nb.cells[1].source
    assert "colab" not in json.dumps(nb.cells)


def test_colab_sync_writes_a_guarded_install_cell(fake_book, tmp_path, capsys):
    import shutil

    import nbformat

    from advbook.book import buildcache, colab

    source = fake_book / "notebooks" / "00_primer.ipynb"
    shutil.copy(ROOT / "notebooks" / "00_primer.ipynb", source)  # a copy: never the real chapters
    key = buildcache.chapter_key(source, {"profile": "tiny"})
    assert cli.main(["colab-sync", "--root", str(fake_book)]) == 0
    assert "00_primer.ipynb" in capsys.readouterr().out
    nb = nbformat.read(source, as_version=4)
    install = [c for c in nb.cells if "colab-install" in c.metadata.get("tags", [])]
    assert len(install) == 1 and "remove-cell" in install[0].metadata["tags"]
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code is install[0]
    assert "git+https://github.com/someone/advbook-demo.git@main#subdirectory=lib" in install[0].source
    assert len([c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]) == 1
    assert colab.sync(fake_book) == []  # idempotent
    assert buildcache.chapter_key(source, {"profile": "tiny"}) == key  # the cell is a no-op off Colab
    calls = []
    import subprocess
    real_run, subprocess.run = subprocess.run, lambda *a, **k: calls.append(a)
    try:
        exec(install[0].source, {})  # not on Colab: installs nothing
    finally:
        subprocess.run = real_run
    assert calls == []
    (fake_book / "_config.yml").write_text("title: t\n")
    assert cli.main(["colab-sync", "--root", str(fake_book)]) == 2
    assert "repository:" in capsys.readouterr().err
    (fake_book / "_config.yml").write_text("title: t\nrepository:\n  url: https://gitlab.com/a/b\n")
    with pytest.raises(colab.NoRepository, match="GitHub"):
        colab.repository(fake_book)


def _results_book(tmp_path, monkeypatch):
    root = _checkout(tmp_path / "rb")
    (root / "book").mkdir()
    for name in ("00_a", "01_b"):
        (root / "notebooks" / f"{name}.ipynb").write_text("{}")
    monkeypatch.setenv("ADVBOOK_RESULTS", str(root / "results"))
    book = paths.Book(root)
    book.results.mkdir()
    return book


def test_reproducibility_page_aggregates_results(tmp_path, monkeypatch):
    from advbook.book import report

    book = _results_book(tmp_path, monkeypatch)
    (book.results / "00_a.json").write_text(json.dumps({
        "chapter": "00_a", "profile": "quick", "dataset": "mnist5k", "seed": 0,
        "provenance": {"device": "CPU (2 threads)", "git_sha": "abc", "torch": "2.x"},
        "runner": {"status": "ok", "seconds": 12.5, "execution": "reused", "built": "2026-11-22T10:00:00+0000"},
        "claims": [{"claim": "A | B", "paper": "1%", "ours": "2%", "verdict": "partly reproduced", "note": ""}]}))
    page = report.write_page(book)
    text = page.read_text()
    assert "A \\| B" in text and "partly reproduced" in text and "12.5" in text
    assert "| 01_b | not run |" in text and "Computed / from cache" in text
    assert "reused from build 2026-11-22T10:00:00+0000, same inputs" in text
    assert "Benchmarks" not in text and "side by side" not in text
    mtime = page.stat().st_mtime_ns
    report.write_page(book)
    assert page.stat().st_mtime_ns == mtime  # unchanged text is not rewritten (Sphinx skips the page)


def test_reproducibility_page_shows_benchmarks_and_profiles_side_by_side(tmp_path, monkeypatch):
    from advbook.book import report

    book = _results_book(tmp_path, monkeypatch)
    claim = {"claim": "robust accuracy drops", "paper": "45%", "note": ""}
    (book.results / "00_a.json").write_text(json.dumps({
        "chapter": "00_a", "profile": "quick", "runner": {"status": "ok", "execution": "executed"},
        "claims": [{**claim, "ours": "38%", "verdict": "partly reproduced"}]}))
    (book.results / "00_a.long.json").write_text(json.dumps({
        "chapter": "00_a", "profile": "full", "claims": [{**claim, "ours": "44%", "verdict": "reproduced"}]}))
    (book.results / "bench.json").write_text(json.dumps({"device": "CPU", "rows": [
        {"name": "PGD-20 attack on SmallCNN", "value": 1234.5, "unit": "images/s"}]}))
    text = report.write_page(book).read_text()
    assert "## Benchmarks" in text and "| PGD-20 attack on SmallCNN | 1,234 | images/s |" in text
    assert "## Profiles side by side" in text
    assert "| Claim | Paper | this build (quick) | long (full) |" in text
    assert "| robust accuracy drops | 45% | 38%: **partly reproduced** | 44%: **reproduced** |" in text
    assert "[00_a](chapters/00_a.ipynb) (long)" in text and "executed in this build" in text


def test_the_larger_run_column_compares_claims_graded_the_same_way(tmp_path, monkeypatch):
    from advbook import protocol
    from advbook.book import report

    book = _results_book(tmp_path, monkeypatch)
    claim = protocol.Claim(key="gap", text="A beats B", quote="A beats B", source="abstract", statistic="A - B",
                           direction=1, sesoi=0.05, sesoi_reason="r", comparator="B", unit="training seed",
                           replicates="seeds")
    small = protocol.grade(claim, [0.01, -0.01, 0.02]).record()
    large = protocol.grade(claim, [0.04, 0.05, 0.06, 0.05]).record()
    other = protocol.grade(protocol.Claim(**{**claim.__dict__, "sesoi": 0.1}), [0.04, 0.05, 0.06]).record()
    (book.results / "00_a.json").write_text(json.dumps({"chapter": "00_a", "profile": "quick", "claims": [small]}))
    (book.results / "00_a.long.json").write_text(json.dumps({"chapter": "00_a", "profile": "long", "claims": [large]}))
    text = report.write_page(book).read_text()
    assert "| Claim | Paper | this build (quick) | long | Larger run against this build |" in text
    assert "+0.0433 toward the SESOI 0.05, not reproduced -> reproduced" in text
    (book.results / "00_a.long.json").write_text(json.dumps({"chapter": "00_a", "profile": "long", "claims": [other]}))
    assert "Larger run against this build" not in report.write_page(book).read_text()  # another SESOI: no comparison


def test_site_build_is_skipped_when_nothing_changed(fake_book, monkeypatch):
    import os
    import time

    book = paths.Book(fake_book)
    (fake_book / "_build" / "html").mkdir(parents=True)
    (fake_book / "_build" / "html" / "index.html").write_text("<html/>")
    (fake_book / "book" / "index.md").parent.mkdir(exist_ok=True)
    (fake_book / "book" / "index.md").write_text("# Home")
    assert not sitebuild.site_up_to_date(book)  # never built
    stamp = fake_book / sitebuild.SITE_STAMP
    stamp.write_text(sitebuild._toolchain())
    assert sitebuild.site_up_to_date(book)
    later = time.time() + 5
    os.utime(fake_book / "book" / "index.md", (later, later))
    assert not sitebuild.site_up_to_date(book)  # an edited page
    os.utime(stamp, (later + 1, later + 1))
    assert sitebuild.site_up_to_date(book)
    stamp.write_text('{"sphinx": "0"}')
    os.utime(stamp, (later + 1, later + 1))
    assert not sitebuild.site_up_to_date(book)  # another toolchain

    calls = []
    monkeypatch.setattr(sitebuild, "jupyter_book", lambda b, log=print: calls.append(b) or 0)
    monkeypatch.setattr(sitebuild, "site_up_to_date", lambda b: True)
    _fake_chapter(fake_book, "00_a")
    lines = []
    assert build.run(profile="tiny", root=fake_book, log=lines.append) == 0
    assert calls == [] and any("site up to date" in line for line in lines)
    assert build.run(profile="tiny", root=fake_book, log=lines.append, force=True) == 0
    assert len(calls) == 1


def test_side_profile_run_is_kept_beside_the_page(fake_book):
    _fake_chapter(fake_book, "00_a")
    book = paths.Book(fake_book)
    assert build.run(profile="tiny", root=fake_book, build=False, log=lambda s: None) == 0
    page, main = (book.chapters / "00_a.ipynb").read_text(), (book.results / "00_a.json").read_text()
    assert build.run(profile="long", root=fake_book, build=False, log=lambda s: None) == 0
    assert (book.chapters / "00_a.ipynb").read_text() == page and (book.results / "00_a.json").read_text() == main
    long = json.loads((book.results / "00_a.long.json").read_text())
    assert long["runner"]["status"] == "ok" and long["profile"] == "long"
    assert (book.chapters / "00_a.long.ipynb").exists()
    assert build.run(profile="long", root=fake_book, build=False, log=lambda s: None) == 0
    assert _runs(fake_book) == ["00_a", "00_a"]  # the long run is up to date too
    assert "long (long)" not in (fake_book / "book" / "reproducibility.md").read_text()
    assert "| Claim | Paper | this build (tiny) | long |" in (fake_book / "book" / "reproducibility.md").read_text()

    # the long run is also recorded in book/measurements/runs (tracked): a clone without the local
    # results file still shows it, labelled as a recorded run with its date and SHA
    recorded = book.recorded / "00_a.long.json"
    assert json.loads(recorded.read_text())["claims"] == long["claims"]
    (book.results / "00_a.long.json").unlink()
    from advbook.book import report

    text = report.write_page(book).read_text()
    assert "recorded run of " in text and "not executed in this build" in text
    assert "| Claim | Paper | this build (tiny) | long, recorded run " in text
    assert report.short_sha("c1d730f797c2563b5ba10243ee201bd69e7bf96a-dirty") == "c1d730f797c2-dirty"


def test_pages_of_failed_or_unexecuted_chapters_drop_references_to_missing_glue():
    import nbformat

    nb = nbformat.v4.new_notebook()
    glued = nbformat.v4.new_code_cell("", outputs=[nbformat.v4.new_output(
        "display_data", data={"text/plain": "0.5"}, metadata={"scrapbook": {"name": "00-here", "mime_prefix": ""}})])
    nb.cells = [
        nbformat.v4.new_markdown_cell("# T"),
        glued,
        nbformat.v4.new_markdown_cell("```{glue:figure} 00-missing\n:name: fig-00-missing\n\nCaption.\n```\n\n"
                                      "See {numref}`fig-00-missing` and {numref}`fig-00-other`; "
                                      "value {glue:text}`00-here:.1%`, lost {glue:text}`00-gone:.1%`."),
    ]
    assert finish.unglue_missing(nb) == 2
    text = nb.cells[2].source
    assert "{glue:figure} 00-missing" not in text and "not computed" in text
    assert "{glue:text}`00-here:.1%`" in text and "00-gone" not in text
    assert "fig-00-missing" not in text and "{numref}`fig-00-other`" in text


def test_schedule_puts_the_primer_first_then_the_longest_chapters(fake_book):
    book = paths.Book(fake_book)
    book.results.mkdir(parents=True, exist_ok=True)
    for chapter, seconds, status in (("01_b", 100, "ok"), ("02_c", 400, "ok"), ("03_d", 900, "failed")):
        (book.results / f"{chapter}.json").write_text(json.dumps({"runner": {"status": status, "seconds": seconds}}))
    todo = [(c, "key") for c in ("00_a", "01_b", "02_c", "03_d", "04_e")]
    order = [c for c, _ in build.schedule(book, todo, "quick")]
    # a failed run's time says nothing about the chapter's length; never-run chapters keep their order
    assert order == ["00_a", "02_c", "01_b", "03_d", "04_e"]


def test_kernel_start_does_not_interleave_warnings_with_progress_lines(fake_book, capfd):
    _fake_chapter(fake_book, "00_a")
    lines = []
    assert build.run(profile="tiny", root=fake_book, build=False, log=lines.append) == 0
    captured = capfd.readouterr()
    assert "without encryption" not in captured.err + captured.out  # ipykernel's per-start TCP warning
    assert any("00_a] ok" in line for line in lines)


def test_no_cell_limit_means_none_not_the_profiles(fake_book, monkeypatch):
    """``--cell-timeout 0`` (no limit) reaches papermill as no limit, not as the profile's default."""
    import papermill

    _fake_chapter(fake_book, "00_a")
    seen = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **kw: seen.append(kw["execution_timeout"]))
    lines = []
    build.run(profile="tiny", root=fake_book, build=False, log=lines.append, cell_timeout_s=0)
    execute.execute(paths.Book(fake_book), "00_a", {"profile": "tiny"})
    assert seen == [None, profiles.PROFILES["tiny"].cell_timeout] and "cell limit none" in lines[0]


# --- progress: a line when a cell starts (deferred, never dropped) and a heartbeat while it runs ------

def test_progress_defers_cell_lines_and_never_goes_silent_while_a_cell_runs():
    now = [0.0]
    lines = []
    p = execute.Progress("03_x", 5, lines.append, every=10, heartbeat=30, clock=lambda: now[0])
    p.cell(1)
    assert lines == ["[03_x] cell 1/5 (0s)"]
    now[0] = 2.0
    p.cell(2)
    now[0] = 3.0
    p.cell(3)
    p.tick()
    assert len(lines) == 1  # within 10 s of the last line: deferred
    now[0] = 10.0
    p.tick()  # ... not dropped: the latest cell, naming the one that started in between
    assert lines[1] == "[03_x] cell 3/5 (3s); cell 2 also started since the last line, running for 7s"
    # cell 3 trains for minutes: a heartbeat at least every 30 s, with the bar it last drew on stderr
    p.write("\rtraining:  45%|####5     | 45/100 [00:10<00:12,  4.50batch/s]")
    p.write("/tmp/x.py:3: UserWarning: not a bar\n  warnings.warn('x')\n")  # other stderr keeps the bar
    printed_at = [10.0]
    for t in range(11, 301):
        now[0] = float(t)
        before = len(lines)
        p.tick()
        if len(lines) > before:
            printed_at.append(now[0])
        if t == 100:
            p.write("\r                                                   \r")  # the bar closed (leave=False)
    gaps = [b - a for a, b in zip(printed_at, printed_at[1:])]
    assert gaps and max(gaps) <= 30 and len(printed_at) >= 10
    assert lines[2] == ("[03_x] cell 3/5 running for 37s (total 40s): "
                        "training: 45% 45/100 [00:10<00:12, 4.50batch/s] (as of 30s ago)")
    assert all("training" not in line for line in lines[-3:])  # the closed bar is not reported any more
    assert lines[-1].startswith("[03_x] cell 3/5 running for ") and "(total 4m" in lines[-1]
    now[0] = 301.0
    p.cell(4)  # 10 s after the last heartbeat at 280+: printed at once
    now[0] = 302.0
    p.cell(5)  # the last cell: always printed
    assert lines[-2] == "[03_x] cell 4/5 (5m01s)" and lines[-1] == "[03_x] cell 5/5 (5m02s)"
    n = len(lines)
    p.finish()
    assert len(lines) == n  # nothing was deferred


def test_progress_reports_a_deferred_cell_when_the_notebook_ends():
    now = [0.0]
    lines = []
    p = execute.Progress("01_y", 9, lines.append, every=10, heartbeat=30, clock=lambda: now[0])
    p.cell(1)
    now[0] = 1.0
    p.cell(2)  # the notebook fails in cell 2 a second later
    now[0] = 2.0
    p.finish()
    assert lines == ["[01_y] cell 1/9 (0s)", "[01_y] cell 2/9 (1s), running for 1s"]


def test_a_heartbeat_shorter_than_the_cell_interval_never_starves_a_deferred_line():
    now = [0.0]
    lines = []
    p = execute.Progress("02_z", 4, lines.append, every=10, heartbeat=5, clock=lambda: now[0])
    p.cell(1)
    now[0] = 1.0
    p.cell(2)  # deferred
    for t in range(2, 12):
        now[0] = float(t)
        p.tick()
    assert lines == ["[02_z] cell 1/4 (0s)", "[02_z] cell 2/4 (1s), running for 4s",
                     "[02_z] cell 2/4 running for 9s (total 10s)"]


def test_bar_position_reads_tqdm_redraws_and_ignores_other_stderr():
    import io

    from tqdm import tqdm

    out = io.StringIO()
    bar = tqdm(total=200, desc="PGD", unit="batch", leave=False, file=out, mininterval=0)
    bar.update(50)
    bar.set_postfix(loss=0.25)
    assert execute.bar_position(out.getvalue()).startswith("PGD: 25% 50/200 [00:00<")
    assert "loss=0.25" in execute.bar_position(out.getvalue())
    drawn = len(out.getvalue())
    bar.close()
    assert execute.bar_position(out.getvalue()[drawn:]) == ""  # cleared
    out = io.StringIO()
    tqdm(desc="AutoAttack", unit="attack", file=out, mininterval=0).update(2)  # no total
    assert execute.bar_position(out.getvalue()).startswith("AutoAttack: 2attack [00:00, ")
    assert execute.bar_position("epoch 3 [1/2] done\nWarning: x\n") is None


SLOW_CELL = '''import time
from advbook import progress
for _ in progress.bar(range(16), desc="slow", unit="step"):
    time.sleep(0.25)
time.sleep(1.5)'''


def test_a_slow_cell_gets_heartbeats_with_its_progress_bar(fake_book, monkeypatch):
    """A real kernel: a cell drawing an advbook.progress bar for 5.5 s, heartbeats every 0.5 s."""
    import nbformat

    monkeypatch.setenv("ADVBOOK_PROGRESS", "1")  # the test suite turns bars off; a chapter run has them on
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell('profile = "tiny"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(SLOW_CELL)]
    nbformat.write(nb, fake_book / "notebooks" / "00_slow.ipynb")
    lines = []
    run = execute.execute(paths.Book(fake_book), "00_slow", {"profile": "tiny"}, lines.append, heartbeat=0.5)
    assert run.status == "ok", run.error
    beats = [line for line in lines if line.startswith("[00_slow] cell 3/3 running for")]
    assert len(beats) >= 5, lines
    with_bar = [line for line in beats if ": slow: " in line]
    assert with_bar and all("/16 [" in line for line in with_bar), lines
    assert ": slow: " not in beats[-1]  # the last 1.5 s run after the bar closed


def test_list_shows_each_parameters_doc_bounds_and_value_per_profile(capsys):
    """``advbook list 03``: every parameter of the notebook with its comment, its SCHEMA bounds and the
    value of each profile of the methods module (the recipe's where the profile leaves it to the recipe)."""
    import re

    import papermill

    from advbook.methods import logits
    from advbook.params import COMMON

    assert cli.main(["list", "03", "--root", str(ROOT)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("03_logit_distributions  (") and "00_primer" not in text
    text, claims = text.split("\nclaims (")
    blocks = dict(re.findall(r"^  (\w+) +.*\n((?:^ {6,}.*\n?)+)", text, flags=re.M))
    cell = papermill.inspect_notebook(str(ROOT / "notebooks" / "03_logit_distributions.ipynb"))
    assert list(blocks) == list(cell)  # every parameter, in the cell's order
    spec = {**COMMON, **logits.SCHEMA}
    for name, block in blocks.items():
        assert f"allowed: {spec[name].describe()}" in block, name
        if cell[name]["help"]:
            assert re.search(rf"^  {name} +{re.escape(cell[name]['help'])}$", text, flags=re.M), name
    for name in ("model_seeds", "student_seeds", "n_eval"):  # the value of each profile, profiles grouped
        groups = {}
        for profile, values in logits.PROFILES.items():
            groups.setdefault(values[name], []).append(profile)
        assert " | ".join(f"{', '.join(ps)}: {v}" for v, ps in groups.items()) in blocks[name], name
    assert cli._value(8 / 255) == "0.03137 (8/255)" and cli._value([30.0, 4.0]) == "[30, 4]"
    assert cli._value(0.1) == "0.1" and cli._value(["a"]) == "['a']" and cli._value(None) == "None"
    quick = profiles.get("quick").recipe("mnist5k")
    assert f"quick, long: recipe: standard {quick['std_epochs']}, AT {quick['at_epochs']}" in blocks["epochs"]
    assert "None" not in blocks["epochs"] + blocks["eps"] and "every profile: 0.001" in blocks["linear_l2"]
    assert 'the notebook\'s seed = 0' in blocks["seed"] and "defines quick, long, full, tiny" in blocks["profile"]
    for key, claim in logits.CLAIMS.items():  # every claim, with its replicates in each profile
        n = {p: len(v[claim.replicates]) if isinstance(v[claim.replicates], list) else v[claim.replicates]
             for p, v in logits.PROFILES.items()}
        assert re.search(rf"^  {key} +{re.escape(claim.text)}\n +replicates: {claim.unit}s \(parameter "
                         rf"{claim.replicates}\): " + re.escape(" | ".join(f"{p} {k}" for p, k in n.items())) + "$",
                         claims, flags=re.M), key
    assert cli.main(["list", "--root", str(ROOT)]) == 0 and "05_universal_interpretation  (" in capsys.readouterr().out


def test_a_kernel_timeout_without_a_cell_limit_is_reported_not_a_crash(fake_book, monkeypatch):
    """``--cell-timeout 0`` (no limit): nbclient can still give up on a kernel that stops answering on a loaded
    machine; the chapter is reported as timed out with what happened, the runner does not crash on the limit."""
    import nbformat
    import papermill
    from nbclient.exceptions import CellTimeoutError

    _fake_chapter(fake_book, "00_a")

    def stalled(*args, **kwargs):
        raise CellTimeoutError("Kernel didn't respond in 60 seconds")

    monkeypatch.setattr(papermill, "execute_notebook", stalled)
    book = paths.Book(fake_book)
    run = execute.execute(book, "00_a", {"profile": "tiny"}, log=lambda line: None, timeout=None)
    assert run.status == "timed out" and "no cell limit" in run.error and "didn't respond" in run.error
    note = "".join(c.source for c in nbformat.read(book.chapters / "00_a.ipynb", as_version=4).cells)
    assert "no cell limit was set" in note and "TIMED OUT" in note
