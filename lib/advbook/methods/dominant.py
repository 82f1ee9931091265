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

Baselines, all optimised by the *same* loop (:func:`advbook.universal.ascend`: same
optimiser, steps, mini-batches, proxy images and start), so only the objective differs:

* ``random``: uniform random signs, ``delta in {-eps, +eps}^d`` (no optimisation);
* ``sgd_uap``: the label-based universal perturbation SGD-UAP (Shafahi et al. 2020,
  :func:`advbook.universal.sgd_uap`, shared with chapter 5): maximise
  ``E_x CE(f(x+delta), y)`` with the *true* labels, eq. (2);
* ``cos_uap``: a label-free output baseline in the style of Cos-UAP / FG-UAP: minimise
  ``E_x cos(g(x+delta), g(x))``, eq. (3), i.e. push the output away from the clean one.

Every method is registered in :data:`UNIVERSAL` and called the same way (the contract of
:mod:`advbook.universal`): ``UNIVERSAL[name](model, x, eps, y=None, norm="linf",
generator=g, **loop_options) -> delta`` of shape ``(1, C, H, W)``.

A DeepFool-based UAP (Moosavi-Dezfooli et al. 2017) is not implemented: its per-image
DeepFool inner loop is a Python loop over samples and far too slow for the quick profile.

Everywhere (optimisation and evaluation) the perturbed image is ``clip(x + delta, 0, 1)``,
so it stays a valid image. Metrics (eq. 4, 5) are computed on held-out images:

* fooling rate ``FR = mean[ argmax f(x+delta) != argmax f(x) ]``;
* dominance ``D = mean[ argmax f(x+delta) == argmax f(delta) ]``.

* dominance among the images that must move ``D_move = mean[ argmax f(x+delta) == argmax f(delta) ]``
  over the images whose clean prediction is *not* already ``argmax f(delta)``.

The *downstream* claim (the pattern also fools other tasks that share the backbone) is tested
on a genuinely new task (:func:`split_classes`): an *upstream* classifier trained on the first
classes (digits 0-4), whose convolutional part is frozen and whose fully-connected classifier is
trained anew for the other classes (digits 5-9) by :func:`retrain_classifier`, as the authors'
code does for VGG19. The patterns are fitted on the upstream classifier and reused unchanged.

Every claim of the chapter is declared once in :data:`CLAIMS` (:class:`advbook.protocol.Claim`)
and graded over optimisation seeds by the notebook; the per-seed statistics are computed here
(:func:`seed_statistic`, :func:`claim_statistic`, :func:`stronger_replicates`). The chapter's
experiment is cached here too (:mod:`advbook.cache`): :func:`pattern` fits one pattern,
:func:`evaluated` measures it, :func:`fit_seed` does both for every method and budget of one seed.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import cache, params
from ..params import Param, declare
from ..data import TensorData, batches
from ..evaluation import predict
from ..protocol import Claim
from ..train import fit
from .. import universal
from ..universal import perturb

METHODS = ("random", "sgd_uap", "cos_uap", "dominant_logits", "dominant_features")
"""Every perturbation of the chapter; the first three are baselines."""
LABEL_FREE = ("random", "cos_uap", "dominant_logits", "dominant_features")
LAYERS = ("logits", "features")
GRADED = ("random", "sgd_uap", "cos_uap", "dominant_logits")
"""The methods the claims compare, fitted with every optimisation seed (``dominant_features`` is
fitted with the first seed only, for the figures)."""
NULL_SEED_OFFSET = 1000
"""The null's second random pattern of seed ``s`` is drawn with seed ``s + NULL_SEED_OFFSET``."""

CHAPTER = "04_dominant_patterns"
"""The notebook this module backs (``notebooks/04_dominant_patterns.ipynb``)."""

FULL_PATH_TEST = {"dataset": "cifar10", "eps": 10 / 255, "eps_grid": [8 / 255, 10 / 255]}
"""Overrides that, added to the ``tiny`` profile, run the ``full`` profile's code path on generated
CIFAR-shaped data in the test suite (``tests/test_notebooks.py``): the reference ResNet-18 of the
``tiny`` CIFAR recipe, 3x32x32 images, the full profile's budgets."""

RECIPE_OVERRIDES = ("epochs",)
"""``epochs`` is the attacked (reference) classifier's: ``None`` keeps the primer's recipe, so the
chapter reuses the primer's cached model. (``eps`` is the attack's budget, not a training one.)"""

PARAMETERS = declare(
    # quick: at eps <= 0.1 no universal pattern fools more than ~3% of this MNIST net, so the grid starts at 0.15
    # and ends at 0.3, the standard MNIST l_inf budget (also the headline eps). Replicates: three optimisation
    # seeds, each fitting every graded method at every budget, plus the downstream patterns at the headline budget:
    # 49 optimised patterns of about 8 CPU-seconds each (the cold run took 6 CPU-minutes, 21 min wall on a shared
    # 2-core machine). No stronger setting (check_steps_factor 1): the long profile runs it. full: CIFAR-10
    # ResNet-18, up to the paper's ImageNet budget 10/255. ``epochs`` None: the primer's recipe.
    # long: eight optimisation seeds, and four times the steps for the first two of them (the stronger setting that
    # tells a scale-limited verdict from one without a trend): about 220 pattern-units of 8 CPU-seconds, some 30
    # CPU-minutes (an estimate from the quick run; not yet recorded)
    # tiny: two seeds (so that every claim has an interval) and a stronger setting, in seconds
    dataset=Param("mnist5k", doc="mnist5k | mnist | fashion | cifar10 (None: the profile's)", full="cifar10"),
    epochs=Param(None, doc="the attacked classifier's epochs (None: the primer's recipe)"),
    eps=Param(0.3, doc="the headline l_inf budget of the patterns (added to eps_grid if missing)", full=10 / 255),
    eps_grid=Param([0.15, 0.2, 0.25, 0.3], params.ListOf(params.Number(float, 0.0, 1.0)), "l_inf budgets of the sweep",
                   full=[4 / 255, 6 / 255, 8 / 255, 10 / 255], tiny=[0.2, 0.3]),
    n_proxy=Param(4000, params.Number(int, 16, 10**6), "proxy (training) images the patterns are fitted on", full=50000,
                  tiny=256),
    n_test=Param(1000, params.Number(int, 16, 10**6), "held-out test images the patterns are measured on", full=10000,
                 tiny=128),
    steps=Param(250, params.Number(int, 1, 10**6), "optimisation steps of every optimised pattern", full=2000, tiny=5),
    batch_size=Param(128, params.Number(int, 1, 8192), "mini-batch of the optimisation", tiny=64),
    lr=Param(0.01, params.Number(float, 1e-6, 10.0), "Adam's learning rate (the official code's 1e-2)"),
    sgd_max_loss=Param(3.0, params.Number(float, 0.01, 1000.0), "SGD-UAP's clipped cross-entropy (Shafahi et al.)"),
    methods=Param(["random", "sgd_uap", "cos_uap", "dominant_logits", "dominant_features"],
                  params.ListOf(params.Choice(METHODS)), "which patterns to compute (None: all)"),
    upstream_classes=Param(5, params.Number(int, 2, 999),
                           "downstream task: classes 0..k-1 upstream, the others downstream"),
    head_epochs=Param(10, params.Number(int, 1, 1000), "training epochs of the downstream classifier", tiny=1),
    seeds=Param([0, 1, 2], params.ListOf(params.Number(int, 0, 10**6)),
                "optimisation seeds: the replicates of every claim", long=[0, 1, 2, 3, 4, 5, 6, 7],
                full=[0, 1, 2, 3, 4], tiny=[0, 1]),
    check_steps_factor=Param(1, params.Number(int, 1, 100), "stronger setting: this many times the steps ...", long=4,
                             full=2, tiny=2),
    stronger_seeds=Param(0, params.Number(int, 0, 10**6), "... for the first this-many seeds (0: not run)", long=2,
                         full=2, tiny=1),
)
"""``seeds``: the optimisation seeds, the replicates of every claim (each seed fits every graded method
at every budget). ``check_steps_factor`` / ``stronger_seeds``: the stronger setting, the first
``stronger_seeds`` seeds refitted with this many times the steps (factor 1 or 0 seeds: not run).
``sgd_max_loss``: Shafahi et al.'s clip of SGD-UAP's cross-entropy. ``upstream_classes``: the
downstream task's split, classes ``0..k-1`` upstream and the rest downstream."""
PROFILES, SCHEMA = PARAMETERS.profiles, PARAMETERS.schema
"""What each profile sets and what each parameter allows, as :func:`advbook.params.resolve` takes them."""


def check(cfg) -> None:
    """Cross-parameter checks, run by :func:`advbook.book.chapter.setup` before any work."""
    bad = [e for e in [cfg.eps, *cfg.eps_grid] if not e > 0]
    if bad:
        raise params.ParameterError(f"parameter 'eps' = {cfg.eps} and every 'eps_grid' value {cfg.eps_grid} "
                                    f"must be > 0 (got {bad})")
    if not cfg.methods:
        raise params.ParameterError(f"parameter 'methods' is empty; allowed: a list of {', '.join(METHODS)}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise params.ParameterError(f"parameter 'seeds' = {cfg.seeds} must be a non-empty list of distinct seeds")
    if cfg.stronger_seeds > len(cfg.seeds):
        raise params.ParameterError(f"parameter 'stronger_seeds' = {cfg.stronger_seeds} must be <= the number of "
                                    f"'seeds' ({len(cfg.seeds)})")


def loop_options(cfg) -> dict:
    """The optimisation loop every optimised pattern of the chapter shares (the official code's)."""
    return {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "optimizer": "adam"}


def method_options(method: str, cfg) -> dict:
    """Options one method gets beyond the shared loop: SGD-UAP's clipped loss (Shafahi et al. 2020)."""
    return {"max_loss": cfg.sgd_max_loss} if method == "sgd_uap" else {}


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

    Returns ``fooling_rate``, ``dominance`` (share of all perturbed predictions equal to
    ``pattern_class = argmax f(delta)``), ``dominance_moved`` (the same share among the
    ``n_moved`` images whose clean prediction is not already the pattern's class: the images the
    pattern must move; NaN when there are none), and the class histograms (counts) of the clean
    and the perturbed predictions.
    """
    clean = predict(model, x, batch_size).argmax(1)
    pert = torch.cat([model(perturb(xb, delta)).argmax(1) for xb, _ in batches(x, None, batch_size)])
    alone = model(delta).argmax(1).item()
    must_move = clean != alone
    n_moved = int(must_move.sum().item())
    return {
        "fooling_rate": (pert != clean).float().mean().item(),
        "dominance": (pert == alone).float().mean().item(),
        "dominance_moved": (pert[must_move] == alone).float().mean().item() if n_moved else float("nan"),
        "n_moved": n_moved,
        "pattern_class": alone,
        "clean_hist": torch.bincount(clean, minlength=num_classes).tolist(),
        "perturbed_hist": torch.bincount(pert, minlength=num_classes).tolist(),
    }


# ---------------------------------------------------------------------------- downstream task


def split_classes(data: TensorData, upstream_classes: int = 5) -> tuple[TensorData, TensorData]:
    """A genuinely new downstream task: ``(upstream, downstream)`` splits of ``data`` by class.

    The upstream task holds the classes ``0..k-1`` (digits 0-4 for ``k = 5``), the downstream
    task the others, relabelled ``0..K-k-1`` (digits 5-9 as 0-4). No downstream class is a
    coarsening or relabelling of an upstream one, so a head for it cannot borrow the old head.
    """
    k = upstream_classes
    if not 1 < k < data.num_classes - 1:
        raise ValueError(f"upstream_classes = {k} must leave at least two classes on each side of "
                         f"{data.num_classes}")

    def part(keep, offset, classes):
        tr, te = keep(data.y_train), keep(data.y_test)
        return TensorData(data.name, data.x_train[tr], data.y_train[tr] - offset, data.x_test[te],
                          data.y_test[te] - offset, classes=tuple(classes))

    up = part(lambda y: y < k, 0, data.classes[:k])
    down = part(lambda y: y >= k, k, data.classes[k:])
    return up, down


class Downstream(nn.Module):
    """``classifier(conv(x))``: the upstream network's frozen convolutional part ``conv`` with a new
    fully-connected ``classifier`` (:func:`retrain_classifier`). Exposes ``features`` (the new
    classifier's penultimate layer) and ``head`` like every model of the book."""

    def __init__(self, upstream: nn.Module, classifier: nn.Sequential):
        super().__init__()
        self.upstream = upstream.eval()
        for p in self.upstream.parameters():
            p.requires_grad_(False)
        self.classifier = classifier

    def train(self, mode: bool = True) -> "Downstream":
        super().train(mode)
        self.upstream.eval()
        return self

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        return conv_part(self.upstream, x)

    @property
    def head(self) -> nn.Module:
        return self.classifier[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier[:-1](self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(x))


def _first_linear(model: nn.Module) -> int | None:
    body = getattr(model, "body", None)
    if isinstance(body, nn.Sequential):
        return next((i for i, layer in enumerate(body) if isinstance(layer, nn.Linear)), None)
    return None


def conv_part(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The upstream network's convolutional part on ``x``: a SmallCNN's body up to its first linear
    layer (the flattened conv maps); for other networks (ResNet-18) the pooled ``features``."""
    cut = _first_linear(model)
    if cut is None:
        return model.features(x).flatten(1)
    return model.body[:cut](model.normalize(x))


def new_classifier(model: nn.Module, num_classes: int) -> nn.Sequential:
    """A freshly initialised copy of ``model``'s fully-connected classifier with ``num_classes`` outputs.

    SmallCNN: its FC layers after the conv part (``fc(hidden)-act``) and a new head; ResNet-18:
    a new linear head on the pooled features (its only FC layer).
    """
    cut = _first_linear(model)
    if cut is None:
        return nn.Sequential(nn.Linear(model.head.in_features, num_classes))
    hidden = copy.deepcopy(model.body[cut:])
    for layer in hidden:
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return nn.Sequential(*hidden, nn.Linear(model.head.in_features, num_classes))


def retrain_classifier(upstream: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, *,
                       epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, seed: int = 0) -> tuple[Downstream, list]:
    """The downstream network: ``upstream``'s convolutional part frozen, its fully-connected classifier
    trained anew on ``(x, y)`` (the authors' code retrains VGG19's whole classifier on the frozen
    convolutional part). The conv maps are computed once (they never change), then the new
    classifier is fit by :func:`advbook.train.fit` (Adam, one-cycle schedule). Returns the
    :class:`Downstream` model and the training history.
    """
    upstream.eval()
    with torch.no_grad():
        maps = torch.cat([conv_part(upstream, xb) for xb, _ in batches(x, None, 512)])
    torch.manual_seed(seed)
    classifier = new_classifier(upstream, num_classes).to(x.device)
    history = fit(classifier, maps, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam",
                  generator=torch.Generator().manual_seed(seed))
    return Downstream(upstream, classifier).eval(), history.as_dict()


# ---------------------------------------------------------------------------- per-seed statistics


def seed_statistic(per_seed: dict, method: str, comparator: str, key: str = "fooling_rate",
                   budgets: Sequence | None = None) -> list[float]:
    """One value per seed: the mean over ``budgets`` (default: all) of ``key(method) - key(comparator)``.

    ``per_seed[seed][m][eps]`` holds :func:`evaluate_pattern` results. With one budget this is the
    difference at that budget (dominance, downstream fooling rate); with the grid it is the grid-mean
    gap of the fooling-rate claims. Seeds where either method was not run are skipped.
    """
    out = []
    for tab in per_seed.values():
        if method not in tab or comparator not in tab:
            continue
        es = list(budgets) if budgets is not None else list(tab[method])
        out.append(sum(tab[method][e][key] - tab[comparator][e][key] for e in es) / len(es))
    return out


# ---------------------------------------------------------------------------- the claims

_SOURCE = "arXiv:2105.15057, abstract"
DEVIATIONS = (
    "every pattern starts at a random point of the sphere of radius eps/2 (the authors' code starts at zero; "
    "at zero Cos-UAP has no gradient)",
    "the proxy images are the victim's own training images (the paper uses out-of-distribution COCO images)",
    "x + delta is clipped to [0, 1] (the authors' code does not clip); Adam without weight decay on delta, "
    "batch 128, a fixed number of steps (the code: weight decay 1e-5, batch 32, 10 epochs)",
    "a small CNN on MNIST digits, not ImageNet CNNs; eps grid 0.15-0.3, not 10/255",
    "SGD-UAP's cross-entropy is clipped at sgd_max_loss (Shafahi et al.'s clipped loss; the value is ours, not tuned)",
)
"""Known deviations from the paper's setting, shown beside every verdict (never used as its excuse)."""

_BEATS = Claim(
    key="beats", text="Dominant patterns fool more often than state-of-the-art universal perturbations",
    quote="the found dominant patterns defeat state-of-the-art UAP methods, especially in label-free settings",
    source=_SOURCE,
    statistic="per seed, mean over the eps grid of FR(dominant, logits) - FR(comparator)", direction=+1,
    sesoi=0.05,
    sesoi_reason="ours [I]: 5 points of fooling rate, the smallest margin we would call 'defeat' (the paper's "
                 "ImageNet margins were not read into this claim)",
    comparator="(one per family member)", unit="optimisation seed", replicates="seeds", null_value=0.0,
    null="random +-eps noise in place of the dominant pattern", deviations=DEVIATIONS)

_DOWN = Claim(
    key="down", text="The pattern also fools a new task that shares the frozen backbone",
    quote="dominant patterns are proved to have the potential to attack downstream tasks in which DNNs share the "
          "same backbone",
    source=_SOURCE,
    statistic="per seed, at the headline eps, downstream FR(dominant, logits) - downstream FR(comparator)",
    direction=+1, sesoi=0.1,
    sesoi_reason="ours [I]: the paper gives no downstream margin; 10 points of fooling rate, twice the "
                 "upstream SESOI, for a pattern that 'attacks' a task it never saw",
    comparator="(one per family member)", unit="optimisation seed", replicates="seeds", null_value=0.0,
    null="a second random +-eps pattern in place of the dominant pattern",
    deviations=DEVIATIONS + ("downstream: the backbone (conv part) of a classifier of digits 0-4, frozen, with its "
                             "fully-connected classifier retrained for digits 5-9 (the paper: ImageNet backbones "
                             "and other datasets)",))

CLAIMS = {
    "free": _BEATS.at("vs Cos-UAP (label-free)", key="free", comparator="Cos-UAP (label-free, eq. 3)",
                      text="Without labels, dominant patterns fool more often than a label-free UAP (Cos-UAP)"),
    "labels": _BEATS.at("vs SGD-UAP (labels)", key="labels", comparator="SGD-UAP (true labels, clipped loss)",
                        text="Without labels, dominant patterns fool more often than a label-based UAP (SGD-UAP)"),
    "dominance": Claim(
        key="dominance", text="Under the pattern, the predictions collapse onto the pattern's own class",
        quote="if we add the dominant pattern of a DNN to it, the output of this DNN is determined by the dominant "
              "pattern instead of the original image, i.e., DNN's prediction is the same with the dominant pattern's",
        source=_SOURCE,
        statistic="per seed, at the headline eps, D_move(dominant, logits) - D_move(random): the share of the "
                  "images that must move (clean prediction not the pattern's class) predicted as the pattern's class",
        direction=+1, sesoi=0.8,
        sesoi_reason="the paper: the prediction 'is the same' as the pattern's (near-total); 80% of the images "
                     "that must move, above what random noise moves",
        comparator="random +-eps noise (same seed)", unit="optimisation seed", replicates="seeds",
        null="a second random +-eps pattern in place of the dominant pattern",
        deviations=DEVIATIONS + ("dominance is the share of perturbed predictions equal to argmax f(delta) among "
                                 "the images that must move; the authors' code reports the share in the k most "
                                 "frequent perturbed classes",)),
    "down-random": _DOWN.at("vs random noise", key="down-random", comparator="random +-eps noise (same seed)"),
    "down-cos": _DOWN.at("vs Cos-UAP", key="down-cos", comparator="Cos-UAP (label-free, eq. 3)", inferred=True,
                         text="The pattern fools the new task more than a label-free UAP does",
                         null="random +-eps noise in place of the dominant pattern"),
    "down-sgd": _DOWN.at("vs SGD-UAP", key="down-sgd", comparator="SGD-UAP (true labels, clipped loss)", inferred=True,
                         text="The pattern fools the new task more than a label-based UAP does",
                         null="random +-eps noise in place of the dominant pattern"),
}
"""Every claim of the chapter, declared before any result (:class:`advbook.protocol.Claim`). ``free`` and
``labels`` are one claim against two comparators (a Holm family), as are the three ``down-*`` claims.
Each is graded on one value per optimisation seed (``seeds``); the ``null`` replaces the dominant pattern
by random noise and goes through the same statistic."""

COMPARATORS = {"free": "cos_uap", "labels": "sgd_uap", "down-random": "random", "down-cos": "cos_uap",
               "down-sgd": "sgd_uap", "dominance": "random"}
"""The comparator method of each claim (``CLAIMS[key]`` compares ``dominant_logits`` with it)."""


# ---------------------------------------------------------------------------- the chapter's experiment (cached)

DOMINANT = "dominant_logits"
"""The dominant pattern every claim grades (the paper's default, ``g = f``)."""


def pattern(model: nn.Module, data: TensorData, method: str, eps: float, seed: int, cfg, *,
            steps: int | None = None, device: torch.device | str = "cpu") -> dict:
    """``UNIVERSAL[method]`` at l_inf budget ``eps`` fitted on the proxy (training) images of ``data``, with
    optimisation seed ``seed`` and the chapter's loop (:func:`loop_options`, :func:`method_options`;
    ``steps``: other than ``cfg.steps``), cached by model, proxy images and settings. Returns ``{"delta":
    the pattern on device, "record": its objective curve}`` (no curve for ``random``)."""
    spec = UNIVERSAL[method]
    loop = {**loop_options(cfg), "steps": cfg.steps if steps is None else steps, **method_options(method, cfg)}

    def compute() -> dict:
        record = []
        options = {} if method == "random" else {**loop, "record": record}
        delta = spec(model, data.x_train, eps, y=data.y_train if spec.labels else None, norm="linf",
                     generator=torch.Generator().manual_seed(seed), **options)
        return {"delta": delta.cpu(), "record": record}

    settings = {"method": method, "eps": eps, "seed": seed, **loop}
    out = cache.cached_result("dominant-pattern", model, (data.x_train, data.y_train), settings, compute)
    return {"delta": out["delta"].to(device), "record": out["record"]}


def evaluated(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, num_classes: int) -> dict:
    """:func:`evaluate_pattern` (fooling rate, eq. 4, and dominance, eq. 5) of ``delta`` on the images ``x``,
    cached by model, images, pattern and the number of classes."""
    return cache.cached_result("dominant-evaluate", model, (x, delta), {"classes": num_classes},
                               lambda: evaluate_pattern(model, x, delta, num_classes))


def fit_seed(model: nn.Module, data: TensorData, cfg, seed: int, radii: Sequence[float], methods: Sequence[str], *,
             steps: int | None = None, device: torch.device | str = "cpu") -> tuple[dict, dict]:
    """Every method's pattern at every budget of ``radii`` with one optimisation seed (:func:`pattern`), and
    its evaluation on the test images of ``data`` (:func:`evaluated`): ``(patterns, table)``, both
    ``{method: {eps: ...}}``."""
    pats = {m: {e: pattern(model, data, m, e, seed, cfg, steps=steps, device=device) for e in radii} for m in methods}
    return pats, {m: {e: evaluated(model, data.x_test, pats[m][e]["delta"], data.num_classes) for e in radii}
                  for m in methods}


def seed_rows(per_seed: dict, metric: str, radii: Sequence[float]) -> list[dict]:
    """``per_seed[seed][method][eps]`` (:func:`evaluate_pattern` results) as one row per seed, method and budget:
    ``{"method": label, "eps": eps rounded to 4 decimals, "seed", metric: value}`` (a tidy table)."""
    return [{"method": UNIVERSAL[m].label, "eps": round(e, 4), "seed": s, metric: tab[m][e][metric]}
            for s, tab in per_seed.items() for m in tab for e in radii]


def claim_statistic(per_seed: dict, key: str, metric: str = "fooling_rate",
                    budgets: Sequence | None = None) -> list[float]:
    """One value per seed of claim ``key``'s statistic (:func:`seed_statistic`): the dominant pattern minus
    the claim's comparator (:data:`COMPARATORS`) in ``metric``, averaged over ``budgets`` (default: all)."""
    return seed_statistic(per_seed, DOMINANT, COMPARATORS[key], metric, budgets)


def stronger_replicates(key: str, values: Sequence[float], per_seed: dict, strong: dict, metric: str = "fooling_rate",
                        budgets: Sequence | None = None) -> list[float]:
    """A stronger setting of claim ``key`` as replicates: this run's mean of ``values`` plus, for every seed
    refitted in ``strong`` (``{seed: table}`` with more steps), the change that the refit made to that seed's
    statistic (:func:`claim_statistic`, ``strong[s]`` minus ``per_seed[s]``): paired, so that a lucky subset of
    seeds is no trend. Empty when no seed was refitted or ``values`` is empty."""
    if not strong or not values:
        return []
    mean = float(np.mean(values))
    moved = [claim_statistic({s: strong[s]}, key, metric, budgets)[0]
             - claim_statistic({s: per_seed[s]}, key, metric, budgets)[0] for s in strong]
    return [mean + d for d in moved]
