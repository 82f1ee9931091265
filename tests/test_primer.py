"""Unit tests of advbook.methods.primer (the primer: per-sample worst case, intervals, the budget record)."""

import json
import math

import pytest
import torch

from advbook import evaluation, params, profiles
from advbook.book import chapter
from advbook.methods import primer
from advbook.stats import wilson_interval


def test_worst_case_is_the_intersection_not_the_minimum():
    a = torch.tensor([True, True, False, False])
    b = torch.tensor([False, True, True, False])
    worst = primer.worst_case_mask(a, b)
    assert worst.tolist() == [False, True, False, False]
    # each attack alone leaves 50%; the minimum of the aggregates would say 50%, the per-sample worst case 25%
    assert min(primer.rate(a)["value"], primer.rate(b)["value"]) == 0.5
    assert primer.rate(worst)["value"] == 0.25
    with pytest.raises(ValueError):
        primer.worst_case_mask()


def test_rate_carries_the_wilson_interval():
    mask = torch.tensor([True] * 30 + [False] * 70)
    r = primer.rate(mask)
    assert r["n"] == 100 and math.isclose(r["value"], 0.3)
    assert (r["lo"], r["hi"]) == wilson_interval(0.3, 100)
    assert r["lo"] < 0.3 < r["hi"]
    assert primer.with_interval(r) == f"30.0% [{r['lo']:.1%}, {r['hi']:.1%}]"
    zero = primer.rate(torch.zeros(50, dtype=torch.bool))
    assert zero["lo"] == 0.0 and zero["hi"] > 0.0  # not degenerate at 0



def test_rates_min_of_aggregates_and_the_worst_case_per_seed():
    t, f = True, False
    masks = {"clean": torch.tensor([t, t, t, f]), "fgsm": torch.tensor([t, t, f, f]), "pgd20": torch.tensor([t, f, t, f]),
             "autoattack": torch.tensor([t, t, f, f])}
    masks["worst"] = primer.worst_case_mask(*(masks[a] for a in primer.ATTACKS))
    r = primer.rates(masks)
    assert list(r) == ["clean", *primer.ATTACKS, "worst"] and r["worst"] == primer.rate(masks["worst"])
    # every attack alone leaves 50%, the per-sample worst case 25%: the minimum of the aggregates overstates it
    assert primer.min_aggregate(r) == 0.5
    assert primer.min_aggregate_sentence(r) == "50.0%, 25.0% more than the per-sample worst case"
    same = primer.rates({**masks, "fgsm": masks["worst"]})
    assert primer.min_aggregate_sentence(same).startswith("the same number here")
    assert primer.worst_per_seed({3: {"standard": {"worst": masks["fgsm"]}, "adversarial": masks}}) == {
        3: {"standard": 0.5, "adversarial": 0.25}}


def test_standard_autoattack_sentence_only_for_the_same_model_radius_and_points():
    record = {"model_fingerprint": "abc", "eps": 0.3, "reference": {"robust": 0.42, "settings": {"n": 500}}}
    assert primer.standard_aa_sentence(record, "abc", 0.3, 500) == (
        " On the same model and points, the standard AutoAttack of the calibration record left 42.0%.")
    for args in (("xyz", 0.3, 500), ("abc", 0.2, 500), ("abc", 0.3, 300)):
        assert primer.standard_aa_sentence(record, *args) == ""
    assert primer.standard_aa_sentence(None, "abc", 0.3, 500) == ""
    assert primer.standard_aa_sentence({**record, "reference": {}}, "abc", 0.3, 500) == ""

def test_extra_breaks_counts_points_pgd_missed():
    masks = {"pgd20": torch.tensor([True, True, True, False]), "worst": torch.tensor([True, False, False, False])}
    assert primer.extra_breaks(masks)["value"] == 0.5


def test_non_increasing():
    assert primer.non_increasing({1: 0.5, 5: 0.4, 20: 0.4})
    assert not primer.non_increasing({20: 0.45, 1: 0.5, 5: 0.4})  # ordered by key, not by insertion


def test_robust_masks_on_an_undefended_linear_model(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 4, 4, generator=gen)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10))
    y = model(x).argmax(1).detach()
    budget = {"components": ["apgd-ce"], "n_iter": 5, "n_queries": 10, "n_target_classes": 1}
    masks = primer.robust_masks(model, x, y, 0.5, budget, steps=5)
    assert set(masks) == {"clean", "fgsm", "pgd20", "autoattack", "worst"}
    assert masks["clean"].all()
    for name in primer.ATTACKS:
        assert not (masks["worst"] & ~masks[name]).any()  # worst is contained in every attack's mask
    assert primer.rate(masks["worst"])["value"] < 0.2
    again = primer.robust_masks(model, x, y, 0.5, budget, steps=5)  # from the cache
    assert all(torch.equal(masks[k], again[k]) for k in masks)


def test_check_rejects_inconsistent_parameters():
    with pytest.raises(params.ParameterError, match="n_eval"):
        chapter.setup(primer, {"profile": "tiny", "n_eval": 500, "n_test": 100}, show=False)
    with pytest.raises(params.ParameterError, match="eps"):
        chapter.setup(primer, {"profile": "tiny", "eps": 0.0}, show=False)


CALIBRATOR_RECORD = {
    "measured": "2026-11-22T21:00:00+0000", "git_sha": "0123456789abcdef", "device": "CPU (1 thread)", "threads": 1,
    "eps": 0.3, "points": "first 300 test images", "load_average": [9.5, 9.0, 8.0],
    "reference": {"robust": 0.40, "total_seconds": 900.0,
                  "settings": {"components": ["apgd-ce", "apgd-t", "fab-t", "square"], "n_iter": 100,
                               "n_queries": 5000, "n_target_classes": 9}},
    "candidates": {"previous quick": {"budget": {"components": ["apgd-ce", "apgd-t", "square"], "n_iter": 50,
                                                 "n_queries": 250, "n_target_classes": 3},
                                      "robust": 0.43, "total_seconds": 60.0},
                   "9 targets": {"budget": {"components": ["apgd-ce", "apgd-t", "square"], "n_iter": 50,
                                            "n_queries": 250, "n_target_classes": 9},
                                 "robust": 0.405, "seconds": {"apgd-ce": 10.0, "apgd-t": 60.0, "square": 20.0}}},
    "chosen": "9 targets",
    "rerun": "make calibrate-autoattack",
}


def test_measurement_rows_read_the_calibration_record(tmp_path):
    rows = primer.measurement_rows(CALIBRATOR_RECORD)
    assert [r["budget"] for r in rows] == ["standard AutoAttack", "previous quick", "9 targets"]
    assert rows[0]["vs_standard"] == 0.0 and math.isclose(rows[1]["vs_standard"], 0.03)
    assert rows[2]["seconds"] == 90.0 and rows[2]["chosen"] and not rows[1]["chosen"]
    assert "9 target classes" in rows[2]["settings"] and "5000 queries" in rows[0]["settings"]
    prov = primer.measurement_provenance(CALIBRATOR_RECORD)
    assert prov["git_sha"] == "0123456789ab" and prov["rerun"] == "make calibrate-autoattack"
    assert prov["load_average"][0] == 9.5
    # the list layout (standard / candidates as a list / chosen as a budget / provenance block)
    listed = {"standard": {"robust": 0.4, "seconds": 900.0, "budget": {"components": ["apgd-ce"], "n_iter": 100}},
              "candidates": [{"budget": {"components": ["apgd-ce"], "n_iter": 10}, "robust": 0.5, "seconds": 5.0}],
              "chosen": {"budget": {"components": ["apgd-ce"], "n_iter": 10}},
              "provenance": {"date": "2026-11-22", "git_sha": "abc", "device": "cpu", "command": "make x"}}
    rows = primer.measurement_rows(listed)
    assert len(rows) == 2 and rows[1]["chosen"] and math.isclose(rows[1]["vs_standard"], 0.1)
    assert primer.measurement_provenance(listed)["rerun"] == "make x"
    # on disk: missing and unreadable records give None, a valid one is read
    assert primer.load_measurement(tmp_path) is None
    path = tmp_path / primer.MEASUREMENT
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert primer.load_measurement(tmp_path) is None
    path.write_text(json.dumps(CALIBRATOR_RECORD))
    assert primer.load_measurement(tmp_path)["chosen"] == "9 targets"


def test_profiles_resolve_with_an_autoattack_budget():
    for profile in ("quick", "full", "tiny"):
        ch = chapter.setup(primer, {"profile": profile, "device": "cpu"}, show=False)
        assert ch.cfg.autoattack == {**profiles.PROFILES[profile].autoattack,
                                     "components": list(profiles.PROFILES[profile].autoattack["components"])}
        assert ch.cfg.recipe["eps"] == ch.cfg.eps


# ----------------------------------------------------------------------------- the protocol: claims and their nulls

from advbook import protocol  # noqa: E402


def test_every_claim_is_declared_with_its_replicates_in_every_profile():
    assert set(primer.CLAIMS) == {"standard-not-robust", "at-robust", "iterative-beats-single-step",
                                  "pgd20-close-to-worst-case"}
    for key, claim in primer.CLAIMS.items():
        assert claim.key == key and claim.sesoi_reason and claim.null
        planned = claim.planned(primer.PROFILES)
        assert all(n >= 1 for n in planned.values()), (key, planned)
    for key in ("standard-not-robust", "at-robust"):  # training methods: replicated over training seeds
        claim = primer.CLAIMS[key]
        assert claim.unit == "training seed" and claim.replicates == "seeds"
        assert claim.planned(primer.PROFILES)["quick"] >= 3 and claim.planned(primer.PROFILES)["long"] >= 3
    for key in ("iterative-beats-single-step", "pgd20-close-to-worst-case"):  # attacks on one fixed model
        assert primer.CLAIMS[key].unit == "test image"


def _masks(**cols):
    return {k: torch.tensor(v, dtype=torch.bool) for k, v in cols.items()}


def test_statistics_are_taken_against_their_baselines():
    m = _masks(noise=[1, 1, 1, 0], noise2=[1, 1, 0, 1], worst=[0, 0, 0, 0])
    assert primer.not_robust_value(m) == 0.75 and primer.not_robust_value(m, attack="noise2") == 0.0
    # a standard model below a constant classifier: the AT model is measured against the constant classifier
    assert math.isclose(primer.at_gain_value(0.5, 0.0, 0.1), 0.4)
    assert math.isclose(primer.at_gain_value(0.5, 0.3, 0.1), 0.2)
    assert primer.at_gain_value(0.0, 0.0, 0.1) < 0  # standard training itself: below the null
    d = primer.paired_values(torch.tensor([True, True, False]), torch.tensor([False, True, True]))
    assert d.tolist() == [1.0, 0.0, -1.0]
    over = primer.overstated_values(_masks(pgd20=[1, 1, 0, 1], worst=[1, 0, 0, 1]))
    assert over.tolist() == [0.0, 1.0, 0.0]
    assert primer.constant_accuracy(torch.tensor([3, 3, 1]), torch.tensor([3, 0, 3, 1])) == 0.5


def _not_passed(graded):
    return graded.verdict not in ("reproduced", "partly reproduced")


def test_null_replicates_are_never_graded_reproduced():
    gen = torch.Generator().manual_seed(0)
    C = primer.CLAIMS
    # random noise against a second draw of random noise: a few points either way, per seed
    noise = [primer.not_robust_value(_masks(noise=(torch.rand(300, generator=gen) < 0.9).tolist(),
                                            noise2=(torch.rand(300, generator=gen) < 0.9).tolist(),
                                            worst=[0] * 300), attack="noise2") for _ in range(3)]
    assert _not_passed(protocol.grade(C["standard-not-robust"], noise))
    # standard training in place of PGD training (worst case ~0, below a constant classifier at ~10%)
    std = [primer.at_gain_value(w, w, 0.1) for w in (0.0, 0.01, 0.0)]
    assert _not_passed(protocol.grade(C["at-robust"], std))
    assert _not_passed(protocol.grade(C["at-robust"], [primer.at_gain_value(0.1, 0.0, 0.1)] * 3))  # constant
    # a second single step in place of PGD-20: two draws of the same random-start attack (and FGSM)
    fgsm = torch.rand(300, generator=gen) < 0.8
    rs1, rs2 = torch.rand(300, generator=gen) < 0.7, torch.rand(300, generator=gen) < 0.7
    assert _not_passed(protocol.grade(C["iterative-beats-single-step"], primer.paired_values(fgsm & rs1, rs2)))
    # nothing left for PGD-20 to overstate: the standard model (no robust points, or a handful)
    none = primer.overstated_values(_masks(pgd20=[0] * 300, worst=[0] * 300))
    assert len(none) == 0 and _not_passed(protocol.grade(C["pgd20-close-to-worst-case"], none))
    few = primer.overstated_values(_masks(pgd20=[1, 1, 1] + [0] * 297, worst=[1, 1, 1] + [0] * 297))
    assert _not_passed(protocol.grade(C["pgd20-close-to-worst-case"], few))


def test_claims_grade_the_expected_direction():
    C = primer.CLAIMS
    assert protocol.grade(C["standard-not-robust"], [0.95, 0.97, 0.96]).verdict == "reproduced"
    assert protocol.grade(C["at-robust"], [0.60, 0.62, 0.58]).verdict == "reproduced"
    assert protocol.grade(C["at-robust"], [0.30, 0.32, 0.28]).verdict == "partly reproduced"
    # PGD-20 misses 1% of its robust points: within the tolerance; 30%: contradicted
    ok = torch.tensor([1.0] * 2 + [0.0] * 198)
    assert protocol.grade(C["pgd20-close-to-worst-case"], ok).verdict == "reproduced"
    bad = torch.tensor([1.0] * 60 + [0.0] * 140)
    assert protocol.grade(C["pgd20-close-to-worst-case"], bad).verdict == "contradicted"


def test_steps_sentence_and_first_rise():
    assert primer.first_rise({1: 0.5, 5: 0.4, 20: 0.4}) is None
    assert primer.first_rise({1: 0.5, 5: 0.4, 20: 0.45}) == (5, 20)
    assert primer.steps_sentence({"a": {1: 0.5, 2: 0.4}, "b": {1: 0.3, 2: 0.3}}).startswith("never rises")
    assert "rises for b" in primer.steps_sentence({"a": {1: 0.5, 2: 0.4}, "b": {1: 0.3, 2: 0.35}})


def test_calibration_and_long_run_sentences(tmp_path):
    assert "no per-sample" in primer.agreement_sentence(CALIBRATOR_RECORD)
    rec = {**CALIBRATOR_RECORD, "agreement": {"quick": {"only_candidate": 2, "only_reference": 0, "n": 300}}}
    assert "2 point(s)" in primer.agreement_sentence(rec)
    assert primer.long_run_sentence(tmp_path) == ""
    path = tmp_path / primer.LONG_RUN
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"provenance": {"started": "2026-12-01T00:00"}, "parameters": {"recipe": {"at_epochs": 40}},
                                "claims": [{"key": "at-robust", "estimate": 0.6, "ci": [0.5, 0.7], "n": 3,
                                            "verdict": "reproduced"}]}))
    assert "reproduced" in primer.long_run_sentence(tmp_path) and "3 seeds" in primer.long_run_sentence(tmp_path)


def test_check_rejects_repeated_seeds():
    with pytest.raises(params.ParameterError, match="seeds"):
        chapter.setup(primer, {"profile": "tiny", "seeds": [0, 0]}, show=False)


def test_calibration_compares_budgets_per_sample():
    from advbook import calibration

    ref = torch.tensor([True, False, False, True, False])
    cand = torch.tensor([True, True, False, False, False])
    a = calibration.agreement(ref, cand)
    assert (a["only_candidate"], a["only_reference"], a["both"], a["neither"], a["n"]) == (1, 1, 1, 2, 5)
    assert math.isclose(a["agree"], 0.6)
    # the same aggregate (40% each) but one point missed: a per-sample tolerance of 0 rejects it
    rows = {"same aggregate": {"robust": 0.4, "total_seconds": 1.0, "agreement": a},
            "slower, exact": {"robust": 0.4, "total_seconds": 9.0,
                              "agreement": calibration.agreement(ref, ref.clone())}}
    assert calibration.choose(0.4, rows, tolerance=0.0) == "slower, exact"
    assert calibration.choose(0.4, rows, tolerance=0.2) == "same aggregate"
    with pytest.raises(ValueError):
        calibration.agreement(ref, cand[:3])


def test_checklist_settings_and_sentence():
    from advbook import masking

    assert primer.checklist_eps(0.3) == [0.3, 0.5] and primer.checklist_eps(8 / 255)[-1] == 0.5
    assert primer.checklist_eps(0.6) == [0.6, 1.0]
    assert "not run" in primer.checklist_sentence(None)
    ok = masking.Checklist([masking.Item("a", "", "", True)], {}, torch.ones(1, dtype=torch.bool))
    bad = masking.Checklist([masking.Item("a", "", "", True), masking.Item("b", "", "", False)], {},
                            torch.ones(1, dtype=torch.bool))
    assert "passes all 1 items that ran" in primer.checklist_sentence(ok)
    assert "fails *b*" in primer.checklist_sentence(bad)
    skipped = masking.Checklist([masking.Item("a", "", "", True), masking.Item("c", "not run (no control)", "", False)],
                                {}, torch.ones(1, dtype=torch.bool))
    text = primer.checklist_sentence(skipped)
    assert "passes all 1 items" in text and "Not run here: *c*" in text and "fails" not in text
    for profile in ("quick", "long", "full", "tiny"):
        assert primer.PROFILES[profile]["checklist_points"] >= 1
