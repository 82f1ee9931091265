"""Universal perturbations of interpretations (Ehsani Oskouie & Farnia, ICASSP 2023, arXiv 2212.03095).

One perturbation ``delta`` for a whole dataset that changes gradient-based saliency maps:

.. math::  \\max_{\\|\\delta\\|_2 \\le \\epsilon} \\frac1n \\sum_i D\\big(I(x_i + \\delta), I(x_i)\\big)      (1)

Pieces, each a batched function:

* saliency maps ``I``: :func:`simple_gradient` (eq. 2) and :func:`integrated_gradients`
  (eq. 3), both differentiable w.r.t. the input (``create_graph=True``) so that an outer
  gradient through them (double backprop) works;
* dissimilarities ``D``: :func:`l2_dissimilarity` (eq. 4, the objective), and for
  evaluation :func:`topk_intersection` and :func:`spearman` (Ghorbani et al. 2019);
* the universal perturbations, registered in :data:`UNIVERSAL` and called the same way as
  every universal perturbation of the book (:mod:`advbook.methods.universal`):
  :func:`upi_grad` (projected stochastic gradient ascent on (1)), :func:`upi_pca` (the
  first-order, eigenvector solution, :func:`upi_pca_direction`), and the baselines random
  noise and SGD-UAP (a label-based universal adversarial perturbation on cross-entropy,
  Shafahi et al. 2020), both shared with chapter 4;
* the per-sample reference :func:`per_sample_attack` (PGD on D for every image separately);
* :func:`evaluate`: every metric per sample, plus whether the predicted label changed.

Conventions. Images live in ``[0, 1]``; a perturbed image is ``clamp(x + delta, 0, 1)``.
The class ``y`` whose saliency is explained is the model's **predicted label on the
clean input** (:func:`predicted_labels`), held fixed for the perturbed input, so that
``I(x + delta)`` and ``I(x)`` explain the same class. The network must be smooth
(softplus, not ReLU): a ReLU network is piecewise linear, its input Hessian is zero
almost everywhere, and so is the gradient of (1) through a simple-gradient map.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F

from .. import stats
from ..data import batches
from ..params import Choice, ListOf, Number, ParameterError
from . import universal
from .universal import perturb, project

SALIENCY = ("grad", "ig")
"""``grad``: simple gradient (eq. 2); ``ig``: integrated gradients (eq. 3)."""
METRICS = ("l2", "topk", "spearman")
"""Per-sample dissimilarity measures reported by :func:`evaluate`."""
METHODS = ("random", "upi_pca", "upi_grad", "per_sample", "sgd_uap")
"""Perturbations compared in the chapter (``per_sample`` is not universal: one delta per image)."""

CHAPTER = "05_universal_interpretation"
"""The notebook this module backs (``notebooks/05_universal_interpretation.ipynb``)."""

FULL_PATH_TEST = {"dataset": "cifar10", "arch": "resnet18", "width": 4}
"""Overrides that, added to the ``tiny`` profile, run the ``full`` profile's code path on generated
CIFAR-shaped data in the test suite (``tests/test_notebooks.py``): a softplus ResNet-18 on 3x32x32."""

_QUICK = {
    "dataset": "mnist5k", "arch": "smallcnn", "width": 16, "epochs": 8, "n_train": None, "n_test": None,
    "n_fit": 1000, "n_eval": 300, "eps_grid": [0.5, 1.0, 2.0, 3.0], "eps": 2.0,
    "upi_epochs": 3, "upi_batch": 100, "upi_step": 0.25, "attack_steps": 10, "ig_steps": 16,
    "topk": 100, "pca_offset": 0.1, "batch_size": 250, "n_show": 6,
    "check_seeds": [1, 2], "check_offsets": [0.03, 0.3, 1.0], "check_pca_fit": [250, 4000], "check_grad_factor": 3,
}

PROFILES = {
    # 2 CPU cores: the real MNIST 5k sample, a softplus SmallCNN, UPIs fitted on 1,000
    # training images and evaluated on 300 test images (the long profile: 1,000); the why-analysis refits UPI-PCA and
    # UPI-Grad at the figure's radius with two more seeds, other probe offsets, 250 and all
    # 4,000 training images for the SVD, and three times UPI-Grad's steps.
    "quick": _QUICK,
    # 30-60 minutes on 2 CPU cores: more seeds, a longer UPI-Grad, more test images
    "long": {**_QUICK, "n_eval": 1000, "upi_epochs": 6, "attack_steps": 20, "check_seeds": [1, 2, 3, 4],
             "check_grad_factor": 5},
    # one GPU: CIFAR-10, ResNet-18 with softplus (beta 10), 5,000 fitting images, 1,000 test images
    "full": {
        "dataset": "cifar10", "arch": "resnet18", "width": 64, "epochs": 30, "n_train": None, "n_test": None,
        "n_fit": 5000, "n_eval": 1000, "eps_grid": [0.25, 0.5, 1.0, 2.0], "eps": 1.0,
        "upi_epochs": 5, "upi_batch": 128, "upi_step": 0.25, "attack_steps": 20, "ig_steps": 32,
        "topk": 100, "pca_offset": 0.1, "batch_size": 128, "n_show": 6,
        "check_seeds": [1, 2], "check_offsets": [0.03, 0.3, 1.0], "check_pca_fit": [1000, 20000],
        "check_grad_factor": 3,
    },
    # test suite: seconds, numbers meaningless, every code path
    "tiny": {
        "dataset": "mnist5k", "arch": "smallcnn", "width": 8, "epochs": 1, "n_train": 300, "n_test": 100,
        "n_fit": 64, "n_eval": 32, "eps_grid": [1.0, 3.0], "eps": 3.0,
        "upi_epochs": 1, "upi_batch": 32, "upi_step": 0.25, "attack_steps": 2, "ig_steps": 4,
        "topk": 50, "pca_offset": 0.1, "batch_size": 32, "n_show": 3,
        "check_seeds": [1], "check_offsets": [0.3], "check_pca_fit": [32, 128], "check_grad_factor": 2,
    },
}

SCHEMA = {
    "arch": Choice(("smallcnn", "resnet18")),
    "width": Number(int, 1, 1024),
    "n_train": Number(int, 10, 10**7),
    "n_test": Number(int, 10, 10**7),
    "n_fit": Number(int, 2, 10**7),
    "n_eval": Number(int, 2, 10**7),
    # l_2 radii (pixel space [0, 1]); overrides the common l_inf-sized ``eps`` spec
    "eps_grid": ListOf(Number(float, 1e-3, 100.0)),
    "eps": Number(float, 1e-3, 100.0),
    "upi_epochs": Number(int, 1, 1000),
    "upi_batch": Number(int, 1, 100000),
    "upi_step": Number(float, 1e-4, 10.0),
    "attack_steps": Number(int, 1, 10000),
    "ig_steps": Number(int, 1, 1024),
    "topk": Number(int, 1, 10**6),
    "pca_offset": Number(float, 1e-6, 100.0),
    "batch_size": Number(int, 1, 100000),
    "n_show": Number(int, 1, 32),
    "check_seeds": ListOf(Number(int, 0, 2**31 - 1)),
    "check_offsets": ListOf(Number(float, 1e-6, 100.0)),
    "check_pca_fit": ListOf(Number(int, 2, 10**7)),
    "check_grad_factor": Number(int, 1, 100),
}

IMAGE_PIXELS = {"mnist5k": 28 * 28, "mnist": 28 * 28, "fashion": 28 * 28, "cifar10": 32 * 32}
"""Pixels of one saliency map per dataset (the bound of ``topk``)."""


def check(cfg) -> None:
    """Cross-parameter checks, run by :func:`advbook.chapter.setup` before any work."""
    if cfg.n_fit < cfg.upi_batch:
        raise ParameterError(f"parameter 'n_fit' = {cfg.n_fit} must be at least 'upi_batch' = {cfg.upi_batch}")
    for name in ("n_fit", "n_eval"):
        limit = cfg.n_train if name == "n_fit" else cfg.n_test
        if limit is not None and cfg[name] > limit:
            split = "n_train" if name == "n_fit" else "n_test"
            raise ParameterError(f"parameter {name!r} = {cfg[name]} exceeds {split!r} = {limit}")
    pixels = IMAGE_PIXELS.get(cfg.dataset)
    if pixels is not None and cfg.topk > pixels:
        raise ParameterError(f"parameter 'topk' = {cfg.topk} exceeds the {pixels} pixels of a {cfg.dataset} map")


def ascent(cfg, factor: int = 1) -> dict:
    """UPI-Grad's and SGD-UAP's loop options from the chapter's parameters (``upi_epochs`` passes of
    ``upi_batch`` images over the ``n_fit`` fitting images, ``factor`` times as many steps)."""
    steps = factor * cfg.upi_epochs * -(-cfg.n_fit // cfg.upi_batch)
    return {"steps": steps, "batch_size": cfg.upi_batch, "lr": cfg.upi_step, "optimizer": "pgd"}


# ----------------------------------------------------------------------------- helpers


def _bview(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


@torch.no_grad()
def predicted_labels(model: Callable, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The model's predicted labels on ``x``: the class whose saliency is explained throughout."""
    return torch.cat([model(xb).argmax(1) for xb, _ in batches(x, None, batch_size)])




# ----------------------------------------------------------------------------- saliency maps


def prob_gradient(model: Callable, x: torch.Tensor, y: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """``grad_x p_y(x)`` per sample, computed stably: ``p_y * sum_j c_j grad_x z_j``.

    With ``c = onehot(y) - softmax(z)`` this is ``p_y grad_x log p_y``. We form ``c_y`` as
    ``sum_{j != y} p_j`` rather than ``1 - p_y``: for confident predictions ``p_y`` rounds
    to 1 in float32 and autograd's ``1 - p_y`` would drop the ``z_y`` term entirely. The
    vector ``c`` enters as ``grad_outputs``, so with ``create_graph=True`` its dependence on
    ``x`` is kept and an outer gradient (double backprop) is exact.
    """
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        logits = model(x)
        p = F.softmax(logits, dim=1)
        mask = F.one_hot(y, logits.shape[1]).bool()
        others = p.masked_fill(mask, 0.0)
        c = torch.where(mask, others.sum(1, keepdim=True), -others)
        p_y = p.gather(1, y[:, None]).squeeze(1)
        (g,) = torch.autograd.grad(logits, x, grad_outputs=c, create_graph=create_graph)
    g = g * _bview(p_y, g)
    return g if create_graph else g.detach()


def normalise_map(s: torch.Tensor) -> torch.Tensor:
    """Scale each (N, H, W) map to sum 1, so that D compares shapes, not overall gradient size."""
    return s / _bview(s.flatten(1).sum(1).clamp_min(1e-30), s)


def simple_gradient(model: Callable, x: torch.Tensor, y: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """Simple-gradient saliency (eq. 2): ``I(x)_{hw} = sum_c |d p_y / d x_{chw}|``, normalised to sum 1.

    Returns (N, H, W). ``create_graph=True`` keeps it differentiable w.r.t. ``x``.
    """
    return normalise_map(prob_gradient(model, x, y, create_graph).abs().sum(1))


def ig_attributions(model: Callable, x: torch.Tensor, y: torch.Tensor, steps: int = 16,
                    baseline: torch.Tensor | None = None, create_graph: bool = False) -> torch.Tensor:
    """Signed integrated gradients (Sundararajan et al. 2017; eq. 3), shape (N, C, H, W).

    ``IG(x) = (x - xb) * (1/m) sum_{k=1}^m grad p_y(xb + (k - 1/2)/m (x - xb))`` (midpoint
    rule, ``m = steps``, baseline ``xb`` = black image by default). Completeness:
    ``sum IG(x) ~ p_y(x) - p_y(xb)``. All ``m`` interpolants of the batch go through the
    network at once, so inside an outer gradient this costs ``m`` times a simple gradient.
    """
    if baseline is None:
        baseline = torch.zeros_like(x[:1])
    alphas = (torch.arange(steps, device=x.device, dtype=x.dtype) + 0.5) / steps
    diff = x - baseline
    path = baseline.unsqueeze(0) + alphas.view(-1, 1, 1, 1, 1) * diff.unsqueeze(0)  # (m, N, C, H, W)
    grads = prob_gradient(model, path.flatten(0, 1), y.repeat(steps), create_graph)
    return diff * grads.view(steps, *x.shape).mean(0)


def integrated_gradients(model: Callable, x: torch.Tensor, y: torch.Tensor, steps: int = 16,
                         baseline: torch.Tensor | None = None, create_graph: bool = False) -> torch.Tensor:
    """Integrated-gradients saliency: ``I(x)_{hw} = sum_c |IG(x)_{chw}|`` (eq. 3), normalised to sum 1; (N, H, W)."""
    return normalise_map(ig_attributions(model, x, y, steps, baseline, create_graph).abs().sum(1))


def saliency(model: Callable, x: torch.Tensor, y: torch.Tensor, method: str = "grad", *, ig_steps: int = 16,
             create_graph: bool = False) -> torch.Tensor:
    """Dispatch to :func:`simple_gradient` (``grad``) or :func:`integrated_gradients` (``ig``)."""
    if method == "grad":
        return simple_gradient(model, x, y, create_graph)
    if method == "ig":
        return integrated_gradients(model, x, y, ig_steps, create_graph=create_graph)
    raise ValueError(f"saliency method {method!r} is not known; allowed: {', '.join(SALIENCY)}")


def saliency_maps(model: Callable, x: torch.Tensor, y: torch.Tensor, method: str = "grad", *, ig_steps: int = 16,
                  batch_size: int = 256) -> torch.Tensor:
    """Saliency maps of a whole set, batch by batch (no graph kept)."""
    return torch.cat([saliency(model, xb, yb, method, ig_steps=ig_steps) for xb, yb in batches(x, y, batch_size)])


# ----------------------------------------------------------------------------- dissimilarities


def l2_dissimilarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Eq. (4): ``D(a, b) = ||a - b||_2 / ||b||_2`` per sample (differentiable; 0 iff the maps agree)."""
    return stats.l2_norm(a - b) / stats.l2_norm(b)


def topk_intersection(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Share of the ``k`` most salient pixels of ``b`` (clean) that are also among the top ``k`` of ``a`` (perturbed).

    1 = the same top-k set, ~k/d for unrelated maps (Ghorbani, Abid & Zou 2019).
    """
    a, b = a.flatten(1), b.flatten(1)
    if not 1 <= k <= a.shape[1]:
        raise ValueError(f"topk = {k} must be between 1 and the number of pixels ({a.shape[1]})")
    in_a = torch.zeros_like(a, dtype=torch.bool).scatter_(1, a.topk(k, dim=1).indices, True)
    return in_a.gather(1, b.topk(k, dim=1).indices).float().mean(1)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per sample: the Pearson correlation of the (tie-averaged) pixel ranks of two maps."""
    return stats.spearman_rows(a, b)


# ----------------------------------------------------------------------------- UPI-Grad


def interpretation_objective(model: Callable, explain: str = "grad", ig_steps: int = 8) -> Callable:
    """``(x, delta, y, clean_maps) -> D(I(clip(x + delta)), I(x))`` per sample, differentiable in ``delta``.

    ``y`` is the explained class (the clean prediction), ``clean_maps`` the maps ``I(x)``.
    """

    def objective(x, delta, y, clean):
        maps = saliency(model, perturb(x, delta), y, explain, ig_steps=ig_steps, create_graph=True)
        return l2_dissimilarity(maps, clean)

    return objective


def upi_grad(model: Callable, x: torch.Tensor, eps: float, *, y: torch.Tensor | None = None, norm: str = "l2",
             generator: torch.Generator | None = None, explain: str = "grad", ig_steps: int = 8,
             clean_maps: torch.Tensor | None = None, steps: int = 30, batch_size: int = 100,
             optimizer: str = "pgd", lr: float = 0.25, record: list | None = None) -> torch.Tensor:
    """UPI-Grad: projected stochastic gradient ascent on eq. (1) with ``D`` = eq. (4) (double backprop).

    Label-free (``y`` is refused): the explained class is the model's clean prediction,
    computed here. :func:`universal.ascend` runs ``steps`` mini-batch steps of
    ``lr * eps`` along ``g / ||g||_2``, decaying to a tenth. ``clean_maps`` (the clean maps of
    ``x`` for the predicted labels) may be passed to save one pass. Returns ``delta`` (1, C, H, W).
    """
    universal.check_call("upi_grad", eps, norm, y, labels=False)
    labels = predicted_labels(model, x)
    if clean_maps is None:
        clean_maps = saliency_maps(model, x, labels, explain, ig_steps=ig_steps, batch_size=batch_size)
    return universal.ascend(interpretation_objective(model, explain, ig_steps), x, eps, y=labels,
                            context=clean_maps, norm=norm, steps=steps, batch_size=batch_size,
                            optimizer=optimizer, lr=lr, generator=generator, record=record)


# ----------------------------------------------------------------------------- UPI-PCA


def offset_gradients(model: Callable, x: torch.Tensor, y: torch.Tensor, *, offset: float = 0.1,
                     generator: torch.Generator | None = None, clean_maps: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample ``g_i = grad_{x'} D(I(x'), I(x_i))`` at ``x' = x_i + offset * n_i / ||n_i||`` (n_i ~ N(0, I)).

    At ``x' = x_i`` the dissimilarity is at its minimum and its gradient is zero, so the
    gradient is taken at a small random offset. Returns (N, C*H*W).
    """
    if clean_maps is None:
        clean_maps = simple_gradient(model, x, y)
    n = torch.randn(x.shape, generator=generator).to(x.device)
    xp = (x + n * _bview(offset / stats.l2_norm(n), n)).detach().requires_grad_(True)
    with torch.enable_grad():
        d = l2_dissimilarity(simple_gradient(model, xp, y, create_graph=True), clean_maps)
        (g,) = torch.autograd.grad(d.sum(), xp)
    return g.flatten(1)


def upi_pca_direction(model: Callable, x: torch.Tensor, y: torch.Tensor, *, offset: float = 0.1, batch_size: int = 256,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """UPI-PCA's direction: the top right singular vector ``u`` of ``G = [g_1; ...; g_n]`` (eq. 6).

    First order: ``D(I(x + delta), I(x)) ~ delta^T J^T J delta`` near ``delta = 0`` (``J`` the
    Jacobian of the saliency map), so the best universal direction is the top eigenvector of
    ``E[J^T J]``; ``G^T G`` estimates it from the offset gradients. Returns ``(u`` of shape
    (1, C, H, W) with unit norm, singular values of ``G)``.
    """
    rows = [offset_gradients(model, xb, yb, offset=offset, generator=generator) for xb, yb in batches(x, y, batch_size)]
    G = torch.cat(rows).double()
    _, s, vh = torch.linalg.svd(G, full_matrices=False)
    return vh[0].float().view(1, *x.shape[1:]), s.float()


def choose_sign(model: Callable, x: torch.Tensor, y: torch.Tensor, u: torch.Tensor, eps: float, *, batch_size: int = 256,
                clean_maps: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """``delta = +eps u`` or ``-eps u``, whichever gives the larger mean D (eq. 4) on ``(x, y)``."""
    if clean_maps is None:
        clean_maps = saliency_maps(model, x, y, "grad", batch_size=batch_size)
    scores = {}
    for sign in (1.0, -1.0):
        d = sign * eps * u
        vals = [l2_dissimilarity(simple_gradient(model, perturb(xb, d), yb), cb)
                for (xb, yb), (cb, _) in zip(batches(x, y, batch_size), batches(clean_maps, None, batch_size))]
        scores[sign] = torch.cat(vals).mean().item()
    best = max(scores, key=scores.get)
    return best * eps * u, scores


def upi_pca(model: Callable, x: torch.Tensor, eps: float, *, y: torch.Tensor | None = None, norm: str = "l2",
            generator: torch.Generator | None = None, offset: float = 0.1, batch_size: int = 256,
            direction: torch.Tensor | None = None, clean_maps: torch.Tensor | None = None) -> torch.Tensor:
    """UPI-PCA at radius ``eps``: ``+-eps u`` with ``u`` the direction of :func:`upi_pca_direction` (eq. 6).

    Label-free (``y`` is refused; the explained class is the clean prediction) and ``l2`` only
    (``u`` is a unit vector of the l2 geometry of eq. 5). ``direction`` reuses a ``u``
    computed once for several radii; the sign is chosen on ``x`` (:func:`choose_sign`).
    """
    universal.check_call("upi_pca", eps, norm, y, labels=False, norms=("l2",))
    labels = predicted_labels(model, x)
    if direction is None:
        direction, _ = upi_pca_direction(model, x, labels, offset=offset, batch_size=batch_size,
                                         generator=generator)
    delta, _ = choose_sign(model, x, labels, direction, eps, batch_size=batch_size, clean_maps=clean_maps)
    return delta


UNIVERSAL = {
    "random": universal.Universal("random", "random noise", universal.random_universal),
    "upi_pca": universal.Universal("upi_pca", "UPI-PCA", upi_pca, norms=("l2",)),
    "upi_grad": universal.Universal("upi_grad", "UPI-Grad", upi_grad),
    "sgd_uap": universal.Universal("sgd_uap", "SGD-UAP (labels)", universal.sgd_uap, labels=True,
                                   options={"optimizer": "pgd"}),
}
"""Chapter 5's universal perturbations, all called as ``UNIVERSAL[name](model, x, eps, y=..., norm="l2",
generator=..., **options)``. Only ``sgd_uap`` takes labels (the clean predictions); the per-sample
attack (:func:`per_sample_attack`) is not universal and not in the registry."""


# ----------------------------------------------------------------------------- per-sample reference


def per_sample_attack(model: Callable, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 10,
                      step_size: float | None = None, method: str = "grad", ig_steps: int = 8, batch_size: int = 256,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample interpretation attack (upper reference): l_2 PGD on ``D(I(x_i + delta_i), I(x_i))`` for each image.

    ``delta_i <- Proj(delta_i + a g_i / ||g_i||)``, ``a = eps / steps`` by default, from a
    random start in the ball; each sample keeps its best iterate. Returns (N, C, H, W).
    The step is smaller than Madry's ``2.5 eps / steps``: the landscape of D is rugged
    (curvature lives at the scale of the softplus kinks), and long steps overshoot.
    """
    step = step_size if step_size is not None else eps / steps
    objective = interpretation_objective(model, method, ig_steps)
    out = []
    for xb, yb in batches(x, y, batch_size):
        clean = saliency(model, xb, yb, method, ig_steps=ig_steps)
        noise = torch.randn(xb.shape, generator=generator).to(x.device)
        delta = noise * _bview(eps * torch.rand(len(xb), generator=generator).to(x.device) / stats.l2_norm(noise), noise)
        best, best_val = delta.clone(), torch.full((len(xb),), -1.0, device=x.device)
        for t in range(steps + 1):
            d = delta.clone().requires_grad_(True)
            with torch.enable_grad():
                val = objective(xb, d, yb, clean)
                g = torch.autograd.grad(val.sum(), d)[0] if t < steps else None
            val = val.detach()
            better = val > best_val
            best[better], best_val = delta[better], torch.where(better, val, best_val)
            if g is not None:
                g = g / _bview(stats.l2_norm(g).clamp_min(1e-12), g)
                delta = project(delta + step * g, eps, "l2").detach()
        out.append(best)
    return torch.cat(out)


# ----------------------------------------------------------------------------- evaluation


def evaluate(model: Callable, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, *, clean_maps: dict,
             topk: int = 100, ig_steps: int = 16, batch_size: int = 256) -> dict:
    """Every metric per sample for perturbation ``delta`` ((1, C, H, W) universal or (N, C, H, W) per sample).

    ``clean_maps`` maps a saliency method to the clean maps of ``x``. Returns
    ``{method: {"l2", "topk", "spearman"}, "fooled": bool}`` (per-sample tensors);
    ``fooled`` = the predicted label of the perturbed image differs from ``y`` (the clean prediction).
    """
    out = {m: {k: [] for k in METRICS} for m in clean_maps}
    fooled = []
    for i, (xb, yb) in enumerate(batches(x, y, batch_size)):
        sl = slice(i * batch_size, i * batch_size + len(xb))
        db = delta if delta.shape[0] == 1 else delta[sl]
        xa = perturb(xb, db)
        with torch.no_grad():
            fooled.append(model(xa).argmax(1) != yb)
        for m, clean in clean_maps.items():
            a, b = saliency(model, xa, yb, m, ig_steps=ig_steps), clean[sl]
            out[m]["l2"].append(l2_dissimilarity(a, b))
            out[m]["topk"].append(topk_intersection(a, b, topk))
            out[m]["spearman"].append(spearman(a, b))
    result = {m: {k: torch.cat(v) for k, v in d.items()} for m, d in out.items()}
    result["fooled"] = torch.cat(fooled)
    return result


def summarise(per_sample: dict) -> dict:
    """Means of :func:`evaluate`'s per-sample values: ``{method: {metric: mean}, "fooling_rate": share}``."""
    out = {m: {k: v.float().mean().item() for k, v in d.items()} for m, d in per_sample.items() if m != "fooled"}
    out["fooling_rate"] = per_sample["fooled"].float().mean().item()
    return out


def clock(device: torch.device | str) -> Callable[[], float]:
    """The clock that times a method on ``device``, in seconds.

    On a CPU: the process's CPU time (``time.process_time``), which other processes on a shared
    machine do not inflate (with one thread it equals the compute time); on CUDA: wall-clock
    time after a synchronisation, since the work runs on the GPU.
    """
    if torch.device(device).type == "cuda":
        def cuda_clock() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()
        return cuda_clock
    return time.process_time


def timed(fn: Callable, *args, device: torch.device | str = "cpu", **kwargs) -> tuple:
    """``(fn(*args, **kwargs), seconds)`` on :func:`clock` of ``device``."""
    now = clock(device)
    start = now()
    value = fn(*args, **kwargs)
    return value, now() - start


# ----------------------------------------------------------------------------- what a verdict means


def assess(verdict: str, value: float, threshold: float, seeds: list, stronger: dict) -> str:
    """The assessment of a verdict from the why-analysis (the rule the chapter states in its text).

    ``value``: the claim's quantity at the figure's radius in this run (higher = closer to the
    paper); ``threshold``: the value the verdict asks for; ``seeds``: the same quantity under
    other seeds (this run's included); ``stronger``: ``{setting: value}`` under larger budgets,
    more samples or other implementation choices. Rule:

    * ``reproduced`` -> ``holds at this scale``;
    * some stronger setting reaches ``threshold``, or lifts the value above this run's by more
      than the spread over seeds -> ``scale-limited`` (the gap is a matter of budget or choices);
    * otherwise -> ``contradicted`` (no budget, sample size or choice we tried closes the gap
      beyond seed noise).
    """
    if verdict == "reproduced":
        return "holds at this scale"
    spread = max(seeds) - min(seeds) if seeds else 0.0
    best = max(stronger.values()) if stronger else float("-inf")
    if best >= threshold or best - value > spread:
        return "scale-limited"
    return "contradicted"
