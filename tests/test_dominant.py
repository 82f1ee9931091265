"""Unit tests of advbook.methods.dominant (dominant patterns and universal baselines)."""

import pytest
import torch
from torch import nn

from advbook import models, params
from advbook.methods import dominant as dm


def small_model(dataset="mnist5k", seed=0):
    torch.manual_seed(seed)
    return models.build("smallcnn", dataset, 10, width=4).eval()


def images(n=32, shape=(1, 28, 28), seed=0):
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def test_profiles_resolve_and_bad_values_fail():
    for profile in ("quick", "full", "tiny"):
        cfg = params.resolve({"profile": profile}, dm.PROFILES, dm.SCHEMA)
        assert set(cfg.methods) <= set(dm.METHODS)
    with pytest.raises(params.ParameterError, match="methods"):
        params.resolve({"profile": "tiny", "methods": ["deepfool"]}, dm.PROFILES, dm.SCHEMA)
    with pytest.raises(params.ParameterError, match="eps_grid"):
        params.resolve({"profile": "tiny", "eps_grid": [0.1, -0.2]}, dm.PROFILES, dm.SCHEMA)
    with pytest.raises(params.ParameterError, match="steps"):
        params.resolve({"profile": "tiny", "steps": 0}, dm.PROFILES, dm.SCHEMA)


def make(method, model, x, eps, y=None, **loop):
    """A chapter-4 pattern through the registry, labels only where the method uses them."""
    spec = dm.UNIVERSAL[method]
    options = {} if method == "random" else {"steps": 6, "batch_size": 16, **loop}
    return spec(model, x, eps, y=y if spec.labels else None, norm="linf",
                generator=torch.Generator().manual_seed(0), **options)


@pytest.mark.parametrize("method", dm.METHODS)
def test_patterns_respect_budget(method):
    model, x = small_model(), images()
    y = torch.randint(0, 10, (len(x),), generator=torch.Generator().manual_seed(1))
    record = []
    delta = make(method, model, x, 0.1, y=y, **({} if method == "random" else {"record": record}))
    assert delta.shape == (1, 1, 28, 28)
    assert delta.abs().max() <= 0.1 + 1e-7
    if method == "random":
        assert torch.allclose(delta.abs(), torch.full_like(delta, 0.1))
    else:
        assert len(record) == 6 and all(torch.isfinite(torch.tensor(record)))


def test_dominant_objective_is_label_free_and_increases():
    model, x = small_model(), images(64)
    objective = dm.dominant_objective(model, "logits")
    with pytest.raises(ValueError, match="label-free"):
        dm.dominant_pattern(model, x, 0.3, y=torch.zeros(64, dtype=torch.long))
    record = []
    delta = dm.dominant_pattern(model, x, 0.3, steps=60, batch_size=64, generator=torch.Generator().manual_seed(0),
                                record=record)
    assert record[-1] > record[0]
    # eq. (1) at the returned delta: 1 - the objective equals 1 - mean cosine, computed by hand
    g_p, g_d = model(dm.perturb(x, delta)), model(delta)
    by_hand = (g_p @ g_d.T).squeeze(1) / (g_p.norm(dim=1) * g_d.norm())
    assert torch.allclose(objective(x, delta, None, None), by_hand, atol=1e-5)


def test_same_seed_same_pattern():
    model, x = small_model(), images()
    a = make("dominant_features", model, x, 0.2, steps=5, batch_size=8)
    b = make("dominant_features", model, x, 0.2, steps=5, batch_size=8)
    assert torch.equal(a, b)


def test_sgd_uap_needs_labels():
    model, x = small_model(), images(8)
    with pytest.raises(ValueError, match="labels"):
        dm.UNIVERSAL["sgd_uap"](model, x, 0.1, steps=1, batch_size=8)


class Constant(nn.Module):
    """A toy classifier: class = argmax of a fixed linear map of the image (mean-centred)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(784, 3)

    def features(self, x):
        return x.flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


def test_metrics_by_hand():
    model, x = Constant(), images(50)
    delta = torch.full((1, 1, 28, 28), 0.2)
    out = dm.evaluate_pattern(model, x, delta, 3)
    clean = model(x).argmax(1)
    pert = model((x + delta).clamp(0, 1)).argmax(1)
    alone = model(delta).argmax(1)
    assert out["fooling_rate"] == pytest.approx((pert != clean).float().mean().item())
    assert out["dominance"] == pytest.approx((pert == alone).float().mean().item())
    assert sum(out["perturbed_hist"]) == 50 and sum(out["clean_hist"]) == 50
    # a zero pattern fools nobody
    assert dm.evaluate_pattern(model, x, torch.zeros_like(delta), 3)["fooling_rate"] == 0.0


def test_huge_pattern_dominates():
    # a strong pattern on a linear model: x + delta is classified like delta (dominance 1)
    model, x = Constant(), images(40) * 0.01
    w = model.head.weight[1] - model.head.weight[[0, 2]].max(0).values
    delta = (w.sign() * 1.0).view(1, 1, 28, 28)
    out = dm.evaluate_pattern(model, x, delta, 3)
    assert out["pattern_class"] == 1
    assert out["dominance"] > 0.9


def test_downstream_head_on_frozen_backbone():
    backbone = small_model()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    x = images(96)
    y = torch.randint(0, 10, (96,), generator=torch.Generator().manual_seed(0))
    y5, k = dm.downstream_labels(y, "mod5")
    assert k == 5 and y5.max() < 5 and torch.equal(y5, y % 5)
    assert dm.downstream_labels(y, "parity")[1] == 2
    net, hist = dm.train_downstream_head(backbone, x, y5, k, epochs=2, batch_size=32, lr=1e-2)
    assert all(torch.equal(before[n], v) for n, v in backbone.state_dict().items())  # backbone untouched
    assert net(x).shape == (96, 5) and len(hist) == 2
    assert torch.allclose(net(x), net.head(backbone.features(x)))
    net.train()
    assert not net.backbone.training


def test_cifar_shaped_resnet():
    torch.manual_seed(0)
    model = models.build("resnet18", "cifar10", 10, width=4).eval()
    x = images(16, (3, 32, 32))
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(0))
    for method in dm.METHODS:
        delta = make(method, model, x, 8 / 255, y=y, steps=2, batch_size=8)
        assert delta.shape == (1, 3, 32, 32) and delta.abs().max() <= 8 / 255 + 1e-7
        out = dm.evaluate_pattern(model, x, delta, 10)
        assert 0.0 <= out["fooling_rate"] <= 1.0
    net, _ = dm.train_downstream_head(model, x, y % 5, 5, epochs=1, batch_size=8)
    assert net(x).shape == (16, 5)


def test_cross_parameter_checks():
    dm.check(params.resolve({"profile": "tiny"}, dm.PROFILES, dm.SCHEMA))
    with pytest.raises(params.ParameterError, match="eps"):
        dm.check(params.resolve({"profile": "tiny", "eps": 0.0}, dm.PROFILES, dm.SCHEMA))
    with pytest.raises(params.ParameterError, match="methods"):
        dm.check(params.resolve({"profile": "tiny", "methods": []}, dm.PROFILES, dm.SCHEMA))
    loop = dm.loop_options(params.resolve({"profile": "tiny"}, dm.PROFILES, dm.SCHEMA))
    assert loop["optimizer"] == "adam" and loop["steps"] == dm.PROFILES["tiny"]["steps"]


def test_refit_assessment_reads_the_seed_interval_of_the_headline_gap():
    # the quick run of stop 18: seed 0 +0.126, seed 1 -0.069, seed 2 +0.034: three seeds cannot decide
    few = dm.refit_assessment([0.126, -0.069, 0.034], 0.138)
    assert few["assessment"] == "scale-limited" and "too few refits" in few["reason"]
    assert few["low"] < 0 < 0.05 < few["high"] and few["seeds"] == 3
    # more steps widen the gap by >= 0.03: scale-limited whatever the seeds say
    assert "steps widen" in dm.refit_assessment([0.01, 0.02, 0.015], 0.05)["reason"]
    wins = dm.refit_assessment([0.03, 0.02, 0.025, 0.035], 0.03)
    assert wins["assessment"] == "holds at this scale" and wins["low"] > 0
    small = dm.refit_assessment([0.01, -0.01, 0.0, 0.02, -0.005, 0.005], None)
    assert small["assessment"] == "contradicted" and "excluded" in small["reason"]
    loses = dm.refit_assessment([-0.1, -0.08, -0.12], None)
    assert loses["assessment"] == "contradicted" and "baseline wins" in loses["reason"]
    one = dm.refit_assessment([0.2])  # one seed: no interval, nothing decided
    assert one["assessment"] == "scale-limited" and one["low"] == float("-inf")
