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

The module also holds the chapter's experiment helpers: per-epoch robust-accuracy
curves, a convergence measure, per-sample robust masks for every attack, the
gradient-masking checklist, and the verdict rules.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import attacks, cache, evaluation, models, stats, zoo
from ..data import TensorData, random_crop_flip
from ..params import Choice, ListOf, Number
from ..train import fit, pgd_adversary

INJECTION_POINTS = ("input", "features")

CHAPTER = "02_self_gradient"
"""The notebook this module backs (``notebooks/02_self_gradient.ipynb``)."""

FULL_PATH_TEST = {"dataset": "cifar10"}
"""Overrides that, added to the ``tiny`` profile, run the ``full`` profile's code path on generated
CIFAR-shaped data in the test suite (``tests/test_notebooks.py``)."""

PROFILES = {
    # 2 CPU cores: real MNIST 5k; eps 0.2 instead of the standard 0.3 (see the notebook):
    # an SGN step costs ~3x a plain one (double backprop), which leaves few epochs.
    "quick": dict(dataset="mnist5k", arch="smallcnn", width=16, epochs=6, eps=0.2, train_steps=5,
                  train_step_size=None, warmup=0.3, batch_size=128, point="features",
                  n_curve=200, curve_steps=10, n_eval=300, eval_steps=40, eval_step_size=0.01,
                  steps_sweep=[10, 40], eps_sweep=[0.1, 0.2, 0.3, 0.5], n_sweep=100),
    # one GPU: CIFAR-10, ResNet-18, eps 8/255, PGD-7 (step 2/255) training, PGD-20/CW-20 + AutoAttack.
    "full": dict(dataset="cifar10", arch="resnet18", width=64, epochs=30, eps=8 / 255, train_steps=7,
                 train_step_size=2 / 255, warmup=0.0, batch_size=128, point="features",
                 # AutoAttack on an SGN costs ~3x a plain net (double backprop): 2,000 test points, not 10,000
                 n_curve=1000, curve_steps=10, n_eval=2000, eval_steps=20, eval_step_size=2 / 255,
                 steps_sweep=[20, 50, 100, 200], eps_sweep=[4 / 255, 8 / 255, 16 / 255, 32 / 255, 64 / 255, 128 / 255],
                 n_sweep=500),
    # test suite only: seconds, every code path, numbers meaningless.
    "tiny": dict(dataset="mnist5k", arch="smallcnn", width=4, epochs=2, eps=0.2, train_steps=1,
                 train_step_size=None, warmup=0.0, batch_size=64, point="features", n_train=128,
                 n_curve=16, curve_steps=2, n_eval=24, eval_steps=2, eval_step_size=None,
                 steps_sweep=[1, 2], eps_sweep=[0.2, 0.6], n_sweep=12),
}

SCHEMA = {
    "arch": Choice(models.ARCHITECTURES),
    "width": Number(int, 1, 512),
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
}


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


# ---------------------------------------------------------------------------- training with curves


def curve_callback(x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seed: int = 0,
                   batch_size: int = 250) -> Callable[[int, nn.Module], dict]:
    """An ``on_epoch`` callback: clean, PGD-CE and PGD-CW (``steps`` steps) accuracy on ``(x, y)``.

    The attacks differentiate through the whole model (for an SGN: through the self-gradient).
    A fresh seeded generator per call makes the curve independent of training randomness.
    """

    def on_epoch(epoch: int, model: nn.Module) -> dict:
        model.eval()
        out = {"clean": evaluation.accuracy(model, x, y, batch_size)}
        for loss in ("ce", "cw"):
            out["pgd" if loss == "ce" else "cw"] = evaluation.pgd_accuracy(
                model, x, y, eps, steps=steps, loss=loss, batch_size=batch_size, seed=seed)
        return out

    return on_epoch


def train_pair(data: TensorData, cfg: dict, seed: int = 0, x_curve: torch.Tensor | None = None,
               y_curve: torch.Tensor | None = None) -> dict:
    """PGD adversarial training of the plain net and of the SGN with the same budget (cached).

    Same architecture, initialisation of the shared layers, data order, optimiser, epochs
    and PGD-``train_steps`` inner maximisation (Madry et al. 2018). Each epoch's robust
    accuracy is recorded by :func:`curve_callback` (excluded from ``train_seconds``).
    Returns ``{"plain": (model, history), "sgn": (model, history)}``; histories are lists of dicts.
    """
    if x_curve is None:
        x_curve, y_curve = data.x_test[: cfg["n_curve"]], data.y_test[: cfg["n_curve"]]
    opt = zoo.default_optimizer(cfg["arch"])
    device = data.x_train.device
    out = {}
    for kind in ("plain", "sgn"):
        config = {
            "data": {"name": data.name, "n_train": len(data.y_train), "fingerprint": zoo.data_fingerprint(data)},
            "kind": kind, "arch": cfg["arch"], "width": cfg["width"], "point": cfg["point"] if kind == "sgn" else None,
            "epochs": cfg["epochs"], "eps": cfg["eps"], "train_steps": cfg["train_steps"],
            "train_step_size": cfg["train_step_size"], "warmup": cfg["warmup"], "batch_size": cfg["batch_size"],
            "curve": {"n": len(y_curve), "steps": cfg["curve_steps"]}, "seed": seed, **opt,
        }

        def build_model(kind=kind):
            torch.manual_seed(seed)
            return build(kind, cfg["arch"], data.name, data.num_classes, cfg["width"], cfg["point"])

        def train_model(model):
            gen = torch.Generator().manual_seed(seed)
            adversary = pgd_adversary(cfg["eps"], cfg["train_steps"], cfg["train_step_size"], cfg["warmup"], generator=gen)
            augment = (lambda xb, g: random_crop_flip(xb, generator=g)) if data.name == "cifar10" else None
            on_epoch = curve_callback(x_curve, y_curve, cfg["eps"], cfg["curve_steps"], seed)
            hist = fit(model, data.x_train, data.y_train, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                       adversary=adversary, augment=augment, generator=gen, on_epoch=on_epoch, **opt)
            return hist.as_dict()

        out[kind] = cache.cached_model(f"selfgrad-{kind}-{cfg['arch']}-{data.name}", config, build_model,
                                       train_model, device)
    return out


def first_reaching(history: Sequence[dict], key: str, target: float) -> dict | None:
    """The first epoch whose ``key`` is ``>= target``: ``{"epoch", "seconds"}`` (train seconds), or ``None``."""
    for record in history:
        if record[key] >= target:
            return {"epoch": record["epoch"], "seconds": record["train_seconds"]}
    return None


def convergence(plain: Sequence[dict], sgn: Sequence[dict], key: str = "pgd", fraction: float = 0.9) -> dict:
    """Epochs and training seconds each model needs to reach ``fraction`` of the plain model's final ``key``.

    Speed-up = plain / SGN in each unit (``0`` when the SGN never reaches the target).
    ``max_measurable`` is the largest epoch speed-up the curve's resolution can show:
    the plain model's epoch count to target (the SGN cannot beat epoch 1).
    """
    target = fraction * plain[-1][key]
    p, s = first_reaching(plain, key, target), first_reaching(sgn, key, target)
    out = {"key": key, "fraction": fraction, "target": target, "plain": p, "sgn": s}
    if p is None:  # cannot happen for fraction <= 1, kept for safety
        out.update(speedup_epochs=float("nan"), speedup_seconds=float("nan"), max_measurable=float("nan"))
        return out
    out["speedup_epochs"] = p["epoch"] / s["epoch"] if s else 0.0
    out["speedup_seconds"] = p["seconds"] / s["seconds"] if s else 0.0
    out["max_measurable"] = float(p["epoch"])
    return out


# ---------------------------------------------------------------------------- evaluation


def correct_mask(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Boolean mask: which of ``x`` the model classifies as ``y``."""
    return evaluation.predict(model, x, batch_size).argmax(1) == y


def pgd_adv(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int, loss: str = "ce",
            step_size: float | None = None, seed: int = 0, batch_size: int = 250, detached: bool = False) -> torch.Tensor:
    """PGD-``loss`` adversarial inputs crafted on ``model`` (:func:`advbook.attacks.pgd`, seeded).

    For an SGN the attack differentiates through the whole self-gradient computation
    (second order); ``detached=True`` holds the self-gradient constant instead (BPDA-style).
    """
    gen = torch.Generator().manual_seed(seed)
    ctx = detached_self_gradient(model) if detached else contextlib.nullcontext()
    with ctx:
        return evaluation.attack_all(attacks.pgd, model, x, y, batch_size, eps=eps, steps=steps, loss=loss,
                                     step_size=step_size, generator=gen)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int,
             step_size: float | None, aa_budget: dict, seed: int = 0, transfer: dict | None = None,
             n_square: int = 0, batch_size: int = 250) -> dict:
    """Per-sample robustness of ``model`` under every attack of the chapter, and the worst case.

    White-box: PGD-CE and PGD-CW (``steps`` steps, through the full computation),
    PGD-CE with the self-gradient held constant (SGN only), AutoAttack (APGD-CE, APGD-T,
    FAB-T, Square, at ``aa_budget``). Black-box: ``transfer`` = {name: x_adv crafted on
    another model}, and Square alone on the first ``n_square`` points. A point is robust
    in the worst case only if it survives every attack. Returns
    ``{"masks": {attack: bool tensor}, "acc": {attack: accuracy}, "x_adv": {...}, "autoattack": {...}}``.
    """
    masks, x_adv = {"clean": correct_mask(model, x, y, batch_size)}, {}
    for loss, name in (("ce", "PGD-CE"), ("cw", "PGD-CW")):
        x_adv[name] = pgd_adv(model, x, y, eps, steps=steps, loss=loss, step_size=step_size, seed=seed, batch_size=batch_size)
        masks[name] = correct_mask(model, x_adv[name], y, batch_size)
    if isinstance(model, SelfGradientNet):
        adv = pgd_adv(model, x, y, eps, steps=steps, step_size=step_size, seed=seed, batch_size=batch_size, detached=True)
        masks["PGD-CE (g held constant)"] = correct_mask(model, adv, y, batch_size)
    aa = evaluation.autoattack(model, x, y, eps, seed=seed, **aa_budget)
    masks["AutoAttack"] = aa["robust_mask"]
    for name, adv in (transfer or {}).items():
        masks[name] = correct_mask(model, adv, y, batch_size)
    worst = torch.stack(list(masks.values())).all(0)
    out = {"masks": masks, "x_adv": x_adv, "worst": worst,
           "autoattack": {k: v for k, v in aa.items() if k not in ("x_adv", "robust_mask")}}
    if n_square:
        budget = {k: v for k, v in aa_budget.items() if k != "components"}
        sq = evaluation.autoattack(model, x[:n_square], y[:n_square], eps, components=["square"], seed=seed, **budget)
        out["square_mask"] = sq["robust_mask"]
    out["acc"] = {name: m.float().mean().item() for name, m in masks.items()}
    out["acc"]["worst case"] = worst.float().mean().item()
    return out


def add_attacks(result: dict, masks: dict) -> dict:
    """Add per-sample robust ``masks`` of further attacks to an :func:`evaluate` result; update the worst case."""
    result["masks"].update(masks)
    result["worst"] = torch.stack([m for m in result["masks"].values()]).all(0)
    result["acc"] = {name: m.float().mean().item() for name, m in result["masks"].items()}
    result["acc"]["worst case"] = result["worst"].float().mean().item()
    return result


def sweeps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, eps_values: Sequence[float],
           steps_values: Sequence[int], steps: int, seed: int = 0, batch_size: int = 250) -> dict:
    """PGD-CE robust accuracy vs eps (``steps`` steps) and vs number of steps (at ``eps``), full white-box."""
    def acc(e, k):
        return correct_mask(model, pgd_adv(model, x, y, e, steps=k, seed=seed, batch_size=batch_size), y, batch_size).float().mean().item()

    return {"eps": {float(e): acc(e, steps) for e in eps_values},
            "steps": {int(k): acc(eps, k) for k in steps_values}}


def masking_checklist(eps_curve: dict, steps_curve: dict, white: dict, black: dict, reported: float,
                      tol_zero: float = 0.05, tol_steps: float = 0.01, tol_black: float = 0.0) -> list[dict]:
    """The gradient-masking checklist (Athalye et al. 2018; Carlini et al. 2019), each item pass/fail.

    ``eps_curve``: {eps: PGD robust accuracy}; ``steps_curve``: {steps: PGD robust accuracy};
    ``white`` / ``black``: {attack: robust accuracy} for white-box and black-box
    (transfer, Square) attacks; ``reported``: the accuracy the results table reports.

    1. robust accuracy falls to ``<= tol_zero`` at the largest eps (and never rises with eps);
    2. more PGD steps never help: accuracy with more steps is ``<=`` fewer steps ``+ tol_steps``;
    3. black-box never beats white-box: ``min(white) <= min(black) + tol_black``;
    4. the reported number is the strongest: ``reported <= min`` over every attack.
    """
    eps_sorted = sorted(eps_curve.items())
    accs = [a for _, a in eps_sorted]
    monotone_eps = all(b <= a + tol_steps for a, b in zip(accs, accs[1:]))
    steps_sorted = sorted(steps_curve.items())
    s_accs = [a for _, a in steps_sorted]
    monotone_steps = all(b <= a + tol_steps for a, b in zip(s_accs, s_accs[1:]))
    best_white = min(white, key=white.get)
    best_black = min(black, key=black.get)
    everything = {**white, **black}
    return [
        {"check": "robust accuracy -> ~0 as eps grows",
         "measured": f"{accs[-1]:.3f} at eps {eps_sorted[-1][0]:.3g}" + ("" if monotone_eps else " (not monotone in eps)"),
         "threshold": f"<= {tol_zero} at the largest eps, non-increasing",
         "passed": bool(accs[-1] <= tol_zero and monotone_eps)},
        {"check": "more PGD steps never help",
         "measured": ", ".join(f"{k}: {a:.3f}" for k, a in steps_sorted),
         "threshold": f"non-increasing in steps (tolerance {tol_steps})",
         "passed": bool(monotone_steps)},
        {"check": "black-box never beats white-box",
         "measured": f"white {white[best_white]:.3f} ({best_white}) vs black {black[best_black]:.3f} ({best_black})",
         "threshold": f"min white <= min black + {tol_black}",
         "passed": bool(white[best_white] <= black[best_black] + tol_black)},
        {"check": "table reports the strongest attack",
         "measured": f"reported {reported:.3f}; strongest single attack {min(everything.values()):.3f}",
         "threshold": "reported <= every single attack",
         "passed": bool(reported <= min(everything.values()) + 1e-12)},
    ]


# ---------------------------------------------------------------------------- verdicts


def convergence_verdict(speedup_epochs: float, speedup_seconds: float, max_measurable: float,
                        claimed: float = 10.0) -> tuple[str, str]:
    """Verdict on "at least ``claimed``x faster convergence".

    reproduced: speed-up ``>= claimed`` in epochs *and* in seconds. partly reproduced:
    ``>= claimed`` in one unit, or ``>= 2`` in both. inconclusive: the curve cannot
    resolve ``claimed`` (plain reaches its target in fewer than ``claimed`` epochs) while
    the SGN is at least as fast in epochs. not reproduced: otherwise.
    """
    if speedup_epochs >= claimed and speedup_seconds >= claimed:
        return "reproduced", f"speed-up >= {claimed:g}x in epochs and seconds"
    if speedup_epochs >= claimed or speedup_seconds >= claimed or min(speedup_epochs, speedup_seconds) >= 2:
        return "partly reproduced", f"speed-up >= {claimed:g}x in one unit only, or >= 2x in both"
    if max_measurable < claimed and speedup_epochs >= 1 and speedup_seconds >= 1:
        return "inconclusive", f"plain AT reaches the target in {max_measurable:g} epochs, so {claimed:g}x cannot be resolved"
    return "not reproduced", f"speed-up < 2x in at least one unit (epochs {speedup_epochs:.2f}x, seconds {speedup_seconds:.2f}x)"


def robustness_verdict(gain_pgd: float, gain_cw: float, gain_worst: float, se_worst: float,
                       claimed: float = 0.10) -> tuple[str, str]:
    """Verdict on "~``claimed`` more robust under PGD and CW" (gains in accuracy points, SGN - plain).

    reproduced: PGD, CW *and* worst-case (all attacks) gains ``>= claimed / 2``.
    partly reproduced: worst-case gain ``> 2 se_worst`` (significant) but smaller.
    not reproduced: worst-case gain not significantly positive.
    """
    half = claimed / 2
    if min(gain_pgd, gain_cw, gain_worst) >= half and gain_worst > 2 * se_worst:
        return "reproduced", f"gains >= {half:.0%} under PGD, CW and the worst case"
    if gain_worst > 2 * se_worst:
        return "partly reproduced", f"worst-case gain significant (> 2 SE = {2 * se_worst:.3f}) but < {half:.0%}"
    return "not reproduced", f"worst-case gain {gain_worst:+.3f} is not > 2 SE = {2 * se_worst:.3f}"
