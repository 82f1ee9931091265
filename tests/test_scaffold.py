"""``advbook new``: names are checked, the files and the _toc.yml entry are written, and the
scaffolded chapter runs end to end with papermill in the tiny profile (in a temporary copy of
the repository, so the real one is never touched), as does its scaffolded unit test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import nbformat
import pytest
import yaml

from advbook import paths
from advbook.book import build, cli, scaffold

from conftest import ROOT

IGNORE = shutil.ignore_patterns("chapters", "results", "_build", "__pycache__", "*.egg-info", ".ipynb_checkpoints")


@pytest.fixture
def repo_copy(tmp_path):
    """The book's sources (no outputs, no caches) in a temporary directory."""
    root = tmp_path / "book"
    root.mkdir()
    for item in ("_config.yml", "_toc.yml", "book", "notebooks", "lib"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, root / item, ignore=IGNORE)
        else:
            shutil.copy(src, root / item)
    (root / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", root / "tests" / "conftest.py")
    return root


@pytest.mark.parametrize("bad, fragment", [
    ("Margins", "lower-case letters"), ("1margins", "starting with a letter"), ("logit-margins", "single underscores"),
    ("logit__margins", "single underscores"), ("margins_", "single underscores"), ("m" * 41, "at most 40"),
    ("class", "Python keyword"), ("list", "builtin"), ("data", "advbook module"), ("chapter", "advbook module"),
    ("summary", "template binds"), ("", "not allowed"),
])
def test_bad_names_are_refused_with_the_rule(bad, fragment):
    with pytest.raises(scaffold.ScaffoldError, match="chapter name") as err:
        scaffold.check_name(bad)
    assert fragment in str(err.value)


def test_scaffold_writes_the_chapter_files_and_registers_it(repo_copy):
    before = scaffold.existing_chapters(repo_copy)
    made = scaffold.new_chapter("margins", repo_copy, title='Logit margins: a "worked" example')
    number = max(before) + 1
    assert made.chapter == f"{number:02d}_margins"
    assert made.notebook == repo_copy / "notebooks" / f"{made.chapter}.ipynb"
    assert made.module.read_text().count(f'CHAPTER = "{made.chapter}"') == 1
    assert "from advbook.methods import margins" in made.test.read_text()
    # the toc lists it after the last chapter, comments kept, and still parses
    toc_text = made.toc.read_text()
    assert toc_text.startswith((ROOT / "_toc.yml").read_text().splitlines()[0])
    chapters = [line.split("book/chapters/")[1].strip() for line in toc_text.splitlines() if "book/chapters/" in line]
    assert chapters[-1] == made.chapter and chapters[:-1] == sorted(chapters[:-1])
    assert made.chapter in str(yaml.safe_load(toc_text))
    # the notebook follows the contract the notebook tests check, with no placeholder left
    nb = nbformat.read(made.notebook, as_version=4)
    assert nb.cells[0].source.startswith('# Logit margins: a "worked" example')
    assert [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])].__len__() == 1
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert not any("{{" in c.source for c in nb.cells)
    assert "chapter.setup(" in "".join(c.source for c in nb.cells) and "res.grade(" in "".join(c.source for c in nb.cells)
    assert paths.Book(repo_copy).available()[-1] == made.chapter
    assert {"profile", "device", "seed", "eps", "steps"} <= set(build.notebook_parameters(made.notebook))
    # the module declares its parameters once: every profile a chapter of the book defines (long included),
    # and the notebook's parameters cell is that declaration's
    import importlib.util

    from advbook import methods

    spec = importlib.util.spec_from_file_location("advbook.methods._scaffolded_margins", made.module)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    offered = set(module.PROFILES)
    used = {p for c in paths.Book(ROOT).available() for p in methods.for_chapter(c).PROFILES}
    assert "long" in used and used <= offered, f"the scaffold lacks {sorted(used - offered)}"
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert cell.source == module.PARAMETERS.cell(), "the template's parameters cell differs from its declaration"


def test_existing_chapters_numbers_and_files_are_refused(repo_copy):
    made = scaffold.new_chapter("margins", repo_copy)
    toc = made.toc.read_text()
    with pytest.raises(scaffold.ScaffoldError, match=f"chapter '{made.chapter}' already exists"):
        scaffold.new_chapter("margins", repo_copy)
    with pytest.raises(scaffold.ScaffoldError, match="is taken by '00_primer'"):
        scaffold.new_chapter("other", repo_copy, number=0)
    (repo_copy / "tests" / "test_taken.py").write_text("")
    with pytest.raises(scaffold.ScaffoldError, match="tests/test_taken.py already exists"):
        scaffold.new_chapter("taken", repo_copy)
    assert not (repo_copy / "lib" / "advbook" / "methods" / "taken.py").exists()
    assert made.toc.read_text() == toc, "a refused scaffold writes nothing"
    with pytest.raises(scaffold.ScaffoldError, match="not the book's root"):
        scaffold.new_chapter("margins", repo_copy / "book")


def test_cli_new_exit_codes(repo_copy, capsys):
    assert cli.main(["new", "margins", "--root", str(repo_copy), "--number", "42"]) == 0
    out = capsys.readouterr().out
    assert "created chapter 42_margins" in out and "notebooks/42_margins.ipynb" in out
    assert cli.main(["new", "Bad-Name", "--root", str(repo_copy)]) == 2
    assert "advbook: error: chapter name 'Bad-Name' is not allowed" in capsys.readouterr().err
    assert scaffold.next_number(repo_copy) == 43


@pytest.mark.slow
def test_scaffolded_chapter_and_its_test_run_in_the_tiny_profile(repo_copy, tmp_path):
    import papermill

    made = scaffold.new_chapter("margins", repo_copy, title="Logit margins")
    # the kernel and pytest must import the copy's advbook (with the new methods module)
    env_before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_copy / "lib"), env_before]))
    try:
        with pytest.raises(papermill.PapermillExecutionError) as err:
            papermill.execute_notebook(str(made.notebook), str(tmp_path / "bad.ipynb"), cwd=str(made.notebook.parent),
                                       parameters={"profile": "tiny", "steps": 0}, kernel_name="python3",
                                       progress_bar=False)
        assert err.value.ename == "ParameterError" and "steps" in err.value.evalue
        papermill.execute_notebook(str(made.notebook), str(tmp_path / "out.ipynb"), cwd=str(made.notebook.parent),
                                   parameters={"profile": "tiny"}, kernel_name="python3", progress_bar=False)
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(made.test)],
                               cwd=repo_copy, capture_output=True, text=True, env=dict(os.environ))
    finally:
        if env_before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env_before
    result = json.loads((paths.Book(repo_copy).results / f"{made.chapter}.json").read_text())
    assert result["parameters"]["profile"] == "tiny"
    assert len(result["claims"]) == 2 and all(c["verdict"] and c["statistic"] and c["sesoi"] for c in result["claims"])
    assert result["claims"][0]["null"] and result["claims"][1]["n"] == 2  # the noise null; two tiny seeds
    assert set(result["metrics"]["robust_accuracy"]) == {"0", "1"}
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in executed.cells if c.cell_type == "code" for o in c.outputs), "the margin figure"
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout
