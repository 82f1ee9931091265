"""The universal-perturbation contract (advbook.universal), tested over EVERY registered method.

Chapters 4 and 5 register their universal perturbations (``dominant.UNIVERSAL``, ``upi.UNIVERSAL``);
every one is called as ``make(model, x, eps, *, y=None, norm=..., generator=None, **options)`` and
returns one ``delta`` of shape ``(1, C, H, W)``. The reference is a model with a KNOWN optimum: a
two-class linear classifier ``f(x) = Wx + b`` on images kept away from the box edges. With every
proxy label equal to class ``a``, the cross-entropy ``CE(f(x + delta), a) = softplus(-(m(x) + v.delta))``
with ``v = w_a - w_b`` is increasing in ``(w_b - w_a).delta`` for every image, so the best universal
perturbation is the maximiser of that linear function over the ball: ``eps * sign(w_b - w_a)``
(l_inf) and ``eps * (w_b - w_a) / ||w_b - w_a||_2`` (l_2). A label-based optimiser must reach it;
no method, label-free or random, may exceed it (that would mean it left the ball).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advbook import universal
from advbook.methods import dominant, upi

SHAPE = (1, 6, 6)
REGISTRY = [("ch4", name, m) for name, m in dominant.UNIVERSAL.items()] + \
           [("ch5", name, m) for name, m in upi.UNIVERSAL.items()]
CASES = [pytest.param(m, norm, id=f"{ch}-{name}-{norm}") for ch, name, m in REGISTRY for norm in m.norms]
EPS = {"linf": 0.1, "l2": 0.25}
"""Small enough that x + delta stays inside [0.05, 0.95] for x in [0.3, 0.7]: the clip never acts."""


class Linear(nn.Module):
    """``f(x) = W vec(x) + b`` with two classes; ``features`` is the input itself (for the features variant)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = math.prod(SHAPE)
        self.head = nn.Linear(d, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(2, d, generator=g))
            self.head.bias.copy_(torch.randn(2, generator=g))

    def features(self, x):
        return x.flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


def proxy(n: int = 64, seed: int = 1) -> torch.Tensor:
    """Images in [0.3, 0.7]: the clip to [0, 1] is inactive for every budget of these tests."""
    return 0.3 + 0.4 * torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(seed))


def optimum(model: Linear, eps: float, norm: str, a: int = 0) -> torch.Tensor:
    """The closed-form best universal perturbation against class ``a`` (module docstring)."""
    w = (model.head.weight[1 - a] - model.head.weight[a]).detach().view(1, *SHAPE)
    return eps * (w.sign() if norm == "linf" else w / w.norm())


def ce(model, x, delta, a=0):
    with torch.no_grad():
        return F.cross_entropy(model((x + delta).clamp(0, 1)), torch.full((len(x),), a)).item()


def call(method, model, x, eps, norm, seed=0, y=None):
    """Every method through the one signature, with a small budget of whatever loop it runs."""
    options = {}
    if method.make in (universal.sgd_uap, dominant.dominant_pattern, dominant.cos_uap, upi.upi_grad):
        default = "pgd" if norm == "l2" or method.make is upi.upi_grad else "adam"
        optimizer = method.options.get("optimizer", default)
        options = {"steps": 60, "batch_size": 16, "optimizer": optimizer, "lr": 1e-2 if optimizer == "adam" else 0.25}
    if method.make is upi.upi_pca:
        options = {"batch_size": 16}
    if method.labels and y is None:
        y = torch.zeros(len(x), dtype=torch.long)
    return method(model, x, eps, y=y, norm=norm, generator=torch.Generator().manual_seed(seed), **options)


def norm_of(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm, computed here independently of the library's projection."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


@pytest.mark.parametrize("method, norm", CASES)
def test_shape_ball_box_and_the_known_optimum(method, norm):
    model, x = Linear(), proxy()
    eps = EPS[norm]
    delta = call(method, model, x, eps, norm)
    assert delta.shape == (1, *SHAPE)
    assert norm_of(delta, norm).item() <= eps * (1 + 1e-5)
    assert (universal.perturb(x, delta) - (x + delta)).abs().max() == 0  # the clip is inactive here
    best = optimum(model, eps, norm)
    # nobody beats the closed-form optimum (a method leaving the ball would)
    assert ce(model, x, delta) <= ce(model, x, best) + 1e-5
    if method.labels:  # a label-based optimiser must reach it
        cos = F.cosine_similarity(delta.flatten(), best.flatten(), dim=0).item()
        assert cos > 0.99, cos
        assert ce(model, x, delta) == pytest.approx(ce(model, x, best), rel=1e-3)


@pytest.mark.parametrize("method, norm", CASES)
def test_same_generator_same_delta(method, norm):
    model, x = Linear(), proxy(32)
    a = call(method, model, x, EPS[norm], norm, seed=3)
    b = call(method, model, x, EPS[norm], norm, seed=3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("ch, name, method", REGISTRY, ids=[f"{c}-{n}" for c, n, _ in REGISTRY])
def test_labels_are_given_exactly_to_the_methods_that_use_them(ch, name, method):
    model, x = Linear(), proxy(16)
    norm = method.norms[0]
    y = torch.zeros(len(x), dtype=torch.long)
    if method.labels:
        with pytest.raises(ValueError, match="needs labels"):
            method(model, x, EPS[norm], y=None, norm=norm)
    else:
        with pytest.raises(ValueError, match="label-free"):
            method(model, x, EPS[norm], y=y, norm=norm)
    with pytest.raises(ValueError, match="eps"):
        method(model, x, 0.0, y=y if method.labels else None, norm=norm)
    with pytest.raises(ValueError, match="norm"):
        method(model, x, 0.1, y=y if method.labels else None, norm="l1")


def test_registries_name_their_methods():
    assert tuple(dominant.UNIVERSAL) == dominant.METHODS
    assert set(upi.UNIVERSAL) == set(upi.METHODS) - {"per_sample"}
    assert all(m.name == n for reg in (dominant.UNIVERSAL, upi.UNIVERSAL) for n, m in reg.items())
    # one SGD-UAP for both chapters
    assert dominant.UNIVERSAL["sgd_uap"].make is upi.UNIVERSAL["sgd_uap"].make is universal.sgd_uap
    assert upi.UNIVERSAL["upi_pca"].norms == ("l2",)
    assert set(dominant.LABEL_FREE) == {n for n, m in dominant.UNIVERSAL.items() if not m.labels}


@pytest.mark.parametrize("norm", universal.NORMS)
def test_random_is_far_below_the_optimum(norm):
    """The random baseline against the optimum, on the margin shift (w_b - w_a).delta the optimum maximises."""
    model, x = Linear(), proxy()
    eps = EPS[norm]
    v = optimum(model, 1.0, "l2")  # the unit direction w_b - w_a

    def shift(delta):
        return (delta * v).sum().item()

    best = shift(optimum(model, eps, norm))
    rnd = [shift(universal.random_universal(model, x, eps, norm=norm, generator=torch.Generator().manual_seed(s)))
           for s in range(20)]
    assert best > 0 and max(abs(r) for r in rnd) < best
    assert sum(abs(r) for r in rnd) / len(rnd) < 0.5 * best
    d = universal.random_universal(None, x, eps, norm=norm, generator=torch.Generator().manual_seed(0))
    assert norm_of(d, norm).item() == pytest.approx(eps, rel=1e-5)  # on the sphere, not inside


@pytest.mark.parametrize("norm, optimizer", [("linf", "adam"), ("linf", "pgd"), ("l2", "pgd")])
def test_ascend_reaches_the_maximiser_of_a_linear_objective(norm, optimizer):
    """Objective v.delta: maximiser eps*sign(v) (l_inf) or eps*v/||v|| (l_2), whatever the data."""
    x = proxy(20)
    v = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(7))
    record: list = []
    delta = universal.ascend(lambda xb, d, yb, cb: (d * v).sum().expand(len(xb)), x, 0.2, norm=norm, steps=80,
                             batch_size=5, optimizer=optimizer, lr=1e-2 if optimizer == "adam" else 0.25,
                             generator=torch.Generator().manual_seed(0), record=record)
    target = 0.2 * (v.sign() if norm == "linf" else v / v.norm())
    assert torch.allclose(delta, target, atol=1e-3)
    assert len(record) == 10 and record[-1] > record[0]


def test_adam_with_l2_is_refused_and_bad_options_fail():
    x = proxy(8)
    obj = lambda xb, d, yb, cb: d.sum().expand(len(xb))  # noqa: E731
    with pytest.raises(ValueError, match="l2 optimum"):
        universal.ascend(obj, x, 0.1, norm="l2", optimizer="adam")
    with pytest.raises(ValueError, match="allowed"):
        universal.ascend(obj, x, 0.1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="allowed"):
        universal.project(torch.zeros(1, 2), 0.1, "l1")


def test_projection():
    d = torch.tensor([[3.0, -4.0], [0.3, 0.4]])
    assert torch.allclose(universal.project(d, 1.0, "l2"), torch.tensor([[0.6, -0.8], [0.3, 0.4]]))
    assert torch.allclose(universal.project(d, 0.35, "linf"), torch.tensor([[0.35, -0.35], [0.3, 0.35]]))
