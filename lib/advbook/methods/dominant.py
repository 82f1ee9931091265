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

Baselines, all optimised by the *same* loop (:func:`advbook.methods.universal.ascend`: same
optimiser, steps, mini-batches, proxy images and start), so only the objective differs:

* ``random``: uniform random signs, ``delta in {-eps, +eps}^d`` (no optimisation);
* ``sgd_uap``: the label-based universal perturbation SGD-UAP (Shafahi et al. 2020,
  :func:`advbook.methods.universal.sgd_uap`, shared with chapter 5): maximise
  ``E_x CE(f(x+delta), y)`` with the *true* labels, eq. (2);
* ``cos_uap``: a label-free output baseline in the style of Cos-UAP / FG-UAP: minimise
  ``E_x cos(g(x+delta), g(x))``, eq. (3), i.e. push the output away from the clean one.

Every method is registered in :data:`UNIVERSAL` and called the same way (the contract of
:mod:`advbook.methods.universal`): ``UNIVERSAL[name](model, x, eps, y=None, norm="linf",
generator=g, **loop_options) -> delta`` of shape ``(1, C, H, W)``.

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

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import params, stats
from ..data import batches
from ..evaluation import predict
from ..train import fit
from . import universal
from .universal import perturb

METHODS = ("random", "sgd_uap", "cos_uap", "dominant_logits", "dominant_features")
"""Every perturbation of the chapter; the first three are baselines."""
LABEL_FREE = ("random", "cos_uap", "dominant_logits", "dominant_features")
LAYERS = ("logits", "features")
DOWNSTREAM_TASKS = ("mod5", "parity")
"""New labellings of the same images for the downstream head: ``y mod 5`` (5 classes,
pairs digits that look unlike each other: 0/5, 1/6, 2/7, 3/8, 4/9) or ``y mod 2``."""

CHAPTER = "04_dominant_patterns"
"""The notebook this module backs (``notebooks/04_dominant_patterns.ipynb``)."""

FULL_PATH_TEST = {"dataset": "cifar10", "eps": 10 / 255, "eps_grid": [8 / 255, 10 / 255]}
"""Overrides that, added to the ``tiny`` profile, run the ``full`` profile's code path on generated
CIFAR-shaped data in the test suite (``tests/test_notebooks.py``): the reference ResNet-18 of the
``tiny`` CIFAR recipe, 3x32x32 images, the full profile's budgets."""

RECIPE_OVERRIDES = ("epochs",)
"""``epochs`` is the attacked (reference) classifier's: ``None`` keeps the primer's recipe, so the
chapter reuses the primer's cached model. (``eps`` is the attack's budget, not a training one.)"""

PROFILES = {
    # quick: at eps <= 0.1 no universal pattern fools more than ~3% of this MNIST net, so the grid starts
    # at 0.15 and ends at 0.3, the standard MNIST l_inf budget (also the headline eps).
    # full: CIFAR-10 ResNet-18, up to the paper's ImageNet budget 10/255. ``epochs`` None: the primer's recipe.
    # The why-analysis refits four patterns at the headline eps per check (two more seeds, twice the steps):
    # about 2 min on one CPU core in quick.
    "quick": {
        "dataset": "mnist5k", "epochs": None, "eps": 0.3, "eps_grid": [0.15, 0.2, 0.25, 0.3],
        "n_proxy": 4000, "n_test": 1000, "steps": 250, "batch_size": 128, "lr": 1e-2,
        "methods": list(METHODS), "downstream": "mod5", "head_epochs": 10,
        "check_seeds": [1, 2], "check_steps_factor": 2,
    },
    # long (2 CPU cores, about 10 minutes): the quick run plus nine more optimisation seeds and four times
    # the steps for the why-analysis, so the seed-to-seed interval of the gap can decide (refit_assessment)
    "long": {
        "dataset": "mnist5k", "epochs": None, "eps": 0.3, "eps_grid": [0.15, 0.2, 0.25, 0.3],
        "n_proxy": 4000, "n_test": 1000, "steps": 250, "batch_size": 128, "lr": 1e-2,
        "methods": list(METHODS), "downstream": "mod5", "head_epochs": 10,
        "check_seeds": list(range(1, 10)), "check_steps_factor": 4,
    },
    "full": {
        "dataset": "cifar10", "epochs": None, "eps": 10 / 255, "eps_grid": [4 / 255, 6 / 255, 8 / 255, 10 / 255],
        "n_proxy": 50000, "n_test": 10000, "steps": 2000, "batch_size": 128, "lr": 1e-2,
        "methods": list(METHODS), "downstream": "mod5", "head_epochs": 10,
        "check_seeds": [1, 2], "check_steps_factor": 2,
    },
    "tiny": {
        "dataset": "mnist5k", "epochs": None, "eps": 0.3, "eps_grid": [0.2, 0.3],
        "n_proxy": 256, "n_test": 128, "steps": 5, "batch_size": 64, "lr": 1e-2,
        "methods": list(METHODS), "downstream": "mod5", "head_epochs": 1,
        "check_seeds": [1], "check_steps_factor": 2,
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
    "check_seeds": params.ListOf(params.Number(int, 0, 10**6)),
    "check_steps_factor": params.Number(int, 1, 100),
}
"""``check_seeds`` / ``check_steps_factor``: the why-analysis of the first two claims refits the dominant
pattern and the baselines at the headline eps with these optimisation seeds, and with this many times
the steps (1: no longer run)."""


def check(cfg) -> None:
    """Cross-parameter checks, run by :func:`advbook.chapter.setup` before any work."""
    bad = [e for e in [cfg.eps, *cfg.eps_grid] if not e > 0]
    if bad:
        raise params.ParameterError(f"parameter 'eps' = {cfg.eps} and every 'eps_grid' value {cfg.eps_grid} "
                                    f"must be > 0 (got {bad})")
    if not cfg.methods:
        raise params.ParameterError(f"parameter 'methods' is empty; allowed: a list of {', '.join(METHODS)}")


def loop_options(cfg) -> dict:
    """The optimisation loop every optimised pattern of the chapter shares (the official code's)."""
    return {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "optimizer": "adam"}


# ---------------------------------------------------------------------------- objectives


def represent(model: nn.Module, x: torch.Tensor, layer: str = "logits") -> torch.Tensor:
    """``g(x)``: the logits ``model(x)`` or the penultimate features ``model.features(x)``."""
    if layer == "logits":
        return model(x)
    if layer == "features":
        return model.features(x).flatten(1)
    raise ValueError(f"layer {layer!r} is not known; allowed: {', '.join(LAYERS)}")


def dominant_objective(model: nn.Module, layer: str = "logits") -> Callable:
    """Eq. (1) as a per-sample objective to maximise: ``cos(g(clip(x + delta)), g(delta))``.

    Maximising its mean is minimising eq. (1), ``mean_x [1 - cos(...)]``. ``g(delta)`` is the
    network on the pattern alone (a black image plus ``delta``, not clipped, as in the official
    code). Labels are never read.
    """

    def objective(xb, delta, _y, _c):
        g_pert = represent(model, perturb(xb, delta), layer)
        g_alone = represent(model, delta, layer)
        return F.cosine_similarity(g_pert, g_alone.expand_as(g_pert), dim=1)

    return objective


def cos_uap_objective(model: nn.Module, layer: str = "logits") -> Callable:
    """Eq. (3) as a per-sample objective to maximise: ``-cos(g(clip(x + delta)), g(x))``.

    The clean output ``g(x)`` is a fixed target (no gradient). Labels are never read.
    """

    def objective(xb, delta, _y, _c):
        with torch.no_grad():
            g_clean = represent(model, xb, layer)
        return -F.cosine_similarity(represent(model, perturb(xb, delta), layer), g_clean, dim=1)

    return objective


# ---------------------------------------------------------------------------- the methods


def dominant_pattern(model: nn.Module, x: torch.Tensor, eps: float, *, y: torch.Tensor | None = None,
                     norm: str = "linf", generator: torch.Generator | None = None, layer: str = "logits",
                     **loop) -> torch.Tensor:
    """The dominant pattern (eq. 1) of ``model`` on proxy images ``x``, found by :func:`universal.ascend`.

    Label-free (``y`` is refused). ``loop``: ``steps``, ``batch_size``, ``optimizer`` (``adam``,
    the official code's, with ``lr = 1e-2``), ``lr``, ``record``. Returns ``delta`` (1, C, H, W).
    """
    universal.check_call(f"dominant_{layer}", eps, norm, y, labels=False)
    model.eval()
    return universal.ascend(dominant_objective(model, layer), x, eps, norm=norm, generator=generator, **loop)


def cos_uap(model: nn.Module, x: torch.Tensor, eps: float, *, y: torch.Tensor | None = None, norm: str = "linf",
            generator: torch.Generator | None = None, layer: str = "logits", **loop) -> torch.Tensor:
    """The label-free output baseline (eq. 3, Cos-UAP / FG-UAP style) by :func:`universal.ascend`."""
    universal.check_call("cos_uap", eps, norm, y, labels=False)
    model.eval()
    return universal.ascend(cos_uap_objective(model, layer), x, eps, norm=norm, generator=generator, **loop)


UNIVERSAL = {
    "random": universal.Universal("random", "random", universal.random_universal),
    "sgd_uap": universal.Universal("sgd_uap", "SGD-UAP (labels)", universal.sgd_uap, labels=True),
    "cos_uap": universal.Universal("cos_uap", "Cos-UAP", cos_uap),
    "dominant_logits": universal.Universal("dominant_logits", "dominant (logits)", dominant_pattern,
                                           options={"layer": "logits"}),
    "dominant_features": universal.Universal("dominant_features", "dominant (features)", dominant_pattern,
                                             options={"layer": "features"}),
}
"""Chapter 4's universal perturbations, all called as ``UNIVERSAL[name](model, x, eps, y=..., norm="linf",
generator=..., steps=..., batch_size=..., lr=...)``; only ``sgd_uap`` takes labels (``.labels``)."""


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


def refit_assessment(seed_gaps: Sequence[float], steps_gap: float | None = None, *, margin: float = 0.05,
                     widen: float = 0.03) -> dict:
    """Why a gap claim fell short of *reproduced*, judged from patterns refitted at the headline budget.

    ``seed_gaps`` holds the headline gap (dominant pattern's fooling rate minus the best
    baseline's) of patterns optimised with each seed, the chapter's own seed first;
    ``steps_gap`` that of patterns optimised from the chapter's seed with more steps.
    Over the seeds, the mean gap and its Student-t interval (:func:`advbook.stats.t_interval`)
    ``[lo, hi]`` decide, in this order:

    * **scale-limited** when more optimisation widens the gap by at least ``widen``
      (``steps_gap >= seed_gaps[0] + widen``);
    * **holds at this scale** when ``lo > 0``: the dominant pattern wins whatever the seed,
      by less than the rule's ``margin`` on the headline run;
    * **contradicted** when ``hi < margin``: an advantage as large as the claim's is excluded
      across seeds (with ``hi < 0`` the baseline wins whatever the seed);
    * **scale-limited** otherwise: the interval holds both 0 and ``margin``, too few seeds
      to decide (a profile with more ``check_seeds`` narrows it).

    Returns ``{"assessment", "reason", "mean", "low", "high", "seeds"}``.
    """
    gaps = [float(g) for g in seed_gaps]
    mean, lo, hi = stats.t_interval(gaps)
    out = {"mean": mean, "low": lo, "high": hi, "seeds": len(gaps)}
    across = f"over {len(gaps)} seeds the headline gap is {mean:+.3f}, 95% t-interval [{lo:+.3f}, {hi:+.3f}]"
    if steps_gap is not None and steps_gap >= gaps[0] + widen:
        return {**out, "assessment": "scale-limited",
                "reason": f"more optimisation steps widen the gap ({gaps[0]:+.3f} to {steps_gap:+.3f}); {across}"}
    if lo > 0:
        return {**out, "assessment": "holds at this scale",
                "reason": f"the dominant pattern wins whatever the seed, by less than the rule's margin: {across}"}
    if hi < 0:
        return {**out, "assessment": "contradicted", "reason": f"the baseline wins whatever the seed: {across}"}
    if hi < margin:
        return {**out, "assessment": "contradicted",
                "reason": f"an advantage of {margin:g} or more is excluded: {across}"}
    return {**out, "assessment": "scale-limited",
            "reason": f"too few refits to decide: {across}, which holds both 0 and the margin {margin:g}"}
