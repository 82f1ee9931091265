"""The chapter contract: one call validates and resolves everything; verdicts come from one graded rule."""

from __future__ import annotations

import math
import types

import pytest

from advbook import chapter, evaluation, params, results
from advbook.methods import for_chapter, primer


def test_grade_thresholds_both_directions_and_rule_text():
    assert results.grade(0.25, 0.2, 0.05, name="drop") == "reproduced"
    assert results.grade(0.1, 0.2, 0.05) == "partly reproduced"
    assert results.grade(0.01, 0.2, 0.05) == "not reproduced"
    assert results.grade(0.01, 0.2) == "not reproduced"
    assert results.grade(math.nan, 0.2, 0.05) == "inconclusive"
    lower = results.grade(0.03, 0.02, 0.05, higher_is_better=False, name="error")
    assert lower == "partly reproduced" and lower.rule == "error <= 0.02 (partly <= 0.05)"
    assert results.grade(0.3, 0.2, 0.05, name="drop").rule == "drop >= 0.2 (partly >= 0.05)"
    with pytest.raises(ValueError, match="partly_at"):
        results.grade(0.3, 0.2, 0.5)


def test_claim_records_the_rule_and_rejects_unknown_assessments():
    res = results.ChapterResults("99_x", "x", params.Config(profile="tiny", seed=0))
    res.claim("c", "p", "o", results.grade(0.3, 0.2, 0.05, name="gain"))
    assert res.data["claims"][0]["rule"] == "gain >= 0.2 (partly >= 0.05)"
    assert "`gain >= 0.2 (partly >= 0.05)`" in res.claims_markdown()
    res.claim("c2", "p", "o", "not reproduced", assessment="scale-limited", evidence="3 seeds agree")
    assert "scale-limited (3 seeds agree)" in res.claims_markdown()
    with pytest.raises(ValueError, match="assessment"):
        res.claim("c3", "p", "o", "not reproduced", assessment="meh")


def test_a_graded_claim_keeps_its_value_so_two_scales_compare():
    res = results.ChapterResults("99_x", "x", params.Config(profile="tiny", seed=0))
    res.claim("c", "p", "o", results.grade(0.01, 0.05, -0.05, name="gap"))
    res.claim("plain", "p", "o", "reproduced")
    graded = res.data["claims"][0]["graded"]
    assert graded == {"name": "gap", "value": 0.01, "reproduced_at": 0.05, "partly_at": -0.05,
                      "higher_is_better": True}
    assert res.data["claims"][1]["graded"] is None
    closer = {**graded, "value": 0.03}
    assert results.toward_claim(graded, closer) == pytest.approx(0.02)
    lower = dict(results.grade(0.08, 0.02, 0.05, higher_is_better=False).graded)
    assert results.toward_claim(lower, {**lower, "value": 0.05}) == pytest.approx(0.03)  # lower is closer
    assert results.toward_claim(graded, {**closer, "reproduced_at": 0.1}) is None  # another rule
    assert results.toward_claim(graded, None) is None


def test_setup_resolves_recipe_and_autoattack_budget_into_cfg():
    namespace = {"profile": "tiny", "device": "cpu", "seed": 3, "epochs": 2, "unrelated": 1}
    ch = chapter.setup("00_primer", "Primer", primer, namespace, show=False)
    assert ch.cfg.profile == "tiny" and ch.cfg.seed == 3
    assert ch.cfg.recipe["std_epochs"] == 2 and ch.cfg.recipe["at_epochs"] == 2  # RECIPE_OVERRIDES
    assert ch.cfg.autoattack["n_iter"] == evaluation.AUTOATTACK_BUDGETS["tiny"]["n_iter"]
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


def test_every_methods_module_names_its_chapter():
    assert for_chapter("00_primer") is primer
    with pytest.raises(ValueError, match="no methods module"):
        for_chapter("99_nothing")
