"""The chapter contract: one call validates and resolves everything (verdicts: tests/test_protocol.py)."""

from __future__ import annotations

import math
import types

import pytest

from advbook import evaluation, params, profiles, results
from advbook.book import chapter
from advbook.methods import for_chapter, primer


def test_setup_resolves_recipe_and_autoattack_budget_into_cfg():
    namespace = {"profile": "tiny", "device": "cpu", "seed": 3, "epochs": 2, "unrelated": 1}
    ch = chapter.setup(primer, namespace, show=False)
    assert ch.cfg.profile == "tiny" and ch.cfg.seed == 3
    assert ch.cfg.recipe["std_epochs"] == 2 and ch.cfg.recipe["at_epochs"] == 2  # RECIPE_OVERRIDES
    assert ch.cfg.autoattack["n_iter"] == profiles.PROFILES["tiny"].autoattack["n_iter"]
    recorded = ch.results.data["parameters"]
    assert recorded["recipe"]["at_epochs"] == 2 and recorded["autoattack"]["components"]
    runner_cmd, papermill_cmd = chapter.rerun_commands(ch)
    assert runner_cmd.startswith("advbook run 00_primer --profile tiny") and "-p seed 3" in runner_cmd
    assert "papermill notebooks/00_primer.ipynb" in papermill_cmd and "unrelated" not in papermill_cmd


def _checkout(root, chapter_id, first_cell):
    """A checkout holding one notebook whose first cell is ``first_cell`` (a dict), or no cell at all."""
    import json

    (root / "notebooks").mkdir(parents=True)
    (root / "_config.yml").write_text("title: t\n")
    cells = [] if first_cell is None else [first_cell]
    (root / "notebooks" / f"{chapter_id}.ipynb").write_text(json.dumps({"cells": cells, "metadata": {},
                                                                          "nbformat": 4, "nbformat_minor": 5}))
    return root


def _markdown(text):
    return {"cell_type": "markdown", "metadata": {}, "source": text.splitlines(keepends=True)}


def test_setup_rejects_bad_values_and_runs_the_module_check(tmp_path):
    with pytest.raises(params.ParameterError, match="allowed"):
        chapter.setup(primer, {"profile": "tiny", "dataset": "imagenet"}, show=False)

    def check(cfg):
        if cfg.seed == 7:
            raise params.ParameterError("seed 7 is cursed; allowed: anything else")

    module = types.SimpleNamespace(CHAPTER="99_x", PROFILES={"tiny": {"seed": 0}}, SCHEMA={}, check=check)
    root = _checkout(tmp_path / "book", "99_x", _markdown("# X\n\nProse."))
    with pytest.raises(params.ParameterError, match="cursed"):
        chapter.setup(module, {"profile": "tiny", "seed": 7}, show=False, root=root)


def test_the_id_comes_from_the_module_and_the_title_from_the_notebooks_heading(tmp_path):
    ch = chapter.setup(primer, {"profile": "tiny", "device": "cpu"}, show=False)
    assert ch.id == "00_primer" == ch.results.data["chapter"]
    assert ch.title == "Primer: adversarial examples and adversarial training" == ch.results.data["title"]

    module = types.SimpleNamespace(CHAPTER="99_x", PROFILES={"tiny": {"seed": 0}}, SCHEMA={})
    root = _checkout(tmp_path / "ok", "99_x", _markdown("\n# A  title: with *Markdown*\n\nThe paper in a paragraph."))
    ch = chapter.setup(module, {"profile": "tiny"}, show=False, root=root)
    assert (ch.id, ch.title) == ("99_x", "A  title: with *Markdown*")


def test_outside_a_checkout_the_title_is_the_id(tmp_path, monkeypatch):
    """Colab: the library comes from pip and the notebook from GitHub, so there is no notebook file to read."""
    from advbook import paths

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "PACKAGE_DIR", tmp_path / "site-packages" / "advbook")
    assert paths.find_root() is None
    assert chapter.chapter_title("00_primer") == "00_primer"
    with pytest.raises(chapter.ChapterError, match="no notebook"):  # a checkout given explicitly must have it
        chapter.chapter_title("00_primer", tmp_path)


@pytest.mark.parametrize("first_cell, message", [
    (_markdown("## A second-level heading\n"), r"must open with the chapter's title.*'# Title'.*'## A second-level heading'"),
    (_markdown("Prose before any heading.\n\n# Late title"), r"must open with the chapter's title.*'Prose before any heading.'"),
    (_markdown("#\n"), r"must open with the chapter's title"),
    ({"cell_type": "code", "metadata": {}, "source": "# a comment, not a heading\n", "outputs": [],
      "execution_count": None}, r"must open with the chapter's title.*found a code cell"),
    (None, r"must open with the chapter's title.*found no cells"),
])
def test_a_wrong_or_missing_heading_stops_setup_naming_the_notebook(tmp_path, first_cell, message):
    module = types.SimpleNamespace(CHAPTER="99_x", PROFILES={"tiny": {"seed": 0}}, SCHEMA={})
    root = _checkout(tmp_path / "book", "99_x", first_cell)
    with pytest.raises(chapter.ChapterError, match=message) as info:
        chapter.setup(module, {"profile": "tiny"}, show=False, root=root)
    assert "99_x.ipynb" in str(info.value)


def test_a_module_without_a_notebook_or_an_id_stops_setup(tmp_path):
    root = _checkout(tmp_path / "book", "99_x", _markdown("# X\n"))
    renamed = types.SimpleNamespace(CHAPTER="98_x", PROFILES={"tiny": {"seed": 0}}, SCHEMA={})
    with pytest.raises(chapter.ChapterError, match=r"no notebook .*98_x\.ipynb.*file name"):
        chapter.setup(renamed, {"profile": "tiny"}, show=False, root=root)
    for bad in (None, "x", "99_x.ipynb", 99):
        module = types.SimpleNamespace(__name__="advbook.methods.x", PROFILES={"tiny": {"seed": 0}}, SCHEMA={},
                                       **({} if bad is None else {"CHAPTER": bad}))
        with pytest.raises(chapter.ChapterError, match="must define CHAPTER"):
            chapter.setup(module, {"profile": "tiny"}, show=False, root=root)


def test_every_chapter_has_one_methods_module_and_its_notebook_sets_up_that_id():
    import json
    import re

    from advbook import paths

    from conftest import ROOT

    chapters = paths.Book(ROOT).available()
    modules = {c: for_chapter(c) for c in chapters}
    assert modules["00_primer"] is primer
    assert len({m.__name__ for m in modules.values()}) == len(chapters), "two chapters share a methods module"
    for c, module in modules.items():
        assert module.CHAPTER == c and module.PROFILES and module.CLAIMS, c
        code = "".join("".join(cell["source"]) for cell in json.loads((ROOT / "notebooks" / f"{c}.ipynb").read_text())["cells"]
                       if cell["cell_type"] == "code")
        short = module.__name__.rsplit(".", 1)[1]
        assert re.search(rf"from advbook\.methods import [\w, ]*\b{short}\b", code), f"{c} does not import {short}"
        # the set-up call names the module only: the id is module.CHAPTER, the title the notebook's heading
        calls = re.findall(r"chapter\.setup\((\w+, *globals\(\)|[^)]*)\)", code)
        assert len(calls) == 1, f"{c}: {len(calls)} chapter.setup calls"
        alias = calls[0].split(",")[0].strip()
        assert re.search(rf"from advbook\.methods import [\w, ]*\b{short}( as {alias})?\b", code) and \
            (alias == short or f"{short} as {alias}" in code), f"{c}: chapter.setup({calls[0]}) is not given {short}"
        assert calls[0].replace(" ", "") == f"{alias},globals()", f"{c}: chapter.setup({calls[0]}) names more than its module"
        assert chapter.chapter_title(c, ROOT)
    with pytest.raises(ValueError, match="no methods module"):
        for_chapter("99_nothing")
