import json

import pytest

from advbook import cli, runner
from advbook.params import ParameterError

from conftest import ROOT


def test_chapters_are_discovered_in_order():
    chapters = runner.Book(ROOT).available()
    assert chapters[0] == "00_primer" and chapters == sorted(chapters)


def test_select_accepts_prefixes_and_rejects_unknown():
    book = runner.Book(ROOT)
    assert runner.select(book, ["00"]) == ["00_primer"]
    with pytest.raises(ParameterError, match="allowed: 00_primer"):
        runner.select(book, ["99_nothing"])


def test_plan_validates_profile_and_parameter_names():
    book = runner.Book(ROOT)
    plan = runner.plan(book, ["00_primer"], "quick", {"epochs": 2})
    assert plan == {"00_primer": {"profile": "quick", "epochs": 2}}
    with pytest.raises(ParameterError, match="'quick'"):
        runner.plan(book, ["00_primer"], "fast", {})
    with pytest.raises(ParameterError, match="unknown parameter"):
        runner.plan(book, ["00_primer"], "quick", {"epoch": 2})
    with pytest.raises(ParameterError, match="'epochs'"):
        runner.plan(book, ["00_primer"], "quick", {"epochs": -3})


def test_cli_reports_bad_input_with_exit_code_2(capsys):
    assert cli.main(["run", "--profile", "huge", "--root", str(ROOT)]) == 2
    assert "allowed" in capsys.readouterr().err
    assert cli.main(["run", "nope", "--root", str(ROOT)]) == 2


def test_parse_value_like_papermill():
    assert runner.parse_value("3") == 3 and runner.parse_value("0.1") == 0.1
    assert runner.parse_value("[0.1, 0.2]") == [0.1, 0.2] and runner.parse_value("cifar10") == "cifar10"


def test_reproducibility_page_aggregates_results(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "book").mkdir()
    for name in ("00_a", "01_b"):
        (tmp_path / "notebooks" / f"{name}.ipynb").write_text("{}")
    monkeypatch.setenv("ADVBOOK_RESULTS", str(tmp_path / "results"))
    book = runner.Book(tmp_path)
    book.results.mkdir()
    (book.results / "00_a.json").write_text(json.dumps({
        "chapter": "00_a", "profile": "quick", "dataset": "mnist5k", "seed": 0,
        "provenance": {"device": "CPU (2 threads)", "git_sha": "abc", "torch": "2.x"},
        "runner": {"status": "ok", "seconds": 12.5},
        "claims": [{"claim": "A | B", "paper": "1%", "ours": "2%", "verdict": "partly reproduced", "note": ""}]}))
    text = runner.write_reproducibility_page(book).read_text()
    assert "A \\| B" in text and "partly reproduced" in text and "12.5" in text
    assert "| 01_b | not run |" in text and "Computed / from cache" in text


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
    assert data.default_root() == root.resolve() / ".cache" / "data"
    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("ADVBOOK_DATA", str(tmp_path / "d"))
    assert cache.cache_dir() == tmp_path / "elsewhere" and data.default_root() == tmp_path / "d"


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
