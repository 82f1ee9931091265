"""Unit tests of the self-gradient network (advbook.methods.self_gradient)."""

import pytest
import torch

from advbook import attacks, evaluation, params
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


def test_convergence_and_verdicts():
    plain = [{"epoch": e, "pgd": a, "train_seconds": 10.0 * e} for e, a in enumerate([0.1, 0.3, 0.5, 0.6, 0.7], 1)]
    sgn = [{"epoch": e, "pgd": a, "train_seconds": 15.0 * e} for e, a in enumerate([0.2, 0.65, 0.7, 0.7, 0.7], 1)]
    c = sg.convergence(plain, sgn, "pgd", 0.9)
    assert c["target"] == pytest.approx(0.63)
    assert c["plain"]["epoch"] == 5 and c["sgn"]["epoch"] == 2
    assert c["speedup_epochs"] == pytest.approx(2.5) and c["speedup_seconds"] == pytest.approx(50 / 30)
    assert sg.convergence_verdict(c["speedup_epochs"], c["speedup_seconds"], c["max_measurable"])[0] == "inconclusive"
    assert sg.convergence_verdict(12, 11, 20)[0] == "reproduced"
    assert sg.convergence_verdict(12, 3, 20)[0] == "partly reproduced"
    assert sg.convergence_verdict(1.2, 0.5, 20)[0] == "not reproduced"
    never = sg.convergence(plain, [dict(r, pgd=0.0) for r in sgn])
    assert never["speedup_epochs"] == 0.0
    assert sg.robustness_verdict(0.1, 0.1, 0.08, 0.01)[0] == "reproduced"
    assert sg.robustness_verdict(0.1, 0.1, 0.03, 0.01)[0] == "partly reproduced"
    assert sg.robustness_verdict(0.1, 0.1, 0.01, 0.01)[0] == "not reproduced"


def test_masking_checklist_pass_and_fail():
    good = sg.masking_checklist({0.1: 0.8, 0.3: 0.5, 1.0: 0.0}, {10: 0.5, 50: 0.49}, {"PGD": 0.5}, {"Square": 0.6}, 0.49)
    assert all(item["passed"] for item in good)
    bad = sg.masking_checklist({0.1: 0.8, 0.3: 0.5, 1.0: 0.3}, {10: 0.5, 50: 0.6}, {"PGD": 0.7}, {"Square": 0.6}, 0.65)
    assert not any(item["passed"] for item in bad)


def test_profiles_validate_and_bad_values_fail():
    for name in ("quick", "full", "tiny"):
        cfg = params.resolve({"profile": name}, sg.PROFILES, sg.SCHEMA)
        assert cfg.point in sg.INJECTION_POINTS
    with pytest.raises(params.ParameterError, match="point"):
        params.resolve({"profile": "tiny", "point": "logits"}, sg.PROFILES, sg.SCHEMA)
    with pytest.raises(params.ParameterError, match="epochs"):
        params.resolve({"profile": "tiny", "epochs": -3}, sg.PROFILES, sg.SCHEMA)
