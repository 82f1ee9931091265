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
  every universal perturbation of the book (:mod:`advbook.universal`):
  :func:`upi_grad` (projected stochastic gradient ascent on (1)), :func:`upi_pca` (the
  first-order, eigenvector solution, :func:`upi_pca_direction`), and the baselines random
  noise and SGD-UAP (a label-based universal adversarial perturbation on cross-entropy,
  Shafahi et al. 2020), both shared with chapter 4;
* the per-sample reference :func:`per_sample_attack` (PGD on D for every image separately,
  started from a universal perturbation and keeping the label);
* :func:`evaluate`: every metric per sample, whether the predicted label changed, and the
  effective perturbation ``||clip(x + delta, 0, 1) - x||_2`` left after the box clip;
* the claims (:data:`CLAIMS`, :mod:`advbook.protocol`) and their per-seed statistics
  (:func:`seed_statistics`), each graded against the trivial baseline that could pass it;
* the chapter's experiment, cached (:mod:`advbook.cache`): :func:`clean_maps`, :func:`fit_seed` (every
  universal perturbation of one optimisation seed, timed), :func:`per_sample` and :func:`evaluated`.

Conventions. Images live in ``[0, 1]``; a perturbed image is ``clamp(x + delta, 0, 1)``.
The class ``y`` whose saliency is explained is the model's **predicted label on the
clean input** (:func:`predicted_labels`), held fixed for the perturbed input, so that
``I(x + delta)`` and ``I(x)`` explain the same class. The network must be smooth
(softplus, not ReLU): a ReLU network is piecewise linear, its input Hessian is zero
almost everywhere, and so is the gradient of (1) through a simple-gradient map.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from .. import cache, stats
from ..data import batches
from ..params import Choice, ListOf, Number, Param, ParameterError, declare
from ..protocol import Claim
from .. import universal
from ..universal import perturb, project

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

PARAMETERS = declare(
    # quick: 2 CPU cores: the real MNIST 5k sample, a softplus SmallCNN, UPIs fitted on 1,000 training images (300
    # more are the validation split) and evaluated on 300 test images; every universal perturbation is fitted with
    # five optimisation seeds (the replicates of every claim); UPI-Grad's step budget is varied at the figure's
    # radius (a quarter to four times the steps), UPI-PCA's SVD also uses 3,700 images.
    # long: 30-60 minutes on 2 CPU cores: eight seeds, a longer UPI-Grad, more test images
    # full: one GPU: CIFAR-10, ResNet-18 with softplus (beta 10), 5,000 fitting images, 1,000 test images
    # tiny: test suite: seconds, numbers meaningless, every code path
    dataset=Param("mnist5k", doc="mnist5k | mnist | fashion | cifar10 (None: the profile's)", full="cifar10"),
    epochs=Param(8, doc="training epochs of the softplus classifier", full=30, tiny=1),
    eps=Param(2.0, Number(float, 1e-3, 100.0),
              "the l_2 radius of the figures, of the cost claim and of the step budgets (added to eps_grid if missing)",
              full=1.0, tiny=3.0),
    arch=Param("smallcnn", Choice(("smallcnn", "resnet18")), "smallcnn | resnet18", full="resnet18"),
    width=Param(16, Number(int, 1, 1024), "network width", full=64, tiny=8),
    n_train=Param(None, Number(int, 10, 10**7), "subsample of the training split (None: all of it)", tiny=300),
    n_test=Param(None, Number(int, 10, 10**7), "subsample of the test split", tiny=100),
    n_fit=Param(1000, Number(int, 2, 10**7), "training images the universal perturbations are fitted on", full=5000,
                tiny=64),
    n_val=Param(300, Number(int, 2, 10**7),
                "training images after them: the validation split (UPI-Grad's step budget is chosen on it)", full=1000,
                tiny=32),
    n_eval=Param(300, Number(int, 2, 10**7), "test images everything is evaluated on", long=1000, full=1000, tiny=32),
    # l_2 radii (pixel space [0, 1]); overrides the common l_inf-sized ``eps`` spec
    eps_grid=Param([0.5, 1.0, 2.0, 3.0], ListOf(Number(float, 1e-3, 100.0)),
                   "l_2 radii of the sweep (every claim but the cost claim is graded at each)",
                   full=[0.25, 0.5, 1.0, 2.0], tiny=[1.0, 3.0]),
    upi_epochs=Param(3, Number(int, 1, 1000), "passes of UPI-Grad / SGD-UAP over the fitting images", long=6, full=5,
                     tiny=1),
    upi_batch=Param(100, Number(int, 1, 100000), "mini-batch of UPI-Grad / SGD-UAP", full=128, tiny=32),
    upi_step=Param(0.25, Number(float, 1e-4, 10.0), "UPI-Grad / SGD-UAP step, as a share of eps"),
    attack_steps=Param(10, Number(int, 1, 10000), "steps of the per-sample attack", full=20, tiny=2),
    ig_steps=Param(16, Number(int, 1, 1024), "interpolation steps of integrated gradients", full=32, tiny=4),
    topk=Param(100, Number(int, 1, 10**6), "k of the top-k intersection", tiny=50),
    pca_offset=Param(0.1, Number(float, 1e-6, 100.0), "l_2 size of the random offset at which UPI-PCA takes gradients"),
    batch_size=Param(250, Number(int, 1, 100000), "evaluation batch", full=128, tiny=32),
    n_show=Param(6, Number(int, 1, 32), "images in the figures", tiny=3),
    seeds=Param([0, 1, 2, 3, 4], ListOf(Number(int, 0, 2**31 - 1)), "optimisation seeds: the replicates of every claim",
                long=[0, 1, 2, 3, 4, 5, 6, 7], full=[0, 1, 2], tiny=[0, 1]),
    grad_budgets=Param([0.25, 0.5, 1.0, 2.0, 4.0], ListOf(Number(float, 0.01, 100.0)),
                       "UPI-Grad's step budgets at eps, as multiples of the profile's (1.0 included)",
                       full=[0.25, 0.5, 1.0, 2.0], tiny=[0.5, 1.0]),
    pca_fit_more=Param(3700, Number(int, 2, 10**7),
                       "training images of UPI-PCA's stronger SVD (outside the validation split)", full=20000,
                       tiny=128),
)
"""``seeds``: the optimisation seeds, the replicates of every claim (UPI-Grad's start and mini-batches,
UPI-PCA's random probes, the noise draws, SGD-UAP's start). ``grad_budgets``: UPI-Grad's step budgets at
the figure's radius, as multiples of the profile's (``1.0`` must be among them): the cheapest one that has
converged on the validation split is the comparator of the cost claim, the largest one a stronger setting.
``pca_fit_more``: training images (outside the validation split) of UPI-PCA's stronger SVD."""
PROFILES, SCHEMA = PARAMETERS.profiles, PARAMETERS.schema
"""What each profile sets and what each parameter allows, as :func:`advbook.params.resolve` takes them."""


# ----------------------------------------------------------------------------- claims

_ABSTRACT = "Ehsani Oskouie & Farnia 2023, abstract (arXiv 2212.03095)"
_KEPT = ("D averaged over the test images whose predicted label none of the compared perturbations changed "
         "(an interpretation attack keeps the label)")
_BOX = ("perturbed images are clipped to [0, 1]: on MNIST's black background the negative half of a symmetric "
        "perturbation vanishes, so methods of equal nominal norm differ in effective norm (reported beside D)")
_SCALE = "MNIST 5k and a softplus SmallCNN (quick/long), not the paper's CIFAR-10 / Tiny-ImageNet networks"

CLAIMS = {
    "grad-vs-random": Claim(
        key="grad-vs-random", text="UPI-Grad changes interpretations much more than random noise of the same norm",
        quote="we show the existence of a Universal Perturbation for Interpretation (UPI) for standard image "
              "datasets, which can alter a gradient-based feature map of neural networks over a significant "
              "fraction of test samples", source=_ABSTRACT,
        statistic="D_UPI-Grad / D_random (simple-gradient maps, test images whose label both keep)",
        direction=1, null_value=1.0, sesoi=0.25,
        sesoi_reason="'alter ... over a significant fraction', read as a quarter more change than noise of the "
                     "same norm (the paper gives no number we could find)",
        comparator="random universal noise of the same l2 norm, the same seed's draw", unit="optimisation seed",
        replicates="seeds", null="a second noise draw against the first", inferred=False,
        deviations=(_KEPT, _BOX, _SCALE)),
    "pca-vs-random": Claim(
        key="pca-vs-random", text="UPI-PCA changes interpretations much more than random noise of the same norm",
        quote="we propose a gradient-based optimization method as well as a principal component analysis "
              "(PCA)-based approach to compute a UPI which can effectively alter a neural network's "
              "gradient-based interpretation on different samples", source=_ABSTRACT,
        statistic="D_UPI-PCA / D_random (simple-gradient maps, test images whose label both keep)",
        direction=1, null_value=1.0, sesoi=0.25,
        sesoi_reason="'effectively alter', read as a quarter more change than noise of the same norm (as for "
                     "UPI-Grad)",
        comparator="random universal noise of the same l2 norm, the same seed's draw", unit="optimisation seed",
        replicates="seeds", null="a second noise draw against the first", inferred=False,
        deviations=(_KEPT, _BOX, _SCALE, "one random probe per image at offset 0.1 (the paper's probing is our "
                    "reading); the first-order derivation ignores the box clip")),
    "grad-near-per-sample": Claim(
        key="grad-near-per-sample",
        text="A universal perturbation changes interpretations a little less than per-sample attacks, but strongly",
        quote="UPIs change interpretations slightly less than perturbations designed for each input, but still "
              "strongly (no sentence of the paper found; a third-party summary says 'often approaching the impact "
              "of per-image attacks')", source="PAPERS.md, Ehsani Oskouie & Farnia [V from a summary, I here]",
        statistic="(D_UPI-Grad - D_random) / (D_per-sample - D_random): the share of the per-sample attack's "
                  "excess over noise that the universal perturbation reaches (label-kept test images; "
                  "not measured at a radius where the reference falls below UPI-Grad)",
        direction=1, null_value=0.0, sesoi=0.5,
        sesoi_reason="'approaching' the per-image attack, read as at least half of its gain over noise",
        comparator="per-sample PGD on D started from the same seed's UPI-Grad perturbation (it dominates it by "
                   "construction), keeping each image's best label-kept iterate",
        unit="optimisation seed", replicates="seeds", null="random noise in place of UPI-Grad (a second draw)",
        inferred=True, deviations=(_KEPT, _BOX, _SCALE, "the per-sample attack maximises D under the clean "
                                   "label, not Ghorbani et al.'s top-k or centre-of-mass objectives")),
    "grad-vs-sgd-uap": Claim(
        key="grad-vs-sgd-uap",
        text="UPI-Grad is an interpretation attack, not a label attack in disguise: it changes the maps more "
             "than the universal label attack SGD-UAP of the same norm",
        quote="the current deep learning literature lacks universal attack schemes that target the "
              "gradient-based interpretation of neural networks", source="Ehsani Oskouie & Farnia 2023, Sec. 1",
        statistic="D_UPI-Grad / D_SGD-UAP (simple-gradient maps, test images whose label both keep)",
        direction=1, null_value=1.0, sesoi=0.25,
        sesoi_reason="the same quarter more change as against random noise (claim 1)",
        comparator="SGD-UAP (Shafahi et al. 2020) on the clean predictions, same loop, norm, seed and budget",
        unit="optimisation seed", replicates="seeds", inferred=True, deviations=(_KEPT, _BOX, _SCALE)),
    "pca-near-grad": Claim(
        key="pca-near-grad", text="UPI-PCA comes close to UPI-Grad",
        quote="UPI-PCA is a first-order approximation of UPI-Grad; closeness is the book's own question, not a "
              "sentence of the paper", source="PAPERS.md [I]",
        statistic="(D_UPI-PCA - D_random) / (D_UPI-Grad - D_random): the share of UPI-Grad's excess over noise "
                  "that UPI-PCA reaches (label-kept test images)",
        direction=1, null_value=0.0, sesoi=0.8,
        sesoi_reason="'close', read as at least 80% of UPI-Grad's gain over noise (the book's earlier 0.8, "
                     "now of the excess over noise)",
        comparator="UPI-Grad and random noise of the same seed and norm", unit="optimisation seed",
        replicates="seeds", null="random noise in place of UPI-PCA (a second draw)", inferred=True,
        deviations=(_KEPT, _BOX, _SCALE)),
    "pca-cheap": Claim(
        key="pca-cheap", text="UPI-PCA costs a fraction of UPI-Grad (graded only where UPI-PCA beats noise)",
        quote="UPI-PCA is a first-order shortcut (one SVD); its cost is the book's own question", source="PAPERS.md [I]",
        statistic="1 - time(UPI-PCA) / time(cheapest converged UPI-Grad), both timed in one computation per seed "
                  "at the figure's radius; not graded unless UPI-PCA beats random noise there (claim pca-vs-random)",
        direction=1, null_value=0.0, sesoi=0.5,
        sesoi_reason="'a fraction of the cost', read as at most half of UPI-Grad's time",
        comparator="UPI-Grad at the cheapest step budget whose validation-split D is within one standard error "
                   "(over seeds) of the largest budget's", unit="optimisation seed", replicates="seeds",
        inferred=True, deviations=("the comparator's step budget is chosen on a validation split of the training "
                                   "set (grad_budgets)", "process CPU time on a shared CPU (wall-clock on a GPU)")),
}
"""The chapter's claims, declared before anything is measured (:mod:`advbook.protocol`). Every one but
``pca-cheap`` is graded at every radius of ``eps_grid`` as a family (:func:`family`)."""

RADIUS_CLAIMS = ("grad-vs-random", "pca-vs-random", "grad-near-per-sample", "grad-vs-sgd-uap", "pca-near-grad")
"""The claims graded at every radius (a Holm family each)."""


def family(key: str, radii) -> dict:
    """``{eps: claim}``: claim ``key`` at every radius (:meth:`advbook.protocol.Claim.at`)."""
    return {e: CLAIMS[key].at(f"eps {e:g}") for e in radii}


IMAGE_PIXELS = {"mnist5k": 28 * 28, "mnist": 28 * 28, "fashion": 28 * 28, "cifar10": 32 * 32}
"""Pixels of one saliency map per dataset (the bound of ``topk``)."""


def check(cfg) -> None:
    """Cross-parameter checks, run by :func:`advbook.book.chapter.setup` before any work."""
    if 1.0 not in [float(b) for b in cfg.grad_budgets]:
        raise ParameterError(f"parameter 'grad_budgets' = {cfg.grad_budgets} must contain 1.0 (the profile's budget)")
    if cfg.n_train is not None and cfg.n_fit + cfg.n_val > cfg.n_train:
        raise ParameterError(f"parameters 'n_fit' + 'n_val' = {cfg.n_fit + cfg.n_val} exceed 'n_train' = {cfg.n_train}")
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


def ascent(cfg, factor: float = 1) -> dict:
    """UPI-Grad's and SGD-UAP's loop options from the chapter's parameters (``upi_epochs`` passes of
    ``upi_batch`` images over the ``n_fit`` fitting images, ``factor`` times as many steps, at least one)."""
    steps = max(1, round(factor * cfg.upi_epochs * -(-cfg.n_fit // cfg.upi_batch)))
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
                      generator: torch.Generator | None = None,
                      clean_maps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """UPI-PCA's direction: the top right singular vector ``u`` of ``G = [g_1; ...; g_n]`` (eq. 6).

    First order: ``D(I(x + delta), I(x)) ~ delta^T J^T J delta`` near ``delta = 0`` (``J`` the
    Jacobian of the saliency map), so the best universal direction is the top eigenvector of
    ``E[J^T J]``; ``G^T G`` estimates it from the offset gradients. (With one isotropic probe per
    image, ``g_i`` is ``J_i^T J_i n_i`` renormalised, so ``G^T G`` weighs the directions like
    ``E[(J^T J)^2]`` rather than ``E[J^T J]``: the same top eigenvector when one direction is
    shared, a sharper preference otherwise.) ``clean_maps`` (the clean simple-gradient maps of
    ``x``) may be passed, as to UPI-Grad, to save one pass. Returns ``(u`` of shape
    (1, C, H, W) with unit norm, singular values of ``G)``.
    """
    rows = []
    for i, (xb, yb) in enumerate(batches(x, y, batch_size)):
        cb = None if clean_maps is None else clean_maps[i * batch_size: i * batch_size + len(xb)]
        rows.append(offset_gradients(model, xb, yb, offset=offset, generator=generator, clean_maps=cb))
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
                      generator: torch.Generator | None = None, start: torch.Tensor | None = None,
                      keep_label: bool = True) -> torch.Tensor:
    """Per-sample interpretation attack (upper reference): l_2 PGD on ``D(I(x_i + delta_i), I(x_i))`` for each image.

    ``delta_i <- Proj(delta_i + a_t g_i / ||g_i||)`` with a step ``a_t`` decaying linearly from
    ``step_size`` (default ``eps / 4``) to a tenth of it. It starts from ``start`` (a universal
    perturbation (1, C, H, W) or one per image, projected onto the ball; default: a random point of
    the ball) and keeps each image's best iterate, the start included, so that started from a
    universal perturbation it changes every map at least as much by construction. With
    ``keep_label`` a later iterate counts only while the predicted label stays ``y`` (Ghorbani et al.'s
    attacks keep the label); an image whose start flips the label keeps the start unless a later
    iterate keeps it. Returns (N, C, H, W).
    """
    a0 = step_size if step_size is not None else eps / 4
    objective = interpretation_objective(model, method, ig_steps)
    out = []
    for i, (xb, yb) in enumerate(batches(x, y, batch_size)):
        clean = saliency(model, xb, yb, method, ig_steps=ig_steps)
        if start is None:
            noise = torch.randn(xb.shape, generator=generator).to(x.device)
            delta = noise * _bview(eps * torch.rand(len(xb), generator=generator).to(x.device) / stats.l2_norm(noise),
                                   noise)
        else:
            s0 = start if start.shape[0] == 1 else start[i * batch_size: i * batch_size + len(xb)]
            delta = project(s0.expand_as(xb).clone(), eps, "l2")
        for t in range(steps + 1):
            d = delta.clone().requires_grad_(True)
            with torch.enable_grad():
                val = objective(xb, d, yb, clean)
                g = torch.autograd.grad(val.sum(), d)[0] if t < steps else None
            val = val.detach()
            ok = torch.ones_like(val, dtype=torch.bool)
            if keep_label:
                with torch.no_grad():
                    ok = model(perturb(xb, delta)).argmax(1) == yb
            if t == 0:  # the start: its value is what the reference must beat (-1 if it flips the label)
                best, best_val = delta.clone(), torch.where(ok, val, torch.full_like(val, -1.0))
            else:
                better = (val > best_val) & ok
                best[better], best_val = delta[better], torch.where(better, val, best_val)
            if g is not None:
                a = a0 * (1 - 0.9 * t / max(1, steps - 1))
                g = g / _bview(stats.l2_norm(g).clamp_min(1e-12), g)
                delta = project(delta + a * g, eps, "l2").detach()
        out.append(best)
    return torch.cat(out)


# ----------------------------------------------------------------------------- evaluation


def evaluate(model: Callable, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, *, clean_maps: dict,
             topk: int = 100, ig_steps: int = 16, batch_size: int = 256) -> dict:
    """Every metric per sample for perturbation ``delta`` ((1, C, H, W) universal or (N, C, H, W) per sample).

    ``clean_maps`` maps a saliency method to the clean maps of ``x``. Returns
    ``{method: {"l2", "topk", "spearman"}, "fooled": bool, "effective_l2": float}`` (per-sample
    tensors); ``fooled`` = the predicted label of the perturbed image differs from ``y`` (the clean
    prediction); ``effective_l2`` = ``||clip(x + delta, 0, 1) - x||_2``, the part of ``delta`` the
    box leaves.
    """
    out = {m: {k: [] for k in METRICS} for m in clean_maps}
    fooled, effective = [], []
    for i, (xb, yb) in enumerate(batches(x, y, batch_size)):
        sl = slice(i * batch_size, i * batch_size + len(xb))
        db = delta if delta.shape[0] == 1 else delta[sl]
        xa = perturb(xb, db)
        effective.append(stats.l2_norm(xa - xb))
        with torch.no_grad():
            fooled.append(model(xa).argmax(1) != yb)
        for m, clean in clean_maps.items():
            a, b = saliency(model, xa, yb, m, ig_steps=ig_steps), clean[sl]
            out[m]["l2"].append(l2_dissimilarity(a, b))
            out[m]["topk"].append(topk_intersection(a, b, topk))
            out[m]["spearman"].append(spearman(a, b))
    result = {m: {k: torch.cat(v) for k, v in d.items()} for m, d in out.items()}
    result["fooled"] = torch.cat(fooled)
    result["effective_l2"] = torch.cat(effective)
    return result


def summarise(per_sample: dict) -> dict:
    """Means of :func:`evaluate`'s per-sample values: ``{method: {metric: mean}, "fooling_rate": share,
    "effective_l2": mean}``, and ``{method: {"l2_kept": mean D over the images whose label is kept}}``."""
    kept = ~per_sample["fooled"]
    out = {m: {k: v.float().mean().item() for k, v in d.items()} for m, d in per_sample.items()
           if m not in ("fooled", "effective_l2")}
    for m in out:
        out[m]["l2_kept"] = per_sample[m]["l2"][kept].float().mean().item() if kept.any() else float("nan")
    out["fooling_rate"] = per_sample["fooled"].float().mean().item()
    out["effective_l2"] = per_sample["effective_l2"].float().mean().item() if "effective_l2" in per_sample \
        else float("nan")
    return out


SIMPLE_GRADIENT_COLUMNS = {"D (l2)": ("grad", "l2"), "D, label kept": ("grad", "l2_kept"), "top-k": ("grad", "topk"),
                           "Spearman": ("grad", "spearman"), "fooling rate": ("fooling_rate",),
                           "effective norm": ("effective_l2",)}
"""The columns of the chapter's table of every perturbation: a :func:`summarise` value each (path into it)."""


def seed_means(summaries: Sequence[dict], topk: int) -> dict:
    """The mean over seeds of each :data:`SIMPLE_GRADIENT_COLUMNS` value of :func:`summarise` outputs (one per
    optimisation seed), as one table row; the ``top-k`` column is named for ``topk``."""
    row = {}
    for column, path in SIMPLE_GRADIENT_COLUMNS.items():
        values = []
        for summary in summaries:
            for key in path:
                summary = summary[key]
            values.append(summary)
        row[f"top-{topk}" if column == "top-k" else column] = sum(values) / len(values)
    return row


def matched_noise(x: torch.Tensor, reference: torch.Tensor, eps: float, *, generator: torch.Generator | None = None,
                  iters: int = 40) -> torch.Tensor:
    """Random universal noise whose mean *effective* norm ``||clip(x + delta) - x||_2`` on ``x`` equals
    ``reference``'s (found by bisection on its nominal radius, at most ``8 eps``): the random baseline at
    equal effective rather than nominal norm. Returns (1, C, H, W)."""
    n = universal.random_direction(tuple(x.shape[1:]), 1.0, "l2", generator, x.device)
    target = stats.l2_norm(perturb(x, reference) - x).mean().item()

    def eff(r: float) -> float:
        return stats.l2_norm(perturb(x, r * n) - x).mean().item()

    lo, hi = 0.0, 8 * eps
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if eff(mid) < target else (lo, mid)
    return (lo + hi) / 2 * n


# ----------------------------------------------------------------------------- per-seed statistics of the claims


def _kept_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return values[mask].double().mean().item() if mask.any() else float("nan")


def ratio_stat(ev: dict, a: str, b: str) -> float:
    """``mean D_a / mean D_b`` over the images whose label neither ``a`` nor ``b`` changed.

    ``ev``: ``{method: evaluate() output}`` of one seed at one radius (simple-gradient maps)."""
    keep = ~ev[a]["fooled"] & ~ev[b]["fooled"]
    return _kept_mean(ev[a]["grad"]["l2"], keep) / _kept_mean(ev[b]["grad"]["l2"], keep)


def share_stat(ev: dict, method: str, ceiling: str, floor: str = "random", *, guard: bool = False) -> float:
    """``(D_method - D_floor) / (D_ceiling - D_floor)`` over the images whose label none of the three changed:
    the share of the ceiling's excess over the floor (random noise) that ``method`` reaches.

    ``guard``: NaN (not measured) where the ceiling changes the maps *less* than ``method`` there
    (a reference attack weaker than what it should bound)."""
    keep = ~ev[method]["fooled"] & ~ev[ceiling]["fooled"] & ~ev[floor]["fooled"]
    d_m, d_c, d_f = (_kept_mean(ev[k]["grad"]["l2"], keep) for k in (method, ceiling, floor))
    if guard and d_c < d_m - 1e-6:
        return float("nan")
    return (d_m - d_f) / (d_c - d_f) if d_c != d_f else float("nan")


def seed_statistics(ev: dict) -> dict:
    """Every claim's statistic, and its null baseline's, for one seed at one radius.

    ``ev`` holds :func:`evaluate`'s output (simple-gradient maps) for ``random``, ``random2`` (a second
    noise draw), ``upi_pca``, ``upi_grad``, ``sgd_uap`` and ``per_sample`` (started from ``upi_grad``).
    Returns ``{claim key: value}`` and ``{claim key + ":null": value}``."""
    return {
        "grad-vs-random": ratio_stat(ev, "upi_grad", "random"),
        "pca-vs-random": ratio_stat(ev, "upi_pca", "random"),
        "grad-vs-random:null": ratio_stat(ev, "random2", "random"),
        "pca-vs-random:null": ratio_stat(ev, "random2", "random"),
        "grad-near-per-sample": share_stat(ev, "upi_grad", "per_sample", guard=True),
        "grad-near-per-sample:null": share_stat(ev, "random2", "per_sample"),
        "grad-vs-sgd-uap": ratio_stat(ev, "upi_grad", "sgd_uap"),
        "pca-near-grad": share_stat(ev, "upi_pca", "upi_grad"),
        "pca-near-grad:null": share_stat(ev, "random2", "upi_grad"),
    }


def converged_budget(validation: dict) -> float:
    """The cheapest step budget of UPI-Grad that has converged, from ``{budget: [validation D per seed]}``:
    the smallest budget whose mean over seeds is within one standard error of the largest budget's mean
    (the largest budget itself if none is)."""
    budgets = sorted(validation)
    top = [float(v) for v in validation[budgets[-1]]]
    mean = sum(top) / len(top)
    se = (sum((v - mean) ** 2 for v in top) / (len(top) - 1)) ** 0.5 / len(top) ** 0.5 if len(top) > 1 else 0.0
    for b in budgets:
        vals = [float(v) for v in validation[b]]
        if sum(vals) / len(vals) >= mean - se:
            return b
    return budgets[-1]


def time_saving(t_pca: float, t_grad: float) -> float:
    """``1 - t_pca / t_grad``: the share of UPI-Grad's time that UPI-PCA saves (0: as slow; 1: free)."""
    return 1.0 - t_pca / t_grad if t_grad > 0 else float("nan")


def beats_null(graded) -> bool:
    """Whether a graded claim's interval excludes its null value in the paper's direction."""
    c = graded.claim
    lo, hi = graded.ci
    low = min(c.direction * (lo - c.null_value), c.direction * (hi - c.null_value))
    return bool(low > 0)


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


# ----------------------------------------------------------------------------- the chapter's experiment (cached)


STREAM = {m: i for i, m in enumerate(("random", "upi_pca", "upi_grad", "per_sample", "sgd_uap", "random2",
                                       "upi_pca_more"))}
"""One random stream per method (:func:`seeded`)."""


def seeded(method: str, j: int, seed: int) -> torch.Generator:
    """The random stream of ``method`` at the ``j``-th radius of optimisation seed ``seed``: a CPU generator
    seeded with ``7919 seed + 101 STREAM[method] + j``, so that methods, radii and seeds never share draws."""
    return torch.Generator().manual_seed(seed * 7919 + 101 * STREAM[method] + j)


def grad_key(budget: float) -> str:
    """The name of UPI-Grad fitted with ``budget`` times the profile's steps (``"upi_grad"`` at 1)."""
    return "upi_grad" if budget == 1.0 else f"upi_grad x{budget:g}"


def clock_name(device: torch.device | str) -> str:
    """What :func:`clock` measures on ``device``, in words (it enters the timings' cache keys)."""
    return "process CPU time" if torch.device(device).type == "cpu" else "wall-clock"


class Images(NamedTuple):
    """Images, the labels whose saliency is explained (the clean predictions) and their clean simple-gradient
    maps (:func:`clean_maps`)."""
    x: torch.Tensor
    y: torch.Tensor
    maps: torch.Tensor


def clean_maps(model: Callable, x: torch.Tensor, y: torch.Tensor, method: str = "grad", *, ig_steps: int = 16,
               batch_size: int = 256) -> torch.Tensor:
    """The clean saliency maps ``I(x)`` of eq. (1) (:func:`saliency_maps`), cached by model, data and settings;
    on ``x``'s device."""
    return cache.cached_result(
        "upi-clean-maps", model, (x, y), {"method": method, "ig_steps": ig_steps},
        lambda: saliency_maps(model, x, y, method, ig_steps=ig_steps, batch_size=batch_size).cpu()).to(x.device)


def fit_seed(model: Callable, cfg, seed: int, radii, budgets, *, fit: Images, val: Images, more: Images,
             device: torch.device | str = "cpu") -> dict:
    """Every universal perturbation of one optimisation seed, timed (:func:`timed`) in one cached computation.

    At every radius of ``radii`` (l_2): two random draws (``random``, ``random2``), UPI-PCA (eq. 7, the top
    singular vector of the offset gradients of ``fit``, its sign chosen on ``fit``; its time includes the
    direction's), UPI-PCA with its SVD on the larger set ``more`` (``upi_pca_more``), UPI-Grad (projected
    ascent on eq. 1) and SGD-UAP on ``fit``; at ``cfg.eps`` UPI-Grad once per step budget of ``budgets``
    (multiples of the profile's, :func:`grad_key`). Returns ``{"delta": {"<method>@<eps>": delta},
    "seconds": {same keys: seconds}, "direction_seconds", "singular_values", "validation": {str(budget): mean
    D of eq. (4) on ``val``}}``, the perturbations on ``device``.
    """
    e0 = cfg.eps

    def run():
        deltas, secs, val_d = {}, {}, {}

        def fit_one(key, e, fn, *args, **kwargs):
            deltas[f"{key}@{e}"], secs[f"{key}@{e}"] = timed(fn, *args, device=device, **kwargs)

        (u, s_vals), t_dir = timed(upi_pca_direction, model, fit.x, fit.y, offset=cfg.pca_offset,
                                   batch_size=cfg.batch_size, generator=seeded("upi_pca", 0, seed),
                                   clean_maps=fit.maps, device=device)
        u_more, _ = upi_pca_direction(model, more.x, more.y, offset=cfg.pca_offset, batch_size=cfg.batch_size,
                                      clean_maps=more.maps, generator=seeded("upi_pca_more", 0, seed))
        for j, e in enumerate(radii):
            for key in ("random", "random2"):
                fit_one(key, e, UNIVERSAL["random"], model, fit.x, e, norm="l2", generator=seeded(key, j, seed))
            fit_one("upi_pca", e, UNIVERSAL["upi_pca"], model, fit.x, e, norm="l2", direction=u,
                    batch_size=cfg.batch_size, clean_maps=fit.maps)
            secs[f"upi_pca@{e}"] += t_dir
            deltas[f"upi_pca_more@{e}"], _ = choose_sign(model, more.x, more.y, u_more, e,
                                                         batch_size=cfg.batch_size, clean_maps=more.maps)
            for b in (budgets if e == e0 else [1.0]):
                fit_one(grad_key(b), e, UNIVERSAL["upi_grad"], model, fit.x, e, norm="l2",
                        generator=seeded("upi_grad", j, seed), clean_maps=fit.maps, **ascent(cfg, b))
            fit_one("sgd_uap", e, UNIVERSAL["sgd_uap"], model, fit.x, e, y=fit.y, norm="l2",
                    generator=seeded("sgd_uap", j, seed), **ascent(cfg))
        for b in budgets:  # UPI-Grad's objective on the validation split, per step budget
            d = deltas[f"{grad_key(b)}@{e0}"]
            val_d[str(b)] = l2_dissimilarity(saliency_maps(model, perturb(val.x, d), val.y), val.maps).mean().item()
        return {"delta": {k: v.detach().cpu() for k, v in deltas.items()}, "seconds": secs,
                "direction_seconds": t_dir, "singular_values": s_vals.cpu(), "validation": val_d}

    settings = {"profile": cfg.profile, "seed": seed, "eps": list(radii), "e0": e0, "budgets": list(budgets),
                "ascent": ascent(cfg), "offset": cfg.pca_offset, "batch_size": cfg.batch_size,
                "clock": clock_name(device)}
    out = cache.cached_result("upi-fits", model, (fit.x, val.x, more.x), settings, run)
    out["delta"] = {k: v.to(device) for k, v in out["delta"].items()}
    return out


def per_sample(model: Callable, x: torch.Tensor, y: torch.Tensor, eps: float, start: torch.Tensor, *,
               steps: int = 10, batch_size: int = 256, device: torch.device | str = "cpu") -> tuple:
    """:func:`per_sample_attack` on ``(x, y)`` at l_2 radius ``eps``, started from ``start``, timed and cached:
    ``(delta on device, seconds)``."""
    def run():
        delta, secs = timed(per_sample_attack, model, x, y, eps, steps=steps, batch_size=batch_size, start=start,
                            device=device)
        return {"delta": delta.detach().cpu(), "seconds": secs}

    out = cache.cached_result("upi-per-sample", model, (x, y, start),
                              {"eps": eps, "steps": steps, "batch_size": batch_size, "clock": clock_name(device)},
                              run)
    return out["delta"].to(device), float(out["seconds"])


def evaluated(model: Callable, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, clean: dict,
              maps=("grad",), *, topk: int = 100, ig_steps: int = 16, batch_size: int = 256) -> dict:
    """:func:`evaluate` of ``delta`` on ``(x, y)`` with the saliency methods ``maps`` (``clean``: their clean
    maps by method), cached by model, images, ``delta`` and settings; per-image tensors on the CPU."""
    def run():
        out = evaluate(model, x, y, delta, clean_maps={m: clean[m] for m in maps}, topk=topk, ig_steps=ig_steps,
                       batch_size=batch_size)
        return {k: v.cpu() if torch.is_tensor(v) else {kk: vv.cpu() for kk, vv in v.items()}
                for k, v in out.items()}

    return cache.cached_result("upi-evaluate", model, (x, y, delta),
                               {"maps": list(maps), "topk": topk, "ig_steps": ig_steps}, run)


EVALUATED = ("random", "random2", "upi_pca", "upi_grad", "sgd_uap", "per_sample", "matched", "upi_pca_more")
"""The perturbations evaluated at every radius (the others, UPI-Grad's other step budgets, at ``eps`` only)."""


def evaluations_at(ev: dict, seed: int, eps: float, methods=EVALUATED, **swap: str) -> dict:
    """One seed's evaluations at radius ``eps`` by method, as :func:`seed_statistics` reads them, from
    ``ev = {(seed, method, eps): evaluated(...)}``; ``swap`` puts another fit in a method's place
    (``upi_grad=grad_key(4)``: UPI-Grad with four times the steps)."""
    out = {m: ev[seed, m, eps] for m in methods}
    out.update({m: ev[seed, other, eps] for m, other in swap.items()})
    return out


def kept_share(ev_a: dict, ev_b: dict) -> float:
    """The share of images whose predicted label neither of two perturbations changed (:func:`evaluate`
    outputs): the images the ratio statistics (:func:`ratio_stat`) average over."""
    return (~ev_a["fooled"] & ~ev_b["fooled"]).float().mean().item()
