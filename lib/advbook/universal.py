"""The contract every universal perturbation of the book follows (chapters 4 and 5).

A *universal* perturbation is one image-agnostic ``delta`` of shape ``(1, C, H, W)`` that is
added to every image: ``clip(x + delta, 0, 1)``. Every method of chapters 4 and 5 (dominant
patterns, Cos-UAP, SGD-UAP, UPI-Grad, UPI-PCA, random noise) is a function called the same way::

    delta = make(model, x, eps, *, y=None, norm="linf" | "l2", generator=None, **method_options)

* ``x``: the proxy / fitting images ``(N, C, H, W)`` in ``[0, 1]``;
* ``eps``: the radius of the ``norm`` ball (``||delta||_inf <= eps`` or ``||delta||_2 <= eps``);
* ``y``: labels, only for methods that use them (:attr:`Universal.labels`); a label-free method
  refuses labels (a ``ValueError``) rather than silently ignoring them, so that a chapter can
  never believe a method saw labels it did not;
* ``generator``: the only source of randomness (start point, mini-batch order, noise);
* returns ``delta`` of shape ``(1, C, H, W)`` inside the ball.

Each chapter keeps a registry ``{name: Universal}`` (``dominant.UNIVERSAL``, ``upi.UNIVERSAL``).
The optimising methods share one loop, :func:`ascend`, which *maximises* a per-sample
objective over one shared ``delta``; they differ only in the objective. SGD-UAP
(:func:`sgd_uap`, Shafahi et al. 2020) lives here, once, for both chapters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import precision, stats
from .data import batches

NORMS = ("linf", "l2")
"""The perturbation balls: ``linf`` (chapter 4, the dominant-pattern paper's) and ``l2`` (chapter 5)."""
OPTIMIZERS = ("adam", "pgd")
"""``adam``: Adam on the objective, then projection (the dominant-pattern code's loop; ``linf`` only).
``pgd``: steepest-ascent steps of ``lr * eps`` in the norm's own direction (``sign(g)`` for
``linf``, ``g / ||g||_2`` for ``l2``), decaying linearly to a tenth, then projection (UPI-Grad's loop)."""


@dataclass(frozen=True)
class Universal:
    """One registered universal perturbation: how to call it and what it may be given."""

    name: str
    label: str
    """Name in tables and figures."""
    make: Callable
    """``make(model, x, eps, *, y=None, norm=..., generator=None, **options) -> delta (1, C, H, W)``."""
    labels: bool = False
    """``True``: the method needs ``y``; ``False``: it is label-free and refuses ``y``."""
    norms: tuple = NORMS
    """The norms the method supports."""
    options: dict = field(default_factory=dict)
    """Defaults a chapter passes to every call of this method (e.g. the layer of a dominant pattern)."""

    def __call__(self, model: nn.Module, x: torch.Tensor, eps: float, *, y: torch.Tensor | None = None,
                 norm: str = "linf", generator: torch.Generator | None = None, **options) -> torch.Tensor:
        check_call(self.name, eps, norm, y, labels=self.labels, norms=self.norms)
        return self.make(model, x, eps, y=y, norm=norm, generator=generator, **{**self.options, **options})


def check_call(name: str, eps: float, norm: str, y: torch.Tensor | None, *, labels: bool,
               norms: tuple = NORMS) -> None:
    """The checks every method runs first: a positive ``eps``, a known ``norm``, labels given iff used."""
    if not eps > 0:
        raise ValueError(f"{name}: eps must be > 0, got {eps}")
    if norm not in norms:
        raise ValueError(f"{name}: norm {norm!r} is not supported; allowed: {', '.join(norms)}")
    if labels and y is None:
        raise ValueError(f"{name} needs labels: pass y (true or predicted labels of the proxy images)")
    if not labels and y is not None:
        raise ValueError(f"{name} is label-free and never reads labels: call it with y=None")


def perturb(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The perturbed images ``clip(x + delta, 0, 1)`` (``delta`` broadcasts over the batch)."""
    return (x + delta).clamp(0.0, 1.0)


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project every perturbation (first dimension = sample) onto the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        scale = (eps / stats.l2_norm(delta)).clamp(max=1.0)
        return delta * scale.view(-1, *([1] * (delta.dim() - 1)))
    raise ValueError(f"norm {norm!r} is not known; allowed: {', '.join(NORMS)}")


def random_direction(shape: tuple, eps: float, norm: str, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """A random point of the sphere of radius ``eps``, shape ``(1, *shape)``.

    ``linf``: i.i.d. uniform signs times ``eps`` (a corner of the cube, the largest noise of the
    budget); ``l2``: ``eps * n / ||n||_2`` with ``n ~ N(0, I)``.
    """
    if norm == "linf":
        return (eps * torch.randint(0, 2, (1, *shape), generator=generator).float().mul(2).sub(1)).to(device)
    if norm == "l2":
        n = torch.randn((1, *shape), generator=generator).to(device)
        return n * (eps / stats.l2_norm(n))
    raise ValueError(f"norm {norm!r} is not known; allowed: {', '.join(NORMS)}")


def random_universal(model: nn.Module | None, x: torch.Tensor, eps: float, *, y: torch.Tensor | None = None,
                     norm: str = "linf", generator: torch.Generator | None = None) -> torch.Tensor:
    """The random baseline: a random point of the ``norm`` sphere of radius ``eps`` (see :func:`random_direction`).

    Label-free and model-free (``model`` is accepted for the common signature and unused).
    """
    check_call("random", eps, norm, y, labels=False)
    return random_direction(tuple(x.shape[1:]), eps, norm, generator, x.device)


def ascend(
    objective: Callable,
    x: torch.Tensor,
    eps: float,
    *,
    y: torch.Tensor | None = None,
    context: torch.Tensor | None = None,
    norm: str = "linf",
    steps: int = 100,
    batch_size: int = 128,
    optimizer: str = "adam",
    lr: float = 1e-2,
    generator: torch.Generator | None = None,
    record: list | None = None,
) -> torch.Tensor:
    """Maximise ``mean_i objective(x_i, delta, y_i, context_i)`` over one shared ``delta`` in the ``norm`` ball.

    ``objective(xb, delta, yb, cb)`` returns one value per sample (``yb``/``cb`` are ``None``
    when ``y``/``context`` are). Mini-batches of ``batch_size`` are drawn without replacement
    (reshuffled every pass) for ``steps`` steps; after every step ``delta`` is projected back
    onto the ball. ``delta`` starts at a random point of the sphere of radius ``eps / 2``
    (:func:`random_direction`): at ``delta = 0`` some objectives (Cos-UAP, the interpretation
    change D) have a zero gradient. ``optimizer``: see :data:`OPTIMIZERS`; Adam's per-coordinate
    steps end at ``eps * sign(g) / sqrt(d)`` on an ``l2`` sphere, not at the ``l2`` optimum, so
    ``adam`` is refused with ``l2``. ``record``, if given, receives the mean objective of every
    tenth of the run. Returns ``delta`` of shape ``(1, C, H, W)``. The objective is evaluated in the
    training arithmetic (:func:`advbook.precision.autocast`); ``delta`` itself stays float32.
    """
    if norm not in NORMS:
        raise ValueError(f"norm {norm!r} is not known; allowed: {', '.join(NORMS)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r} is not known; allowed: {', '.join(OPTIMIZERS)}")
    if optimizer == "adam" and norm == "l2":
        raise ValueError("optimizer 'adam' does not reach the l2 optimum (its per-coordinate steps end at "
                         "eps*sign(g)/sqrt(d)); use optimizer='pgd' with norm='l2'")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps = {steps} and batch_size = {batch_size} must be >= 1")
    delta = random_direction(tuple(x.shape[1:]), eps / 2, norm, generator, x.device).requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=lr, maximize=True) if optimizer == "adam" else None
    idx_all = torch.arange(len(x), device=x.device)
    values = torch.zeros(steps)
    step = 0
    while step < steps:
        for _, idx in batches(idx_all, idx_all, batch_size, shuffle=True, generator=generator):
            yb = None if y is None else y[idx]
            cb = None if context is None else context[idx]
            with precision.autocast(x.device):  # the fitting arithmetic; the fitted delta is measured in fp32
                value = objective(x[idx], delta, yb, cb).float().mean()
            (g,) = torch.autograd.grad(value, delta)
            with torch.no_grad():
                if opt is not None:
                    delta.grad = g
                    opt.step()
                else:
                    a = lr * eps * (1 - 0.9 * step / max(1, steps - 1))
                    scale = stats.l2_norm(g).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))
                    direction = g.sign() if norm == "linf" else g / scale
                    delta.add_(a * direction)
                delta.copy_(project(delta, eps, norm))
            values[step] = value.detach().cpu()
            step += 1
            if step == steps:
                break
    if record is not None:
        record.extend(c.mean().item() for c in values.tensor_split(min(10, steps)))
    return delta.detach()


def cross_entropy_objective(model: nn.Module, max_loss: float | None = None) -> Callable:
    """SGD-UAP's objective: ``CE(f(clip(x + delta)), y)`` per sample, clamped at ``max_loss`` if given.

    The clamp is Shafahi et al.'s: images already fooled stop dominating the gradient.
    """

    def objective(xb, delta, yb, _):
        ce = F.cross_entropy(model(perturb(xb, delta)), yb, reduction="none")
        return ce if max_loss is None else ce.clamp(max=max_loss)

    return objective


def sgd_uap(model: nn.Module, x: torch.Tensor, eps: float, *, y: torch.Tensor | None = None, norm: str = "linf",
            generator: torch.Generator | None = None, max_loss: float | None = None, **loop) -> torch.Tensor:
    """SGD-UAP (Shafahi et al. 2020): maximise ``mean_i CE(f(clip(x_i + delta)), y_i)`` by :func:`ascend`.

    Label-based: ``y`` are the true labels (chapter 4) or the clean predictions (chapter 5).
    ``loop`` holds :func:`ascend`'s options (``steps``, ``batch_size``, ``optimizer``, ``lr``,
    ``record``). The only SGD-UAP of the book.
    """
    check_call("sgd_uap", eps, norm, y, labels=True)
    model.eval()
    return ascend(cross_entropy_objective(model, max_loss), x, eps, y=y, norm=norm, generator=generator, **loop)


__all__ = ["NORMS", "OPTIMIZERS", "Universal", "check_call", "perturb", "project", "random_direction",
           "random_universal", "ascend", "cross_entropy_objective", "sgd_uap"]
