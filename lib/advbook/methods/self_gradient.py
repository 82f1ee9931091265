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

The module also holds the chapter's experiment helpers: the budget sweep (separate
training runs per epoch budget, each with its own schedule) and its convergence measure,
per-sample robust masks for every attack (including transfer from the SGN's own plain path
and an attack with the self-gradient held constant), the injection diagnostic
``||T(ghat)|| / ||h||``, and the rules that say what a verdict means for the paper. The
gradient-masking checklist is general and lives in :mod:`advbook.masking`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import cache, evaluation, masking, models, zoo
from ..data import TensorData, random_crop_flip
from ..params import Choice, ListOf, Number, ParameterError
from ..train import fit, pgd_adversary

INJECTION_POINTS = ("input", "features")

CHAPTER = "02_self_gradient"
"""The notebook this module backs (``notebooks/02_self_gradient.ipynb``)."""

FULL_PATH_TEST = {"dataset": "cifar10", "arch": "resnet18", "width": 4, "eps": 8 / 255, "train_step_size": 2 / 255,
                  "eval_step_size": 2 / 255, "eps_sweep": [8 / 255, 128 / 255]}
"""Overrides that, added to the ``tiny`` profile, run the ``full`` profile's code path (ResNet-18 on
3x32x32 images with crop + flip augmentation) on generated CIFAR-10 files in the test suite
(``tests/test_notebooks.py``)."""

PROFILES = {
    # 2 CPU cores, a few minutes: 2,000 real MNIST images, eps 0.2 instead of the standard 0.3 and
    # PGD-3 training (see the notebook): an SGN step costs ~1.5-3x a plain one (double backprop).
    # Budget sweep: separate runs of 1, 2 and 4 epochs (each with its own schedule), one seed.
    "quick": dict(dataset="mnist5k", arch="smallcnn", width=16, n_train=2000, epochs=4, budgets=[1, 2],
                  n_seeds=1, eps=0.2, train_steps=3, train_step_size=None, warmup=0.3, batch_size=128,
                  point="features", n_curve=200, curve_steps=10, n_eval=300, eval_steps=40,
                  eval_step_size=0.01, steps_sweep=[10, 40, 100], eps_sweep=[0.1, 0.2, 0.3, 0.5],
                  n_sweep=100, square_queries=2000),
    # 2 CPU cores, 30-60 minutes: the quick setting with three seeds and a longest budget of 8
    # epochs (the sweep can resolve up to 8x). Seed 0's 1/2/4-epoch runs are the quick profile's
    # (same cache entries).
    "long": dict(dataset="mnist5k", arch="smallcnn", width=16, n_train=2000, epochs=8, budgets=[1, 2, 4],
                 n_seeds=3, eps=0.2, train_steps=3, train_step_size=None, warmup=0.3, batch_size=128,
                 point="features", n_curve=200, curve_steps=10, n_eval=300, eval_steps=40,
                 eval_step_size=0.01, steps_sweep=[10, 40, 100], eps_sweep=[0.1, 0.2, 0.3, 0.5],
                 n_sweep=100, square_queries=2000),
    # one GPU: CIFAR-10, ResNet-18, eps 8/255, PGD-7 (step 2/255) training, PGD-20/CW-20 + AutoAttack.
    "full": dict(dataset="cifar10", arch="resnet18", width=64, epochs=30, budgets=[3, 10], n_seeds=1,
                 eps=8 / 255, train_steps=7, train_step_size=2 / 255, warmup=0.0, batch_size=128,
                 point="features",
                 # AutoAttack on an SGN costs ~3x a plain net (double backprop): 2,000 test points
                 n_curve=1000, curve_steps=10, n_eval=2000, eval_steps=20, eval_step_size=2 / 255,
                 steps_sweep=[20, 50, 100, 200],
                 eps_sweep=[4 / 255, 8 / 255, 16 / 255, 32 / 255, 64 / 255, 128 / 255],
                 n_sweep=500, square_queries=5000),
    # test suite only: seconds, every code path (two seeds, two budgets), numbers meaningless.
    "tiny": dict(dataset="mnist5k", arch="smallcnn", width=4, epochs=2, budgets=[1], n_seeds=2, eps=0.2,
                 train_steps=1, train_step_size=None, warmup=0.0, batch_size=64, point="features",
                 n_train=128, n_curve=16, curve_steps=2, n_eval=24, eval_steps=2, eval_step_size=None,
                 steps_sweep=[1, 2], eps_sweep=[0.2, 0.6], n_sweep=12, square_queries=20),
}

SCHEMA = {
    "arch": Choice(models.ARCHITECTURES),
    "width": Number(int, 1, 512),
    "budgets": ListOf(Number(int, 1, 1000)),
    "n_seeds": Number(int, 1, 10),
    "train_steps": Number(int, 1, 100),
    "train_step_size": Number(float, 1e-5, 1.0),
    "warmup": Number(float, 0.0, 0.9),
    "batch_size": Number(int, 8, 4096),
    "point": Choice(INJECTION_POINTS),
    "n_train": Number(int, 20, 60000),
    "n_curve": Number(int, 10, 10000),
    "curve_steps": Number(int, 1, 200),
    "n_eval": Number(int, 10, 10000),
    "eval_steps": Number(int, 1, 1000),
    "eval_step_size": Number(float, 1e-5, 1.0),
    "steps_sweep": ListOf(Number(int, 1, 1000)),
    "eps_sweep": ListOf(Number(float, 1e-4, 1.0)),
    "n_sweep": Number(int, 10, 10000),
    "square_queries": Number(int, 1, 100000),
}


def check(cfg: dict) -> None:
    """Cross-parameter checks (run by :func:`advbook.chapter.setup` before any work)."""
    if cfg["n_sweep"] > cfg["n_eval"]:
        raise ParameterError(f"parameter 'n_sweep' = {cfg['n_sweep']} must be <= n_eval = {cfg['n_eval']}")
    if any(b >= cfg["epochs"] for b in cfg["budgets"]):
        raise ParameterError(f"parameter 'budgets' = {list(cfg['budgets'])} must hold epoch budgets below "
                             f"epochs = {cfg['epochs']} (the longest run of the budget sweep)")
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
            yhat = z.argmax(1).detach()
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


def build(kind: str, arch: str, dataset: str, num_classes: int = 10, width: int | None = None,
          point: str = "features", act: str = "relu") -> nn.Module:
    """``kind="plain"``: :func:`advbook.models.build`; ``kind="sgn"``: the same net wrapped in :class:`SelfGradientNet`."""
    base = models.build(arch, dataset, num_classes, width=width, act=act)
    if kind == "plain":
        return base
    if kind == "sgn":
        return SelfGradientNet(base, point, act=act)
    raise ValueError(f"model kind {kind!r} is not known; allowed: 'plain', 'sgn'")


# ---------------------------------------------------------------------------- training and the budget sweep


def train_pair(data: TensorData, cfg: dict, seed: int = 0, epochs: int | None = None) -> dict:
    """PGD adversarial training of the plain net and of the SGN with the same budget (cached).

    Same architecture, initialisation of the shared layers, data order, optimiser, one-cycle
    learning-rate schedule over ``epochs`` (default ``cfg["epochs"]``) and PGD-``train_steps``
    inner maximisation (Madry et al. 2018). Each call with another ``epochs`` is a separate
    run with its own schedule (not a checkpoint of a longer run): the budget sweep.
    Returns ``{"plain": (model, history), "sgn": (model, history)}``; histories are lists of dicts.
    """
    epochs = cfg["epochs"] if epochs is None else epochs
    opt = zoo.default_optimizer(cfg["arch"])
    device = data.x_train.device
    out = {}
    for kind in ("plain", "sgn"):
        config = {
            "data": {"name": data.name, "n_train": len(data.y_train), "fingerprint": zoo.data_fingerprint(data)},
            "kind": kind, "arch": cfg["arch"], "width": cfg["width"], "point": cfg["point"] if kind == "sgn" else None,
            "epochs": epochs, "eps": cfg["eps"], "train_steps": cfg["train_steps"],
            "train_step_size": cfg["train_step_size"], "warmup": cfg["warmup"], "batch_size": cfg["batch_size"],
            "seed": seed, **opt,
        }
        name = f"selfgrad-{kind}-{cfg['arch']}-{data.name}"

        def build_model(kind=kind):
            torch.manual_seed(seed)
            return build(kind, cfg["arch"], data.name, data.num_classes, cfg["width"], cfg["point"])

        def train_model(model, name=name, config=config):
            gen = torch.Generator().manual_seed(seed)
            adversary = pgd_adversary(cfg["eps"], cfg["train_steps"], cfg["train_step_size"], cfg["warmup"],
                                      generator=gen)
            # train.fit calls augment(xb, generator): the generator goes to random_crop_flip by keyword
            augment = (lambda xb, g: random_crop_flip(xb, generator=g)) if data.name == "cifar10" else None
            hist = fit(model, data.x_train, data.y_train, epochs=epochs, batch_size=cfg["batch_size"],
                       adversary=adversary, augment=augment, generator=gen,
                       checkpoint=cache.checkpoint_path(name, config), **opt)
            return hist.as_dict()

        out[kind] = cache.cached_model(name, config, build_model, train_model, device)
    return out


def sweep_budgets(cfg: dict) -> list:
    """The epoch budgets of the sweep: ``cfg["budgets"]`` and ``cfg["epochs"]``, ascending."""
    return sorted(set(int(b) for b in cfg["budgets"]) | {int(cfg["epochs"])})


def budget_sweep(data: TensorData, cfg: dict, x: torch.Tensor, y: torch.Tensor, seeds: Sequence[int]) -> list:
    """Train both models at every budget of :func:`sweep_budgets` and seed; evaluate each on ``(x, y)``.

    One row per (seed, budget, kind): training seconds, clean accuracy and PGD-CE / PGD-CW
    (``curve_steps`` steps, through the whole model) robust accuracy at ``cfg["eps"]``.
    """
    rows = []
    for seed in seeds:
        for budget in sweep_budgets(cfg):
            for kind, (model, hist) in train_pair(data, cfg, seed, budget).items():
                rows.append({
                    "seed": seed, "budget": budget, "kind": kind, "train_seconds": hist[-1]["train_seconds"],
                    "clean": evaluation.accuracy(model, x, y, 250),
                    **{key: evaluation.pgd_accuracy(model, x, y, cfg["eps"], steps=cfg["curve_steps"], loss=key,
                                                    batch_size=250, seed=seed) for key in ("ce", "cw")},
                })
    return rows


def sweep_convergence(rows: Sequence[dict], key: str = "ce", fraction: float = 0.9, claimed: float = 10.0) -> dict:
    """Budget-sweep convergence: the smallest epoch budget at which each model reaches the target.

    Accuracies and seconds are averaged over seeds per (kind, budget). The target is
    ``fraction`` of the plain model's mean robust accuracy (``key``) at the largest budget.
    ``speedup_epochs`` = plain budget / SGN budget (``0`` if the SGN never reaches the target);
    ``speedup_seconds`` the same ratio of training seconds at those budgets. If the SGN already
    reaches the target at the smallest budget, the speed-up is only a lower bound
    (``censored``); ``max_measurable`` = plain budget / smallest budget. ``graded`` is the
    speed-up to grade, NaN (inconclusive) when it is censored below ``claimed``.
    """
    budgets = sorted({r["budget"] for r in rows})
    mean = {}
    for kind in ("plain", "sgn"):
        for b in budgets:
            sel = [r for r in rows if r["kind"] == kind and r["budget"] == b]
            mean[kind, b] = {k: sum(r[k] for r in sel) / len(sel) for k in (key, "train_seconds")}
    target = fraction * mean["plain", budgets[-1]][key]

    def first(kind):
        return next((b for b in budgets if mean[kind, b][key] >= target), None)

    p, s = first("plain"), first("sgn")
    out = {"key": key, "fraction": fraction, "target": target, "budgets": budgets, "plain": p, "sgn": s,
           "mean": {kind: {b: mean[kind, b][key] for b in budgets} for kind in ("plain", "sgn")}}
    out["max_measurable"] = p / budgets[0]
    if s is None:
        out.update(speedup_epochs=0.0, speedup_seconds=0.0, censored=False)
    else:
        out["speedup_epochs"] = p / s
        out["speedup_seconds"] = mean["plain", p]["train_seconds"] / mean["sgn", s]["train_seconds"]
        out["censored"] = s == budgets[0]
    out["graded"] = (float("nan") if out["censored"] and out["speedup_epochs"] < claimed
                     else out["speedup_epochs"])
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


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int,
             step_size: float | None, aa_budget: dict, seed: int = 0, surrogates: dict | None = None,
             batch_size: int = 250) -> dict:
    """Per-sample robustness of ``model`` under every attack of the chapter, and the worst case.

    White-box: PGD-CE and PGD-CW (``steps`` steps, through the full computation); for an SGN
    also PGD-CE crafted with the self-gradient held constant (:class:`HeldSelfGradient`);
    AutoAttack at ``aa_budget`` (``cfg.autoattack``). Transfer: PGD-CE and PGD-CW crafted on
    each model of ``surrogates`` = {name: model} (a point survives if it survives both). A
    point is robust in the worst case only if it survives every attack. Returns
    ``{"masks": {attack: bool tensor}, "acc": {attack: accuracy}, "worst": mask, "autoattack": {...}}``.
    """
    kw = dict(steps=steps, step_size=step_size, seed=seed, batch_size=batch_size)
    masks = {"clean": correct_mask(model, x, y, batch_size)}
    for loss in ("ce", "cw"):
        masks[f"PGD-{loss.upper()}"] = masking.pgd_mask(model, x, y, eps, loss=loss, **kw)
    if isinstance(model, SelfGradientNet):
        masks["PGD-CE (g held constant)"] = masking.pgd_mask(model, x, y, eps, source=HeldSelfGradient(model), **kw)
    aa = evaluation.autoattack(model, x, y, eps, seed=seed, **aa_budget)
    masks["AutoAttack"] = aa["robust_mask"].cpu()
    for name, source in (surrogates or {}).items():
        masks[f"transfer from {name}"] = torch.stack(
            [masking.pgd_mask(model, x, y, eps, loss=loss, source=source, **kw) for loss in ("ce", "cw")]).all(0)
    worst = torch.stack(list(masks.values())).all(0)
    acc = {name: m.float().mean().item() for name, m in masks.items()}
    acc["worst case"] = worst.float().mean().item()
    return {"masks": masks, "acc": acc, "worst": worst,
            "autoattack": {k: v for k, v in aa.items() if k not in ("x_adv", "robust_mask")}}


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


# ---------------------------------------------------------------------------- what a verdict means


def assess_convergence(verdict: str, conv: dict, injection: float, paper_setting: bool,
                       active: float = 0.01, claimed: float = 10.0) -> tuple[str, str]:
    """``(assessment, reason)`` for the convergence claim, by fixed rules (in order):

    reproduced: *holds at this scale*. Censored sweep (the SGN reaches the target at the
    smallest budget and ``claimed`` cannot be resolved): *scale-limited*. Median injection
    ratio below ``active``: *scale-limited* (the SGN hardly uses its self-gradient at this
    budget). Speed-up below 2 in the paper's setting (``paper_setting``: CIFAR-10):
    *contradicted*; elsewhere *scale-limited* (another dataset and scale than the claim's).
    """
    if verdict == "reproduced":
        return "holds at this scale", f"speed-up {conv['speedup_epochs']:.2f}x >= {claimed:g}x"
    if verdict == "inconclusive":
        return "scale-limited", (f"plain AT reaches the target within {conv['plain']} epochs, so the sweep can "
                                 f"resolve at most {conv['max_measurable']:.2g}x, not {claimed:g}x")
    if injection < active:
        return "scale-limited", f"median injection {injection:.3g} < {active:g}: the self-gradient is barely used"
    if paper_setting and conv["speedup_epochs"] < 2:
        return "contradicted", f"speed-up {conv['speedup_epochs']:.2f}x < 2x in the paper's setting"
    return "scale-limited", (f"speed-up {conv['speedup_epochs']:.2f}x with an active injection "
                             f"(median {injection:.3g}), on a smaller task than the paper's")


def assess_robustness(verdict: str, gain: dict, injection: float, paper_setting: bool, active: float = 0.01,
                      claimed: float = 0.10) -> tuple[str, str]:
    """``(assessment, reason)`` for a robustness-gain claim (``gain``: :func:`advbook.masking.paired_difference`).

    reproduced: *holds at this scale*. Median injection ratio below ``active``:
    *scale-limited*. The SGN is significantly *less* robust (upper bound of the 95% interval
    below 0) although it uses its self-gradient: *contradicted*, at any scale. The interval
    excludes ``claimed / 2`` (upper bound below it) in the paper's setting: *contradicted*;
    elsewhere: *scale-limited*. Otherwise (interval too wide to tell): *scale-limited*.
    """
    ci = f"95% interval [{gain['low']:+.3f}, {gain['high']:+.3f}]"
    if verdict == "reproduced":
        return "holds at this scale", f"gain {gain['diff']:+.3f}, {ci}"
    if injection < active:
        return "scale-limited", f"median injection {injection:.3g} < {active:g}: the self-gradient is barely used"
    if gain["high"] < 0:
        return "contradicted", (f"{ci}: the SGN is significantly less robust than plain AT while its "
                                f"injection is active (median {injection:.3g})")
    if gain["high"] < claimed / 2:
        where = "in the paper's setting" if paper_setting else "at this scale, not the paper's CIFAR-10 setting"
        return ("contradicted" if paper_setting else "scale-limited"), f"{ci} excludes +{claimed / 2:.0%} {where}"
    return "scale-limited", f"{ci} is too wide to decide"
