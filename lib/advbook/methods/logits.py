"""Logit distributions of adversarially trained networks (Seguin et al., arXiv 2108.12001).

Three groups of tools, one per claim of the paper:

1. **Logit statistics** (:func:`logit_stats`): the max logit ``z_max``, the logit gap
   ``z_(1) - z_(2)`` (max minus second largest), the softmax confidence ``p_max`` and its
   log-odds (a non-saturating, order-preserving version of ``p_max``); and the
   **linear-model argument** (:func:`linear_robust_logits`, :func:`binary_robust_loss`,
   :func:`fit_linear`): our derivation (not the paper's words) that for a binary linear
   classifier the inner maximisation of l_inf adversarial training is solved exactly in
   closed form and acts as an l1 penalty on the weights; for several classes the same
   algebra gives an upper bound. The notebook checks it as a *derivation check*, outside the
   count of paper claims.
2. **Rank agreement** (:func:`rankdata`, :func:`spearman`, :func:`spearman_bootstrap`):
   Spearman's rho between two models' per-sample confidences, with a bootstrap interval.
3. **Distillation with manipulated teachers** (:func:`teacher_targets` and the three
   manipulations :func:`shuffle_nonmax`, :func:`mean_nonmax`,
   :func:`permute_confidence`), the students (:func:`train_student`, cached) and their
   worst-case robust accuracy over several attacks, gradient-free Square included
   (:func:`robust_suite`).

The claims are declared in :data:`CLAIMS` before anything is measured and graded by
:mod:`advbook.protocol`; the functions :func:`shrink_values`, :func:`rank_values` and
:func:`contrast_values` turn the measurements into one value per replicate (training seed).

Everything is batched over samples; random manipulations take an explicit generator so
that the same seed gives the same targets.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import attacks, cache, evaluation, models
from ..data import TensorData, random_crop_flip
from ..stats import mean_std, rankdata, spearman, spearman_bootstrap  # noqa: F401  (re-exported for the chapter)
from ..params import Choice, ListOf, Number, Param, ParameterError, declare
from ..protocol import Claim
from ..train import default_optimizer, distillation_loss, fit, soft_targets

TEACHERS = ("at_full", "at_shuffled", "at_mean", "at_permuted_conf", "standard", "hard_labels")
"""The six students of claim 3, named by what they learn from (see :func:`teacher_targets`)."""

TEACHER_LABELS = {
    "at_full": "AT teacher\n(full logits)",
    "at_shuffled": "AT, non-max\nshuffled",
    "at_mean": "AT, non-max\n= their mean",
    "at_permuted_conf": "AT, confidence\npermuted",
    "standard": "standard\nteacher",
    "hard_labels": "hard labels",
}

SHORT_LABELS = {"at_full": "AT teacher", "at_shuffled": "non-max shuffled", "at_mean": "non-max = mean",
                "at_permuted_conf": "confidence permuted", "standard": "standard teacher", "hard_labels": "hard labels"}
"""One-line names of the students (claims table, settings of the families)."""

STUDENT_ATTACKS = ("pgd-ce", "pgd-cw", "apgd-ce", "apgd-dlr", "square")
"""Attacks run on every student; the reported robust accuracy is the per-sample worst case. ``square``
(Andriushchenko et al. 2020) is gradient-free: it checks that a student's robustness is not gradient masking."""

CHAPTER = "03_logit_distributions"
"""The notebook this module backs (``notebooks/03_logit_distributions.ipynb``)."""

FULL_PATH_TEST = {"dataset": "cifar10"}
"""Overrides that, added to the ``tiny`` profile, run the ``full`` profile's code path on generated
CIFAR-shaped data in the test suite (``tests/test_notebooks.py``)."""

RECIPE_OVERRIDES = ("epochs", "eps")
"""``epochs`` and ``eps`` of this chapter are the reference models' (``cfg.recipe``), as in the primer."""

SMALLEST_EFFECT = 0.10
"""The smallest robustness gain of claim 3a we would call "inherits some robustness" (10 points of worst-case
accuracy), fixed before the first run of the chapter; claim 3b's SESOI is half of it."""

PARAMETERS = declare(
    # quick: 2 CPU cores: the primer's cached MNIST-5k models; 3 (standard, AT) seed pairs for claims 1-2 with 6
    # more standard seeds as controls and nulls; students at T = 30, 4 paired seeds, two radii (the T = 4 ablation
    # runs in the long and full profiles: -y "temperatures: [30, 4]" adds it here, about 8 more CPU minutes)
    # long: 2 CPU cores, ~45 min (`advbook run 03 --profile long --cell-timeout 0`): 3 model seed pairs, 6 student
    # seeds, longer students, the long AutoAttack budget; results kept beside the build's (.long.json)
    # full: one GPU: the paper's CIFAR-10 / ResNet-18 setting, eps 8/255, ARD's T = 30 (and 4), 5 paired student
    # seeds
    # tiny: the test suite: seconds, numbers meaningless, every code path
    dataset=Param("mnist5k", doc="None: the profile's dataset (mnist5k on CPU, cifar10 on a GPU)", full="cifar10"),
    epochs=Param(None, doc="epochs of the reference standard / AT models (None: the shared recipe)"),
    eps=Param(None, doc="l_inf radius of adversarial training (None: the shared recipe)"),
    n_train=Param(None, Number(int, 50, 60000), "training images (None: the whole training split)", tiny=512),
    n_test=Param(None, Number(int, 20, 10000), "test images (None: the whole test split)", tiny=100),
    linear_eps=Param(0.1, Number(float, 0.0, 1.0), "eps of the linear-model derivation check", full=2 / 255),
    linear_steps=Param(300, Number(int, 1, 10000),
                       "full-batch steps of every linear fit (twice as many for the convergence check)", full=500,
                       tiny=20),
    linear_l2=Param(0.001, Number(float, 0.0, 1.0),
                    "the weak l2 penalty of every linear fit (so that the fit without perturbation converges)"),
    model_seeds=Param(3, Number(int, 1, 10),
                      "(standard, AT) seed pairs for claims 1 and 2 (3x as many standard networks)", full=2, tiny=1),
    temperatures=Param([30.0], ListOf(Number(float, 0.1, 100.0)),
                       "distillation temperatures T (the first is the headline)", long=[30.0, 4.0], full=[30.0, 4.0],
                       tiny=[30.0, 4.0]),
    student_epochs=Param(6, Number(int, 1, 500), "distillation epochs of every student", long=8, full=30, tiny=1),
    student_seeds=Param(4, Number(int, 1, 20), "paired seeds: every student kind is trained once per seed", long=6,
                        full=5, tiny=2),
    student_eps=Param([0.2, 0.1], ListOf(Number(float, 0.0, 1.0)),
                      "l_inf radii at which students are attacked (all graded)", full=[8 / 255, 2 / 255],
                      tiny=[0.1, 0.2]),
    attack_steps=Param(10, Number(int, 1, 1000), "PGD steps of the student attacks and of the linear check", long=20,
                       full=20, tiny=2),
    n_eval=Param(300, Number(int, 10, 10000), "test points attacked per student", full=2000, tiny=40),
    teachers=Param(["at_full", "at_shuffled", "at_mean", "at_permuted_conf", "standard", "hard_labels"],
                   ListOf(Choice(TEACHERS)), "which students to train (default: all six)"),
    attack_suite=Param(["pgd-ce", "pgd-cw", "apgd-ce", "apgd-dlr", "square"], ListOf(Choice(STUDENT_ATTACKS)),
                       "pgd-ce, pgd-cw, apgd-ce, apgd-dlr, square", tiny=["pgd-ce", "pgd-cw", "apgd-dlr", "square"]),
    n_grid=Param(8, Number(int, 1, 32), "images per row in the grids of claim 2", tiny=4),
)
PROFILES, SCHEMA = PARAMETERS.profiles, PARAMETERS.schema
"""What each profile sets and what each parameter allows, as :func:`advbook.params.resolve` takes them."""


def check(cfg) -> None:
    """Cross-parameter checks run by :func:`advbook.book.chapter.setup` before any work."""
    if not cfg.student_eps:
        raise ParameterError("student_eps must hold at least one radius (the first is the headline); got []")
    if not cfg.teachers:
        raise ParameterError(f"teachers must name at least one student; allowed: {', '.join(TEACHERS)}")
    if cfg.n_test is not None and cfg.n_eval > cfg.n_test:
        raise ParameterError(f"n_eval ({cfg.n_eval}) must not exceed n_test ({cfg.n_test})")


def model_seed_layout(n: int, seed: int = 0) -> dict:
    """Training seeds of the reference models for claims 1 and 2, ``n`` replicates.

    Replicate ``s`` pairs the AT network of seed ``seed + s`` with the standard network of the same seed
    (``pair``); a second standard network (seed ``seed + n + s``) is the control that says how much two
    standard networks differ, and a third (seed ``seed + 2n + s``) stands in for the AT network in the null
    baseline. The standard seeds ``seed .. seed + 3n - 1`` are all distinct.
    """
    return {"pair": [seed + s for s in range(n)], "control": [seed + n + s for s in range(n)],
            "null": [seed + 2 * n + s for s in range(n)]}


# ----------------------------------------------------------------------------- the claims, declared in advance

_ABSTRACT = "Seguin et al. 2021, abstract"
_DEV_SCALE = ("MNIST (5k training images) and a small CNN, not the paper's CIFAR-10 ResNets "
              "(full profile: CIFAR-10, ResNet-18)")

CLAIMS = {
    "shrink": Claim(
        key="shrink", text="AT shrinks the logit gap and the (centred) max logit",
        quote="adversarial training shrinks two important characteristics of the logit distribution: the max "
              "logit values and the \"logit gaps\" (difference between the logit max and next largest values) "
              "are on average lower for AT models", source=_ABSTRACT,
        statistic="relative shrink 1 - mean_test(stat of AT net) / mean_test(stat of standard net), same seed",
        direction=1, sesoi=0.10,
        sesoi_reason="a tenth of the standard network's mean: a shrink smaller than that would not be called "
                     "'lower' (the abstract gives no number; fixed before the run)",
        comparator="the standard network of the same training seed", unit="training seed",
        replicates="model_seeds",
        null="a second standard network (another seed) in place of the AT network",
        deviations=(_DEV_SCALE, "the max logit is centred (minus the mean logit): the raw max logit is not "
                    "shift-invariant", "AT networks train for the recipe's at_epochs, standard ones for "
                    "std_epochs (15 against 8 on MNIST quick)")),
    "rank": Claim(
        key="rank", text="AT and standard networks disagree on which samples are confident",
        quote="AT and standard models differ significantly on which samples are high or low confidence",
        source=_ABSTRACT,
        statistic="Spearman rho of per-sample confidence: rho(std, std of another seed) - rho(std, AT)",
        direction=1, sesoi=0.10,
        sesoi_reason="a tenth of the range of rho: the AT network must disagree clearly more than a second "
                     "standard seed does (our reading of 'significantly'; fixed before the run)",
        comparator="a second standard network (the seed-to-seed disagreement)", unit="training seed",
        replicates="model_seeds",
        null="a third standard network in place of the AT network",
        deviations=(_DEV_SCALE, "confidence ranked by its log-odds (p_max saturates at 1 in float32)")),
    "transfer": Claim(
        key="transfer", text="Clean-input distillation from an AT teacher passes on some robustness",
        quote="learning some adversarial robustness without input perturbations requires a model to learn "
              "specific sample-wise confidences and incorrect class orderings", source=_ABSTRACT,
        statistic="worst-case robust accuracy: AT-teacher student minus comparator student, same student seed",
        direction=1, sesoi=SMALLEST_EFFECT,
        sesoi_reason="10 points of worst-case accuracy, the smallest gain we would call 'some robustness' "
                     "(fixed before the first run; the paper's CIFAR-10 numbers do not transfer to MNIST)",
        comparator="the hard-label student and the standard-teacher student (same seed, same recipe)",
        unit="training seed", replicates="student_seeds",
        null="the standard-teacher student in place of the AT-teacher student (any soft targets)",
        deviations=(_DEV_SCALE, "student radii below the teacher's 0.3 (a clean-trained MNIST student keeps "
                    "nothing at 0.3), chosen after a pilot run on the test points",
                    "T = 30 is ARD's CIFAR-10 default (Goldblum et al.), not a value stated by Seguin et al.",
                    "quick AutoAttack budget on CPU profiles")),
    "nonmax": Claim(
        key="nonmax", text="Manipulating the teacher's non-max logits removes much of the transferred robustness",
        quote="we find learning information about incorrect classes to be essential to learning robustness by "
              "manipulating the non-max logit information during distillation and measuring the impact on the "
              "student's robustness", source=_ABSTRACT,
        statistic="worst-case robust accuracy: AT-teacher student minus manipulated-teacher student, same seed",
        direction=1, sesoi=SMALLEST_EFFECT / 2,
        sesoi_reason="'much of it' read as half of claim 3a's smallest gain of interest (0.05)",
        comparator="the student of the unmanipulated AT teacher", unit="training seed",
        replicates="student_seeds",
        deviations=(_DEV_SCALE, "student radii below the teacher's, chosen after a pilot run",
                    "permuting confidences also weakens the correct-class signal (its student's clean accuracy "
                    "is lower), so its loss is not only the loss of sample-wise confidence",
                    "quick AutoAttack budget on CPU profiles")),
}
"""The chapter's claims, declared before anything is measured (:mod:`advbook.protocol`). Claims 3a
(``transfer``) and 3b (``nonmax``) are families: every radius of ``student_eps``, every temperature of
``temperatures`` and (3a) both comparators, (3b) each manipulation, graded together with Holm's correction
(:func:`family`)."""

MANIPULATIONS = ("at_shuffled", "at_mean", "at_permuted_conf")
"""The teacher manipulations of claim 3b."""

COMPARATORS = ("hard_labels", "standard")
"""The comparator students of claim 3a: plain label training, and a standard teacher at the same temperature
(which isolates what the AT teacher adds beyond any distillation)."""


def family(kind: str, radii: Sequence[float], temperatures: Sequence[float],
           teachers: Sequence[str] = TEACHERS) -> list[tuple[Claim, str, float, float]]:
    """The members of claim family ``kind`` (``transfer`` or ``nonmax``): ``(claim, other student, eps, T)``.

    ``transfer`` (3a): each comparator of :data:`COMPARATORS` at each radius and temperature (the hard-label
    student does not depend on T); ``nonmax`` (3b): each manipulation of :data:`MANIPULATIONS`. Each member is
    ``CLAIMS[kind].at(setting)`` with a key such as ``transfer@hard_labels/eps0.2/T30``. Students not in
    ``teachers`` are left out; without ``at_full`` there is no family.
    """
    if "at_full" not in teachers:
        return []
    others = COMPARATORS if kind == "transfer" else MANIPULATIONS
    out = []
    for T in temperatures:
        for e in radii:
            for other in others:
                if other in teachers:
                    setting = f"vs {SHORT_LABELS[other]}, eps {e:.3g}, T {T:g}"
                    claim = CLAIMS[kind].at(setting, key=f"{kind}@{other}/eps{e:.3g}/T{T:g}")
                    out.append((claim, other, e, T))
    return out


# ----------------------------------------------------------------------------- claim 1: logit statistics


def top2(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest and second-largest logit of each row: ``(z_(1), z_(2))``."""
    values = logits.topk(2, dim=1).values
    return values[:, 0], values[:, 1]


def max_logit(logits: torch.Tensor) -> torch.Tensor:
    """``z_max = max_j z_j`` per sample. Not shift-invariant: adding ``c`` to all logits moves it by ``c``."""
    return logits.max(1).values


def centred_max_logit(logits: torch.Tensor) -> torch.Tensor:
    """``z_(1) - mean_j z_j`` per sample: the max logit measured from the mean logit, so shift-invariant
    (adding ``c`` to every logit changes neither), unlike the raw max logit."""
    return logits.max(1).values - logits.mean(1)


def logit_gap(logits: torch.Tensor) -> torch.Tensor:
    """``z_(1) - z_(2)``: max logit minus the second largest; shift-invariant, the margin of the prediction."""
    first, second = top2(logits)
    return first - second


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """Softmax confidence ``p_max = max_j softmax(z)_j`` per sample."""
    return F.softmax(logits, dim=1).max(1).values


def confidence_logodds(logits: torch.Tensor) -> torch.Tensor:
    """``log(p_max / (1 - p_max)) = z_max - logsumexp_{j != argmax} z_j``, computed stably.

    A strictly increasing function of ``p_max``, so any rank statistic is the same, but it
    does not round to ``log(1/0)`` when a float32 softmax saturates at ``p_max = 1``
    (which happens for most MNIST test points of a standard network and would turn the
    ranks into ties).
    """
    top = logits.argmax(1, keepdim=True)
    others = logits.scatter(1, top, float("-inf"))
    return logits.gather(1, top).squeeze(1) - torch.logsumexp(others, dim=1)


def logit_stats(logits: torch.Tensor) -> dict:
    """All per-sample statistics of a batch of logits, as a dict of 1-D tensors."""
    return {
        "max_logit": max_logit(logits),
        "centred_max_logit": centred_max_logit(logits),
        "gap": logit_gap(logits),
        "confidence": confidence(logits),
        "logodds": confidence_logodds(logits),
        "pred": logits.argmax(1),
    }


def summarize(stats: dict, y: torch.Tensor | None = None) -> dict:
    """Means (and medians) of max logit, centred max logit, gap and confidence; accuracy when labels are given."""
    out = {}
    for key in ("max_logit", "centred_max_logit", "gap", "confidence"):
        v = stats[key].double()
        out[f"mean_{key}"] = v.mean().item()
        out[f"median_{key}"] = v.median().item()
    if y is not None:
        out["accuracy"] = (stats["pred"] == y).double().mean().item()
    return out


# ----------------------------------------------------------------------------- claim 1: linear models


def linear_robust_logits(z: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Worst-case logits of a linear model ``z = W x + b`` under ``||delta||_inf <= eps``, class pair by pair.

    For each wrong class ``j`` the margin ``(w_y - w_j) . (x + delta) + b_y - b_j`` is
    minimised over the ball exactly by ``delta = -eps sign(w_y - w_j)``, which lowers it by
    ``eps ||w_y - w_j||_1`` (Hoelder's inequality, tight). So we return

    ``z~_j = z_j + eps ||w_y - w_j||_1`` for ``j != y`` and ``z~_y = z_y``,

    whose gaps ``z~_y - z~_j`` are the exact worst-case margins. Cross-entropy on ``z~`` is
    an upper bound of the robust cross-entropy (the maximising ``delta`` may differ per
    ``j``), and equal to it for two classes. The image box ``[0, 1]`` is ignored, as in the
    textbook argument.
    """
    pair_l1 = (weight[:, None, :] - weight[None, :, :]).abs().sum(-1)  # (C, C): ||w_k - w_j||_1
    return z + eps * pair_l1[y]  # row y_i; the diagonal is 0, so z~_y = z_y


def binary_robust_loss(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Exact l_inf-robust logistic loss, per sample (labels ``y`` in {-1, +1}):

    ``max_{||delta||_inf <= eps} log(1 + exp(-y (w.(x+delta) + b))) = log(1 + exp(-y (w.x + b) + eps ||w||_1))``

    (the loss is increasing in ``-y w.delta``, maximised by ``delta = -eps y sign(w)``).
    The adversarial term ``eps ||w||_1`` acts exactly like an l1 penalty inside the loss.
    """
    margin = y * (x @ w + b)
    return F.softplus(-margin + eps * w.abs().sum())


def binary_worst_delta(w: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """The maximiser of :func:`binary_robust_loss`: ``delta* = -eps y sign(w)``, one row per sample."""
    return -eps * y[:, None] * w.sign()[None, :]


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, eps: float = 0.0, steps: int = 300,
               lr: float = 0.05, seed: int = 0, l2: float = 0.0) -> torch.nn.Linear:
    """Multinomial logistic regression on flattened inputs; with ``eps > 0``, trained on the pairwise worst-case
    logits of :func:`linear_robust_logits` (an *upper bound* of the l_inf-robust loss for more than two classes).

    Minimises ``mean_i CE(z~_i, y_i) + l2 ||W||_2^2`` (``eps = 0``: plain cross-entropy), full batch, Adam
    for ``steps`` steps. The same weak ``l2`` penalty for every ``eps`` gives the ``eps = 0`` fit a finite
    optimum (without it the weights of a separable problem grow for ever, so any ratio against them depends
    on ``steps``); the extra shrinkage at ``eps > 0`` comes from the adversarial term.
    """
    gen = torch.Generator().manual_seed(seed)
    x = x.flatten(1)
    model = torch.nn.Linear(x.shape[1], num_classes).to(x.device)
    with torch.no_grad():
        model.weight.copy_(torch.randn(model.weight.shape, generator=gen).to(x.device) * 0.01)
        model.bias.zero_()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        z = model(x)
        if eps > 0:
            z = linear_robust_logits(z, model.weight, y, eps)
        loss = F.cross_entropy(z, y)
        if l2 > 0:
            loss = loss + l2 * model.weight.pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def fit_binary(x: torch.Tensor, y: torch.Tensor, eps: float = 0.0, steps: int = 300, lr: float = 0.05) -> tuple:
    """Binary logistic regression (``y`` in {-1, +1}) trained on :func:`binary_robust_loss`; returns ``(w, b)``."""
    x = x.flatten(1)
    w = torch.zeros(x.shape[1], device=x.device, requires_grad=True)
    b = torch.zeros((), device=x.device, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        loss = binary_robust_loss(w, b, x, y, eps).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


class TwoLogit(torch.nn.Module):
    """Binary logistic regression ``(w, b)`` as a 2-logit model ``(0, w.x + b)``, so that the cross-entropy of
    label ``(y + 1) / 2`` is ``softplus(-y f(x))``, the loss of :func:`binary_robust_loss` at ``eps = 0``
    (the form in which a label attack such as :func:`advbook.attacks.pgd` can attack it)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], 1)


def linear_ratios(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, num_classes: int, eps: float, *,
                  steps: int, seed: int = 0, l2: float = 0.0) -> dict:
    """The shrinkage of the linear argument: ``||W||_1`` and the mean test logit gap of :func:`fit_linear`
    trained at ``eps`` over the same at ``eps = 0`` (``{"w": ratio, "gap": ratio}``; same ``steps``, seed and
    ``l2``)."""
    out = {}
    for e in (0.0, eps):
        lin = fit_linear(x, y, num_classes, eps=e, steps=steps, seed=seed, l2=l2)
        with torch.no_grad():
            out[e] = (lin.weight.abs().sum().item(), logit_gap(lin(x_test.flatten(1))).mean().item())
    return {"w": out[eps][0] / out[0.0][0], "gap": out[eps][1] / out[0.0][1]}


# ----------------------------------------------------------------------------- claim 2: rank agreement


def top_differences(conf_a: torch.Tensor, conf_b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the ``k`` samples where ``a`` is most confident relative to ``b``, and vice versa.

    Compared on the rank scale (percentile of each confidence in its own model), so that the
    two models' different confidence scales do not decide the answer.
    """
    pa = rankdata(conf_a.double()) / len(conf_a)
    pb = rankdata(conf_b.double()) / len(conf_b)
    diff = pa - pb
    k = min(k, len(diff))
    return diff.topk(k).indices, (-diff).topk(k).indices


# ----------------------------------------------------------------------------- claim 3: teacher manipulations


def _nonmax_mask(logits: torch.Tensor) -> torch.Tensor:
    return ~F.one_hot(logits.argmax(1), logits.shape[1]).bool()


def shuffle_nonmax(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Permute each sample's non-max logits among the non-max classes (an independent permutation per sample).

    Keeps the max logit, its class and the multiset of the other logits, hence the softmax
    confidence at every temperature; destroys which wrong class is how likely.
    """
    n, c = logits.shape
    mask = _nonmax_mask(logits)
    others = logits[mask].view(n, c - 1)
    perm = torch.rand(n, c - 1, generator=generator).to(logits.device).argsort(1)
    out = logits.clone()
    out[mask] = others.gather(1, perm).flatten()
    return out


def mean_nonmax(logits: torch.Tensor) -> torch.Tensor:
    """Replace each sample's non-max logits by their mean.

    Keeps the max logit and the mean of the rest but removes all information about the
    incorrect classes (they become equally likely); the confidence changes only slightly.
    """
    mask = _nonmax_mask(logits)
    mean = (logits * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True)
    return torch.where(mask, mean, logits)


def permute_confidence(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Give each sample the sorted logit values of another (random) sample, in its own class order.

    ``z'_i[order_i[k]] = sort(z_pi(i))[k]``: the ranking of classes in sample ``i`` (its
    prediction and which wrong classes come next) is kept, but the magnitudes, hence the
    sample-wise confidence, come from sample ``pi(i)`` of a random permutation ``pi``.
    """
    n = len(logits)
    values, order = logits.sort(1, descending=True)
    pi = torch.randperm(n, generator=generator).to(logits.device)
    out = torch.empty_like(logits)
    out.scatter_(1, order, values[pi])
    return out


def teacher_targets(kind: str, y: torch.Tensor, at_logits: torch.Tensor | None, std_logits: torch.Tensor | None,
                    temperature: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The training targets of the student named ``kind`` (one of :data:`TEACHERS`).

    Soft targets are ``softmax(z' / T)`` (:func:`advbook.train.soft_targets`) of the
    (manipulated) teacher logits ``z'``; ``hard_labels`` returns ``y`` itself.
    """
    if kind not in TEACHERS:
        raise ValueError(f"teacher {kind!r} is not known; allowed: {', '.join(TEACHERS)}")
    if kind == "hard_labels":
        return y
    if kind == "standard":
        z = std_logits
    elif kind == "at_full":
        z = at_logits
    elif kind == "at_shuffled":
        z = shuffle_nonmax(at_logits, generator)
    elif kind == "at_mean":
        z = mean_nonmax(at_logits)
    else:
        z = permute_confidence(at_logits, generator)
    return soft_targets(z, temperature)


def train_student(data: TensorData, kind: str, targets: torch.Tensor, *, arch: str, width: int | None,
                  epochs: int, temperature: float, seed: int, teacher_id: str, batch_size: int = 128,
                  ) -> tuple[torch.nn.Module, list]:
    """Train (or load from the cache) a student on the clean training inputs and ``targets``.

    Soft targets use :func:`advbook.train.distillation_loss` (``T^2 CE(softmax(z_s/T), p)``,
    Hinton et al. 2015); hard labels use cross-entropy. The cache key holds the data
    fingerprint, the architecture, every training setting, the student kind and
    ``teacher_id`` (which identifies the teacher models' cache entries).
    """
    opt = default_optimizer(arch)
    config = {
        "data": data.identity(),
        "arch": arch, "width": width, "epochs": epochs, "kind": kind, "batch_size": batch_size, "seed": seed,
        "temperature": temperature if kind != "hard_labels" else None, "teacher": teacher_id, **opt,
    }
    torch.manual_seed(seed)
    model = models.build(arch, data.name, data.num_classes, width=width)
    name = f"student-{kind.replace('_', '-')}-{arch}-{data.name}"
    with cache.trained_model(name, config, model, (train_student,), data.x_train.device) as run:
        if run.needed:
            gen = torch.Generator().manual_seed(seed)
            loss_fn = None if kind == "hard_labels" else distillation_loss(temperature)
            augment = None
            if data.name == "cifar10":  # fit calls augment(xb, generator); random_crop_flip's 2nd argument is padding
                def augment(xb, g):
                    return random_crop_flip(xb, generator=g)
            run.record = fit(model, data.x_train, targets, epochs=epochs, batch_size=batch_size, loss_fn=loss_fn,
                             augment=augment, generator=gen, **opt).as_dict()
    return model, run.record


# ----------------------------------------------------------------------------- robust accuracy


def robust_suite(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                 suite: Sequence[str] = STUDENT_ATTACKS, steps: int = 20, aa_budget: dict | None = None,
                 seed: int = 0, use_cache: bool = True, return_mask: bool = False) -> dict:
    """Per-attack and worst-case robust accuracy of ``model`` at l_inf radius ``eps``.

    PGD on cross-entropy (``pgd-ce``) and on the CW margin (``pgd-cw``; it keeps a gradient
    where a saturated softmax makes the cross-entropy gradient vanish, the usual failure
    mode of distilled students) run on all points; the AutoAttack components ``apgd-ce`` /
    ``apgd-dlr`` and the gradient-free ``square`` (:func:`advbook.evaluation.autoattack`, in
    that order, each on the survivors of the previous) run on the points that survived the
    PGD attacks. A point counts as robust only if it survives every attack, so
    ``worst`` is the accuracy under the strongest per-sample attack.

    Cached (``use_cache``, :func:`advbook.cache.cached_result`) by the model's weights, the
    points and every setting, so re-executing the chapter after a prose edit attacks nothing.
    ``return_mask``: also return ``robust_mask`` (per point: survived every attack), which the
    per-sample calibration against standard AutoAttack compares (:mod:`advbook.calibration`).
    """
    unknown = [a for a in suite if a not in STUDENT_ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; allowed: {', '.join(STUDENT_ATTACKS)}")
    budget = {k: v for k, v in (aa_budget or {}).items() if k in ("n_iter", "n_queries", "n_target_classes")}
    settings = {"eps": eps, "suite": list(suite), "steps": steps, "budget": budget, "seed": seed}

    def compute() -> dict:
        return _robust_suite(model, x, y, eps, suite, steps, budget, seed)

    out = compute() if not use_cache else cache.cached_result("student-robust-suite", model, (x, y), settings, compute)
    if not return_mask:
        out = {k: v for k, v in out.items() if k != "robust_mask"}
    return out


def _robust_suite(model, x, y, eps, suite, steps, budget, seed) -> dict:
    clean = evaluation.predict(model, x).argmax(1) == y
    robust = clean.clone()
    out = {"clean": clean.double().mean().item()}
    for name in suite:
        if name.startswith("pgd"):
            gen = torch.Generator().manual_seed(seed)
            x_adv = evaluation.attack_all(attacks.pgd, model, x, y, eps=eps, steps=steps, loss=name.split("-")[1],
                                          generator=gen)
            ok = clean & (evaluation.predict(model, x_adv).argmax(1) == y)
            out[name] = ok.double().mean().item()
            robust &= ok
    aa = [a for a in suite if a.startswith("apgd") or a == "square"]
    if aa and eps > 0:
        idx = torch.nonzero(robust).flatten()
        if len(idx) > 0:
            res = evaluation.autoattack(model, x[idx], y[idx], eps, components=aa, seed=seed, **budget)
            robust[idx] = res["robust_mask"].to(robust.device)
            out.update({f"{k}_cumulative": v * len(idx) / len(x) for k, v in res["after"].items()})
    out["worst"] = robust.double().mean().item()
    out["robust_mask"] = robust.cpu()
    return out


CALIBRATION_RECORDS = {"student": "book/measurements/autoattack_budget_student.json",
                       "student-hard": "book/measurements/autoattack_budget_student_hard.json"}
"""The per-sample calibration records of the students (``python -m advbook.calibration --model student`` /
``student-hard``), relative to the checkout."""


def calibration_sentence(fingerprints: dict | None = None, root=None) -> str:
    """What the per-sample calibration records of the students say about this chapter's attack suite.

    Reads the records :data:`CALIBRATION_RECORDS` (written by :mod:`advbook.calibration`: standard
    AutoAttack against the chapter's whole suite on the first 150 evaluation points of a quick student, eps 0.2)
    and states, per student, both robust accuracies and how many points the suite leaves robust that standard
    AutoAttack breaks. ``fingerprints``: ``{"student": fp, "student-hard": fp}`` of this run's students of
    seed 0 (:func:`advbook.cache.model_fingerprint`), to say whether the record measured the same weights.
    """
    from ..results import load_record

    parts = []
    for key, label in (("student", "the AT-teacher student"), ("student-hard", "the hard-label student")):
        record = load_record(CALIBRATION_RECORDS[key], root)
        if record is None:
            parts.append(f"no calibration record for {label} in this checkout (`python -m advbook.calibration "
                         f"--model {key}` measures it)")
            continue
        ref = record["reference"]["robust"]
        row = next((r for name, r in record["candidates"].items() if "quick" in name), None)
        if row is None:
            continue
        a = row["agreement"]
        same = (fingerprints or {}).get(key)
        weights = "" if same is None else (", this build's weights" if same == record.get("model_fingerprint")
                                            else ", other weights than this build's")
        parts.append(f"on {label} ({a['n']} points, eps {record['eps']:g}{weights}) standard AutoAttack leaves "
                     f"{ref:.1%} and the quick suite {row['robust']:.1%}: the suite leaves robust "
                     f"{a['only_candidate']} point(s) that standard AutoAttack breaks and breaks "
                     f"{a['only_reference']} it leaves robust")
    dates = {r.get("measured", "")[:10] for k in ("student", "student-hard")
             if (r := load_record(CALIBRATION_RECORDS[k], root)) is not None}
    when = f" (measured outside this build on {', '.join(sorted(dates))})" if dates else ""
    return "Calibrated per sample against standard AutoAttack" + when + ": " + "; ".join(parts) + "."


# ----------------------------------------------------------------------------- replicate values for the claims


def shrink_values(standard: Sequence[float], other: Sequence[float]) -> list[float]:
    """Claim 1, one value per seed pair: ``1 - other_s / standard_s`` (means of a logit statistic).

    ``other`` is the AT network of the same seed (the claim) or a second standard network (the null).
    Positive: the statistic is smaller than the standard network's, as a share of it.
    """
    if len(standard) != len(other):
        raise ValueError(f"need one value per seed for both networks, got {len(standard)} and {len(other)}")
    return [1.0 - o / s for s, o in zip(standard, other)]


def rank_values(conf_std: Sequence[torch.Tensor], conf_control: Sequence[torch.Tensor],
                conf_other: Sequence[torch.Tensor]) -> list[float]:
    """Claim 2, one value per seed pair: ``rho(std_s, control_s) - rho(std_s, other_s)`` (Spearman, per-sample
    confidences on the same test images). ``other`` is the AT network (the claim) or a third standard network
    (the null). Positive: ``other`` agrees less with the standard network than a second standard seed does."""
    if not len(conf_std) == len(conf_control) == len(conf_other):
        raise ValueError("need one confidence vector per seed for each of the three networks")
    return [spearman(a, c) - spearman(a, o) for a, c, o in zip(conf_std, conf_control, conf_other)]


def seed_means(summaries: Sequence[dict], key: str) -> list[float]:
    """Claims 1's replicates before the contrast: the test-set mean of statistic ``key`` (``gap``,
    ``centred_max_logit``, ...) of each seed's network, from :func:`summarize` outputs (one per seed)."""
    return [s[f"mean_{key}"] for s in summaries]


def contrast_values(per_seed: dict, a: str, b: str) -> list[float]:
    """Claim 3, one value per student seed: ``r_a(s) - r_b(s)`` from ``per_seed = {student: [r per seed]}``.

    The students of one seed share their initialisation and mini-batch order (only the targets differ), so
    the seed effect common to both cancels in the paired difference. Missing students give ``[]``.
    """
    if a not in per_seed or b not in per_seed:
        return []
    return [x - y for x, y in zip(per_seed[a], per_seed[b])]


# ----------------------------------------------------------------------------- claim 3: the chapter's students


def train_students(data: TensorData, kinds: Sequence[str], temperature: float, *, at_logits: torch.Tensor,
                   std_logits: torch.Tensor, n_seeds: int, arch: str, width: int | None, epochs: int, seed: int,
                   teacher_id: str, hard_temperature: float | None = None) -> dict:
    """Every student of the teachers ``kinds`` at ``temperature`` and each of ``n_seeds`` seeds (cached,
    :func:`train_student`): ``{(kind, temperature, s): model}``. Student ``s`` gets targets drawn with seed
    ``seed + s`` (:func:`teacher_targets`) and is trained with seed ``seed + 100 + s``, so that the students
    of one seed differ only in their targets. Hard labels do not depend on the temperature: they are
    trained only at ``hard_temperature`` (the first one)."""
    students = {}
    for kind in kinds:
        if kind == "hard_labels" and temperature != hard_temperature:
            continue
        for s in range(n_seeds):
            targets = teacher_targets(kind, data.y_train, at_logits, std_logits, temperature,
                                      torch.Generator().manual_seed(seed + s))
            students[kind, temperature, s] = train_student(data, kind, targets, arch=arch, width=width, epochs=epochs,
                                                           temperature=temperature, seed=seed + 100 + s,
                                                           teacher_id=teacher_id)[0]
    return students


def attack_students(students: dict, keys, x: torch.Tensor, y: torch.Tensor, radii: Sequence[float], *,
                    suite: Sequence[str] = STUDENT_ATTACKS, steps: int = 20, aa_budget: dict | None = None,
                    seed: int = 0) -> list[dict]:
    """:func:`robust_suite` (cached) of the students named by ``keys`` (``(kind, temperature, seed)``) at every
    radius of ``radii``: one row per student and radius, ``{"student", "T" (None for hard labels), "seed",
    "eps", "clean", <attack>..., "worst"}``."""
    rows = []
    for kind, T, s in keys:
        for e in radii:
            r = robust_suite(students[kind, T, s], x, y, e, suite=suite, steps=steps, aa_budget=aa_budget, seed=seed)
            rows.append({"student": kind, "T": T if kind != "hard_labels" else None, "seed": s, "eps": e, **r})
    return rows


def worst_per_seed(table, eps: float, temperature: float, kinds: Sequence[str]) -> dict:
    """``{student kind: [worst-case robust accuracy per seed]}`` at radius ``eps`` and ``temperature`` (hard
    labels: at any temperature), from the rows of :func:`attack_students` as a :class:`pandas.DataFrame`:
    what :func:`contrast_values` pairs."""
    t = table[(table.eps == eps) & ((table["T"] == temperature) | (table.student == "hard_labels"))]
    return {k: t[t.student == k].sort_values("seed")["worst"].tolist() for k in kinds if (t.student == k).any()}


def target_stats(logits: torch.Tensor, temperature: float) -> dict:
    """What soft targets ``softmax(z / T)`` carry: their mean max probability and mean entropy relative to the
    uniform distribution's (``H(p) / log K``: 1 for uniform targets, 0 for one-hot)."""
    p = F.softmax(logits / temperature, 1)
    ent = -(p * p.clamp_min(1e-30).log()).sum(1) / np.log(logits.shape[1])
    return {"mean max prob": p.max(1).values.mean().item(), "mean relative entropy": ent.mean().item()}


@torch.no_grad()
def kl_to_teacher(model: torch.nn.Module, x: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> float:
    """``KL(teacher || student)`` at ``temperature`` on the images ``x``, averaged over them: how faithfully a
    student reproduces its teacher's soft targets (``teacher_probs = softmax(z_teacher / T)``)."""
    log_q = F.log_softmax(evaluation.predict(model, x) / temperature, 1)
    return F.kl_div(log_q, teacher_probs, reduction="batchmean").item()
