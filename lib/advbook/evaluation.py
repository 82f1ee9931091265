"""Clean and robust accuracy, and strong evaluation with AutoAttack.

The AutoAttack components (APGD-CE, APGD-T, FAB-T, Square; Croce & Hein 2020) come from
the maintained ``pyautoattack`` package. :func:`autoattack` runs them one after another
on the points still robust, so the robust accuracy after the last one is the worst case
over all of them, and the drop each attack adds is reported separately.

:func:`autoattack` and :func:`pgd_accuracy` are cached like trained models
(:func:`advbook.cache.cached_result`): the key is the model's weights
(:func:`advbook.cache.model_fingerprint`), the evaluated points
(:func:`advbook.cache.tensor_fingerprint` of ``x`` and ``y``), the device type and every
attack setting, so re-executing a chapter after a prose edit attacks nothing again,
while retraining the model, changing the points or any setting computes afresh.
``cache=False`` always computes; a model that is not a ``torch.nn.Module`` (a plain
function) has no weights to key on and is never cached.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import torch

from . import attacks as atk
from . import cache as _cache
from . import progress
from .data import batches
from .profiles import STANDARD_AUTOATTACK

AUTOATTACK_COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")


@torch.no_grad()
def predict(model: Callable, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits for all of ``x``, computed in batches."""
    return torch.cat([model(xb) for xb, _ in batches(x, None, batch_size)])


def accuracy(model: Callable, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Share of ``x`` classified correctly."""
    return (predict(model, x, batch_size).argmax(1) == y).float().mean().item()


def attack_all(attack: Callable, model: Callable, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256, **kwargs) -> torch.Tensor:
    """Run ``attack(model, xb, yb, **kwargs)`` batch by batch and return all adversarial inputs."""
    n_batches = -(-len(x) // batch_size)
    name = getattr(attack, "__name__", "attack")
    return torch.cat([attack(model, xb, yb, **kwargs) for xb, yb in
                      progress.bar(batches(x, y, batch_size), total=n_batches, desc=name, unit="batch")])


def _cached(name: str, model: Callable, x: torch.Tensor, y: torch.Tensor, settings: dict, compute: Callable,
            use_cache: bool):
    """``compute()``, through :func:`advbook.cache.cached_result` when ``use_cache`` and the model has weights."""
    if not use_cache or not isinstance(model, torch.nn.Module):
        return compute()
    return _cache.cached_result(name, model, (x, y), {**settings, "device": x.device.type}, compute,
                                map_location=x.device)


def robust_accuracy(attack: Callable, model: Callable, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256, **kwargs) -> float:
    """Accuracy on ``attack``'s adversarial inputs (e.g. ``robust_accuracy(pgd, model, x, y, eps=0.3)``)."""
    x_adv = attack_all(attack, model, x, y, batch_size, **kwargs)
    return accuracy(model, x_adv, y, batch_size)


def pgd_accuracy(model: Callable, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 20, loss: str = "ce",
                 restarts: int = 1, batch_size: int = 256, seed: int = 0, cache: bool = True, **kwargs) -> float:
    """Robust accuracy under PGD with a seeded random start (see :func:`advbook.attacks.pgd`).

    Cached (``cache=True``) under the model's weights, ``(x, y)``, the device type and
    ``eps, steps, loss, restarts, batch_size, seed`` plus any extra PGD keyword
    (``step_size``, ``norm``, ``random_start``); see the module docstring.
    """
    settings = {"eps": eps, "steps": steps, "loss": loss, "restarts": restarts, "batch_size": batch_size,
                "seed": seed, **kwargs}

    def compute() -> float:
        gen = torch.Generator().manual_seed(seed)
        return robust_accuracy(atk.pgd, model, x, y, batch_size, eps=eps, steps=steps, loss=loss, restarts=restarts,
                               generator=gen, **kwargs)

    return _cached("pgd-accuracy", model, x, y, settings, compute, cache)


def autoattack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    components: Sequence[str] = STANDARD_AUTOATTACK,
    norm: str = "Linf",
    n_iter: int = 100,
    n_queries: int = 5000,
    n_target_classes: int = 9,
    batch_size: int = 500,
    seed: int = 0,
    cache: bool = True,
) -> dict:
    """Worst-case robust accuracy over AutoAttack components, run in sequence.

    Each component attacks only the points that survived the previous ones (as in the
    reference AutoAttack). ``n_iter`` (APGD/FAB iterations) and ``n_queries`` (Square)
    default to the standard version; smaller values are for CPU runs and are recorded in
    the result so that the report states them.

    Returns ``{"clean": acc, "after": {component: cumulative robust acc}, "robust": final,
    "robust_mask": per-point bool, "x_adv": adversarial inputs, "seconds": {component: time},
    "settings": {...}}``. ``seconds`` are those of the run that computed the result.

    Cached (``cache=True``) under the model's weights, ``(x, y)``, the device type and
    ``eps, norm, components, n_iter, n_queries, n_target_classes, batch_size, seed``;
    see the module docstring.
    """
    unknown = [c for c in components if c not in AUTOATTACK_COMPONENTS]
    if unknown:
        raise ValueError(f"unknown AutoAttack component(s) {unknown}; allowed: {', '.join(AUTOATTACK_COMPONENTS)}")
    settings = {"eps": eps, "norm": norm, "components": list(components), "n_iter": n_iter, "n_queries": n_queries,
                "n_target_classes": n_target_classes, "batch_size": batch_size, "seed": seed}
    return _cached("autoattack", model, x, y, settings,
                   lambda: _autoattack(model, x, y, eps, components, norm, n_iter, n_queries, n_target_classes,
                                       batch_size, seed), cache)


def _autoattack(model, x, y, eps, components, norm, n_iter, n_queries, n_target_classes, batch_size, seed) -> dict:
    from pyautoattack import AutoAttack

    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    device = x.device
    with torch.no_grad():
        robust = predict(model, x, batch_size).argmax(1) == y
    clean = robust.float().mean().item()
    x_adv = x.clone()
    after, seconds = {}, {}
    for component in progress.bar(components, desc="AutoAttack", unit="attack"):
        start = time.perf_counter()
        idx = torch.nonzero(robust).flatten()
        if len(idx) > 0:
            aa = AutoAttack(model, attacks=[component], device=device, eps=eps, norm=norm, seed=seed, version="custom")
            aa.verbose = False
            # the "standard" version's settings (version="custom" would leave APGD-CE at 5 restarts)
            aa.apgd.n_restarts = aa.apgd_targeted.n_restarts = aa.fab.n_restarts = 1
            aa.apgd.n_iter = aa.apgd_targeted.n_iter = aa.fab.n_iter = n_iter
            aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = n_target_classes
            aa.square.n_queries = n_queries
            adv, _ = aa.run_standard_evaluation(x[idx], y[idx], batch_size=batch_size)
            with torch.no_grad():
                fooled = predict(model, adv, batch_size).argmax(1) != y[idx]
            x_adv[idx[fooled]] = adv[fooled]
            robust[idx[fooled]] = False
        after[component] = robust.float().mean().item()
        seconds[component] = time.perf_counter() - start
    return {
        "clean": clean,
        "after": after,
        "robust": robust.float().mean().item(),
        "robust_mask": robust,
        "x_adv": x_adv,
        "seconds": seconds,
        "settings": {"eps": eps, "norm": norm, "n_iter": n_iter, "n_queries": n_queries,
                     "n_target_classes": n_target_classes, "components": list(components), "n": len(x)},
    }
