"""Unit tests of the self-gradient network (advbook.methods.self_gradient)."""

import math

import pytest
import torch

from advbook import attacks, evaluation, params, results
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


def _rows(plain, sgn, budgets=(1, 2, 4, 8), seconds=(10.0, 15.0)):
    rows = []
    for kind, accs, sec in (("plain", plain, seconds[0]), ("sgn", sgn, seconds[1])):
        rows += [{"seed": 0, "budget": b, "kind": kind, "ce": a, "train_seconds": sec * b} for b, a in zip(budgets, accs)]
    return rows


def test_sweep_convergence_speedup_censoring_and_grade():
    c = sg.sweep_convergence(_rows([0.1, 0.3, 0.5, 0.7], [0.2, 0.65, 0.7, 0.7]), "ce", 0.9)
    assert c["target"] == pytest.approx(0.63)
    assert c["plain"] == 8 and c["sgn"] == 2 and not c["censored"]
    assert c["speedup_epochs"] == pytest.approx(4) and c["speedup_seconds"] == pytest.approx(80 / 30)
    assert results.grade(c["graded"], 10, 2) == "partly reproduced"
    # the SGN reaches the target at the smallest budget: a lower bound below 10x is inconclusive
    censored = sg.sweep_convergence(_rows([0.1, 0.3, 0.5, 0.7], [0.7] * 4), "ce", 0.9)
    assert censored["censored"] and censored["max_measurable"] == 8
    assert math.isnan(censored["graded"]) and results.grade(censored["graded"], 10, 2) == "inconclusive"
    never = sg.sweep_convergence(_rows([0.1, 0.3, 0.5, 0.7], [0.0] * 4), "ce", 0.9)
    assert never["sgn"] is None and never["graded"] == 0.0
    # seeds are averaged before the target is applied
    two = _rows([0.1, 0.3, 0.5, 0.7], [0.2, 0.65, 0.7, 0.7]) + [dict(r, seed=1, ce=r["ce"] - 0.1)
                                                              for r in _rows([0.1, 0.3, 0.5, 0.7], [0.2, 0.65, 0.7, 0.7])]
    assert sg.sweep_convergence(two, "ce", 0.9)["target"] == pytest.approx(0.9 * 0.65)


def test_assessments_follow_their_rules():
    conv = {"speedup_epochs": 1.0, "plain": 2, "max_measurable": 2.0}
    assert sg.assess_convergence("reproduced", dict(conv, speedup_epochs=12), 0.5, False)[0] == "holds at this scale"
    assert sg.assess_convergence("inconclusive", conv, 0.5, True)[0] == "scale-limited"
    assert sg.assess_convergence("not reproduced", conv, 0.001, True)[0] == "scale-limited"
    assert sg.assess_convergence("not reproduced", conv, 0.5, True)[0] == "contradicted"
    assert sg.assess_convergence("not reproduced", conv, 0.5, False)[0] == "scale-limited"
    narrow = {"diff": 0.0, "low": -0.02, "high": 0.02}
    wide = {"diff": 0.02, "low": -0.05, "high": 0.09}
    assert sg.assess_robustness("not reproduced", narrow, 0.5, True)[0] == "contradicted"
    assert sg.assess_robustness("not reproduced", narrow, 0.5, False)[0] == "scale-limited"
    assert sg.assess_robustness("not reproduced", narrow, 0.001, True)[0] == "scale-limited"
    assert "too wide" in sg.assess_robustness("partly reproduced", wide, 0.5, True)[1]
    worse = {"diff": -0.08, "low": -0.12, "high": -0.04}
    assert sg.assess_robustness("not reproduced", worse, 0.5, False)[0] == "contradicted"
    assert sg.assess_robustness("not reproduced", worse, 0.001, False)[0] == "scale-limited"


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
    for bad, fragment in (({"budgets": [1, 2]}, "budgets"), ({"n_sweep": 1000}, "n_sweep"),
                          ({"eps_sweep": [0.3]}, "eps_sweep")):
        with pytest.raises(params.ParameterError, match=fragment):
            sg.check(params.resolve({"profile": "tiny", **bad}, sg.PROFILES, sg.SCHEMA))
