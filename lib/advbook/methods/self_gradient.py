"""Self-gradient networks (Aboutalebi, Shafiee, Wong et al., arXiv 2011.09364): our interpretation.

The paper's abstract says that a network which *explicitly taps into its own gradient
flow* during training becomes more stable to perturbations and reaches a robust solution
faster under adversarial training. It does not spell out the mechanism and there is no
public code, so this module implements a clearly stated interpretation:

1. Split a classifier ``f = post o pre`` at an *injection point* (``input``: just after
   the fixed normalisation; ``features``: after the first convolutional stage).
   ``h = pre(x)``.
2. **Probe pass.** Run the rest of the network, ``z = head(post(h))``, take the model's
   own predicted label ``yhat = argmax z`` (never the true label, so the model is a plain
   function of ``x`` at test time) and compute the *self-gradient*

   .. math:: g = \\nabla_h \\, \\mathrm{CE}(z, \\hat y)        (eq. 1)

   with ``create_graph=True`` whenever the output may be differentiated (training, and
   every white-box attack), so that training and attacks both see the second-order terms.
3. **Transform.** Normalise per sample, ``ghat = g / sqrt(mean(g^2) + delta)`` (eq. 2),
   and map it through a small learned conv net ``T`` (eq. 3) whose last layer starts at
   zero, so that an untrained SGN computes exactly the plain network.
4. **Inject.** ``h' = h + T(ghat)`` and the output is ``head(post(h'))`` (eq. 4).

``T`` sees only the gradient, never ``h``, so any gain cannot come from extra capacity
applied to the features themselves. Since ``g`` points in the direction that increases
the loss of the current prediction, ``T`` can learn, for example, to step against it,
i.e. a learned one-step "counter-attack" in feature space.

The module also holds the chapter's experiment helpers: training with per-epoch learning
curves and the time-to-accuracy speed-up measured on them, per-sample robust masks for every
attack, the same set for plain AT, the SGN and the null baseline (:data:`COMMON_ATTACKS`: transfer
from one shared independent surrogate and from the pair's other model), plus the declared
SGN-only attacks (:data:`SGN_ONLY`: transfer from the SGN's own plain path, an attack with the
self-gradient held constant and one with the probe label held fixed, each of which is white-box
PGD on a plain network), the injection diagnostic ``||T(ghat)|| / ||h||``, the gradient-masking
checklist of every training seed and its pooled verdict (:func:`checklists`, :func:`pooled_checklist`), the
reading of the per-sample AutoAttack calibration on the SGN (:func:`calibration_summary`), and the
chapter's declared claims (:data:`CLAIMS`, graded by :mod:`advbook.protocol` over training
seeds) with the statistics that feed them (:func:`claim_values`, for the SGN and for the null baseline) and what
this run measured for each (:func:`ours`). The checklist itself is general and lives in
:mod:`advbook.masking`, with its wording for prose (:func:`advbook.masking.verdict_text`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import attacks, cache, evaluation, masking, models, profiles
from ..data import TensorData, random_crop_flip
from ..params import Choice, ListOf, Number, Param, ParameterError, declare
from ..protocol import Claim, Graded
from ..train import default_optimizer, fit, pgd_adversary

INJECTION_POINTS = ("input", "features")

CHAPTER = "02_self_gradient"
"""The notebook this module backs (``notebooks/02_self_gradient.ipynb``)."""

FULL_PATH_TEST = {"dataset": "cifar10", "arch": "resnet18", "width": 4, "eps": 8 / 255, "train_step_size": 2 / 255,
                  "eval_step_size": 2 / 255, "eps_sweep": [8 / 255, 128 / 255]}
"""Overrides that, added to the ``tiny`` profile, run the ``full`` profile's code path (ResNet-18 on
3x32x32 images with crop + flip augmentation) on generated CIFAR-10 files in the test suite
(``tests/test_notebooks.py``)."""

PARAMETERS = declare(
    # quick: 2 CPU cores, a few minutes: 2,000 real MNIST images, eps 0.2 instead of the standard 0.3 and PGD-3
    # training (see the notebook): an SGN step costs ~3x a plain one (double backprop). Three training seeds, each
    # with the full attack suite on 150 test points (the claims are graded over seeds); learning curves after every
    # epoch; the masking checklist on every seed (pooled verdict).
    # long: 2 CPU cores, 30-45 minutes: five seeds, 8 epochs, 250 evaluation points per seed.
    # full: one GPU: CIFAR-10, ResNet-18, eps 8/255, PGD-7 (step 2/255) training, PGD-20/CW-20 + AutoAttack; three
    # training seeds. AutoAttack on an SGN costs ~3x a plain net (double backprop): 1,000 points a seed.
    # tiny: test suite only: seconds, every code path (two seeds), numbers meaningless.
    dataset=Param("mnist5k", doc="", full="cifar10"),
    epochs=Param(4, doc="training epochs (the learning curves are measured after every epoch)", long=8, full=30,
                 tiny=2),
    n_seeds=Param(3, Number(int, 1, 10), "training seeds seed, seed + 1, ...: the replicates of every claim",
                  long=5, tiny=2),
    eps=Param(0.2, doc="l_inf radius of training and evaluation", full=8 / 255),
    arch=Param("smallcnn", Choice(models.ARCHITECTURES), "network: smallcnn (MNIST) or resnet18 (CIFAR-10)",
               full="resnet18"),
    width=Param(16, Number(int, 1, 512), "channel width of the network", full=64, tiny=4),
    point=Param("features", Choice(INJECTION_POINTS), "injection point: \"input\" or \"features\""),
    train_steps=Param(3, Number(int, 1, 100), "PGD steps of the inner maximisation in training", full=7, tiny=1),
    train_step_size=Param(None, Number(float, 1e-5, 1.0), "their step size (None: 2.5 eps / steps)", full=2 / 255),
    warmup=Param(0.3, Number(float, 0.0, 0.9), "share of training over which eps ramps up linearly", full=0.0,
                 tiny=0.0),
    batch_size=Param(128, Number(int, 8, 4096), "training batch size", tiny=64),
    n_train=Param(2000, Number(int, 20, 60000), "training images (None: the profile's dataset split)", full=None,
                  tiny=128),
    n_curve=Param(200, Number(int, 10, 10000), "test points of the learning curves", full=1000, tiny=16),
    curve_steps=Param(10, Number(int, 1, 200), "PGD steps of the learning curves", tiny=2),
    n_eval=Param(150, Number(int, 10, 10000), "test points of the final evaluation, per seed", long=250, full=1000,
                 tiny=24),
    eval_steps=Param(40, Number(int, 1, 1000), "PGD steps of the final evaluation", full=20, tiny=2),
    eval_step_size=Param(0.01, Number(float, 1e-5, 1.0), "their step size (None: 2.5 eps / steps)", full=2 / 255,
                         tiny=None),
    steps_sweep=Param([10, 40, 100], ListOf(Number(int, 1, 1000)), "checklist: PGD step counts",
                      full=[20, 50, 100, 200], tiny=[1, 2]),
    eps_sweep=Param([0.1, 0.2, 0.3, 0.5], ListOf(Number(float, 1e-4, 1.0)), "checklist: eps values",
                    full=[4 / 255, 8 / 255, 16 / 255, 32 / 255, 64 / 255, 128 / 255], tiny=[0.2, 0.6]),
    n_sweep=Param(100, Number(int, 10, 10000), "checklist: test points of the eps and steps sweeps, at most n_eval",
                  full=500, tiny=12),
    square_queries=Param(2000, Number(int, 1, 100000), "checklist: Square's query budget", full=5000, tiny=20),
)
PROFILES, SCHEMA = PARAMETERS.profiles, PARAMETERS.schema
"""What each profile sets and what each parameter allows, as :func:`advbook.params.resolve` takes them."""

NULL_SEED_OFFSET = 100
"""The null baseline of every claim is a second plain AT run in place of the SGN: seed ``s + NULL_SEED_OFFSET``
for the SGN of seed ``s`` (graded by the same statistic against the same plain run)."""

SURROGATE_SEED_OFFSET = 200
"""Every model evaluated for seed ``s`` (plain AT, the SGN, the null) faces transfer attacks crafted on the same
independent surrogate: a plain AT run of seed ``s + SURROGATE_SEED_OFFSET`` (none of the evaluated models)."""


def check(cfg: dict) -> None:
    """Cross-parameter checks (run by :func:`advbook.book.chapter.setup` before any work)."""
    if cfg["n_sweep"] > cfg["n_eval"]:
        raise ParameterError(f"parameter 'n_sweep' = {cfg['n_sweep']} must be <= n_eval = {cfg['n_eval']}")
    if cfg["epochs"] < 2:
        raise ParameterError(f"parameter 'epochs' = {cfg['epochs']} must be >= 2 (a learning curve needs two points)")
    if len(cfg["eps_sweep"]) < 2 or len(cfg["steps_sweep"]) < 2:
        raise ParameterError(f"parameters 'eps_sweep' = {list(cfg['eps_sweep'])} and 'steps_sweep' = "
                             f"{list(cfg['steps_sweep'])} need at least two values each")


# ---------------------------------------------------------------------------- the model


def normalized_gradient(g: torch.Tensor, delta: float = 1e-12) -> torch.Tensor:
    """Per-sample RMS normalisation ``ghat = g / sqrt(mean(g^2) + delta)`` (eq. 2).

    The raw self-gradient shrinks with the model's confidence (``p_yhat -> 1``); the
    normalised one carries only its direction, at unit RMS. A gradient that is exactly
    zero (saturated softmax) stays zero. Differentiable everywhere (``delta > 0``).
    """
    scale = g.pow(2).flatten(1).mean(1).add(delta).rsqrt()
    return g * scale.view(-1, *([1] * (g.dim() - 1)))


class GradientTransform(nn.Module):
    """``T(ghat) = conv3x3(act(conv3x3(ghat)))`` (eq. 3), the learned map of the self-gradient.

    Same number of channels in and out; the last convolution is zero-initialised, so the
    injection starts as the identity map of the plain network.
    """

    def __init__(self, channels: int, hidden: int, act: str = "relu"):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), models.activation(act),
                                 nn.Conv2d(hidden, channels, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.net.to(memory_format=models.MEMORY_FORMAT)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.net(g)


def _split(base: nn.Module, point: str) -> tuple[Callable, Callable, int]:
    """``(pre, post, channels)`` of ``base`` at injection ``point``: ``base.features == post o pre``."""
    if point not in INJECTION_POINTS:
        raise ValueError(f"injection point {point!r} is not known; allowed: {', '.join(INJECTION_POINTS)}")
    if isinstance(base, models.SmallCNN):
        in_channels = base.body[0].in_channels
        if point == "input":
            return base.normalize, base.body, in_channels
        stage = base.body[:3]  # conv - act - pool
        return (lambda x: stage(base.normalize(x))), base.body[3:], base.body[0].out_channels
    if isinstance(base, models.ResNet18):
        if point == "input":
            return base.normalize, (lambda h: base.pool(base.layers(base.stem(h)))), base.stem[0].in_channels
        first = base.layers[:2]  # stem + stage 1 (two basic blocks)
        rest = base.layers[2:]
        return (lambda x: first(base.stem(base.normalize(x)))), (lambda h: base.pool(rest(h))), first[-1].conv2.out_channels
    raise TypeError(f"no self-gradient split for {type(base).__name__}; supported: SmallCNN, ResNet18")


class SelfGradientNet(nn.Module):
    """A classifier that feeds its own loss gradient back into its features (eqs. 1-4).

    ``forward(x)`` needs only ``x``: the probe loss uses the *predicted* label. It works
    inside ``torch.no_grad()`` (AutoAttack, :func:`advbook.evaluation.predict`): the probe
    gradient is computed under ``torch.enable_grad()`` and, when nothing outside can
    differentiate the output, detached. Whenever grad mode is on outside (training, every
    gradient attack) the probe uses ``create_graph=True``, so gradients of the output
    include the second-order path through ``g``.

    ``detach_self_gradient = True`` treats ``g`` as a constant in the backward pass (a
    BPDA-style surrogate used as an extra, adaptive attack; never for training).
    Exposes ``features(x)`` and ``head`` like every model of :mod:`advbook.models`.
    """

    def __init__(self, base: nn.Module, point: str = "features", hidden: int | None = None, act: str = "relu",
                 delta: float = 1e-12):
        super().__init__()
        self.base = base
        self.point = point
        pre, post, channels = _split(base, point)
        self._parts = (pre, post)  # a tuple: not registered again as submodules (no duplicate state_dict keys)
        self.transform = GradientTransform(channels, hidden or max(8, channels), act)
        self.delta = delta
        self.detach_self_gradient = False
        self.probe_label: torch.Tensor | None = None
        """When set (by :func:`fixed_probe_label`, for an adaptive attack only), the probe loss of eq. 1 uses
        these labels instead of the prediction ``argmax z``, so the self-gradient does not jump when the
        prediction flips."""

    @property
    def head(self) -> nn.Module:
        """The base network's final linear map (so ``model(x) == model.head(model.features(x))``)."""
        return self.base.head

    def self_gradient(self, h: torch.Tensor) -> torch.Tensor:
        """Eq. 1: ``g = d CE(head(post(h)), argmax head(post(h))) / dh``, summed over the batch.

        The sum (not the mean) makes each sample's ``g`` independent of the batch size and
        of the other samples in the batch.
        """
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            probe = h if h.requires_grad else h.detach().requires_grad_(True)
            z = self.head(self._parts[1](probe))
            yhat = z.argmax(1).detach() if self.probe_label is None else self.probe_label.to(z.device)
            loss = F.cross_entropy(z, yhat, reduction="sum")
            create = outer and not self.detach_self_gradient
            (g,) = torch.autograd.grad(loss, probe, create_graph=create)
        return g if create else g.detach()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 4: ``post(h + T(ghat))`` with ``h = pre(x)``."""
        h = self._parts[0](x)
        g = normalized_gradient(self.self_gradient(h), self.delta)
        return self._parts[1](h + self.transform(g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def injection(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, T(ghat))``: the features at the injection point and what eq. 4 adds to them."""
        h = self._parts[0](x)
        return h, self.transform(normalized_gradient(self.self_gradient(h), self.delta))

    def plain_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The probe logits ``head(post(pre(x)))``: the network without the injection."""
        return self.head(self._parts[1](self._parts[0](x)))


@contextlib.contextmanager
def detached_self_gradient(model: nn.Module):
    """Within the block, ``model`` (a :class:`SelfGradientNet`) treats its self-gradient as a constant."""
    old = getattr(model, "detach_self_gradient", None)
    if old is None:
        yield model
        return
    model.detach_self_gradient = True
    try:
        yield model
    finally:
        model.detach_self_gradient = old


@contextlib.contextmanager
def fixed_probe_label(model: nn.Module, labels: torch.Tensor):
    """Within the block, ``model`` (a :class:`SelfGradientNet`) computes its self-gradient for ``labels``
    (one per sample of the batches it sees) instead of its own prediction: the attacker's smooth surrogate
    of the SGN (the real SGN's self-gradient switches direction where its prediction flips)."""
    old = getattr(model, "probe_label", False)
    if old is False:
        yield model
        return
    model.probe_label = labels.detach()
    try:
        yield model
    finally:
        model.probe_label = old


def fixed_label_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
    """:func:`advbook.attacks.pgd` on ``model`` with the SGN's probe label held at the true label ``y``
    (:func:`fixed_probe_label`): an adaptive attack on the SGN's decision boundary, where its own
    self-gradient is discontinuous. The adversarial points are then judged by the real SGN."""
    with fixed_probe_label(model, y):
        return attacks.pgd(model, x, y, **kwargs)


def build(kind: str, arch: str, dataset: str, num_classes: int = 10, width: int | None = None,
          point: str = "features", act: str = "relu") -> nn.Module:
    """``kind="plain"``: :func:`advbook.models.build`; ``kind="sgn"``: the same net wrapped in :class:`SelfGradientNet`."""
    base = models.build(arch, dataset, num_classes, width=width, act=act)
    if kind == "plain":
        return base
    if kind == "sgn":
        return SelfGradientNet(base, point, act=act)
    raise ValueError(f"model kind {kind!r} is not known; allowed: 'plain', 'sgn'")


# ---------------------------------------------------------------------------- training and learning curves


def curve_point(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seed: int) -> dict:
    """One point of a learning curve: clean accuracy and robust accuracy under PGD-CE, PGD-CW (``steps``
    steps, default step size, through the whole model) and both (a point counts only if it survives both)."""
    was = model.training
    model.eval()
    try:
        clean = correct_mask(model, x, y)
        masks = {}
        for loss in ("ce", "cw"):
            gen = torch.Generator().manual_seed(seed)
            x_adv = evaluation.attack_all(attacks.pgd, model, x, y, 250, eps=eps, steps=steps, loss=loss, generator=gen)
            masks[loss] = correct_mask(model, x_adv, y) & clean
    finally:
        model.train(was)
    return {"clean": clean.float().mean().item(), "ce": masks["ce"].float().mean().item(),
            "cw": masks["cw"].float().mean().item(), "robust": (masks["ce"] & masks["cw"]).float().mean().item()}


def train_pair(data: TensorData, cfg: dict, seed: int = 0, epochs: int | None = None,
               kinds: Sequence[str] = ("plain", "sgn")) -> dict:
    """PGD adversarial training of the plain net and of the SGN with the same budget (cached).

    Same architecture, initialisation of the shared layers, data order, optimiser, one-cycle
    learning-rate schedule over ``epochs`` (default ``cfg["epochs"]``) and PGD-``train_steps``
    inner maximisation (Madry et al. 2018). After every epoch the model's *learning curve* is
    measured (:func:`curve_point` on the first ``n_curve`` test points, ``curve_steps`` PGD steps;
    the time it takes is not counted in ``train_seconds``).
    Returns ``{kind: (model, history)}`` for ``kinds``; histories are lists of dicts, one per epoch.
    """
    epochs = cfg["epochs"] if epochs is None else epochs
    opt = default_optimizer(cfg["arch"])
    device = data.x_train.device
    x_curve, y_curve = data.x_test[: cfg["n_curve"]], data.y_test[: cfg["n_curve"]]
    out = {}
    for kind in kinds:
        config = {
            "data": data.identity(),
            "kind": kind, "arch": cfg["arch"], "width": cfg["width"], "point": cfg["point"] if kind == "sgn" else None,
            "epochs": epochs, "eps": cfg["eps"], "train_steps": cfg["train_steps"],
            "train_step_size": cfg["train_step_size"], "warmup": cfg["warmup"], "batch_size": cfg["batch_size"],
            "seed": seed, "curve": {"n": len(y_curve), "steps": cfg["curve_steps"]}, **opt,
        }
        name = f"selfgrad-{kind}-{cfg['arch']}-{data.name}"
        torch.manual_seed(seed)
        model = build(kind, cfg["arch"], data.name, data.num_classes, cfg["width"], cfg["point"])
        with cache.trained_model(name, config, model, (train_pair,), device) as run:
            if run.needed:
                gen = torch.Generator().manual_seed(seed)
                adversary = pgd_adversary(cfg["eps"], cfg["train_steps"], cfg["train_step_size"], cfg["warmup"],
                                          generator=gen)
                # train.fit calls augment(xb, generator): the generator goes to random_crop_flip by keyword
                augment = (lambda xb, g: random_crop_flip(xb, generator=g)) if data.name == "cifar10" else None

                def on_epoch(epoch, m):
                    return curve_point(m, x_curve, y_curve, cfg["eps"], cfg["curve_steps"], seed)

                run.record = fit(model, data.x_train, data.y_train, epochs=epochs, batch_size=cfg["batch_size"],
                                 adversary=adversary, augment=augment, generator=gen, on_epoch=on_epoch,
                                 checkpoint=run.checkpoint, **opt).as_dict()
        out[kind] = (model, run.record)
    return out


def time_to_reach(curve: Sequence[float], target: float) -> tuple[float, bool]:
    """``(t, reached)``: the first (linearly interpolated) epoch at which ``curve`` (one value per epoch,
    epochs 1, 2, ...) reaches ``target``. Interpolation runs between measured epochs only; reached at
    epoch 1, ``t`` is 1 (the curve cannot say how much earlier). Never reached: ``t`` is the last epoch
    and ``reached`` is False (a bound that favours the model: it needs longer than that)."""
    values = [float(v) for v in curve]
    if not values:
        raise ValueError("an empty learning curve")
    for i, v in enumerate(values):
        if v >= target:
            if i == 0:
                return 1.0, True
            prev = values[i - 1]
            return i + (target - prev) / (v - prev), True
    return float(len(values)), False


def time_to_accuracy(hist_plain: Sequence[dict], hist_sgn: Sequence[dict], key: str = "robust") -> dict:
    """Time-to-accuracy of one seed's pair of learning curves (histories of :func:`train_pair`).

    The target is the plain model's robust accuracy (``key``) at its last epoch. Each model's
    time to target is :func:`time_to_reach` of its curve, in epochs and in training seconds (epochs
    times that model's mean seconds per epoch). ``speedup_epochs`` = plain / SGN epochs and
    ``speedup_seconds`` = plain / SGN seconds (> 1: the SGN is faster); ``log10_*`` their logarithms,
    the graded statistics. ``censored``: the SGN never reached the target (its time is a lower bound,
    so the speed-up is an upper bound). Works for any model in place of the SGN (the null baseline).
    """
    target = float(hist_plain[-1][key])
    out = {"key": key, "target": target}
    for kind, hist in (("plain", hist_plain), ("sgn", hist_sgn)):
        t, reached = time_to_reach([r[key] for r in hist], target)
        per_epoch = hist[-1]["train_seconds"] / len(hist)
        out[kind] = {"epochs": t, "seconds": t * per_epoch, "reached": reached, "seconds_per_epoch": per_epoch,
                     "curve": [r[key] for r in hist]}
    out["speedup_epochs"] = out["plain"]["epochs"] / out["sgn"]["epochs"]
    out["speedup_seconds"] = out["plain"]["seconds"] / out["sgn"]["seconds"]
    out["log10_speedup_epochs"] = math.log10(out["speedup_epochs"])
    out["log10_speedup_seconds"] = math.log10(out["speedup_seconds"])
    out["cost_ratio"] = out["sgn"]["seconds_per_epoch"] / out["plain"]["seconds_per_epoch"]
    out["censored"] = not out["sgn"]["reached"]
    return out


# ---------------------------------------------------------------------------- evaluation


class PlainPath(nn.Module):
    """The SGN with its self-gradient branch removed: ``head(post(pre(x)))``, the probe logits.

    A surrogate for transfer attacks: the same weights, an ordinary first-order function.
    """

    def __init__(self, sgn: SelfGradientNet):
        super().__init__()
        self.sgn = sgn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sgn.plain_forward(x)


class HeldSelfGradient(nn.Module):
    """The SGN's function, with its self-gradient treated as a constant in the backward pass (BPDA-style)."""

    def __init__(self, sgn: SelfGradientNet):
        super().__init__()
        self.sgn = sgn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with detached_self_gradient(self.sgn):
            return self.sgn(x)


def correct_mask(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Boolean mask (on the CPU): which of ``x`` the model classifies as ``y``."""
    return (evaluation.predict(model, x, batch_size).argmax(1) == y).cpu()


SHARED_SURROGATE = "an independent plain AT run"
"""The transfer source every evaluated model of a seed faces (seed ``s + SURROGATE_SEED_OFFSET``)."""

PARTNER = "the pair's other model"
"""The transfer source that is the evaluated model's counterpart of the same seed: for plain AT its SGN, for the
SGN (and for the null baseline in the SGN's place) plain AT. The same role for every model, another source."""

COMMON_ATTACKS = ("clean", "PGD-CE", "PGD-CW", "AutoAttack", f"transfer from {SHARED_SURROGATE}",
                  f"transfer from {PARTNER}")
"""The attacks every evaluated model faces (keys of :func:`evaluate`'s masks), so that the worst case of plain AT,
of the SGN and of the null baseline is taken over the same set."""

SGN_ONLY = {
    "PGD (g held constant)": "holds the self-gradient of eq. 1 constant in the backward pass; a plain network has no "
                             "self-gradient, so on it this attack is its white-box PGD-CE and PGD-CW, which it faces",
    "PGD (label held fixed)": "fixes the probe label of eq. 1 at the true label; a plain network has no probe "
                              "(fixed_probe_label leaves it unchanged), so on it this attack is exactly its white-box "
                              "PGD-CE and PGD-CW, which it faces",
    "transfer from its plain path": "crafts PGD on the SGN without its self-gradient branch; a plain network's plain "
                                    "path is the network itself, so on it this attack is its white-box PGD-CE and "
                                    "PGD-CW, which it faces",
}
"""The attacks only the SGN faces, each with the reason it has no separate plain-AT counterpart: its analogue on a
plain network is that network's own white-box PGD, already in :data:`COMMON_ATTACKS`."""


def attack_set(kind: str) -> tuple[str, ...]:
    """The attacks a model of ``kind`` (``"plain"`` or ``"sgn"``) faces in :func:`evaluate`, in order."""
    if kind == "plain":
        return COMMON_ATTACKS
    if kind == "sgn":
        return COMMON_ATTACKS + tuple(SGN_ONLY)
    raise ValueError(f"model kind {kind!r} is not known; allowed: 'plain', 'sgn'")


def check_attack_sets(evaluations: dict) -> None:
    """Raise ``ValueError`` unless every evaluation (``{name: evaluate(...)}``) faced the same attacks, the SGN's
    declared :data:`SGN_ONLY` attacks apart (and only an SGN may face those)."""
    sets = {}
    for name, e in evaluations.items():
        attacks_faced = set(e["masks"])
        if e.get("kind") != "sgn" and attacks_faced & set(SGN_ONLY):
            raise ValueError(f"{name} is not an SGN but faced {sorted(attacks_faced & set(SGN_ONLY))}")
        sets[name] = attacks_faced - set(SGN_ONLY)
    first, ref = next(iter(sets.items()))
    for name, faced in sets.items():
        if faced != ref:
            raise ValueError(f"{name} and {first} faced different attacks: only {name}: {sorted(faced - ref)}; "
                             f"only {first}: {sorted(ref - faced)}")


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int,
             step_size: float | None, aa_budget: dict, surrogate: nn.Module, partner: nn.Module, seed: int = 0,
             batch_size: int = 250) -> dict:
    """Per-sample robustness of ``model`` under every attack of the chapter, and the worst case.

    Every model (:data:`COMMON_ATTACKS`): PGD-CE and PGD-CW (``steps`` steps, through the full computation);
    AutoAttack at ``aa_budget`` (``cfg.autoattack``); transfer (PGD-CE and PGD-CW crafted on another model, a
    point survives if it survives both) from ``surrogate``, the independent plain AT run every model of the
    seed faces (:data:`SHARED_SURROGATE`), and from ``partner``, the other model of the comparison
    (:data:`PARTNER`). An SGN also faces :data:`SGN_ONLY`: PGD crafted with the self-gradient held constant
    (:class:`HeldSelfGradient`, BPDA-style), PGD with the probe label held at the true label
    (:func:`fixed_label_pgd`, so the self-gradient does not jump where the prediction flips), each with CE and
    CW, and transfer from its own plain path (:class:`PlainPath`). A point is robust in the worst case only if
    it survives every attack. Returns ``{"kind", "masks": {attack: bool tensor}, "acc": {attack: accuracy},
    "worst": mask, "sources": {transfer name: model}, "autoattack": {...}}``.
    """
    if surrogate is model or partner is model:
        raise ValueError("a transfer source must be another model (crafting on the model itself is white-box PGD)")
    is_sgn = isinstance(model, SelfGradientNet)
    kw = dict(steps=steps, step_size=step_size, seed=seed, batch_size=batch_size)
    masks = {"clean": correct_mask(model, x, y, batch_size)}
    for loss in ("ce", "cw"):
        masks[f"PGD-{loss.upper()}"] = masking.pgd_mask(model, x, y, eps, loss=loss, **kw)
    aa = evaluation.autoattack(model, x, y, eps, seed=seed, **aa_budget)
    masks["AutoAttack"] = aa["robust_mask"].cpu()
    if is_sgn:
        held = HeldSelfGradient(model)
        masks["PGD (g held constant)"] = torch.stack(
            [masking.pgd_mask(model, x, y, eps, loss=loss, source=held, **kw) for loss in ("ce", "cw")]).all(0)
        masks["PGD (label held fixed)"] = torch.stack(
            [masking.pgd_mask(model, x, y, eps, loss=loss, attack=fixed_label_pgd, **kw)
             for loss in ("ce", "cw")]).all(0)
    sources = {SHARED_SURROGATE: surrogate, PARTNER: partner}
    if is_sgn:
        sources["its plain path"] = PlainPath(model)
    for name, source in sources.items():
        masks[f"transfer from {name}"] = torch.stack(
            [masking.pgd_mask(model, x, y, eps, loss=loss, source=source, **kw) for loss in ("ce", "cw")]).all(0)
    worst = torch.stack(list(masks.values())).all(0)
    acc = {name: m.float().mean().item() for name, m in masks.items()}
    acc["worst case"] = worst.float().mean().item()
    return {"kind": "sgn" if is_sgn else "plain", "masks": masks, "acc": acc, "worst": worst, "sources": sources,
            "autoattack": {k: v for k, v in aa.items() if k not in ("x_adv", "robust_mask")}}


def evaluate_seed(plain: nn.Module, sgn: nn.Module, null: nn.Module, surrogate: nn.Module, x: torch.Tensor,
                  y: torch.Tensor, eps: float, **kwargs) -> dict:
    """:func:`evaluate` of one seed's three models on the same points: ``{"plain AT", "SGN AT", "plain AT (null)"}``.

    All three face transfer from the same ``surrogate`` (the independent plain AT run) and from their pair's
    other model (plain AT from the SGN; the SGN and the null, in the SGN's place, from plain AT); the attack sets
    are checked to agree (:func:`check_attack_sets`). ``kwargs``: ``steps``, ``step_size``, ``aa_budget``,
    ``seed``, ``batch_size`` of :func:`evaluate`.
    """
    out = {"plain AT": evaluate(plain, x, y, eps, surrogate=surrogate, partner=sgn, **kwargs),
           "SGN AT": evaluate(sgn, x, y, eps, surrogate=surrogate, partner=plain, **kwargs),
           "plain AT (null)": evaluate(null, x, y, eps, surrogate=surrogate, partner=plain, **kwargs)}
    check_attack_sets(out)
    return out


WHITE_BOX = ("clean", "PGD-CE", "PGD-CW", "PGD (g held constant)", "PGD (label held fixed)")
"""The white-box PGD set of an evaluation (every PGD attack on the model itself, adaptive ones included)."""


def pgd_set(e: dict) -> torch.Tensor:
    """The robust mask of :data:`WHITE_BOX` (the attacks of it that the evaluation ``e`` ran) of one evaluation."""
    return torch.stack([m for k, m in e["masks"].items() if k in WHITE_BOX]).all(0)


def checklist(model: nn.Module, e: dict, x: torch.Tensor, y: torch.Tensor, cfg: dict, seed: int,
              overstated: masking.Item) -> masking.Checklist:
    """:func:`advbook.masking.run_checklist` of one seed's ``model`` with the evaluation ``e`` it had
    (:func:`evaluate`): its adaptive attacks join the white-box set, its transfer sources are item 5's surrogates
    (their masks come from the cache), ``overstated`` is item 6 (:func:`advbook.masking.overstatement_item`)."""
    adaptive = {k: m for k, m in e["masks"].items() if k.startswith("PGD (")}
    return masking.run_checklist(
        model, x, y, cfg["eps"], eps_sweep=cfg["eps_sweep"], steps_sweep=cfg["steps_sweep"], steps=cfg["eval_steps"],
        step_size=cfg["eval_step_size"], surrogate=e["sources"], n_queries=cfg["square_queries"],
        n_sweep=cfg["n_sweep"], extra_white=adaptive, overstated=overstated, seed=seed)


def sweep_masks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: dict, seed: int) -> dict:
    """The per-point PGD-CE masks behind checklist items 2 and 3 of one seed, ``{"eps": {eps: mask}, "steps":
    {steps: mask}}``, on the first ``n_sweep`` points: the calls :func:`advbook.masking.run_checklist` makes, so
    they come from the cache after :func:`checklist` ran."""
    k = min(int(cfg["n_sweep"]), len(x))
    xs, ys = x[:k], y[:k]
    kw = dict(step_size=None, seed=seed, batch_size=250, use_cache=True)
    return {"eps": {float(e): masking.pgd_mask(model, xs, ys, float(e), steps=cfg["eval_steps"], **kw)
                    for e in sorted(cfg["eps_sweep"])},
            "steps": {int(n): masking.pgd_mask(model, xs, ys, cfg["eps"], steps=int(n), **kw)
                      for n in sorted(cfg["steps_sweep"])}}


def _no_rise(masks: dict, z: float, slack: float) -> tuple[bool, float]:
    """Whether robust accuracy never rises along ``masks`` (ordered ``{setting: mask}``) beyond ``z`` paired
    standard errors plus ``slack`` (:func:`advbook.masking.paired_difference`), and the largest rise."""
    keys = list(masks)
    diffs = [masking.paired_difference(masks[b], masks[a]) for a, b in zip(keys, keys[1:])]
    return all(d["diff"] <= z * d["se"] + slack for d in diffs), max(d["diff"] for d in diffs)


def pooled_checklist(per_seed: Sequence[masking.Checklist], sweeps: Sequence[dict], overstated: masking.Item, *,
                     tol_zero: float = 0.05, max_flat: float = 0.01, z: float = 1.96,
                     slack: float = 0.01) -> masking.Checklist:
    """The checklist of one training method over all its seeds: every item's rule of
    :func:`advbook.masking.run_checklist` applied to the points of every seed pooled (the same thresholds).

    Item 1: the share of flat gradients over all points. Items 2 and 3: the accuracy curves over the pooled
    points (``sweeps``: :func:`sweep_masks` per seed, concatenated), the same paired no-rise rule. Items 4 and 5:
    the black-box finds ``b`` and the restart's ``r`` summed over seeds (sums of Poisson counts), failing when
    ``b - r > z sqrt(b + r)``: pooling gives the item more power against partial masking than one seed's points.
    Item 6: ``overstated``, already pooled over seeds. An item not run on some seed fails.
    """
    if not per_seed or len(per_seed) != len(sweeps):
        raise ValueError(f"need one sweep per checklist, got {len(per_seed)} checklists and {len(sweeps)} sweeps")
    items = []
    n = [len(cl.white) for cl in per_seed]
    flat = sum(cl.items[0].values["flat_share"] * k for cl, k in zip(per_seed, n)) / sum(n)
    items.append(masking.Item(masking.ITEMS[0], f"{flat:.1%} of {sum(n)} points have a zero or non-finite input "
                              "gradient", f"<= {max_flat:.0%} of points", flat <= max_flat, {"flat_share": flat}))
    curves = {}
    for i, key in ((1, "eps"), (2, "steps")):
        settings = list(sweeps[0][key])
        masks = {v: torch.cat([sw[key][v] for sw in sweeps]) for v in settings}
        acc = {v: m.float().mean().item() for v, m in masks.items()}
        curves[key] = acc
        ok, rise = _no_rise(masks, z, slack)
        if key == "eps":
            top = settings[-1]
            items.append(masking.Item(masking.ITEMS[1], f"{acc[top]:.1%} at eps {top:.3g}" + ("" if ok else
                                      "; rises with eps"), f"<= {tol_zero:.0%} at the largest eps; no rise beyond "
                                      "noise", acc[top] <= tol_zero and ok, {"acc": acc}))
        else:
            items.append(masking.Item(masking.ITEMS[2], ", ".join(f"{k}: {a:.1%}" for k, a in acc.items()),
                                      "non-increasing in steps, up to noise", ok, {"acc": acc, "largest_rise": rise}))
    for i, what in ((3, "Square"), (4, "transfer")):
        vals = [cl.items[i].values for cl in per_seed]
        if not all("found" in v for v in vals):
            items.append(masking.Item(masking.ITEMS[i], "not run on every seed", "run on every seed", False, {}))
            continue
        b, r = sum(v["found"] for v in vals), sum(v["restart_found"] for v in vals)
        allowed = z * math.sqrt(b + r)
        items.append(masking.Item(masking.ITEMS[i], f"over {sum(n)} points of {len(per_seed)} seed(s), {what} "
                                  f"breaks {b} points white-box left robust, a white-box restart {r}",
                                  f"found - restart <= {z:g} sqrt(found + restart)", b - r <= allowed,
                                  {"found": b, "restart_found": r, "allowed": allowed, "n": sum(n),
                                   "per_seed": [v["found"] for v in vals]}))
    items.append(overstated)
    return masking.Checklist(items, curves, torch.cat([cl.white for cl in per_seed]))


CHECKLIST_CONTROLS = {"SGN AT": "plain AT", "plain AT": "plain AT (null)"}
"""The checked models (names of :func:`evaluate_seed`) and the control of each in checklist item 6: the SGN
against plain AT of the same seed, plain AT against the second plain run (the null baseline)."""


def pooled_masks(evaluations: Mapping[int, dict], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Model ``name``'s robust masks under the white-box PGD set (:func:`pgd_set`) and under AutoAttack, the
    points of every seed of ``evaluations`` (``{seed: evaluate_seed(...)}``) concatenated in seed order: what
    checklist item 6 compares over all seeds (:func:`advbook.masking.overstatement_item`)."""
    return (torch.cat([pgd_set(e[name]) for e in evaluations.values()]),
            torch.cat([e[name]["masks"]["AutoAttack"] for e in evaluations.values()]))


def checklists(models: Mapping[str, Mapping[int, nn.Module]], evaluations: Mapping[int, dict], x: torch.Tensor,
               y: torch.Tensor, cfg: dict) -> tuple[dict, dict]:
    """The gradient-masking checklist of every model of :data:`CHECKLIST_CONTROLS`, per seed and over all seeds.

    ``models[name][seed]``: the trained model of each name and seed; ``evaluations[seed]``: that seed's
    :func:`evaluate_seed` on ``(x, y)``. Per seed, item 6 compares the model with its control on the seed's
    points (:func:`advbook.masking.overstatement_item` of the :func:`pgd_set` and AutoAttack masks), the other
    items run through :func:`checklist`, and :func:`sweep_masks` collects the masks of items 2 and 3 (from the
    cache). Over all seeds, :func:`pooled_checklist` pools them, with item 6 on every seed's points
    (:func:`pooled_masks`). Returns ``(per_seed, pooled)``: ``{name: {seed: Checklist}}`` and ``{name:
    Checklist}``.
    """
    per_seed, pooled = {}, {}
    for name, control in CHECKLIST_CONTROLS.items():
        per_seed[name], sweeps = {}, []
        for s, e in evaluations.items():
            over = masking.overstatement_item(pgd_set(e[name]), e[name]["masks"]["AutoAttack"], pgd_set(e[control]),
                                              e[control]["masks"]["AutoAttack"], control=control)
            per_seed[name][s] = checklist(models[name][s], e[name], x, y, cfg, s, over)
            sweeps.append(sweep_masks(models[name][s], x, y, cfg, s))
        over = masking.overstatement_item(*pooled_masks(evaluations, name), *pooled_masks(evaluations, control),
                                          control=control)
        pooled[name] = pooled_checklist(list(per_seed[name].values()), sweeps, over)
    return per_seed, pooled


CALIBRATION = "book/measurements/autoattack_budget_sgn.json"
"""The per-sample AutoAttack calibration on the first seed's quick SGN, relative to the repository root
(``python -m advbook.calibration --model sgn``, :mod:`advbook.calibration`)."""


AUTOATTACK_OVERRIDES = {"quick": {"n_target_classes": 9}}
"""Where this chapter's AutoAttack budget departs from the profile's (``cfg.autoattack``), and why: on the first
seed's quick SGN the profile's quick budget (APGD-T with 3 target classes) left robust a point that the standard
AutoAttack breaks with APGD-T's 9 target classes, and FAB-T added did not break it (:data:`CALIBRATION`); with 9
target classes the budget left no such point. The extra cost is APGD-T on 9 instead of 3 target classes."""


def autoattack_budget(cfg: dict) -> dict:
    """This chapter's AutoAttack budget: the profile's (``cfg.autoattack``) with :data:`AUTOATTACK_OVERRIDES`."""
    budget = dict(cfg["autoattack"])
    budget.update(AUTOATTACK_OVERRIDES.get(cfg["profile"], {}))
    budget["components"] = list(budget["components"])
    return budget


def budget_text(budget: dict) -> str:
    """An AutoAttack budget in words, with how it differs from the standard AutoAttack."""
    std = profiles.STANDARD_AUTOATTACK_BUDGET
    names = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab": "FAB", "fab-t": "FAB-T",
             "square": "Square"}
    text = (", ".join(names.get(c, c) for c in budget["components"])
            + f"; {budget['n_iter']} iterations, {budget['n_target_classes']} target class(es), Square with "
            f"{budget['n_queries']:,} queries")
    missing = [names.get(c, c) for c in std["components"] if c not in budget["components"]]
    other = [f"{std[k]:,} {what}" for k, what in (("n_iter", "iterations"), ("n_target_classes", "target classes"),
                                                   ("n_queries", "queries")) if budget[k] != std[k]]
    parts = (["adds " + ", ".join(missing)] if missing else []) + (["uses " + " and ".join(other)] if other else [])
    return text + ("; the standard AutoAttack " + " and ".join(parts) if parts else " (the standard AutoAttack)")


def load_calibration(root=None) -> dict | None:
    """The SGN calibration record (:data:`CALIBRATION`), or ``None`` when this checkout has none (or unreadable)."""
    from ..results import load_record

    return load_record(CALIBRATION, root)


def _same_budget(a: dict, b: dict) -> bool:
    keys = ("n_iter", "n_queries", "n_target_classes")
    return list(a["components"]) == list(b["components"]) and all(a.get(k) == b.get(k) for k in keys)


def calibration_summary(record: dict | None, budget: dict, fingerprint: str | None = None,
                        eps: float | None = None) -> dict:
    """What the SGN calibration record says about the AutoAttack ``budget`` a run used (``cfg.autoattack``).

    Finds the record's candidate with exactly this budget and the one with FAB-T added, and reads their
    per-sample agreement with the standard AutoAttack (:func:`advbook.calibration.agreement`): ``misses`` =
    points the budget leaves robust that the standard AutoAttack breaks (of ``n``), ``extra`` the other way
    round, ``fab_misses`` the same with FAB-T added. ``standard``: the budget is the standard AutoAttack itself
    (nothing to calibrate). ``found``: the record holds this budget. ``same_weights``: the record's model is the
    run's first-seed SGN (``fingerprint``: :func:`advbook.cache.model_fingerprint`; ``None`` if not given).
    ``applies``: the record holds this budget at this run's ``eps`` (any eps when ``eps`` is ``None``).
    """
    std = profiles.STANDARD_AUTOATTACK_BUDGET
    out = {"standard": _same_budget(budget, std), "found": False, "applies": False, "record": record is not None}
    if record is None:
        return out
    out.update(measured=record.get("measured"), git_sha=record.get("git_sha"), eps=record.get("eps"),
               reference_robust=record["reference"]["robust"], command=record.get("command", record.get("rerun")),
               same_weights=None if fingerprint is None else fingerprint == record.get("model_fingerprint"))
    with_fab = {**budget, "components": [*budget["components"], "fab-t"]}
    with_fab["components"] = [c for c in ("apgd-ce", "apgd-t", "fab-t", "square") if c in with_fab["components"]]
    for name, row in record.get("candidates", {}).items():
        a = row.get("agreement")
        if a is None:
            continue
        if _same_budget(row["budget"], budget):
            out.update(found=True, name=name, robust=row["robust"], misses=a["only_candidate"],
                       extra=a["only_reference"], n=a["n"])
        elif _same_budget(row["budget"], with_fab):
            out.update(fab_name=name, fab_robust=row["robust"], fab_misses=a["only_candidate"])
    out["applies"] = out["found"] and (eps is None or abs(float(record.get("eps", -1)) - float(eps)) < 1e-9)
    return out


def calibration_deviation(summary: dict) -> tuple:
    """The deviation of the worst-case claims a calibration summary implies: none for the standard AutoAttack or
    a budget that missed no point standard AutoAttack breaks; else what it missed (a reduced budget that misses
    points on the SGN can overstate the SGN's worst case by up to that share)."""
    if summary["standard"] or not summary.get("applies") or summary["misses"] == 0:
        return ()
    return (f"the reduced AutoAttack budget left robust {summary['misses']} of {summary['n']} points of the first "
            f"seed's SGN that standard AutoAttack breaks ({CALIBRATION}); the worst case may overstate the SGN by "
            "about that share",)


def calibration_sentence(summary: dict, profile: dict | None = None) -> str:
    """The chapter's generated sentence on how the AutoAttack budget it used compares, point by point, with the
    standard AutoAttack on the SGN (from :func:`calibration_summary`). ``profile``: the summary of the profile's
    own budget when the chapter departs from it (:func:`autoattack_budget`), said first."""
    lead = ""
    if profile is not None and profile.get("applies") and profile.get("name") != summary.get("name"):
        lead = (f"On the first training seed's quick SGN, the profile's budget left robust {profile['misses']} of "
                f"{profile['n']} point(s) that the standard AutoAttack breaks"
                + (f" ({profile['fab_misses']} with FAB-T added)" if "fab_misses" in profile else "")
                + ", so this chapter departs from it. ")
    return lead + _calibration_sentence(summary)


def _calibration_sentence(summary: dict) -> str:
    if summary["standard"]:
        return "This budget is the standard AutoAttack itself."
    if not summary["record"]:
        return (f"There is no per-sample calibration of this budget on the SGN in this checkout ({CALIBRATION}; "
                "`python -m advbook.calibration --model sgn` measures it).")
    if not summary["applies"]:
        return (f"The SGN calibration record ({CALIBRATION}) does not hold this budget at this run's eps, so it "
                "says nothing about this run.")
    weights = {True: "the same weights as this run's first SGN", False: "other weights than this run's first SGN",
               None: "weights not compared"}[summary["same_weights"]]
    text = (f"Calibrated point by point on the first training seed's quick SGN ({summary['n']} evaluation points, "
            f"eps {summary['eps']:.3g}; {CALIBRATION}, measured {str(summary['measured'])[:10]} at git "
            f"{str(summary['git_sha'])[:7]}, {weights}): the standard AutoAttack (with FAB-T, Square with 5,000 "
            f"queries, 9 target classes) leaves {summary['reference_robust']:.1%} robust and this budget "
            f"{summary['robust']:.1%}; this budget leaves robust {summary['misses']} point(s) that the standard "
            f"AutoAttack breaks, and breaks {summary['extra']} that it leaves robust")
    if "fab_misses" in summary:
        text += f"; with FAB-T added, {summary['fab_misses']} point(s) are left that the standard one breaks"
    text += "."
    if summary["misses"]:
        text += (" The reduced budget therefore misses adversarial examples on the SGN, and the worst-case claims "
                 "carry that as a stated deviation.")
    return text


def injection_ratio(model: SelfGradientNet, x: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Per sample ``||T(ghat)||_2 / ||h||_2``: how much the self-gradient changes the features it is added to."""
    out = []
    with torch.no_grad():
        for xb in x.split(batch_size):
            h, t = model.injection(xb)
            out.append((t.flatten(1).norm(dim=1) / h.flatten(1).norm(dim=1).clamp_min(1e-12)).cpu())
    return torch.cat(out)


def prediction_change(model: SelfGradientNet, x: torch.Tensor, batch_size: int = 250) -> float:
    """Share of ``x`` whose predicted class the injection changes (SGN vs its own plain path)."""
    with_inj = evaluation.predict(model, x, batch_size).argmax(1)
    without = evaluation.predict(PlainPath(model), x, batch_size).argmax(1)
    return (with_inj != without).float().mean().item()


# ---------------------------------------------------------------------------- the claims (declared before any result)

SOURCE = "arXiv 2011.09364, abstract"
QUOTE_SPEED = ("The proposed self-gradient network architecture enables much more efficient and effective adversarial "
               "training, leading to faster convergence towards an adversarially robust solution by at least 10X.")
QUOTE_ROBUST = ("Experimental results demonstrate the effectiveness of self-gradient networks when compared with "
                "state-of-the-art adversarial learning strategies, with 10% improvement on the CIFAR10 dataset under "
                "PGD and CW adversarial perturbations.")
COMPARATOR = "plain PGD adversarial training of the same network, same budget, data order and seed"
NULL = f"a second plain AT run (seed + {NULL_SEED_OFFSET}) in place of the SGN"
READINGS = {"points": "percentage points of robust accuracy", "relative": "relative to plain AT's robust accuracy"}
"""How the abstract's "10% improvement" is read: the declared reading is *points* (absolute); the
*relative* reading is graded beside it as a second member of the same family."""

_SPEED = dict(quote=QUOTE_SPEED, source=SOURCE, direction=1, null_value=0.0, sesoi=1.0,
              sesoi_reason="the paper's 'at least 10X' (log10 10 = 1)", comparator=COMPARATOR, unit="training seed",
              replicates="n_seeds", null=NULL,
              deviations=("speed-up measured on per-epoch learning curves: resolution one epoch, and a model "
                          "reaching the target within its first epoch counts as taking one epoch",))
_ROBUST = dict(quote=QUOTE_ROBUST, source=SOURCE, direction=1, null_value=0.0, comparator=COMPARATOR,
               unit="training seed", replicates="n_seeds", null=NULL)
_POINTS = dict(sesoi=0.05, sesoi_reason="half the paper's 10%, read as 10 percentage points")
_RELATIVE = dict(sesoi=0.05, sesoi_reason="half the paper's 10%, read as a relative improvement (10% of plain AT's "
                                          "robust accuracy)")

CLAIMS = {
    "speedup-epochs": Claim(
        key="speedup-epochs", text="SGN adversarial training reaches plain AT's final robust accuracy at least 10x "
        "faster", setting="epochs",
        statistic="log10 of the speed-up in epochs to reach plain AT's final PGD (CE and CW) robust accuracy "
        "(plain epochs / SGN epochs, learning curves)", **_SPEED),
    "speedup-seconds": Claim(
        key="speedup-seconds", text="SGN adversarial training reaches plain AT's final robust accuracy at least 10x "
        "faster", setting="training seconds",
        statistic="log10 of the speed-up in training seconds to reach plain AT's final PGD (CE and CW) robust "
        "accuracy (an SGN epoch costs more than a plain one)", **_SPEED),
    "gain-pgd-points": Claim(
        key="gain-pgd-points", text="SGN is ~10% more robust under PGD and CW", setting="PGD-CE, points",
        statistic="SGN minus plain AT robust accuracy under PGD-CE (points)", **_ROBUST, **_POINTS),
    "gain-cw-points": Claim(
        key="gain-cw-points", text="SGN is ~10% more robust under PGD and CW", setting="CW, points",
        statistic="SGN minus plain AT robust accuracy under PGD on the CW margin loss (points)", **_ROBUST, **_POINTS),
    "gain-pgd-relative": Claim(
        key="gain-pgd-relative", text="SGN is ~10% more robust under PGD and CW", setting="PGD-CE, relative",
        statistic="(SGN - plain AT) / plain AT robust accuracy under PGD-CE", **_ROBUST, **_RELATIVE),
    "gain-cw-relative": Claim(
        key="gain-cw-relative", text="SGN is ~10% more robust under PGD and CW", setting="CW, relative",
        statistic="(SGN - plain AT) / plain AT robust accuracy under PGD on the CW margin loss", **_ROBUST,
        **_RELATIVE),
    "gain-worst-points": Claim(
        key="gain-worst-points", text="SGN is ~10% more robust in the worst case over every attack (our stronger "
        "test: a real PGD/CW gain must survive AutoAttack, adaptive and transfer attacks)", setting="points",
        statistic="SGN minus plain AT worst-case robust accuracy over all attacks (points)", inferred=True,
        **_ROBUST, **_POINTS),
    "gain-worst-relative": Claim(
        key="gain-worst-relative", text="SGN is ~10% more robust in the worst case over every attack (our stronger "
        "test: a real PGD/CW gain must survive AutoAttack, adaptive and transfer attacks)", setting="relative",
        statistic="(SGN - plain AT) / plain AT worst-case robust accuracy over all attacks", inferred=True,
        **_ROBUST, **_RELATIVE),
}
"""Every claim of the chapter, declared before any result (:class:`advbook.protocol.Claim`). Families graded
together (Holm): the two speed-ups; PGD and CW in both readings; the worst case in both readings."""

FAMILIES = {"speed-up": ("speedup-epochs", "speedup-seconds"),
            "PGD and CW": ("gain-pgd-points", "gain-cw-points", "gain-pgd-relative", "gain-cw-relative"),
            "worst case": ("gain-worst-points", "gain-worst-relative")}

ATTACK_OF = {"pgd": "PGD-CE", "cw": "PGD-CW", "worst": "worst case"}
"""The attack (a key of :func:`evaluate`'s ``acc``) behind each robustness claim."""


def deviations(cfg: dict) -> tuple:
    """Known deviations of this run's setting from the paper's (shown beside every verdict, never its excuse)."""
    out = [f"our interpretation of the SGN (no public code; injection at '{cfg['point']}')",
           "comparator: plain PGD AT, not the paper's 'state-of-the-art adversarial learning strategies'"]
    if cfg["dataset"] != "cifar10":
        out.append(f"{cfg['dataset']} ({cfg.get('n_train') or 'all'} training images) instead of CIFAR-10; "
                   f"{cfg['arch']} width {cfg['width']}; {cfg['epochs']} epochs of PGD-{cfg['train_steps']} training; "
                   f"eps {cfg['eps']:.3g} instead of MNIST's usual 0.3 (set for the CPU budget, so that short training "
                   "leaves measurable robust accuracy; not selected on the graded test points)")
    out.append("CW read as PGD on the CW margin loss (l_inf)")
    return tuple(out)


def claims_for(cfg: dict, calibration: dict | None = None) -> dict:
    """:data:`CLAIMS` with this run's :func:`deviations` added (the statistics and SESOIs are unchanged), and on
    the worst-case claims the deviation a :func:`calibration_summary` implies (:func:`calibration_deviation`)."""
    extra = deviations(cfg)
    worst = calibration_deviation(calibration) if calibration else ()
    return {k: replace(c, deviations=c.deviations + extra + (worst if k.startswith("gain-worst") else ()))
            for k, c in CLAIMS.items()}


def gain(sgn_acc: float, plain_acc: float, reading: str) -> float:
    """The robustness statistic of one seed: SGN minus plain AT (``points``), or that difference over plain
    AT's accuracy (``relative``; NaN when plain AT keeps nothing)."""
    if reading == "points":
        return float(sgn_acc - plain_acc)
    if reading == "relative":
        return float((sgn_acc - plain_acc) / plain_acc) if plain_acc > 0 else float("nan")
    raise ValueError(f"reading {reading!r} is not known; allowed: {', '.join(READINGS)}")


def robustness_values(acc_sgn: dict, acc_plain: dict) -> dict:
    """``{claim key: value}`` of the six robustness claims for one seed, from :func:`evaluate`'s ``acc`` dicts."""
    return {f"gain-{a}-{r}": gain(acc_sgn[attack], acc_plain[attack], r)
            for a, attack in ATTACK_OF.items() for r in READINGS}


def speed_values(tta: dict) -> dict:
    """``{claim key: value}`` of the two speed-up claims for one seed, from :func:`time_to_accuracy`."""
    return {"speedup-epochs": tta["log10_speedup_epochs"], "speedup-seconds": tta["log10_speedup_seconds"]}


def claim_values(tta: Mapping[int, dict], evaluations: Mapping[int, dict], model: str = "SGN AT") -> dict:
    """``{claim key: [one value per seed]}`` for every claim of :data:`CLAIMS`, in seed order: the speed-ups
    (:func:`speed_values` of ``tta[seed]``, :func:`time_to_accuracy` against plain AT) and the gains of
    ``model`` over plain AT (:func:`robustness_values` of ``evaluations[seed]``, :func:`evaluate_seed`).
    ``model="SGN AT"`` with the SGN's ``tta`` gives the claims' replicates; ``model="plain AT (null)"`` with the
    null run's ``tta`` gives the null baseline's, through the same statistics."""
    if list(tta) != list(evaluations):
        raise ValueError(f"need the same seeds in the same order, got {list(tta)} and {list(evaluations)}")
    speed = [speed_values(t) for t in tta.values()]
    gains = [robustness_values(e[model]["acc"], e["plain AT"]["acc"]) for e in evaluations.values()]
    return {**{k: [v[k] for v in speed] for k in FAMILIES["speed-up"]}, **{k: [g[k] for g in gains] for k in gains[0]}}


def mean_accuracy(evaluations: Mapping[int, dict], model: str, attack: str) -> float:
    """Model ``model``'s robust accuracy under ``attack`` (a key of :func:`evaluate`'s ``acc``), averaged over
    the seeds of ``evaluations`` (``{seed: evaluate_seed(...)}``)."""
    return float(np.mean([e[model]["acc"][attack] for e in evaluations.values()]))


def mean_cost_ratio(tta: Mapping[int, dict]) -> float:
    """The cost of an SGN epoch in plain AT epochs (:func:`time_to_accuracy`'s ``cost_ratio``), averaged over
    the seeds of ``tta``."""
    return float(np.mean([t["cost_ratio"] for t in tta.values()]))


def ours(key: str, values: Sequence[float], tta: Mapping[int, dict], evaluations: Mapping[int, dict]) -> str:
    """What this run measured for claim ``key``, for the claims table (``ours`` of
    :func:`advbook.protocol.grade_family`). A speed-up: the speed-up per seed (``values`` are its log10,
    :func:`claim_values`), the cost of an SGN epoch (:func:`mean_cost_ratio`) and the seeds where the SGN never
    reached the target (its speed-up there is an upper bound). A gain: the SGN's and plain AT's robust
    accuracy under the claim's attack (:data:`ATTACK_OF`), averaged over seeds (:func:`mean_accuracy`)."""
    if key.startswith("speedup"):
        never = sum(t["censored"] for t in tta.values())
        return (f"speed-up in {key.split('-')[1]} per seed: " + ", ".join(f"{10 ** v:.2f}x" for v in values)
                + f"; an SGN epoch costs {mean_cost_ratio(tta):.2f}x a plain one"
                + (f"; the SGN never reached the target in {never} of {len(tta)} seed(s), where its speed-up is an "
                   "upper bound" if never else ""))
    attack = ATTACK_OF[key.split("-")[1]]
    return (f"{attack}: SGN {mean_accuracy(evaluations, 'SGN AT', attack):.3f} vs plain AT "
            f"{mean_accuracy(evaluations, 'plain AT', attack):.3f} (mean over seeds)")


def masking_pattern(graded: Mapping[str, Graded]) -> list[str]:
    """The attacks (``PGD``, ``CW``) whose gain in points has an interval that excludes 0 while the worst-case
    gain's interval does not: a gain that the strong and adaptive attacks take away, the pattern of gradient
    masking. Empty when the worst-case interval excludes 0, or no PGD/CW interval does. ``graded``: the graded
    claims by key (:class:`advbook.protocol.Graded`)."""
    if not graded["gain-worst-points"].ci[0] <= 0:  # the worst case's interval excludes 0 (or is undefined)
        return []
    return [key.split("-")[1].upper() for key in ("gain-pgd-points", "gain-cw-points") if graded[key].ci[0] > 0]
