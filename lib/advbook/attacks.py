"""Gradient attacks as plain functions: ``attack(model, x, y, eps=...) -> x_adv``.

These are the fast attacks used inside adversarial training and for sweeps. Reported
robust accuracies additionally use AutoAttack (:func:`advbook.evaluation.autoattack`).

Threat model: ``x_adv`` lies in the ``eps``-ball around ``x`` (l_inf by default, or l_2)
and in the image box ``[0, 1]``. The model is used as given: call ``model.eval()``
first if it has batch norm or dropout.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

NORMS = ("linf", "l2")
LOSSES = ("ce", "cw")


def cw_margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample Carlini-Wagner margin ``max_{j != y} z_j - z_y`` (Carlini & Wagner 2017, eq. 5 with kappa = inf).

    Positive exactly when the sample is misclassified. Unlike cross-entropy it does not
    saturate when the softmax does, so it still has a useful gradient on over-confident
    (or distilled) models.
    """
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.max(1).values - z_y


def per_sample_loss(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """The attack objective per sample: cross-entropy ``-log p_y`` or the CW margin."""
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if loss == "cw":
        return cw_margin_loss(logits, y)
    raise ValueError(f"attack loss {loss!r} is not known; allowed: {', '.join(LOSSES)}")


def _check(eps: float, norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm {norm!r} is not known; allowed: {', '.join(NORMS)}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Project onto the eps-ball around ``x`` intersected with the box ``[0, 1]``.

    l_inf: clip each coordinate of ``delta`` to ``[-eps, eps]``; l_2: rescale ``delta``
    to norm ``eps`` if it is longer. Then clamp to the box (for l_inf the composition is
    the exact projection onto the intersection; for l_2 it stays feasible).
    """
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / _flat_norm(delta)).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def _ascent_step(grad: torch.Tensor, step: float, norm: str) -> torch.Tensor:
    """Steepest ascent for the norm: ``step * sign(g)`` (l_inf) or ``step * g / ||g||_2`` (l_2)."""
    if norm == "linf":
        return step * grad.sign()
    return step * grad / _flat_norm(grad)


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device) * 2 - 1
    if norm == "l2":
        noise = noise / _flat_norm(noise) * eps * torch.rand(len(x), 1, 1, 1, generator=generator).to(x.device)
    else:
        noise = noise * eps
    return (x + noise).clamp(0.0, 1.0)


def fgsm(model: Callable, x: torch.Tensor, y: torch.Tensor, eps: float, *, loss: str = "ce") -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): ``x + eps * sign(grad_x L(f(x), y))``, clamped to [0, 1]."""
    _check(eps, "linf")
    x_adv = x.detach().clone().requires_grad_(True)
    objective = per_sample_loss(model(x_adv), y, loss).sum()
    (grad,) = torch.autograd.grad(objective, x_adv)
    return (x + eps * grad.sign()).clamp(0.0, 1.0).detach()


def pgd(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    loss: str = "ce",
    norm: str = "linf",
    random_start: bool = True,
    restarts: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient ascent on the loss (Madry et al. 2018, eq. 2.1 iterated).

    ``x^{t+1} = Proj_{B_eps(x) cap [0,1]^d}( x^t + step * sign(grad_x L(f(x^t), y)) )``

    ``step_size`` defaults to ``2.5 * eps / steps`` (Madry et al.). ``loss`` is ``ce``
    (cross-entropy) or ``cw`` (the CW margin, :func:`cw_margin_loss`). Over all steps and
    restarts, each sample keeps a *misclassified* iterate once one is found (as APGD keeps
    ``x_best_adv``), else the iterate with the highest loss. The highest cross-entropy alone
    would not do: a correctly classified point can have a higher loss than a misclassified one.
    So with a fixed ``step_size`` and generator seed, more steps or restarts never raise the
    robust accuracy (tests/test_attacks.py).
    """
    _check(eps, norm)
    if steps < 0 or restarts < 1:
        raise ValueError(f"need steps >= 0 and restarts >= 1, got steps={steps}, restarts={restarts}")
    if eps == 0 or steps == 0 and not random_start:
        return x.detach().clone()
    step = step_size if step_size is not None else 2.5 * eps / max(steps, 1)
    x = x.detach()
    best = x.clone()
    best_loss = torch.full((len(x),), float("-inf"), device=x.device)
    best_fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        x_adv = _random_start(x, eps, norm, generator) if random_start else x.clone()
        for t in range(steps + 1):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                logits = model(x_adv)
                losses = per_sample_loss(logits, y, loss)
                grad = torch.autograd.grad(losses.sum(), x_adv)[0] if t < steps else None
            x_adv, losses = x_adv.detach(), losses.detach()
            fooled = logits.detach().argmax(1) != y
            # lexicographic (misclassified, loss): a misclassified iterate is never traded for a correct one
            improved = (fooled & ~best_fooled) | ((fooled == best_fooled) & (losses > best_loss))
            best[improved] = x_adv[improved]
            best_loss = torch.where(improved, losses, best_loss)
            best_fooled |= fooled
            if grad is not None:
                x_adv = project(x_adv + _ascent_step(grad, step, norm), x, eps, norm)
    return best


def fgsm_random_start(model: Callable, x: torch.Tensor, y: torch.Tensor, eps: float, *, step_size: float | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """FGSM with a uniform random start (Wong, Rice & Kolter 2020, "fast is better than free").

    ``delta_0 ~ U[-eps, eps]``, one signed step of ``1.25 * eps``, projected back. Used for
    cheap adversarial training; the last iterate is returned (no best-loss tracking).
    """
    step = step_size if step_size is not None else 1.25 * eps
    x = x.detach()
    x_adv = _random_start(x, eps, "linf", generator).requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
    return project(x_adv.detach() + step * grad.sign(), x, eps, "linf")
