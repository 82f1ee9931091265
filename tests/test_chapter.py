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
    ch = chapter.setup("00_primer", "Primer", primer, namespace, show=False)
    assert ch.cfg.profile == "tiny" and ch.cfg.seed == 3
    assert ch.cfg.recipe["std_epochs"] == 2 and ch.cfg.recipe["at_epochs"] == 2  # RECIPE_OVERRIDES
    assert ch.cfg.autoattack["n_iter"] == profiles.PROFILES["tiny"].autoattack["n_iter"]
    recorded = ch.results.data["parameters"]
    assert recorded["recipe"]["at_epochs"] == 2 and recorded["autoattack"]["components"]
    runner_cmd, papermill_cmd = chapter.rerun_commands(ch)
    assert runner_cmd.startswith("advbook run 00_primer --profile tiny") and "-p seed 3" in runner_cmd
    assert "papermill notebooks/00_primer.ipynb" in papermill_cmd and "unrelated" not in papermill_cmd


def test_setup_rejects_bad_values_and_runs_the_module_check():
    with pytest.raises(params.ParameterError, match="allowed"):
        chapter.setup("00_primer", "Primer", primer, {"profile": "tiny", "dataset": "imagenet"}, show=False)

    def check(cfg):
        if cfg.seed == 7:
            raise params.ParameterError("seed 7 is cursed; allowed: anything else")

    module = types.SimpleNamespace(PROFILES={"tiny": {"seed": 0}}, SCHEMA={}, check=check)
    with pytest.raises(params.ParameterError, match="cursed"):
        chapter.setup("99_x", "x", module, {"profile": "tiny", "seed": 7}, show=False)


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
        ids = re.findall(r'chapter\.setup\(\s*"(\w+)"', code)
        assert ids in ([], [c]), f"{c}: its chapter.setup(...) names {ids}"
    with pytest.raises(ValueError, match="no methods module"):
        for_chapter("99_nothing")
