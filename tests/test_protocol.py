"""The replication protocol: one grading function, five outcomes, Holm, nulls and derived assessments."""

import math

import numpy as np
import pytest
import scipy.stats

from advbook import protocol
from advbook.protocol import Claim, grade


def claim(**changes) -> Claim:
    base = dict(key="gap", text="A beats B", quote="A beats B", source="abstract", statistic="acc(A) - acc(B)",
                direction=1, sesoi=0.05, sesoi_reason="half the paper's 0.1", comparator="B",
                unit="training seed", replicates="seeds")
    return Claim(**{**base, **changes})


@pytest.mark.parametrize("values, expected", [
    ([0.10, 0.12, 0.11, 0.09], "reproduced"),  # interval above 0, estimate >= 0.05
    ([0.02, 0.03, 0.025, 0.022], "partly reproduced"),  # interval above 0, estimate < 0.05
    ([0.001, -0.002, 0.003, 0.0], "not reproduced"),  # interval holds 0, excludes 0.05
    ([0.10, -0.08, 0.12, -0.05], "inconclusive"),  # interval holds 0 and 0.05
    ([-0.05, -0.06, -0.055, -0.045], "contradicted"),  # interval below 0
])
def test_grade_reaches_each_of_the_five_outcomes(values, expected):
    g = grade(claim(), values)
    assert g.verdict == expected
    mean, lo, hi = np.mean(values), *scipy.stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                                            scale=scipy.stats.sem(values))
    assert g.estimate == pytest.approx(mean) and g.ci == pytest.approx((lo, hi)) and g.n == len(values)


def test_direction_flips_the_outcomes():
    down = claim(direction=-1)
    assert grade(down, [-0.10, -0.12, -0.11, -0.09]).verdict == "reproduced"
    assert grade(down, [0.05, 0.06, 0.055, 0.045]).verdict == "contradicted"


def test_null_value_is_the_no_effect_point():
    ratio = claim(null_value=1.0, sesoi=0.25, statistic="D(A) / D(random)")
    assert grade(ratio, [1.5, 1.6, 1.55]).verdict == "reproduced"
    assert grade(ratio, [1.01, 0.99, 1.0]).verdict == "not reproduced"


def test_one_replicate_of_a_method_claim_is_inconclusive_and_nothing_is_inconclusive():
    g = grade(claim(), [0.3])
    assert g.verdict == "inconclusive" and "one replicate" in g.reason
    assert math.isinf(g.ci[0]) and math.isinf(g.ci[1])
    empty = grade(claim(), [float("nan")])
    assert empty.verdict == "inconclusive" and empty.n == 0 and "not measured" in empty.reason


def test_inconclusive_says_how_many_replicates_would_decide():
    g = grade(claim(), [0.10, -0.08, 0.12, -0.05])
    assert "seeds would decide" in g.reason
    need = protocol.replicates_needed([0.10, -0.08, 0.12, -0.05], 0.05, "training seed")
    assert need > 4


def test_a_proportion_of_test_images_gets_a_wilson_interval():
    c = claim(unit="test image", replicates="n_test", null_value=0.5, sesoi=0.2, statistic="robust accuracy")
    g = grade(c, [1.0] * 80 + [0.0] * 20)
    lo, hi = protocol.interval([1.0] * 80 + [0.0] * 20, "test image")[1:3]
    assert g.interval == "wilson" and (lo, hi) == pytest.approx((0.7112, 0.8666), abs=1e-3)
    assert g.verdict == "reproduced"
    zero = grade(claim(unit="test image", replicates="n_test", direction=-1, null_value=0.5, sesoi=0.4), [0.0] * 50)
    assert zero.ci[0] == pytest.approx(0.0, abs=1e-12) and zero.ci[1] > 0 and zero.verdict == "reproduced"


def test_holm_steps_down_from_the_strongest_setting():
    strong = [0.10, 0.12, 0.11, 0.09, 0.1]
    marginal = [0.04, 0.01, 0.06, 0.02, 0.05]
    alone = grade(claim(), marginal)
    assert alone.verdict == "partly reproduced"
    a, b = protocol.grade_family([(claim().at("eps 0.1"), strong), (claim().at("eps 0.2"), marginal)])
    assert a.level == pytest.approx(0.975) and b.level == pytest.approx(0.95)  # alpha / 2, then alpha / 1
    assert a.verdict == "reproduced" and b.verdict == "partly reproduced" and b.ci == pytest.approx(alone.ci)
    assert a.claim.key == "gap@eps 0.1" and "Holm" in b.reason
    three = protocol.grade_family([(claim().at(s), v) for s, v in (("a", strong), ("b", marginal), ("c", marginal))])
    assert three[1].level == pytest.approx(1 - 0.05 / 2) and three[1].ci[0] < alone.ci[0]


def test_holm_stops_at_the_first_setting_that_does_not_exclude_zero():
    weak = [0.01, -0.02, 0.03, 0.0]
    almost = [0.02, 0.0, 0.04, 0.01]
    gs = protocol.grade_family([(claim().at("a"), weak), (claim().at("b"), almost), (claim().at("c"), weak)])
    # the smallest p-value is graded at 1 - 0.05/3; if it does not exclude 0, nothing later can
    if gs[1].ci[0] <= 0:
        assert all(g.ci[0] <= 0 for g in gs)


def test_a_null_that_a_trivial_baseline_could_pass_is_graded_and_never_reproduced():
    c = claim(null="random noise of the same norm")
    rng = np.random.default_rng(0)
    null = protocol.grade_null(c, rng.normal(0.0, 0.01, size=5))
    assert null["verdict"] not in ("reproduced", "partly reproduced")
    assert null["what"] == "random noise of the same norm" and len(null["ci"]) == 2


def test_assessment_is_derived_from_larger_runs():
    small = grade(claim(), [0.01, -0.01, 0.02, 0.0])
    assert protocol.assess(small).assessment == "untested at a larger scale"
    moved = {**grade(claim(), [0.04, 0.05, 0.045, 0.05]).record(), "label": "long"}
    assert protocol.assess(grade(claim(), [0.01, -0.01, 0.02, 0.0]), [moved]).assessment == "scale-limited"
    still = {**grade(claim(), [0.0, 0.01, -0.01, 0.005]).record(), "label": "long"}
    g = protocol.assess(grade(claim(), [0.01, -0.01, 0.02, 0.0]), [still])
    assert g.assessment == "no trend with scale" and "long" in g.evidence
    other_rule = {**moved, "sesoi": 0.1}
    assert protocol.assess(grade(claim(), [0.01, -0.01, 0.02, 0.0]), [other_rule]).assessment \
        == "untested at a larger scale"
    assert protocol.assess(grade(claim(), [0.10, 0.12, 0.11, 0.09]), [still]).assessment is None


def test_a_move_within_the_two_runs_noise_is_no_trend():
    small = grade(claim(), [0.01, -0.01, 0.02, 0.0])          # 0.005, half-width ~0.021
    noisy = grade(claim(), [0.03, 0.01, 0.05, 0.03])          # 0.030, half-width ~0.026
    moved = noisy.effect - small.effect
    assert small.half_width < moved < math.hypot(small.half_width, noisy.half_width)
    g = protocol.assess(small, [{**noisy.record(), "label": "long"}])
    assert g.assessment == "no trend with scale" and "noise of the move" in g.evidence
    # the same move measured precisely by the larger run is a trend
    precise = grade(claim(), [0.029, 0.030, 0.031, 0.030])
    assert protocol.assess(grade(claim(), [0.01, -0.01, 0.02, 0.0]),
                           [{**precise.record(), "label": "long"}]).assessment == "scale-limited"


def test_claims_are_validated_when_declared():
    with pytest.raises(protocol.ProtocolError, match="direction"):
        claim(direction=0)
    with pytest.raises(protocol.ProtocolError, match="sesoi"):
        claim(sesoi=-0.1)
    with pytest.raises(protocol.ProtocolError, match="unit"):
        claim(unit="epoch")
    with pytest.raises(protocol.ProtocolError, match="quote"):
        claim(quote=" ")
    assert claim().planned({"quick": {"seeds": [0, 1, 2]}, "tiny": {"seeds": [0]}}) == {"quick": 3, "tiny": 1}


def test_records_have_the_protocol_fields_and_the_table_escapes_bars():
    g = grade(claim(text="|A - B| small", null="B itself"), [0.1, 0.12, 0.11])
    g.null = protocol.grade_null(g.claim, [0.0, 0.01, -0.01])
    rec = g.record()
    for name in ("quote", "source", "statistic", "direction", "sesoi", "comparator", "unit", "n", "estimate", "ci",
                 "verdict", "assessment", "evidence", "null"):
        assert name in rec
    table = protocol.claims_table([rec])
    assert "\\|A - B\\|" in table and table.count("\n") == 2
    assert all(word in protocol.verdict_key() for word in protocol.VERDICTS)


def test_chapter_results_grade_records_and_refuses_a_claim_twice(tmp_path, monkeypatch):
    from advbook import results

    monkeypatch.setenv("ADVBOOK_RESULTS", str(tmp_path))
    res = results.ChapterResults("99_test", "Test", {"profile": "quick"})
    g = res.grade(claim(null="B"), [0.1, 0.12, 0.11], null=[0.0, 0.01, -0.01], ours="three seeds")
    assert g.verdict == "reproduced" and res.data["claims"][0]["null"]["verdict"] == "not reproduced"
    with pytest.raises(ValueError, match="twice"):
        res.grade(claim(), [0.1])
    assert "SESOI" in res.claims_markdown()


def test_estimate_text_reads_a_graded_claim_or_its_record():
    g = protocol.grade(claim(), [0.10, 0.12, 0.14])
    lo, hi = g.ci
    assert protocol.estimate_text(g) == f"+0.120 [{lo:+.3f}, {hi:+.3f}]"
    assert protocol.estimate_text(g.record(), decimals=2, signed=False) == f"0.12 [{lo:.2f}, {hi:.2f}]"
    assert protocol.estimate_text(g, verdict=True).endswith(f" ({g.verdict})")
    assert protocol.estimate_text({"estimate": -0.5, "ci": [None, None]}) == "-0.500"
    assert protocol.estimate_text({"estimate": None, "ci": None, "verdict": "inconclusive"},
                                  verdict=True) == "not measured (inconclusive)"


def test_family_text_lists_each_setting():
    members = protocol.grade_family([(claim().at("eps 0.1"), [0.10, 0.12, 0.11]), (claim().at("eps 0.2"), [0.0, 0.01, -0.01])])
    text = protocol.family_text(members)
    assert text == "; ".join(f"{g.claim.setting}: {g.verdict} ({g.estimate:+.3f})" for g in members)
    assert text.startswith("eps 0.1: ") and "; eps 0.2: " in text
    assert protocol.family_text([], empty="not graded") == "not graded"


def test_mean_interval_text_drops_gated_replicates():
    from advbook import stats

    mean, lo, hi = stats.t_interval([0.5, 0.6, 0.7])
    assert protocol.mean_interval_text([0.5, float("nan"), 0.6, 0.7]) == f"{mean:.4f} [{lo:.3f}, {hi:.3f}]"
    assert protocol.mean_interval_text([0.25]) == "0.2500"
    assert protocol.mean_interval_text([float("nan")]) == "n/a" and protocol.mean_interval_text([]) == "n/a"
    assert protocol.mean_interval_text([1.0, 2.0], decimals=1, ci_decimals=0).startswith("1.5 [")
