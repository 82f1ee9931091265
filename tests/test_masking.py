"""The gradient-masking checklist (advbook.masking): it must fail a masked model and pass an honest one."""

import pytest
import torch

from advbook import evaluation, masking, models, train

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


class _KeepGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, keep):
        ctx.save_for_backward(keep)
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad * keep.view(-1, *([1] * (grad.dim() - 1))), None


class PartlyMasked(torch.nn.Module):
    """Partial masking: the same function as ``net``, with a zero input gradient wherever ``net`` predicts
    one of ``classes`` (about a fifth of the points), so gradient attacks are blind on those points only."""

    def __init__(self, net: torch.nn.Module, classes=(0, 1)):
        super().__init__()
        self.net, self.classes = net, torch.tensor(classes)

    def extra_repr(self) -> str:
        return f"classes={self.classes.tolist()}"

    def forward(self, x):
        with torch.no_grad():
            keep = (~torch.isin(self.net(x).argmax(1), self.classes)).float()
        return self.net(_KeepGrad.apply(x, keep))


def pgd_set(model, x, y):
    """The checklist's white-box set (clean, PGD-CE, PGD-CW at SETTINGS; the same cache entries)."""
    clean = (model(x).argmax(1) == y).cpu()
    return clean & torch.stack([masking.pgd_mask(model, x, y, EPS, steps=SETTINGS["steps"], loss=loss)
                                for loss in ("ce", "cw")]).all(0)


def strong(model, x, y):
    """A stronger attack than the PGD set (APGD-CE and Square, small budgets)."""
    return evaluation.autoattack(model, x, y, EPS, components=["apgd-ce", "square"], n_iter=20,
                                 n_queries=500)["robust_mask"].cpu()


def item6(model, control, x, y, name="the control"):
    return masking.overstatement_item(pgd_set(model, x, y), strong(model, x, y), pgd_set(control, x, y),
                                      strong(control, x, y), control=name)


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
    over = item6(honest, trained, x, y, "a standard net")
    cl = masking.run_checklist(honest, x, y, EPS, surrogate=trained, overstated=over, **SETTINGS)
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
    assert cl.items[3].values["n"] == len(x) and len(cl.white) == len(x)
    assert set(cl.items[4].values["per_surrogate"]) == {"the unwrapped net"}


def test_partly_masked_model_fails_the_overstatement_item_and_an_honest_one_passes(honest, trained, points):
    """Gradients masked on about a fifth of the points: PGD overstates the model by those points, AutoAttack's
    Square does not; the same net unmasked is the control. An adversarially trained net passes."""
    x, y = points
    masked = PartlyMasked(trained).eval()
    torch.testing.assert_close(masked(x), trained(x))
    bad = item6(masked, trained, x, y, "the unmasked net")
    assert not bad.passed, bad.as_dict()
    assert bad.values["overstated"] - bad.values["control_overstated"] >= 0.05
    good = item6(honest, trained, x, y, "a standard net")
    assert good.passed, good.as_dict()


def test_counts_not_net_differences_decide_items_4_and_5():
    """Points the black-box attack misses do not cancel points it finds; a white-box restart sets the floor."""
    n = 100
    white = torch.zeros(n, dtype=torch.bool)
    white[:50] = True
    other = white.clone()
    other[:6] = False  # breaks six white-box robust points ...
    other[50:70] = True  # ... and misses twenty points white-box broke: the net difference favours white-box
    restart = white.clone()
    ok, d = masking.beats_white_box(white, other, restart)
    assert not ok and d["found"] == 6 and d["restart_found"] == 0
    restart[:3] = False  # a restart that finds three of them by chance: six is now within noise
    assert masking.beats_white_box(white, other, restart)[0]
    assert masking.beats_white_box(white, white, white)[0]


def test_missing_surrogate_is_a_failure_not_a_pass(honest, points):
    x, y = points
    cl = masking.run_checklist(honest, x[:20], y[:20], EPS, eps_sweep=[0.2, 0.5], steps_sweep=[2, 4], steps=4,
                               n_queries=20)
    assert not cl.items[4].passed and "not run" in cl.items[4].measured
    assert not cl.items[5].passed and "not run" in cl.items[5].measured
    assert cl.not_run() == [masking.ITEMS[4], masking.ITEMS[5]] and not (cl.items[4].ran or cl.items[5].ran)
    with pytest.raises(ValueError, match="two eps"):
        masking.run_checklist(honest, x, y, EPS, eps_sweep=[0.5], steps_sweep=[2, 4])


def _checklist(failed=(), not_run=()):
    items = [masking.Item(check, f"{masking.NOT_RUN} (no surrogate)" if check in not_run else "measured", "",
                          check not in failed and check not in not_run) for check in masking.ITEMS]
    return masking.Checklist(items, {}, torch.ones(3, dtype=torch.bool))


def test_checklist_in_words_names_failed_and_not_run_items():
    passing, failing = _checklist(), _checklist(failed=masking.ITEMS[2:4])
    assert masking.verdict_text(passing) == "passes every item"
    assert masking.verdict_text(failing) == f"fails '{masking.ITEMS[2]}', '{masking.ITEMS[3]}'"
    assert masking.verdict_text(failing, mark="*") == f"fails *{masking.ITEMS[2]}*, *{masking.ITEMS[3]}*"
    # an item that could not run fails, and says so
    skipped = _checklist(not_run=masking.ITEMS[4:5])
    assert not skipped.passed and skipped.not_run() == [masking.ITEMS[4]] == skipped.failed()
    assert [it.ran for it in skipped.items] == [True] * 4 + [False, True]
    assert masking.verdict_text(skipped) == f"fails '{masking.ITEMS[4]}'"
    # per replicate: the seeds that fail an item, each with its items; all pass: how many replicates passed
    assert masking.replicates_text({0: passing, 1: passing}) == "passes every item on each of the 2 seed(s) alone"
    assert masking.replicates_text({0: passing, 1: failing, 2: skipped}) == (
        f"fails '{masking.ITEMS[2]}', '{masking.ITEMS[3]}' on seed 1; '{masking.ITEMS[4]}' on seed 2")

