"""The gradient-masking checklist (advbook.masking): it must fail a masked model and pass an honest one."""

import pytest
import torch

from advbook import masking, models, train

EPS = 0.2
SETTINGS = dict(eps_sweep=[0.1, 0.2, 0.5], steps_sweep=[5, 20], steps=20, n_queries=2000)


class Quantised(torch.nn.Module):
    """A classic masked "defence": round the input to a few grey levels before a trained net.

    ``torch.round`` has a zero gradient almost everywhere, so every gradient attack is blind,
    while the function itself is as easy to fool as the net behind it.
    """

    def __init__(self, net: torch.nn.Module, levels: int = 4):
        super().__init__()
        self.net, self.levels = net, levels

    def extra_repr(self) -> str:
        return f"levels={self.levels}"

    def forward(self, x):
        return self.net(torch.round(x * self.levels) / self.levels)


class _ZeroGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


class GradientZeroing(torch.nn.Module):
    """The same function as ``net``, with the input gradient replaced by zero (a gradient-blocking layer)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(_ZeroGrad.apply(x))


@pytest.fixture(scope="module")
def honest(mnist):
    """A small CNN adversarially trained (PGD-5, eps 0.2) on the 600 MNIST training images."""
    torch.manual_seed(0)
    model = models.build("smallcnn", "mnist5k", width=8)
    gen = torch.Generator().manual_seed(0)
    train.fit(model, mnist.x_train, mnist.y_train, epochs=6, batch_size=50, generator=gen,
              adversary=train.pgd_adversary(EPS, 5, None, 0.3, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def points(mnist):
    return mnist.x_test[:60], mnist.y_test[:60]


def test_paired_difference():
    a = torch.tensor([1, 1, 1, 0, 0, 1], dtype=torch.bool)
    b = torch.tensor([1, 0, 0, 0, 1, 1], dtype=torch.bool)
    d = masking.paired_difference(a, b)
    assert d["n10"] == 2 and d["n01"] == 1 and d["diff"] == pytest.approx(1 / 6)
    assert d["se"] == pytest.approx((3 - 1 / 6) ** 0.5 / 6)
    assert masking.paired_difference(a, a)["se"] == 0
    with pytest.raises(ValueError, match="1-D"):
        masking.paired_difference(a, b[:3])


def test_honest_adversarially_trained_model_passes(honest, trained, points):
    x, y = points
    cl = masking.run_checklist(honest, x, y, EPS, surrogate=trained, **SETTINGS)
    assert [it.check for it in cl.items] == list(masking.ITEMS)
    assert cl.passed, cl.rows()
    # it is really robust to some extent (the checks are not passed by a trivially broken model)
    assert cl.items[3].values["white"] > 0.1
    assert cl.curves["eps"][0.5] <= 0.05


@pytest.mark.parametrize("wrap", [Quantised, GradientZeroing])
def test_masked_model_fails(wrap, trained, points):
    """A standard net behind a gradient-masking layer: white-box PGD fails, Square and transfer do not."""
    x, y = points
    masked = wrap(trained).eval()
    cl = masking.run_checklist(masked, x, y, EPS, surrogate={"the unwrapped net": trained}, n_sweep=40, **SETTINGS)
    assert not cl.passed
    failed = set(cl.failed())
    assert {masking.ITEMS[0], masking.ITEMS[3], masking.ITEMS[4]} <= failed, cl.rows()
    assert cl.items[3].values["square"] < cl.items[3].values["white"] - 0.2
    assert cl.items[3].values["n"] == 40 and len(cl.white) == len(x)
    assert set(cl.items[4].values["per_surrogate"]) == {"the unwrapped net"}


def test_missing_surrogate_is_a_failure_not_a_pass(honest, points):
    x, y = points
    cl = masking.run_checklist(honest, x[:20], y[:20], EPS, eps_sweep=[0.2, 0.5], steps_sweep=[2, 4], steps=4,
                               n_queries=20)
    assert not cl.items[4].passed and "not run" in cl.items[4].measured
    with pytest.raises(ValueError, match="two eps"):
        masking.run_checklist(honest, x, y, EPS, eps_sweep=[0.5], steps_sweep=[2, 4])
