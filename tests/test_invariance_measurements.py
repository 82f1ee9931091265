"""Unit tests of advbook.methods.invariance_measurements (chapter 1's measurements and grading)."""

import dataclasses
import math

import pytest
import torch

from advbook import cache, protocol
from advbook.methods import invariance as inv
from advbook.methods import invariance_measurements as meas

NAN = float("nan")


@pytest.fixture(scope="module")
def net_and_pairs():
    torch.manual_seed(0)
    net = inv.InvertibleClassifier((1, 8, 8), 10, levels=2, blocks=1, hidden=8, dense_blocks=1, dense_hidden=16,
                                   coupling="allinone", logit_bn=False, seed=0)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(24, 1, 8, 8)
    net.initialize(x)
    net.eval()
    y = torch.arange(24) % 10
    ia, ib = inv.pair_indices(y, 10, torch.Generator().manual_seed(1))
    return net, x, y, ia, ib


class Linear(torch.nn.Module):
    """A fixed stand-in for the reference CNN."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_scored_metamers_is_the_metamer_attack_on_the_pairs_computed_once(net_and_pairs):
    net, x, y, ia, ib = net_and_pairs
    oracle = Linear().eval()
    before = dict(cache.STATS)
    out = meas.scored_metamers(net, oracle, x, y, ia, ib)
    assert cache.STATS["misses"] == before["misses"] + 1
    direct = inv.metamer_attack(net, oracle, x[ia], y[ia], x[ib], y[ib])
    assert out.keys() == direct.keys()
    assert all(out[k] == direct[k] or (math.isnan(out[k]) and math.isnan(direct[k])) for k in out)
    again = meas.scored_metamers(net, oracle, x, y, ia, ib)  # a hit
    assert cache.STATS["misses"] == before["misses"] + 1 and cache.STATS["hits"] == before["hits"] + 1
    assert again["success"] == out["success"]
    # other pairs are another entry
    meas.scored_metamers(net, oracle, x, y, ib, ia)
    assert cache.STATS["misses"] == before["misses"] + 2


def test_round_trips_are_the_per_sample_errors_of_images_metamers_and_codes(net_and_pairs):
    net, x, _, ia, ib = net_and_pairs
    before = dict(cache.STATS)
    out = meas.round_trips(net, x, ia, ib)
    assert cache.STATS["misses"] == before["misses"] + 1
    assert out["data"].shape == (24,) and out["metamers"].shape == out["codes"].shape == (len(ia),)
    assert torch.equal(out["data"], inv.reconstruction_error(net, x))
    assert torch.equal(out["metamers"], inv.reconstruction_error(net, inv.metamers(net, x[ia], x[ib])))
    assert torch.equal(out["codes"], inv.code_roundtrip_error(net, inv.metamer_codes(net, x[ia], x[ib])))
    assert out["data"].max() < 1e-4
    meas.round_trips(net, x, ia, ib)
    assert cache.STATS["misses"] == before["misses"] + 1


def test_probe_differences_pair_the_models_of_one_seed():
    probes = {("ce", 0): 0.99, ("ce_mle", 0): 0.9, ("ice", 0): 0.5, ("ce_mle", 1): 0.8, ("ice", 1): 0.7}
    untrained, raw = {0: 0.85, 1: 0.6}, {0: 0.95, 1: 0.9}
    label, null, gain = meas.probe_differences(probes, untrained, raw, [0, 1])
    assert label == pytest.approx([0.05, 0.2]) and null == pytest.approx([0.1, 0.3])
    assert gain == pytest.approx([0.4, 0.1])
    assert meas.probe_differences(probes, untrained, raw, [1])[2] == pytest.approx([0.1])


def attack(sees_b, blend_b, blend_swap, sees_a):
    return {"sees_b_given_kept": sees_b, "blend_sees_b_given_kept": blend_b, "blend_sees_a_given_swapped": blend_swap,
            "sees_a_given_kept": sees_a}


def test_gated_statistics_drop_the_seeds_whose_models_fail_the_gate():
    attacks = {("ce_mle", 0): attack(0.9, 0.3, 0.4, 0.1), ("ice", 0): attack(0.5, 0.3, 0.4, 0.6),
               ("ce_mle", 1): attack(0.8, 0.2, 0.1, 0.2), ("ice", 1): attack(0.5, 0.3, 0.4, 0.9),
               ("ce_mle", 2): attack(0.7, 0.2, 0.1, 0.2), ("ice", 2): attack(0.5, 0.3, 0.4, 0.5)}
    gates = {("ce_mle", 0): (True, ""), ("ice", 0): (True, ""), ("ce_mle", 1): (True, ""),
             ("ice", 1): (False, "code round trip 0.5 > 0.1"), ("ce_mle", 2): (False, "image"), ("ice", 2): (True, "")}
    stat, null, look = meas.gated_statistics(attacks, gates, [0, 1, 2])
    assert stat[:2] == pytest.approx([0.6, 0.6]) and math.isnan(stat[2])
    assert null[:2] == pytest.approx([0.1, -0.1]) and math.isnan(null[2])
    assert look[0] == pytest.approx(0.5) and math.isnan(look[1]) and math.isnan(look[2])  # either model failing
    assert stat[0] == inv.metamer_statistic(attacks["ce_mle", 0]) and null[0] == inv.metamer_null(attacks["ce_mle", 0])


def run_of(ce=True, fail=()):
    seeds = [0, 1]
    probes = {("ce_mle", s): 0.9 - 0.1 * s for s in seeds} | {("ice", s): 0.5 for s in seeds}
    shift = {(o, s): {"unshifted": 0.99, "shifted": 0.3 + (0.2 if o == "ice" else 0) + 0.1 * s, "no patch": 0.8}
             for o in ("ce_mle", "ice") for s in seeds}
    if ce:
        probes[("ce", 0)] = 0.97
        shift[("ce", 0)] = {"unshifted": 0.99, "shifted": 0.2, "no patch": 0.75}
    attacks = {(o, s): {**attack(0.9, 0.3, 0.35, 0.2 if o == "ce_mle" else 0.5), "inn_keeps": 0.6, "success": 0.5,
                        "independence": 0.5, "sees_b_given_lost": 0.8} for o in ("ce_mle", "ice") for s in seeds}
    gates = {key: (key not in fail, "") for key in attacks}
    return meas.SettingRun(probes, {s: 0.8 for s in seeds}, {s: 0.2 for s in seeds}, attacks, gates, shift)


def test_replicates_and_nulls_of_every_claim_at_one_setting():
    run, raw = run_of(fail=[("ice", 1)]), {0: 0.9, 1: 0.9}
    values, nulls = meas.replicates(run, raw, [0, 1]), meas.nulls(run, raw, [0, 1])
    assert list(values) == list(inv.CLAIMS) and set(nulls) == set(meas.NULL_WHAT)
    assert values["ce-label-in-zn"] == pytest.approx([0.1, 0.0]) and values["ice-removes-label"] == pytest.approx([0.4, 0.3])
    assert values["metamers"] == pytest.approx([0.6, 0.6])
    assert values["ice-metamers-look"][0] == pytest.approx(0.3) and math.isnan(values["ice-metamers-look"][1])
    assert values["ice-shift"] == pytest.approx([0.2, 0.2]) == meas.shift_gain(run.shift, [0, 1])
    assert nulls["ce-label-in-zn"] == pytest.approx([0.1, 0.1]) and nulls["metamers"] == pytest.approx([0.05, 0.05])


def test_grade_settings_is_one_holm_family_and_a_weight_set_by_hand_is_an_ice_deviation():
    values = {"ours": [0.3, 0.32, 0.31], "authors": [0.1, -0.05, 0.02]}
    ours = {"ours": "text ours", "authors": "text authors"}
    dev = meas.weight_deviations(2.0, chosen=False)
    assert dev == ("nuisance weight set by hand (2), not chosen on a validation split",)
    assert meas.weight_deviations(2.0, chosen=True) == ()
    family = meas.grade_settings("ice-removes-label", values, ours, ["ours", "authors"], dev)
    assert [g.claim.key for g in family] == ["ice-removes-label@ours", "ice-removes-label@authors"]
    assert family[0].claim.deviations[-1] == dev[0] and dev[0] not in family[1].claim.deviations
    assert [g.ours for g in family] == ["text ours", "text authors"]
    direct = protocol.grade_family([(inv.claim_at("ice-removes-label", st), values[st]) for st in ("ours", "authors")])
    assert [(g.estimate, g.ci, g.verdict, g.level) for g in family] == [(g.estimate, g.ci, g.verdict, g.level)
                                                                       for g in direct]
    assert family[0].level != 0.95  # Holm over the two settings
    # a claim that is not about iCE keeps its deviations; one setting alone is a family of one
    label = meas.grade_settings("ce-label-in-zn", values, ours, ["ours"], dev)
    assert label[0].claim.deviations == inv.claim_at("ce-label-in-zn", "ours").deviations and len(label) == 1


def test_evidence_names_plain_ce_only_where_the_setting_trained_it():
    seeds = [0, 1]
    ours = meas.evidence(run_of(), seeds, 100, nce_weight=2.0)
    authors = meas.evidence(dataclasses.replace(run_of(ce=False), untrained_name="untrained additive INN"), seeds, 100)
    assert list(ours) == list(inv.CLAIMS)
    ms = protocol.mean_interval_text
    assert ours["ce-label-in-zn"] == f"probe CE+lik. {ms([0.9, 0.8])}, untrained INN {ms([0.8, 0.8])}; plain CE (seed 0) 0.970"
    assert authors["ce-label-in-zn"] == f"probe CE+lik. {ms([0.9, 0.8])}, untrained additive INN {ms([0.8, 0.8])}"
    assert ours["ice-removes-label"].endswith("; plain CE minus iCE (seed 0) +0.470; nuisance weight 2")
    assert authors["ice-removes-label"].endswith(f"online D_nc {ms([0.2, 0.2])}")
    assert "no patch: CE (seed 0) 0.750, CE+lik." in ours["ice-shift"] and "CE (seed" not in authors["ice-shift"]
    assert ours["metamers"].startswith("CE+lik., 2 seed(s) passing the gate") and ours["metamers"].endswith("100 pairs")
    failed = run_of(fail=[("ce_mle", 0), ("ce_mle", 1)])
    assert meas.evidence(failed, seeds, 100)["metamers"] == "no CE+likelihood model passes the invertibility gate"
    assert meas.metamer_evidence(run_of(fail=[("ce_mle", 1)]).attacks, run_of(fail=[("ce_mle", 1)]).gates, seeds,
                                 100).startswith("CE+lik., 1 seed(s) passing the gate")


def test_settings_text_reads_each_settings_graded_record():
    g = meas.grade_settings("ice-shift", {"ours": [0.2, 0.25, 0.3], "authors": [0.0, 0.01, -0.01]},
                            {"ours": "", "authors": ""}, ["ours", "authors"])
    graded = {x.claim.key: x.record() for x in g}
    text = meas.settings_text(graded, "ice-shift", ["ours", "authors"])
    first, second = text.split("; ")
    assert first == (f"{protocol.estimate_text(graded['ice-shift@ours'])} over 3 seed(s), graded "
                     f"*{g[0].verdict}* ({inv.SETTINGS['ours']})")
    assert second.endswith(f"graded *{g[1].verdict}* (the authors' setting)")
    assert meas.settings_text(graded, "ice-shift", ["ours"]) == first
