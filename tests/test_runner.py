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
