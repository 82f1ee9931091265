"""Unit tests of the self-gradient network (advbook.methods.self_gradient)."""

import math

import pytest
import torch

from advbook import attacks, evaluation, params, profiles, protocol
from advbook.data import TensorData
from advbook.methods import self_gradient as sg


def make(point="features", arch="smallcnn", dataset="mnist5k", act="relu", width=4, seed=0, scramble=True):
    torch.manual_seed(seed)
    model = sg.build("sgn", arch, dataset, 10, width, point, act=act).eval()
    if scramble:  # give the (zero-initialised) transform a non-zero output so the injection matters
        with torch.no_grad():
            for p in model.transform.parameters():
                p.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("point", sg.INJECTION_POINTS)
def test_zero_init_equals_plain_network(point):
    model = make(point, scramble=False)
    x = torch.rand(6, 1, 28, 28)
    torch.testing.assert_close(model(x), model.base(x))
    torch.testing.assert_close(model.plain_forward(x), model.base(x))


@pytest.mark.parametrize("point", sg.INJECTION_POINTS)
def test_injection_changes_output_and_points_differ(point):
    model = make(point)
    x = torch.rand(6, 1, 28, 28)
    assert (model(x) - model.base(x)).abs().max() > 1e-4
    channels = 1 if point == "input" else 4
    assert model.transform.net[0].in_channels == channels


def test_no_grad_forward_matches_grad_forward_and_is_detached():
    model = make()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        out_ng = model(x)
        pred = evaluation.predict(model, x)
    assert not out_ng.requires_grad
    torch.testing.assert_close(out_ng, model(x).detach())
    torch.testing.assert_close(pred, out_ng)


def test_batch_independence_uses_predicted_label_only():
    """Each sample's output depends only on that sample (sum-reduced probe loss, predicted label)."""
    model = make()
    x = torch.rand(8, 1, 28, 28)
    whole = model(x).detach()
    parts = torch.cat([model(x[i : i + 1]).detach() for i in range(8)])
    torch.testing.assert_close(whole, parts, rtol=1e-4, atol=1e-5)


def test_self_gradient_is_gradient_of_ce_wrt_predicted_label():
    model = make("input")
    x = torch.rand(4, 1, 28, 28)
    h = model.base.normalize(x).requires_grad_(True)
    z = model.base(x)
    loss = torch.nn.functional.cross_entropy(model.head(model.base.body(h)), z.argmax(1), reduction="sum")
    (expected,) = torch.autograd.grad(loss, h)
    torch.testing.assert_close(model.self_gradient(h.detach()), expected)


def test_normalized_gradient_unit_rms_and_zero_safe():
    g = torch.randn(3, 2, 5, 5) * torch.tensor([1e-6, 1.0, 1e3]).view(3, 1, 1, 1)
    g[0] = 0
    out = sg.normalized_gradient(g)
    rms = out.pow(2).flatten(1).mean(1).sqrt()
    assert out[0].abs().max() == 0
    torch.testing.assert_close(rms[1:], torch.ones(2), rtol=1e-4, atol=1e-4)


def test_attack_gradient_is_second_order_and_matches_finite_differences():
    """Input gradients pass through the self-gradient (create_graph) and are correct (gradcheck, float64)."""
    model = make("features", act="softplus").double()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    (full,) = torch.autograd.grad(model(x).logsumexp(1).sum(), x)
    with sg.detached_self_gradient(model):
        (held,) = torch.autograd.grad(model(x).logsumexp(1).sum(), x)
    assert not model.detach_self_gradient
    assert (full - held).abs().max() > 1e-6 * full.abs().max()
    x_small = torch.rand(1, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    f = lambda t: model(t)[:, :3]  # noqa: E731
    assert torch.autograd.gradcheck(f, (x_small,), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def test_training_step_reaches_transform_parameters():
    model = make(scramble=False).train()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    last = model.transform.net[-1].weight.grad
    assert last is not None and last.abs().max() > 0


def test_pgd_runs_through_sgn_and_lowers_accuracy():
    model = make()
    x = torch.rand(16, 1, 28, 28)
    y = model(x).argmax(1).detach()
    x_adv = attacks.pgd(model, x, y, 0.3, steps=5, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6
    assert (model(x_adv).argmax(1) == y).float().mean() < 1.0


@pytest.mark.parametrize("point", sg.INJECTION_POINTS)
def test_cifar_shaped_resnet(point):
    model = make(point, arch="resnet18", dataset="cifar10", width=4)
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    out = model(x)
    assert out.shape == (3, 10)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert g.shape == x.shape and torch.isfinite(g).all()
    with torch.no_grad():
        assert model(x).shape == (3, 10)
    assert len(model.state_dict()) == len(set(model.state_dict()))


def _hist(curve, seconds_per_epoch=10.0):
    return [{"epoch": i + 1, "robust": a, "train_seconds": seconds_per_epoch * (i + 1)} for i, a in enumerate(curve)]


def test_time_to_reach_interpolates_and_censors():
    assert sg.time_to_reach([0.1, 0.3, 0.5, 0.7], 0.7) == (4.0, True)
    t, reached = sg.time_to_reach([0.1, 0.3, 0.5, 0.7], 0.4)
    assert reached and t == pytest.approx(2.5)
    assert sg.time_to_reach([0.8, 0.9], 0.5) == (1.0, True)
    assert sg.time_to_reach([0.1, 0.2], 0.5) == (2.0, False)


def test_time_to_accuracy_speedups_in_epochs_and_seconds():
    tta = sg.time_to_accuracy(_hist([0.1, 0.3, 0.5, 0.7]), _hist([0.2, 0.7, 0.7, 0.7], 30.0))
    assert tta["target"] == pytest.approx(0.7)
    assert tta["plain"]["epochs"] == 4 and tta["sgn"]["epochs"] == 2 and not tta["censored"]
    assert tta["speedup_epochs"] == pytest.approx(2) and tta["cost_ratio"] == pytest.approx(3)
    assert tta["speedup_seconds"] == pytest.approx(40 / 60)
    assert tta["log10_speedup_epochs"] == pytest.approx(math.log10(2))
    assert sg.speed_values(tta) == {"speedup-epochs": tta["log10_speedup_epochs"],
                                    "speedup-seconds": tta["log10_speedup_seconds"]}
    never = sg.time_to_accuracy(_hist([0.1, 0.3, 0.5, 0.7]), _hist([0.1, 0.2, 0.3, 0.4]))
    assert never["censored"] and never["speedup_epochs"] == 1.0  # an upper bound: counted at the last epoch


def test_claims_are_declared_once_with_families_and_replicates():
    keys = [k for fam in sg.FAMILIES.values() for k in fam]
    assert sorted(keys) == sorted(sg.CLAIMS) and len(keys) == len(set(keys))
    for key, claim in sg.CLAIMS.items():
        assert claim.key == key and claim.unit == "training seed" and claim.replicates == "n_seeds"
        assert claim.null and claim.sesoi > 0
        assert claim.inferred == key.startswith("gain-worst")  # the worst case is our test, not the abstract's
    assert "PGD and CW" in sg.QUOTE_ROBUST and "at least 10X" in sg.QUOTE_SPEED
    for name in ("quick", "long", "full"):
        assert sg.PROFILES[name]["n_seeds"] >= 3
    cfg = params.resolve({"profile": "quick"}, sg.PROFILES, sg.SCHEMA)
    claims = sg.claims_for(cfg)
    assert all(c.deviations[-len(sg.deviations(cfg)):] == sg.deviations(cfg) for c in claims.values())
    assert any("CIFAR-10" in d for d in sg.deviations(cfg))


def test_statistics_readings():
    acc_sgn = {"PGD-CE": 0.6, "PGD-CW": 0.55, "worst case": 0.5}
    acc_plain = {"PGD-CE": 0.5, "PGD-CW": 0.5, "worst case": 0.5}
    v = sg.robustness_values(acc_sgn, acc_plain)
    assert v["gain-pgd-points"] == pytest.approx(0.1) and v["gain-pgd-relative"] == pytest.approx(0.2)
    assert v["gain-cw-points"] == pytest.approx(0.05) and v["gain-worst-relative"] == 0
    assert math.isnan(sg.gain(0.1, 0.0, "relative"))
    with pytest.raises(ValueError, match="reading"):
        sg.gain(0.1, 0.2, "ratio")


def test_null_baseline_is_never_graded_reproduced():
    """The null (a second plain AT run in place of the SGN) fed through every claim's statistic and grading."""
    # three seeds of a plain run against another: robust accuracies and learning curves that differ by
    # seed noise only (offsets of a few points either way), the same cost per epoch up to timing noise
    offsets, seconds = (0.012, -0.018, 0.004), (10.2, 9.7, 10.1)
    rob = [sg.robustness_values({"PGD-CE": 0.5 + d, "PGD-CW": 0.45 - d, "worst case": 0.4 + d / 2},
                                {"PGD-CE": 0.5, "PGD-CW": 0.45, "worst case": 0.4}) for d in offsets]
    speed = [sg.speed_values(sg.time_to_accuracy(_hist([0.1, 0.3, 0.5, 0.6]),
                                                 _hist([0.1 + d, 0.3 + d, 0.5 + d, 0.6 + d], sec)))
             for d, sec in zip(offsets, seconds)]
    values = {**{k: [r[k] for r in rob] for k in rob[0]}, **{k: [v[k] for v in speed] for k in speed[0]}}
    for key, claim in sg.CLAIMS.items():
        null = protocol.grade_null(claim, values[key])
        assert null["verdict"] not in ("reproduced", "partly reproduced"), (key, null)
    # the same statistics do pass a real effect of the paper's size
    real = [sg.robustness_values({"PGD-CE": 0.6 + e, "PGD-CW": 0.55, "worst case": 0.5},
                                 {"PGD-CE": 0.5, "PGD-CW": 0.45, "worst case": 0.4}) for e in (0.0, 0.01, -0.01)]
    assert protocol.grade(sg.CLAIMS["gain-pgd-points"], [r["gain-pgd-points"] for r in real]).verdict == "reproduced"


def test_fixed_probe_label_smooths_the_boundary_and_restores():
    model = make()
    x = torch.rand(6, 1, 28, 28)
    out = model(x).detach()
    probe = model.plain_forward(x).argmax(1)  # the label the SGN's probe uses: its plain path's prediction
    with sg.fixed_probe_label(model, probe):
        torch.testing.assert_close(model(x).detach(), out)  # the same function
    other = (probe + 1) % 10
    with sg.fixed_probe_label(model, other):
        assert (model(x).detach() - out).abs().max() > 1e-5
    assert model.probe_label is None
    y = out.argmax(1)
    x_adv = sg.fixed_label_pgd(model, x, y, eps=0.3, steps=3, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and model.probe_label is None
    with sg.fixed_probe_label(torch.nn.Linear(2, 2), y) as plain:  # a model without a probe: a no-op
        assert isinstance(plain, torch.nn.Linear)


def test_plain_path_held_gradient_and_injection_ratio():
    model = make()
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(sg.PlainPath(model)(x), model.base(x))
    torch.testing.assert_close(sg.HeldSelfGradient(model)(x), model(x))
    assert not model.detach_self_gradient
    ratio = sg.injection_ratio(model, x)
    assert ratio.shape == (5,) and (ratio > 0).all()
    assert (sg.injection_ratio(make(scramble=False), x) == 0).all()
    assert sg.prediction_change(make(scramble=False), x) == 0.0


@pytest.mark.slow  # 69 CPU-seconds measured (two SGN/AT trainings on CIFAR-shaped data)
def test_train_pair_on_cifar_shaped_data_uses_augmentation():
    """Issue 13: the CIFAR path (random crop + flip with the training generator) trains both models."""
    gen = torch.Generator().manual_seed(0)
    ds = TensorData("cifar10", torch.rand(16, 3, 32, 32, generator=gen), torch.arange(16) % 10,
                    torch.rand(8, 3, 32, 32, generator=gen), torch.arange(8) % 10, tuple(str(i) for i in range(10)))
    cfg = params.resolve({"profile": "tiny", **sg.FULL_PATH_TEST, "batch_size": 8}, sg.PROFILES, sg.SCHEMA)
    pair = sg.train_pair(ds, cfg, seed=0, epochs=1)
    for kind in ("plain", "sgn"):
        model, hist = pair[kind]
        assert len(hist) == 1 and hist[0]["epoch"] == 1
    assert isinstance(pair["sgn"][0], sg.SelfGradientNet)


def test_profiles_validate_and_bad_values_fail():
    for name in ("quick", "long", "full", "tiny"):
        cfg = params.resolve({"profile": name}, sg.PROFILES, sg.SCHEMA)
        assert cfg.point in sg.INJECTION_POINTS
    with pytest.raises(params.ParameterError, match="point"):
        params.resolve({"profile": "tiny", "point": "logits"}, sg.PROFILES, sg.SCHEMA)
    with pytest.raises(params.ParameterError, match="epochs"):
        params.resolve({"profile": "tiny", "epochs": -3}, sg.PROFILES, sg.SCHEMA)
    for bad, fragment in (({"epochs": 1}, "epochs"), ({"n_sweep": 1000}, "n_sweep"),
                          ({"eps_sweep": [0.3]}, "eps_sweep")):
        with pytest.raises(params.ParameterError, match=fragment):
            sg.check(params.resolve({"profile": "tiny", **bad}, sg.PROFILES, sg.SCHEMA))


# ---------------------------------------------------------------------------- equal attack sets (issue 22)

TINY_AA = dict(components=["apgd-ce"], n_iter=2, n_queries=10, n_target_classes=1)


def _plain(seed):
    torch.manual_seed(seed)
    return sg.build("plain", "smallcnn", "mnist5k", 10, 4).eval()


def test_every_model_faces_the_same_attacks_except_the_declared_sgn_only_ones():
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) % 10
    ev = sg.evaluate_seed(_plain(0), make(), _plain(1), _plain(2), x, y, 0.2, steps=2, step_size=None,
                          aa_budget=TINY_AA, seed=0)
    faced = {name: set(e["masks"]) for name, e in ev.items()}
    assert faced["plain AT"] == faced["plain AT (null)"] == set(sg.COMMON_ATTACKS) == set(sg.attack_set("plain"))
    assert faced["SGN AT"] == set(sg.attack_set("sgn"))
    assert faced["SGN AT"] - faced["plain AT"] == set(sg.SGN_ONLY)
    assert all(reason for reason in sg.SGN_ONLY.values())
    for name, e in ev.items():  # the worst case is over every attack the model faced
        assert torch.equal(e["worst"], torch.stack(list(e["masks"].values())).all(0))
        assert e["kind"] == ("sgn" if name == "SGN AT" else "plain")
    # the transfer sources: the shared surrogate is the same model for all three, the partner is the other method
    assert ev["plain AT"]["sources"][sg.SHARED_SURROGATE] is ev["SGN AT"]["sources"][sg.SHARED_SURROGATE]
    assert isinstance(ev["plain AT"]["sources"][sg.PARTNER], sg.SelfGradientNet)
    assert not isinstance(ev["SGN AT"]["sources"][sg.PARTNER], sg.SelfGradientNet)


def test_check_attack_sets_fails_when_one_model_gets_an_attack_the_other_does_not():
    m = torch.ones(4, dtype=torch.bool)
    common = {a: m for a in sg.COMMON_ATTACKS}
    sgn = {"kind": "sgn", "masks": {**common, **{a: m for a in sg.SGN_ONLY}}}
    plain = {"kind": "plain", "masks": dict(common)}
    sg.check_attack_sets({"plain AT": plain, "SGN AT": sgn, "null": dict(plain)})
    extra = {"kind": "plain", "masks": {**common, "transfer from a private surrogate": m}}
    with pytest.raises(ValueError, match="different attacks"):
        sg.check_attack_sets({"plain AT": extra, "SGN AT": sgn})
    missing = {"kind": "sgn", "masks": {a: m for a in (*sg.COMMON_ATTACKS[:-1], *sg.SGN_ONLY)}}
    with pytest.raises(ValueError, match="different attacks"):
        sg.check_attack_sets({"plain AT": plain, "SGN AT": missing})
    sgn_only_on_plain = {"kind": "plain", "masks": {**common, "PGD (label held fixed)": m}}
    with pytest.raises(ValueError, match="not an SGN"):
        sg.check_attack_sets({"plain AT": sgn_only_on_plain, "SGN AT": sgn})


def test_sgn_only_attacks_are_white_box_pgd_on_a_plain_network():
    """The reason SGN_ONLY gives: on a plain net, the label-fixed attack is exactly its white-box PGD."""
    plain = _plain(0)
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    y = torch.arange(5)
    for loss in ("ce", "cw"):
        a = attacks.pgd(plain, x, y, 0.2, steps=3, loss=loss, generator=torch.Generator().manual_seed(0))
        b = sg.fixed_label_pgd(plain, x, y, eps=0.2, steps=3, loss=loss, generator=torch.Generator().manual_seed(0))
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="another model"):
        sg.evaluate(plain, x, y, 0.2, steps=1, step_size=None, aa_budget=TINY_AA, surrogate=plain,
                    partner=_plain(1))


# ---------------------------------------------------------------------------- the checklist over every seed


def _seed_checklist(flat, found, restart, n=100, item6_ok=True):
    from advbook import masking

    items = [masking.Item(masking.ITEMS[0], "", "", flat <= 0.01, {"flat_share": flat}),
             masking.Item(masking.ITEMS[1], "", "", True, {}), masking.Item(masking.ITEMS[2], "", "", True, {}),
             masking.Item(masking.ITEMS[3], "", "", True, {"found": found, "restart_found": restart}),
             masking.Item(masking.ITEMS[4], "", "", True, {"found": 0, "restart_found": restart}),
             masking.Item(masking.ITEMS[5], "", "", item6_ok, {})]
    return masking.Checklist(items, {}, torch.ones(n, dtype=torch.bool))


def _sweep(n=100, top_robust=0, rise=0):
    """PGD masks of items 2 and 3 on n points: eps 0.1 / 0.5, steps 10 / 100 (``rise`` more points with more steps)."""
    def mask(k):
        m = torch.zeros(n, dtype=torch.bool)
        m[:k] = True
        return m
    return {"eps": {0.1: mask(60), 0.5: mask(top_robust)}, "steps": {10: mask(40), 100: mask(40 + rise)}}


def test_pooled_checklist_has_more_power_than_each_seed():
    from advbook import masking

    ok6 = masking.Item(masking.ITEMS[5], "", "", True, {})
    # Square finds 3 points white-box missed on each seed and a restart none: each seed alone passes
    # (3 <= 1.96 sqrt(3) = 3.39), the pooled 9 against 0 fails (9 > 1.96 * 3 = 5.88)
    seeds = [_seed_checklist(0.0, 3, 0) for _ in range(3)]
    for cl in seeds:
        _, d = masking.beats_white_box(torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool),
                                       torch.ones(3, dtype=torch.bool))
        assert d["found"] - d["restart_found"] <= d["allowed"]
    pooled = sg.pooled_checklist(seeds, [_sweep() for _ in seeds], ok6)
    assert not pooled.items[3].passed and pooled.items[3].values["found"] == 9
    assert pooled.failed() == [masking.ITEMS[3]]
    # an honest model: as many restart finds as Square finds
    honest = sg.pooled_checklist([_seed_checklist(0.0, 2, 2) for _ in range(3)], [_sweep() for _ in range(3)], ok6)
    assert honest.passed and honest.items[3].values["per_seed"] == [2, 2, 2]
    assert len(honest.white) == 300 and honest.curves["eps"][0.5] == 0.0
    # items 2 and 3 from the pooled masks: 10% left at the largest eps fails; 10 more points with more steps fails
    assert not sg.pooled_checklist([_seed_checklist(0.0, 0, 0)] * 3, [_sweep(top_robust=10)] * 3, ok6).items[1].passed
    assert not sg.pooled_checklist([_seed_checklist(0.0, 0, 0)] * 3, [_sweep(rise=10)] * 3, ok6).items[2].passed
    # a flat-gradient share of 3% on one seed of three: 1% pooled passes, 6% fails
    assert sg.pooled_checklist([_seed_checklist(0.03, 0, 0), _seed_checklist(0, 0, 0), _seed_checklist(0, 0, 0)],
                               [_sweep()] * 3, ok6).items[0].passed
    assert not sg.pooled_checklist([_seed_checklist(0.06, 0, 0)] * 3, [_sweep()] * 3, ok6).items[0].passed
    # item 6 is the pooled item passed in; an item not run on a seed fails
    bad6 = masking.Item(masking.ITEMS[5], "", "", False, {})
    assert sg.pooled_checklist(seeds, [_sweep()] * 3, bad6).items[5] is bad6
    not_run = _seed_checklist(0.0, 0, 0)
    not_run.items[4] = masking.Item(masking.ITEMS[4], "not run", "", False, {})
    assert not sg.pooled_checklist([not_run, *seeds[:2]], [_sweep()] * 3, ok6).items[4].passed
    with pytest.raises(ValueError, match="one sweep per checklist"):
        sg.pooled_checklist(seeds, [_sweep()], ok6)



@pytest.mark.slow  # 19 s measured on a loaded machine (two seeds' evaluations and four checklists)
def test_checklists_pair_each_model_with_its_control_per_seed_and_pooled():
    from advbook import masking

    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    y = torch.arange(6) % 10
    models = {"plain AT": {}, "SGN AT": {}}
    ev = {}
    for s in (0, 1):
        models["plain AT"][s], models["SGN AT"][s] = _plain(10 + s), make(seed=s)
        ev[s] = sg.evaluate_seed(models["plain AT"][s], models["SGN AT"][s], _plain(20 + s), _plain(30 + s), x, y,
                                 0.2, steps=2, step_size=None, aa_budget=TINY_AA, seed=s)
    cfg = {"eps": 0.2, "eps_sweep": [0.2, 0.5], "steps_sweep": [1, 2], "eval_steps": 2, "eval_step_size": None,
           "square_queries": 5, "n_sweep": 4}
    per_seed, pooled = sg.checklists(models, ev, x, y, cfg)
    assert set(per_seed) == set(pooled) == set(sg.CHECKLIST_CONTROLS) and all(list(p) == [0, 1] for p in per_seed.values())
    white, strong = sg.pooled_masks(ev, "SGN AT")
    assert torch.equal(white, torch.cat([sg.pgd_set(ev[s]["SGN AT"]) for s in ev])) and len(strong) == 12
    for name, control in sg.CHECKLIST_CONTROLS.items():
        # item 6 against the declared control: on each seed's points, and over every seed's points pooled
        for s in ev:
            item = per_seed[name][s].items[5]
            want = masking.overstatement_item(sg.pgd_set(ev[s][name]), ev[s][name]["masks"]["AutoAttack"],
                                              sg.pgd_set(ev[s][control]), ev[s][control]["masks"]["AutoAttack"])
            assert item.values["control"] == control and item.values["diff"] == want.values["diff"]
        pooled6 = pooled[name].items[5]
        assert pooled6.values["n"] == 12 and pooled6.values["control"] == control
        assert pooled6.values["overstated"] == pytest.approx(
            masking.overstatement(*sg.pooled_masks(ev, name)).float().mean().item())
        # the pooled items 4 and 5 sum the seeds' counts; the white-box masks are every seed's, in seed order
        assert pooled[name].items[3].values["per_seed"] == [per_seed[name][s].items[3].values["found"] for s in ev]
        assert torch.equal(pooled[name].white, torch.cat([per_seed[name][s].white for s in ev]))


def _eval_acc(sgn, plain, null):
    acc = lambda v: {"PGD-CE": v, "PGD-CW": v - 0.1, "worst case": v - 0.2}  # noqa: E731
    return {"SGN AT": {"acc": acc(sgn)}, "plain AT": {"acc": acc(plain)}, "plain AT (null)": {"acc": acc(null)}}


def test_claim_values_and_what_we_measured_per_claim():
    tta = {s: sg.time_to_accuracy(_hist([0.1, 0.3, 0.5, 0.7]), _hist(c, 30.0))
           for s, c in ((3, [0.2, 0.7, 0.7, 0.7]), (4, [0.1, 0.2, 0.3, 0.4]))}  # the SGN of seed 4 never gets there
    ev = {3: _eval_acc(0.6, 0.5, 0.52), 4: _eval_acc(0.7, 0.5, 0.46)}
    v = sg.claim_values(tta, ev)
    assert set(v) == set(sg.CLAIMS) and all(len(x) == 2 for x in v.values())
    assert v["speedup-epochs"] == [pytest.approx(math.log10(2)), 0.0]
    assert v["gain-pgd-points"] == [pytest.approx(0.1), pytest.approx(0.2)]
    assert v["gain-worst-relative"] == [pytest.approx(0.1 / 0.3), pytest.approx(0.2 / 0.3)]
    null = sg.claim_values(tta, ev, "plain AT (null)")  # the null run in the SGN's place, the same statistics
    assert null["gain-cw-points"] == [pytest.approx(0.02), pytest.approx(-0.04)]
    with pytest.raises(ValueError, match="same seeds"):
        sg.claim_values({3: tta[3]}, ev)
    assert sg.mean_accuracy(ev, "SGN AT", "PGD-CW") == pytest.approx(0.55)
    assert sg.mean_cost_ratio(tta) == pytest.approx(3.0)
    assert sg.ours("speedup-epochs", v["speedup-epochs"], tta, ev) == (
        "speed-up in epochs per seed: 2.00x, 1.00x; an SGN epoch costs 3.00x a plain one; the SGN never reached "
        "the target in 1 of 2 seed(s), where its speed-up is an upper bound")
    assert sg.ours("gain-worst-relative", v["gain-worst-relative"], tta, ev) == (
        "worst case: SGN 0.450 vs plain AT 0.300 (mean over seeds)")


def test_masking_pattern_flags_a_gain_the_worst_case_takes_away():
    def graded(pgd, cw, worst):
        return {k: protocol.Graded(sg.CLAIMS[k], 3, sum(ci) / 2, ci, "", 0.95, "t", "", [])
                for k, ci in (("gain-pgd-points", pgd), ("gain-cw-points", cw), ("gain-worst-points", worst))}

    assert sg.masking_pattern(graded((0.02, 0.1), (0.01, 0.2), (-0.05, 0.1))) == ["PGD", "CW"]
    assert sg.masking_pattern(graded((0.02, 0.1), (-0.01, 0.2), (-0.05, 0.1))) == ["PGD"]
    assert sg.masking_pattern(graded((0.02, 0.1), (0.01, 0.2), (0.01, 0.1))) == []  # the gain survives
    assert sg.masking_pattern(graded((-0.02, 0.1), (-0.01, 0.2), (-0.05, 0.1))) == []  # no gain to take away


# ---------------------------------------------------------------------------- the AutoAttack calibration on the SGN


def _record(misses, fab_misses=0, eps=0.2):
    from advbook import evaluation

    quick = {**profiles.PROFILES["quick"].autoattack, "components": ["apgd-ce", "apgd-t", "square"]}
    fab = {**quick, "components": ["apgd-ce", "apgd-t", "fab-t", "square"]}
    agree = lambda m: {"n": 150, "only_candidate": m, "only_reference": 1, "both": 40, "neither": 109 - m}  # noqa: E731
    return {"measured": "2026-12-03T10:00:00+0000", "git_sha": "0123456789abcdef", "eps": eps,
            "model_fingerprint": "abc", "reference": {"robust": 0.30},
            "candidates": {"100 iterations": {"budget": quick, "robust": 0.30 + misses / 150, "agreement": agree(misses)},
                           "100 iterations, with FAB-T": {"budget": fab, "robust": 0.30, "agreement": agree(fab_misses)}}}


def test_calibration_summary_reads_the_per_sample_misses_and_sets_the_deviation():
    from advbook import evaluation

    quick = dict(profiles.PROFILES["quick"].autoattack)
    cfg = params.resolve({"profile": "quick"}, sg.PROFILES, sg.SCHEMA)
    s = sg.calibration_summary(_record(3), quick, fingerprint="abc", eps=0.2)
    assert s["applies"] and s["misses"] == 3 and s["fab_misses"] == 0 and s["same_weights"] and s["n"] == 150
    claims = sg.claims_for(cfg, s)
    for key, claim in claims.items():  # the deviation sits on the worst-case claims only
        assert any("standard AutoAttack breaks" in d for d in claim.deviations) == key.startswith("gain-worst")
    assert "3 point(s)" in sg.calibration_sentence(s) and "deviation" in sg.calibration_sentence(s)
    clean = sg.calibration_summary(_record(0), quick, fingerprint="other", eps=0.2)
    assert clean["same_weights"] is False and sg.calibration_deviation(clean) == ()
    assert "deviation" not in sg.calibration_sentence(clean)
    elsewhere = sg.calibration_summary(_record(3, eps=0.3), quick, eps=0.2)  # measured at another eps
    assert not elsewhere["applies"] and sg.calibration_deviation(elsewhere) == ()
    full = sg.calibration_summary(_record(3), profiles.STANDARD_AUTOATTACK_BUDGET, eps=0.2)
    assert full["standard"] and sg.calibration_deviation(full) == ()
    none = sg.calibration_summary(None, quick, eps=0.2)
    assert not none["applies"] and "no per-sample calibration" in sg.calibration_sentence(none)


def test_calibration_knows_the_sgn_model():
    from advbook import calibration

    assert calibration.MODELS["sgn"]["eps"] == sg.PROFILES["quick"]["eps"]
    assert calibration.MODELS["sgn"]["n_eval"] <= sg.PROFILES["quick"]["n_eval"]
    assert str(calibration.MODELS["sgn"]["out"]).endswith(sg.CALIBRATION)
    with pytest.raises(ValueError, match="model"):
        calibration.measure(model="resnet")


def test_chapter_autoattack_budget_and_the_sentence_on_the_profile_budget():
    from advbook import evaluation

    cfg = params.resolve({"profile": "quick"}, sg.PROFILES, sg.SCHEMA)
    cfg["autoattack"] = dict(profiles.PROFILES["quick"].autoattack)
    budget = sg.autoattack_budget(cfg)
    assert budget == {**profiles.PROFILES["quick"].autoattack, **sg.AUTOATTACK_OVERRIDES["quick"],
                      "components": list(profiles.PROFILES["quick"].autoattack["components"])}
    assert cfg["autoattack"] == profiles.PROFILES["quick"].autoattack  # the profile's budget is left as it is
    assert "standard AutoAttack adds FAB-T" in sg.budget_text(budget)
    assert sg.budget_text(profiles.STANDARD_AUTOATTACK_BUDGET).endswith("(the standard AutoAttack)")
    rec = _record(1)
    nine = {**budget, "components": list(budget["components"])}
    rec["candidates"]["100 iterations, 9 targets"] = {"budget": nine, "robust": 0.30, "agreement": {
        "n": 150, "only_candidate": 0, "only_reference": 0, "both": 45, "neither": 105}}
    used = sg.calibration_summary(rec, budget, eps=0.2)
    profile = sg.calibration_summary(rec, cfg["autoattack"], eps=0.2)
    assert used["misses"] == 0 and profile["misses"] == 1
    text = sg.calibration_sentence(used, profile)
    assert text.startswith("On the first training seed's quick SGN, the profile's budget left robust 1 of 150")
    assert sg.calibration_sentence(profile, profile) == sg.calibration_sentence(profile)  # no departure, no lead
