"""The teaching page: in the table of contents, its generated times match the recorded runs; CITATION.cff."""

from __future__ import annotations

import json

import pytest
import yaml

from advbook import paths
from advbook.book import teaching

from conftest import ROOT


def test_teaching_page_is_in_the_toc_and_covers_every_chapter():
    toc = (ROOT / "_toc.yml").read_text()
    assert "- file: book/teaching\n" in toc
    page = (ROOT / "book" / "teaching.md").read_text()
    assert page.count(teaching.START) == 1 and page.count(teaching.END) == 1
    block = page.split(teaching.START)[1].split(teaching.END)[0]
    for chapter in paths.Book(ROOT).available():
        assert f"| {chapter} |" in block, chapter
    assert "make cache-pack" in page and "make cache-unpack FILE=" in page


def test_recorded_long_runs_on_the_page_are_the_recorded_ones():
    """Every recorded long run appears on the page exactly as the generator formats it (rerun
    `make teaching-times` after recording a run); a run that computed nothing is never a cold time."""
    page = (ROOT / "book" / "teaching.md").read_text()
    runs = sorted((ROOT / "book" / "measurements" / "runs").glob("*.long.json"))
    assert runs
    for path in runs:
        record = json.loads(path.read_text())
        cell = teaching.run_cell(record)
        assert f"| {cell} |" in page, (path.name, cell)
        if record.get("cache", {}).get("misses") == 0:
            assert "not a cold run" in cell


def test_run_cell_formats_and_labels_re_executions():
    prov = {"provenance": {"git_sha": "abcdef0123", "started": "2026-12-03T08:00:00+0000"}}
    assert teaching.run_cell(None) == "not recorded"
    cold = {"runner": {"seconds": 754.0}, "cache": {"hits": 3, "misses": 40}, **prov}
    assert teaching.run_cell(cold) == "12.6 min, 40 entries computed, 3 cached (abcdef0, 2026-12-03)"
    warm = {"runner": {"seconds": 17.2}, "cache": {"hits": 30, "misses": 0}, **prov}
    assert teaching.run_cell(warm).startswith("17 s, every one of 30 entries cached: a re-execution")


def test_update_page_rewrites_only_the_generated_block(tmp_path, monkeypatch):
    monkeypatch.setattr(teaching, "times_markdown", lambda root, profile="quick": "| x |")
    page = tmp_path / "book" / "teaching.md"
    page.parent.mkdir()
    page.write_text(f"# T\n\nprose\n\n{teaching.START}\nold\n{teaching.END}\n\nmore prose\n")
    assert teaching.update_page(tmp_path) is True
    assert page.read_text() == f"# T\n\nprose\n\n{teaching.START}\n| x |\n{teaching.END}\n\nmore prose\n"
    assert teaching.update_page(tmp_path) is False
    page.write_text("no markers")
    with pytest.raises(ValueError, match="times:start"):
        teaching.update_page(tmp_path)


def test_prose_words_count_markdown_only(tmp_path):
    nb = {"cells": [{"cell_type": "markdown", "source": ["# Two words\n", "and $x^2 + y$ `code here` three"]},
                    {"cell_type": "code", "source": "not counted at all"}]}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    assert teaching.prose_words(path) == 4  # Two, words, and, three: no math, no code


def test_citation_cff_is_cff_1_2_0_without_invented_identifiers():
    """The fields CFF 1.2.0 requires, with their types (the file was also validated against the
    official 1.2.0 JSON schema when it was written; the schema is not fetched in tests)."""
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert isinstance(cff["message"], str) and cff["message"].strip()
    assert isinstance(cff["title"], str) and cff["title"].strip()
    assert cff["authors"] == [{"name": "The advbook contributors"}]
    assert cff.get("type") in (None, "software", "dataset")
    assert not {"doi", "identifiers", "date-released"} & set(cff)  # nothing invented
    version = next(line.split('"')[1] for line in (ROOT / "lib" / "pyproject.toml").read_text().splitlines()
                   if line.startswith("version"))
    assert cff["version"] == version
    assert set(cff["license"]) <= {"MIT", "CC-BY-4.0"}
