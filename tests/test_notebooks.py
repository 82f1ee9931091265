"""Every chapter: committed clean, validates its parameters, and runs end to end (tiny profile).

The chapters run through the real runner into a temporary copy of the book, and the
site is then built from that copy with warnings as errors.

Two levels (pytest.ini): ``make test`` runs the checks that read the notebooks plus one whole
chapter, :data:`FAST_CHAPTER` (the cheapest tiny run through the runner and papermill); every other
execution, the CIFAR-shaped runs, the re-executions and the site build are marked ``slow`` and run in
CI (``.ci/run``). With ``ADVBOOK_TEST_BOOK=DIR`` the book copy is made in ``DIR`` (emptied first), so
CI can check the site these tests built instead of building the tiny book a second time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from advbook import methods, paths, protocol
from advbook.book import build, execute, site as sitebuild

from conftest import ROOT, write_fake_cifar10

CHAPTERS = paths.Book(ROOT).available()
FAST_CHAPTER = "05_universal_interpretation"
"""The chapter ``make test`` executes (tiny: about 25 s on two cores, the cheapest of the six); the rest are slow."""


def one_fast(chapters):
    """``chapters`` as parameters, every one but :data:`FAST_CHAPTER` marked ``slow``."""
    if FAST_CHAPTER not in chapters:
        raise ValueError(f"FAST_CHAPTER {FAST_CHAPTER!r} is not a chapter ({', '.join(chapters)}): pick another one")
    return [c if c == FAST_CHAPTER else pytest.param(c, marks=pytest.mark.slow) for c in chapters]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_source_notebook_is_clean_and_parameterised(chapter):
    nb = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    params = build.notebook_parameters(ROOT / "notebooks" / f"{chapter}.ipynb")
    assert {"profile", "device", "seed"} <= set(params)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    import ast

    assigned = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert assigned == set(params), f"papermill cannot read {sorted(assigned - set(params))} (an '=' in a comment?)"


@pytest.mark.parametrize("chapter", one_fast(CHAPTERS))
@pytest.mark.parametrize("name, value, fragment", [("epochs", -3, "epochs"), ("dataset", "imagenet", "allowed")])
def test_bad_parameter_fails_fast_with_a_clear_message(chapter, name, value, fragment, tmp_path):
    import papermill

    if name not in build.notebook_parameters(ROOT / "notebooks" / f"{chapter}.ipynb"):
        pytest.skip(f"{chapter} has no parameter {name}")
    start = time.perf_counter()
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(ROOT / "notebooks" / f"{chapter}.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"profile": "tiny", name: value}, cwd=str(ROOT / "notebooks"),
                                   kernel_name="python3", progress_bar=False)
    assert err.value.ename == "ParameterError" and fragment in err.value.evalue
    assert time.perf_counter() - start < 60


@pytest.fixture(scope="module")
def book_copy(tmp_path_factory, isolated_dirs):
    """A copy of the book's sources in which the chapters are executed and the site built."""
    root = Path(os.environ["ADVBOOK_TEST_BOOK"]) if os.environ.get("ADVBOOK_TEST_BOOK") else tmp_path_factory.mktemp("book")
    if os.environ.get("ADVBOOK_TEST_BOOK"):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    for item in ("_config.yml", "_toc.yml", "book", "notebooks", "lib"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, root / item, ignore=shutil.ignore_patterns("chapters", "results", "_build",
                                                                              "__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, root / item)
    return paths.Book(root)


def results_of(book: paths.Book, chapter: str) -> dict:
    """The chapter's tiny results in ``book``, executing it first when this session has not (the results
    folder is the session's own): a slow test needs no fast test to have run before it."""
    path = book.results / f"{chapter}.json"
    if not path.exists():
        run = execute.execute(book, chapter, {"profile": "tiny"})
        assert run.status == "ok", run.error
    return json.loads(path.read_text())


@pytest.mark.parametrize("chapter", one_fast(CHAPTERS))
def test_chapter_runs_with_tiny_parameters(chapter, book_copy):
    run = execute.execute(book_copy, chapter, {"profile": "tiny"})
    assert run.status == "ok", run.error
    result = json.loads((book_copy.results / f"{chapter}.json").read_text())
    assert result["runner"]["status"] == "ok"
    assert result["claims"], "every chapter records its claims with verdicts"
    assert result["provenance"]["git_sha"] and result["provenance"]["torch"]
    assert result["parameters"]["profile"] == "tiny"
    check_protocol_records(chapter, result["claims"])


PROTOCOL_FIELDS = ("quote", "source", "statistic", "direction", "sesoi", "comparator", "unit", "n", "estimate", "ci",
                   "verdict", "assessment", "evidence", "null")


def check_protocol_records(chapter: str, claims: list[dict]) -> None:
    """Every claim of a run is graded by the protocol: its fields, one of the five verdicts and a derived
    assessment; every declared claim is graded (a family member's key is ``key@setting``). Whether a null
    baseline passes is not asked here: tiny numbers mean nothing (in tiny, random noise can beat a UAP
    optimised for 5 steps); each chapter's unit tests feed its nulls through its claims."""
    for c in claims:
        missing = [f for f in PROTOCOL_FIELDS if f not in c]
        assert not missing, f"{chapter}: claim {c.get('key')!r} lacks {missing}"
        assert c["verdict"] in protocol.VERDICTS, c
        assert c["assessment"] in (None, *protocol.ASSESSMENTS), c
        assert not c["null"] or c["null"]["verdict"] in protocol.VERDICTS, c
    graded = {c["key"].split("@")[0] for c in claims}
    declared = set(methods.for_chapter(chapter).CLAIMS)
    assert declared <= graded, f"{chapter}: declared claims not graded: {sorted(declared - graded)}"


TYPED = re.compile(r"(verdict|assessment)\s*[=:]\s*[\"']|[\"'](reproduced|partly reproduced|not reproduced|inconclusive|"
                   r"contradicted|scale-limited|no trend with scale|untested at a larger scale)[\"']")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_no_verdict_or_assessment_is_typed_in_a_chapter(chapter):
    """Verdicts and assessments come from the grading function (advbook.protocol), never from a literal."""
    nb = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
    typed = [line.strip() for c in nb.cells if c.cell_type == "code" for line in c.source.splitlines()
             if TYPED.search(line)]
    assert not typed, f"{chapter} types a verdict or an assessment: {typed[:3]}"


@pytest.mark.slow
@pytest.mark.parametrize("chapter", ["04_dominant_patterns", "05_universal_interpretation"])
def test_a_re_executed_chapter_recomputes_nothing(chapter, book_copy):
    """Cache keys (settings, data and code, notebook-defined compute functions included) come out the
    same in a new kernel: executing the chapter again loads every model and result it computed."""
    first = results_of(book_copy, chapter)["cache"]
    run = execute.execute(book_copy, chapter, {"profile": "tiny"})
    assert run.status == "ok", run.error
    again = json.loads((book_copy.results / f"{chapter}.json").read_text())["cache"]
    assert first["misses"] > 0 and again["misses"] == 0 and again["hits"] >= first["misses"]


@pytest.fixture(scope="module")
def cifar_book(tmp_path_factory, book_copy):
    """A second copy of the book whose chapters read generated CIFAR-10 files (the real pickle format)."""
    root = tmp_path_factory.mktemp("cifar_book")
    for item in ("_config.yml", "_toc.yml", "book", "notebooks", "lib"):
        src = book_copy.root / item
        if src.is_dir():
            shutil.copytree(src, root / item, ignore=shutil.ignore_patterns("chapters", "results", "_build"))
        else:
            shutil.copy(src, root / item)
    data_root = write_fake_cifar10(tmp_path_factory.mktemp("cifar_data"))
    before = {k: os.environ.get(k) for k in ("ADVBOOK_DATA", "ADVBOOK_RESULTS")}
    os.environ["ADVBOOK_DATA"] = str(data_root)
    os.environ["ADVBOOK_RESULTS"] = str(root / "book" / "results")
    yield paths.Book(root)
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_runs_the_full_profile_code_path_on_generated_cifar(chapter, cifar_book):
    """``tiny`` plus the module's ``FULL_PATH_TEST`` overrides: ResNet-18, 3x32x32 data, CIFAR augmentation."""
    overrides = methods.for_chapter(chapter).FULL_PATH_TEST
    run = execute.execute(cifar_book, chapter, {"profile": "tiny", **overrides})
    assert run.status == "ok", run.error
    result = json.loads((cifar_book.results / f"{chapter}.json").read_text())
    assert result["dataset"] == overrides.get("dataset", result["dataset"]) and result["claims"]
    check_protocol_records(chapter, result["claims"])


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(book_copy):
    for chapter in CHAPTERS:  # those this session has not executed yet
        results_of(book_copy, chapter)
    assert sitebuild.build_site(book_copy) == 0
    html = book_copy.root / "_build" / "html"
    assert (html / "index.html").exists()
    page = (html / "book" / "reproducibility.html").read_text()
    assert "00_primer" in page and "Claims and verdicts" in page
    primer = (html / "book" / "chapters" / "00_primer.html").read_text()
    # a figure, and the library code shown by literalinclude (the docstring survives highlighting)
    assert "<img" in primer and "Projected gradient ascent on the loss" in primer
