"""Unit tests of the self-gradient network (advbook.methods.self_gradient)."""

import math

import pytest
import torch

from advbook import attacks, evaluation, params, protocol
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
