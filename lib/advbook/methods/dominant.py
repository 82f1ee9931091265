"""Dominant patterns (Ye, Qin, Chen & Huang 2021, arXiv 2105.15057) and universal baselines.

A *dominant pattern* is one image-agnostic perturbation ``delta`` (``||delta||_inf <= eps``)
that, added to any image, makes the network answer as it answers for ``delta`` alone:

.. math::

    \\min_{\\|\\delta\\|_\\infty \\le \\epsilon}\\;
    \\mathbb{E}_x\\bigl[\\,1 - \\cos\\bigl(g(x+\\delta),\\, g(\\delta)\\bigr)\\bigr]   \\qquad (1)

with ``g`` the logits (the paper's default) or the penultimate features, and ``g(delta)``
the network on ``delta`` alone: a black image (all zeros) plus ``delta``, fed *unclipped*
as in the official code (``tarNet(self.dp)``). The proxy images' labels are never used.
Following the official code the optimiser is Adam with learning rate ``1e-2`` and
``delta`` is clamped to ``[-eps, eps]`` after every step.

Baselines, all optimised by the *same* loop (:func:`optimise_pattern`: same optimiser,
steps, mini-batches, proxy images and start), so only the objective differs:

* ``random``: uniform random signs, ``delta in {-eps, +eps}^d`` (no optimisation);
* ``sgd_uap``: a label-based universal perturbation in the style of SGD-UAP
  (Shafahi et al. 2020): maximise ``E_x CE(f(x+delta), y)`` with the *true* labels, eq. (2);
* ``cos_uap``: a label-free output baseline in the style of Cos-UAP / FG-UAP: minimise
  ``E_x cos(g(x+delta), g(x))``, eq. (3), i.e. push the output away from the clean one.

A DeepFool-based UAP (Moosavi-Dezfooli et al. 2017) is not implemented: its per-image
DeepFool inner loop is a Python loop over samples and far too slow for the quick profile.

Everywhere (optimisation and evaluation) the perturbed image is ``clip(x + delta, 0, 1)``,
so it stays a valid image. Metrics (eq. 4, 5) are computed on held-out images:

* fooling rate ``FR = mean[ argmax f(x+delta) != argmax f(x) ]``;
* dominance ``D = mean[ argmax f(x+delta) == argmax f(delta) ]``.

The *downstream* claim (the pattern also fools other tasks that share the backbone) is
tested with :class:`FrozenBackbone`: the classifier's feature extractor, frozen, with a new
linear head trained by :func:`train_downstream_head` for another labelling of the images.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import params
from ..data import batches
from ..evaluation import predict
from ..train import fit

METHODS = ("random", "sgd_uap", "cos_uap", "dominant_logits", "dominant_features")
"""Every perturbation of the chapter; the first three are baselines."""
LABEL_FREE = ("random", "cos_uap", "dominant_logits", "dominant_features")
LAYERS = ("logits", "features")
DOWNSTREAM_TASKS = ("mod5", "parity")
"""New labellings of the same images for the downstream head: ``y mod 5`` (5 classes,
pairs digits that look unlike each other: 0/5, 1/6, 2/7, 3/8, 4/9) or ``y mod 2``."""

CHAPTER = "04_dominant_patterns"
"""The notebook this module backs (``notebooks/04_dominant_patterns.ipynb``)."""

FULL_PATH_TEST = {"dataset": "cifar10"}
"""Overrides that, added to the ``tiny`` profile, run the ``full`` profile's code path on generated
CIFAR-shaped data in the test suite (``tests/test_notebooks.py``)."""

PROFILES = {
    # quick: at eps <= 0.1 no universal pattern fools more than ~3% of this MNIST net, so the grid starts
    # at 0.15 and ends at 0.3, the standard MNIST l_inf budget (also the headline eps).
    # full: CIFAR-10 ResNet-18, up to the paper's ImageNet budget 10/255. ``epochs`` None: the primer's recipe.
    "quick": {
        "dataset": "mnist5k", "epochs": None, "eps": 0.3, "eps_grid": [0.15, 0.2, 0.25, 0.3],
        "n_proxy": 4000, "n_test": 1000, "steps": 250, "batch_size": 128, "lr": 1e-2,
        "methods": list(METHODS), "downstream": "mod5", "head_epochs": 10,
    },
    "full": {
        "dataset": "cifar10", "epochs": None, "eps": 10 / 255, "eps_grid": [4 / 255, 6 / 255, 8 / 255, 10 / 255],
        "n_proxy": 50000, "n_test": 10000, "steps": 2000, "batch_size": 128, "lr": 1e-2,
        "methods": list(METHODS), "downstream": "mod5", "head_epochs": 10,
    },
    "tiny": {
        "dataset": "mnist5k", "epochs": None, "eps": 0.3, "eps_grid": [0.2, 0.3],
        "n_proxy": 256, "n_test": 128, "steps": 5, "batch_size": 64, "lr": 1e-2,
        "methods": list(METHODS), "downstream": "mod5", "head_epochs": 1,
    },
}

SCHEMA = {
    "eps_grid": params.ListOf(params.Number(float, 0.0, 1.0)),
    "n_proxy": params.Number(int, 16, 10**6),
    "n_test": params.Number(int, 16, 10**6),
    "steps": params.Number(int, 1, 10**6),
    "batch_size": params.Number(int, 1, 8192),
    "lr": params.Number(float, 1e-6, 10.0),
    "methods": params.ListOf(params.Choice(METHODS)),
    "downstream": params.Choice(DOWNSTREAM_TASKS),
    "head_epochs": params.Number(int, 1, 1000),
}


# ---------------------------------------------------------------------------- objectives


def perturb(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The perturbed images ``clip(x + delta, 0, 1)`` (``delta`` broadcasts over the batch)."""
    return (x + delta).clamp(0.0, 1.0)


def represent(model: nn.Module, x: torch.Tensor, layer: str = "logits") -> torch.Tensor:
    """``g(x)``: the logits ``model(x)`` or the penultimate features ``model.features(x)``."""
    if layer == "logits":
        return model(x)
    if layer == "features":
        return model.features(x).flatten(1)
    raise ValueError(f"layer {layer!r} is not known; allowed: {', '.join(LAYERS)}")


def dominant_loss(layer: str = "logits") -> Callable:
    """Eq. (1), the dominant-pattern objective: ``mean_x [1 - cos(g(clip(x+delta)), g(delta))]``.

    ``g(delta)`` is the network on the pattern alone (a black image plus ``delta``, not
    clipped, as in the official code). Labels are ignored (``y`` is accepted and unused).
    """

    def loss(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        g_pert = represent(model, perturb(x, delta), layer)
        g_alone = represent(model, delta, layer)
        return (1 - F.cosine_similarity(g_pert, g_alone.expand_as(g_pert), dim=1)).mean()

    return loss


def cos_uap_loss(layer: str = "logits") -> Callable:
    """Eq. (3), the label-free output baseline: minimise ``mean_x cos(g(clip(x+delta)), g(x))``.

    The clean output ``g(x)`` is a fixed target (no gradient). Labels are ignored.
    """

    def loss(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            g_clean = represent(model, x, layer)
        return F.cosine_similarity(represent(model, perturb(x, delta), layer), g_clean, dim=1).mean()

    return loss


def sgd_uap_loss(max_loss: float | None = None) -> Callable:
    """Eq. (2), the label-based baseline (SGD-UAP): minimise ``-mean_x CE(f(clip(x+delta)), y)``.

    ``max_loss`` clamps each sample's cross-entropy (Shafahi et al.'s clamped loss), so that
    images already fooled stop dominating the gradient; ``None`` keeps plain CE.
    """

    def loss(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            raise ValueError("sgd_uap needs labels (true or predicted) for the proxy images")
        ce = F.cross_entropy(model(perturb(x, delta)), y, reduction="none")
        if max_loss is not None:
            ce = ce.clamp(max=max_loss)
        return -ce.mean()

    return loss


# ---------------------------------------------------------------------------- optimisation


def random_pattern(shape: tuple, eps: float, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """The random baseline: ``delta = eps * s`` with i.i.d. uniform signs ``s in {-1, +1}``, shape ``(1, *shape)``."""
    signs = torch.randint(0, 2, (1, *shape), generator=generator).float().mul(2).sub(1)
    return (eps * signs).to(device)


def optimise_pattern(
    model: nn.Module,
    x: torch.Tensor,
    loss_fn: Callable,
    eps: float,
    *,
    y: torch.Tensor | None = None,
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 1e-2,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, list]:
    """One universal ``delta`` minimising ``loss_fn(model, x_batch, delta, y_batch)`` over ``||delta||_inf <= eps``.

    Adam (``lr``) on mini-batches drawn without replacement from ``x`` (reshuffled each
    pass), ``delta`` clamped to ``[-eps, eps]`` after every step (the official code's
    projection). ``delta`` starts uniform in ``[-eps/2, eps/2]`` (seeded): the official code
    starts from zero, but the ``cos_uap`` objective has a zero gradient at ``delta = 0``,
    so every method starts from the same random point. Only ``delta`` gets gradients; the
    model stays in eval mode. Returns ``(delta of shape (1, C, H, W), losses)`` with the
    mean loss of every tenth of the run.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    model.eval()
    start = (torch.rand((1, *x.shape[1:]), generator=generator) - 0.5) * eps
    delta = start.to(x.device).requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=lr)
    losses = torch.zeros(steps, device=x.device)
    step = 0
    while step < steps:
        for xb, yb in batches(x, y, batch_size, shuffle=True, generator=generator):
            loss = loss_fn(model, xb, delta, yb)
            (grad,) = torch.autograd.grad(loss, delta)
            delta.grad = grad
            opt.step()
            with torch.no_grad():
                delta.clamp_(-eps, eps)
            losses[step] = loss.detach()
            step += 1
            if step == steps:
                break
    chunks = losses.cpu().tensor_split(min(10, steps))
    return delta.detach(), [c.mean().item() for c in chunks]


def make_pattern(method: str, model: nn.Module, x: torch.Tensor, eps: float, *, y: torch.Tensor | None = None,
                 steps: int = 300, batch_size: int = 128, lr: float = 1e-2,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, list]:
    """The universal perturbation of ``method`` (one of :data:`METHODS`) at budget ``eps``.

    Only ``sgd_uap`` reads ``y`` (the proxy images' labels); the others never see labels.
    """
    if method == "random":
        return random_pattern(tuple(x.shape[1:]), eps, generator, x.device), []
    objectives = {
        "sgd_uap": sgd_uap_loss(),
        "cos_uap": cos_uap_loss("logits"),
        "dominant_logits": dominant_loss("logits"),
        "dominant_features": dominant_loss("features"),
    }
    if method not in objectives:
        raise ValueError(f"method {method!r} is not known; allowed: {', '.join(METHODS)}")
    labels = y if method == "sgd_uap" else None
    return optimise_pattern(model, x, objectives[method], eps, y=labels, steps=steps, batch_size=batch_size, lr=lr,
                            generator=generator)


# ---------------------------------------------------------------------------- metrics


@torch.no_grad()
def evaluate_pattern(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, num_classes: int,
                     batch_size: int = 512) -> dict:
    """Fooling rate (eq. 4) and dominance (eq. 5) of ``delta`` on held-out images ``x``.

    Returns ``fooling_rate``, ``dominance``, ``pattern_class`` (``argmax f(delta)``), and the
    class histograms (counts) of the clean and the perturbed predictions.
    """
    clean = predict(model, x, batch_size).argmax(1)
    pert = torch.cat([model(perturb(xb, delta)).argmax(1) for xb, _ in batches(x, None, batch_size)])
    alone = model(delta).argmax(1).item()
    return {
        "fooling_rate": (pert != clean).float().mean().item(),
        "dominance": (pert == alone).float().mean().item(),
        "pattern_class": alone,
        "clean_hist": torch.bincount(clean, minlength=num_classes).tolist(),
        "perturbed_hist": torch.bincount(pert, minlength=num_classes).tolist(),
    }


# ---------------------------------------------------------------------------- downstream task


def downstream_labels(y: torch.Tensor, task: str) -> tuple[torch.Tensor, int]:
    """The downstream labelling of images with original labels ``y``: ``(labels, num_classes)``."""
    if task == "mod5":
        return y % 5, 5
    if task == "parity":
        return y % 2, 2
    raise ValueError(f"downstream task {task!r} is not known; allowed: {', '.join(DOWNSTREAM_TASKS)}")


class FrozenBackbone(nn.Module):
    """``head(backbone.features(x))`` with the backbone frozen (no gradients, eval mode).

    Exposes ``features`` and ``head`` like every model of the book.
    """

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone = backbone.eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.head = head

    def train(self, mode: bool = True) -> "FrozenBackbone":
        super().train(mode)
        self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_downstream_head(backbone: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, *,
                          epochs: int = 10, batch_size: int = 128, lr: float = 1e-2, seed: int = 0) -> tuple[FrozenBackbone, list]:
    """Train a new linear head for labels ``y`` on the frozen ``backbone``'s features.

    The features are computed once (the backbone never changes), then the head is fit by
    :func:`advbook.train.fit` (Adam, one-cycle schedule). Returns the :class:`FrozenBackbone`
    model and the training history.
    """
    backbone.eval()
    feats = predict(lambda t: backbone.features(t).flatten(1), x)
    torch.manual_seed(seed)
    head = nn.Linear(feats.shape[1], num_classes).to(x.device)
    history = fit(head, feats, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam",
                  generator=torch.Generator().manual_seed(seed))
    return FrozenBackbone(backbone, head).eval(), history.as_dict()


# ---------------------------------------------------------------------------- verdict helpers


def best_baseline(table: dict, methods: list, eps_key: str, metric: str = "fooling_rate") -> tuple[str, float]:
    """The baseline (method, value) with the highest ``metric`` at ``eps_key`` among ``methods``."""
    scored = [(m, table[m][eps_key][metric]) for m in methods if m in table]
    if not scored:
        return "none", float("nan")
    return max(scored, key=lambda mv: mv[1])
