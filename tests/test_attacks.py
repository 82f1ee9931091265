import pytest
import torch

from advbook import attacks, evaluation


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_ball_and_box_and_reaches_boundary(trained, mnist, norm):
    x, y = mnist.x_test[:64], mnist.y_test[:64]
    eps = 0.1 if norm == "linf" else 1.5
    x_adv = attacks.pgd(trained, x, y, eps, steps=10, norm=norm, generator=torch.Generator().manual_seed(0))
    delta = (x_adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert size.max() <= eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # sign / normalised steps push most samples to the boundary of the ball
    assert (size > 0.9 * eps).float().mean() > 0.5


def test_pgd_beats_fgsm_and_cw_loss_works(trained, mnist):
    x, y = mnist.x_test, mnist.y_test
    eps = 0.15
    clean = evaluation.accuracy(trained, x, y)
    fgsm = evaluation.robust_accuracy(attacks.fgsm, trained, x, y, eps=eps)
    pgd = evaluation.pgd_accuracy(trained, x, y, eps, steps=20)
    cw = evaluation.pgd_accuracy(trained, x, y, eps, steps=20, loss="cw")
    assert clean > 0.8
    assert pgd < fgsm < clean
    assert cw < clean - 0.3


def test_more_steps_never_help_with_fixed_start(trained, mnist):
    x, y = mnist.x_test, mnist.y_test
    accs = [evaluation.pgd_accuracy(trained, x, y, 0.1, steps=s, step_size=0.01, seed=0) for s in (1, 5, 20)]
    assert accs[0] >= accs[1] >= accs[2]


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_more_steps_never_make_a_broken_point_robust_again(trained, mnist, loss):
    """Per sample, at a fixed step size and seed: the points PGD-(k+1) leaves robust are a subset of PGD-k's."""
    x, y = mnist.x_test[:100], mnist.y_test[:100]
    robust = []
    for steps in range(1, 9):
        x_adv = attacks.pgd(trained, x, y, 0.1, steps=steps, step_size=0.02, loss=loss,
                            generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            robust.append(trained(x_adv).argmax(1) == y)
    for before, after in zip(robust, robust[1:]):
        assert not (after & ~before).any()


def test_pgd_keeps_a_misclassified_iterate_over_a_correct_one_with_higher_loss():
    """A 1-D model whose cross-entropy keeps rising along the attack path while the label flips and comes back:
    at t = 0.6 class 1 wins (CE 0.80), at t = 0.7 class 0 wins again with a higher CE (0.97). Keeping the
    highest loss would return the correct point; PGD must return the misclassified one."""

    def model(x):
        t = x[:, 0]
        relu = torch.relu
        l1 = -1 + 12 * (t - 0.5) - 32 * relu(t - 0.65)
        l2 = -5 + 96 * relu(t - 0.65)
        return torch.stack([torch.zeros_like(t), l1, l2], 1)

    x, y = torch.tensor([[0.5]]), torch.tensor([0])
    ce = [torch.nn.functional.cross_entropy(model(torch.tensor([[t]])), y).item() for t in (0.6, 0.7)]
    assert ce[1] > ce[0] and model(torch.tensor([[0.6]])).argmax(1).item() == 1
    x_adv = attacks.pgd(model, x, y, 0.25, steps=2, step_size=0.1, random_start=False)
    assert x_adv.item() == pytest.approx(0.6, abs=1e-5) and model(x_adv).argmax(1).item() == 1


def test_fgsm_is_one_signed_step(trained, mnist):
    x, y = mnist.x_test[:16], mnist.y_test[:16]
    x_adv = attacks.fgsm(trained, x, y, 0.05)
    moved = (x_adv - x).abs()
    # every pixel moves by eps unless the [0, 1] clamp (or a zero gradient) stops it
    inside = (x > 0.05) & (x < 0.95)
    assert torch.isclose(moved[inside], torch.tensor(0.05), atol=1e-6).float().mean() > 0.9


def test_cw_margin_sign_matches_misclassification():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    y = torch.tensor([0, 0])
    margin = attacks.cw_margin_loss(logits, y)
    assert torch.allclose(margin, torch.tensor([-2.0, 2.0]))


def test_l2_projection_is_exact_inside_box():
    x = torch.full((2, 1, 4, 4), 0.5)
    far = x + torch.randn(2, 1, 4, 4)
    p = attacks.project(far, x, 0.3, "l2")
    # |delta_i| <= 0.3 < 0.5 per pixel, so the box never clips: the projection is onto the sphere
    assert torch.allclose((p - x).flatten(1).norm(dim=1), torch.tensor([0.3, 0.3]), atol=1e-5)
    inside = x + 0.1 * (far - x) / (far - x).flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(attacks.project(inside, x, 0.3, "l2"), inside)


def test_zero_eps_returns_input(trained, mnist):
    x, y = mnist.x_test[:4], mnist.y_test[:4]
    assert torch.equal(attacks.pgd(trained, x, y, 0.0), x)


def test_bad_attack_arguments_are_named(trained, mnist):
    x, y = mnist.x_test[:4], mnist.y_test[:4]
    with pytest.raises(ValueError, match="norm"):
        attacks.pgd(trained, x, y, 0.1, norm="l7")
    with pytest.raises(ValueError, match="loss"):
        attacks.pgd(trained, x, y, 0.1, loss="hinge")
    with pytest.raises(ValueError, match="eps"):
        attacks.pgd(trained, x, y, -0.1)


def test_autoattack_is_at_least_as_strong_as_pgd(trained, mnist):
    x, y = mnist.x_test[:60], mnist.y_test[:60]
    out = evaluation.autoattack(trained, x, y, 0.1, components=("apgd-ce", "apgd-t", "square"),
                                n_iter=10, n_queries=100, n_target_classes=2)
    assert out["robust"] <= out["clean"]
    assert list(out["after"]) == ["apgd-ce", "apgd-t", "square"]
    assert out["after"]["square"] <= out["after"]["apgd-t"] <= out["after"]["apgd-ce"]
    assert (out["x_adv"] - x).abs().max() <= 0.1 + 1e-5
    pgd = evaluation.pgd_accuracy(trained, x, y, 0.1, steps=10)
    assert out["robust"] <= pgd + 0.05
    with pytest.raises(ValueError, match="allowed"):
        evaluation.autoattack(trained, x, y, 0.1, components=("deepfool",))
