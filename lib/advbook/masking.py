"""The gradient-masking checklist: symptoms of robustness that comes from broken gradients.

A defence can look robust because gradient attacks *fail to find* adversarial examples, not
because there are none: its gradients are zero, noisy, shattered or misleading ("gradient
masking", Athalye, Carlini & Wagner 2018; Carlini et al. 2019, *On evaluating adversarial
robustness*, sect. 7). Such a defence betrays itself by symptoms that an honest model never
shows. :func:`run_checklist` measures each one on any classifier ``model(x) -> logits`` with
real attacks and returns a pass/fail per item with the numbers behind it:

1. **Gradients are informative**: the input gradient of the CW margin is finite and non-zero
   for (almost) every point. Zero or NaN gradients (a non-differentiable quantisation, a
   saturated or gradient-blocking layer) leave every gradient attack blind.
2. **Robust accuracy falls to about zero as eps grows**: PGD at the largest eps of the sweep
   leaves at most ``tol_zero`` accuracy, and accuracy never rises with eps by more than noise.
   An unbounded attack must succeed; if it does not, the attack is failing, not the model.
3. **More PGD steps never help the defender**: accuracy with more steps is at most that with
   fewer steps, up to noise.
4. **Gradient-free search does not beat white-box**: Square (Andriushchenko et al. 2020, a
   random search that never looks at gradients; ``n_queries >= 2000`` by default) leaves no
   fewer robust points than the white-box attacks, up to noise.
5. **Transfer does not beat white-box**: adversarial examples crafted on *surrogates* (for
   instance a plain adversarially trained network, or the defended model with its defence
   removed) are no stronger on ``model`` than attacks crafted on ``model`` itself, up to noise.

"White-box" is the per-sample worst case (a point counts as robust only if it survives every
attack) of PGD-CE and PGD-CW at ``eps``, plus any further white-box robust masks the caller
adds (``extra_white``: e.g. an adaptive attack or AutoAttack's APGD). "Noise" for a
comparison of two attacks on the *same* points is the paired (McNemar) standard error of the
difference of the two robust accuracies, see :func:`paired_difference`: an item fails when
the black-box attack is better by more than ``z`` standard errors plus ``slack``.

A model passes the checklist only if every item passes. Passing does not prove robustness
(no finite test can); failing any item means the white-box numbers must not be trusted.
The expensive parts (PGD masks, Square) are cached by model weights, points and settings
(:func:`advbook.cache.cached_result`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from . import attacks, cache, evaluation

ITEMS = ("gradients are informative", "robust accuracy -> ~0 as eps grows", "more PGD steps never help",
         "gradient-free (Square) does not beat white-box", "transfer does not beat white-box")
"""The checklist's items, in order (the ``check`` of each :class:`Item`)."""


@dataclass
class Item:
    """One checklist item: what was checked, the numbers, the rule and whether it passed."""

    check: str
    measured: str
    threshold: str
    passed: bool
    values: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"check": self.check, "measured": self.measured, "threshold": self.threshold,
                "passed": bool(self.passed), "values": self.values}


@dataclass
class Checklist:
    """All items of one model's checklist, with the curves behind items 2 and 3."""

    items: list
    curves: dict
    """``{"eps": {eps: PGD-CE acc}, "steps": {steps: PGD-CE acc}}`` (for plots)."""
    white: torch.Tensor
    """Per-sample white-box robust mask (worst case over the white-box attacks)."""

    @property
    def passed(self) -> bool:
        """True only if every item passed."""
        return all(item.passed for item in self.items)

    def failed(self) -> list:
        """The names of the items that failed."""
        return [item.check for item in self.items if not item.passed]

    def rows(self, model: str | None = None) -> list:
        """One dict per item (for a ``pandas.DataFrame``): check, measured, threshold, result."""
        lead = {"model": model} if model is not None else {}
        return [{**lead, "check": it.check, "measured": it.measured, "threshold": it.threshold,
                 "result": "PASS" if it.passed else "FAIL"} for it in self.items]

    def as_dict(self) -> dict:
        return {"passed": self.passed, "items": [it.as_dict() for it in self.items], "curves": self.curves}


def paired_difference(a: torch.Tensor, b: torch.Tensor) -> dict:
    """``mean(a) - mean(b)`` for two boolean masks on the same points, with its paired standard error.

    ``se = sqrt(n10 + n01 - (n10 - n01)^2 / n) / n`` (the McNemar / paired-proportions standard
    error), where ``n10`` counts points where only ``a`` holds and ``n01`` those where only
    ``b`` holds. Returns ``{"diff", "se", "low", "high", "n10", "n01", "n"}`` (95% normal interval).
    """
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"need two 1-D masks of equal length, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.bool(), b.bool()
    n = len(a)
    n10 = int((a & ~b).sum())
    n01 = int((~a & b).sum())
    diff = (n10 - n01) / n
    se = math.sqrt(max(n10 + n01 - (n10 - n01) ** 2 / n, 0.0)) / n
    return {"diff": diff, "se": se, "low": diff - 1.96 * se, "high": diff + 1.96 * se, "n10": n10, "n01": n01, "n": n}


def _model_settings(model: Callable) -> dict:
    """What identifies a model beyond its weights (a wrapper class or its options change the function)."""
    extra = model.extra_repr() if isinstance(model, torch.nn.Module) else ""
    return {"class": type(model).__qualname__, "options": extra}


def pgd_mask(model: Callable, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int, loss: str = "ce",
             step_size: float | None = None, seed: int = 0, batch_size: int = 250, source: Callable | None = None,
             use_cache: bool = True) -> torch.Tensor:
    """Per-sample robust mask of ``model`` under PGD-``loss`` crafted on ``source`` (default: ``model``).

    ``source`` other than ``model`` makes it a transfer attack. Seeded random start; cached by
    both models' weights, the points and every setting when both are ``torch.nn.Module``.
    """
    source = model if source is None else source
    settings = {"eps": eps, "steps": steps, "loss": loss, "step_size": step_size, "seed": seed,
                "batch_size": batch_size, "target": _model_settings(model), "source": _model_settings(source),
                "transfer": source is not model}

    def compute() -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        x_adv = evaluation.attack_all(attacks.pgd, source, x, y, batch_size, eps=eps, steps=steps, loss=loss,
                                      step_size=step_size, generator=gen)
        return (evaluation.predict(model, x_adv, batch_size).argmax(1) == y).cpu()

    models = [model] if source is model else [model, source]
    if not use_cache or not all(isinstance(m, torch.nn.Module) for m in models):
        return compute()
    return cache.cached_result("masking-pgd", models, (x, y), {**settings, "device": x.device.type}, compute)


def square_mask(model: Callable, x: torch.Tensor, y: torch.Tensor, eps: float, *, n_queries: int, seed: int = 0,
                batch_size: int = 500, use_cache: bool = True) -> torch.Tensor:
    """Per-sample robust mask of ``model`` under the gradient-free Square attack (AutoAttack's, ``n_queries``)."""
    out = evaluation.autoattack(model, x, y, eps, components=["square"], n_queries=n_queries, seed=seed,
                                batch_size=batch_size, cache=use_cache and isinstance(model, torch.nn.Module))
    return out["robust_mask"].cpu()


def flat_gradient_share(model: Callable, x: torch.Tensor, y: torch.Tensor, batch_size: int = 250) -> float:
    """Share of points whose input gradient of the CW margin loss is all zero or not finite."""
    flat = []
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        xb = xb.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = attacks.per_sample_loss(model(xb), yb, "cw").sum()
            (g,) = torch.autograd.grad(loss, xb, allow_unused=True)
        if g is None:
            flat.append(torch.ones(len(xb), dtype=torch.bool))
            continue
        g = g.flatten(1)
        flat.append(((g == 0).all(1) | ~torch.isfinite(g).all(1)).cpu())
    return torch.cat(flat).float().mean().item()


def _acc(mask: torch.Tensor) -> float:
    return mask.float().mean().item()


def _not_beaten(white: torch.Tensor, other: torch.Tensor, z: float, slack: float) -> tuple[bool, dict]:
    """``other`` (an attack that should be weaker or equal) must not leave fewer robust points than ``white``,
    beyond noise: ``acc(white) - acc(other) <= z * paired SE + slack``."""
    d = paired_difference(white, other)  # > 0: other broke points that white left robust
    allowed = z * d["se"] + slack
    return d["diff"] <= allowed, {**d, "allowed": allowed}


def run_checklist(model: Callable, x: torch.Tensor, y: torch.Tensor, eps: float, *,
                  eps_sweep: Sequence[float], steps_sweep: Sequence[int], steps: int = 40,
                  step_size: float | None = None, surrogate: Callable | Mapping[str, Callable] | None = None,
                  n_queries: int = 2000, n_sweep: int | None = None,
                  extra_white: Mapping[str, torch.Tensor] | None = None, seed: int = 0, batch_size: int = 250,
                  tol_zero: float = 0.05, max_flat: float = 0.01, z: float = 1.96, slack: float = 0.01,
                  use_cache: bool = True) -> Checklist:
    """Run the five checks of the module docstring on ``model`` at ``(x, y)``; every number from a real attack.

    ``eps_sweep``: the eps values of item 2 (the largest should be far above ``eps``, e.g. 0.5
    on MNIST, 128/255 on CIFAR-10); ``steps_sweep``: the PGD step counts of item 3 (at ``eps``);
    ``steps``: PGD steps of the white-box attacks and of the eps sweep (``step_size`` ``None``:
    ``2.5 eps / steps``). ``surrogate``: the model, or ``{name: model}`` of models, transfer
    attacks are crafted on; a point survives transfer only if it survives every one (item 5
    fails, recorded as not run, without one). ``extra_white``: ``{name: robust mask}`` of
    further white-box attacks on the same points, joined into the white-box worst case.
    ``n_sweep``: run the costly new attacks (the eps and steps sweeps of items 2-3, and Square
    in item 4) on the first ``n_sweep`` points only (default: all); items 1 and 5 and the
    white-box worst case use every point.
    """
    if len(eps_sweep) < 2 or len(steps_sweep) < 2:
        raise ValueError(f"need at least two eps and two step counts, got eps_sweep={list(eps_sweep)}, "
                         f"steps_sweep={list(steps_sweep)}")
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    kw = dict(seed=seed, batch_size=batch_size, use_cache=use_cache)
    x, y = x.detach(), y.detach()
    clean = (evaluation.predict(model, x, batch_size).argmax(1) == y).cpu()
    items = []

    # 1. informative gradients
    flat = flat_gradient_share(model, x, y, batch_size)
    items.append(Item(ITEMS[0], f"{flat:.1%} of points have a zero or non-finite input gradient",
                      f"<= {max_flat:.0%} of points", flat <= max_flat, {"flat_share": flat}))

    k = len(x) if n_sweep is None else min(int(n_sweep), len(x))
    xs, ys = x[:k], y[:k]

    # 2. accuracy -> 0 as eps grows (PGD-CE, `steps` steps), on the first k points
    eps_values = sorted(float(e) for e in eps_sweep)
    eps_masks = {e: pgd_mask(model, xs, ys, e, steps=steps, step_size=None, **kw) for e in eps_values}
    eps_acc = {e: _acc(m) for e, m in eps_masks.items()}
    rises = [_not_beaten(eps_masks[b], eps_masks[a], z, slack) for a, b in zip(eps_values, eps_values[1:])]
    monotone = all(ok for ok, _ in rises)
    top = eps_values[-1]
    items.append(Item(ITEMS[1], f"{eps_acc[top]:.1%} at eps {top:.3g}" + ("" if monotone else "; rises with eps"),
                      f"<= {tol_zero:.0%} at the largest eps; no rise beyond noise",
                      eps_acc[top] <= tol_zero and monotone, {"acc": eps_acc}))

    # 3. more steps never help (PGD-CE at eps)
    step_values = sorted(int(k) for k in steps_sweep)
    step_masks = {n: pgd_mask(model, xs, ys, eps, steps=n, step_size=None, **kw) for n in step_values}
    step_acc = {n: _acc(m) for n, m in step_masks.items()}
    helps = [_not_beaten(step_masks[b], step_masks[a], z, slack) for a, b in zip(step_values, step_values[1:])]
    worst_rise = max(d["diff"] for _, d in helps)  # acc(more steps) - acc(fewer steps)
    items.append(Item(ITEMS[2], ", ".join(f"{n}: {a:.1%}" for n, a in step_acc.items()),
                      "non-increasing in steps, up to noise", all(ok for ok, _ in helps),
                      {"acc": step_acc, "largest_rise": worst_rise}))

    # white-box worst case at eps
    white_masks = {f"PGD-{loss.upper()}": pgd_mask(model, x, y, eps, steps=steps, loss=loss, step_size=step_size, **kw)
                   for loss in ("ce", "cw")}
    white_masks.update({k: v.cpu().bool() for k, v in (extra_white or {}).items()})
    white = torch.stack([clean, *white_masks.values()]).all(0)

    # 4. gradient-free does not beat white-box (first k points)
    square = square_mask(model, xs, ys, eps, n_queries=n_queries, seed=seed, use_cache=use_cache) & clean[:k]
    ok, d = _not_beaten(white[:k], square, z, slack)
    items.append(Item(ITEMS[3], f"white-box {_acc(white[:k]):.1%} vs Square ({n_queries} queries) "
                      f"{_acc(square):.1%} on {k} points; Square alone breaks {d['n10']} points white-box left "
                      "robust", f"Square <= white-box + {z:g} SE + {slack:g}", ok,
                      {"white": _acc(white[:k]), "square": _acc(square), "n_queries": n_queries, **d}))

    # 5. transfer does not beat white-box
    if surrogate is None:
        items.append(Item(ITEMS[4], "not run (no surrogate model given)", "a surrogate is required", False, {}))
    else:
        sources = dict(surrogate) if isinstance(surrogate, Mapping) else {"surrogate": surrogate}
        per_source = {name: torch.stack([pgd_mask(model, x, y, eps, steps=steps, loss=loss, step_size=step_size,
                                                  source=src, **kw) for loss in ("ce", "cw")]).all(0)
                      for name, src in sources.items()}
        transfer = torch.stack([clean, *per_source.values()]).all(0)
        ok, d = _not_beaten(white, transfer, z, slack)
        each = ", ".join(f"{name} {_acc(m):.1%}" for name, m in per_source.items())
        items.append(Item(ITEMS[4], f"white-box {_acc(white):.1%} vs transfer {_acc(transfer):.1%} ({each}); "
                          f"transfer alone breaks {d['n10']} points white-box left robust",
                          f"transfer <= white-box + {z:g} SE + {slack:g}", ok,
                          {"white": _acc(white), "transfer": _acc(transfer),
                           "per_surrogate": {name: _acc(m) for name, m in per_source.items()}, **d}))
    return Checklist(items, {"eps": eps_acc, "steps": step_acc}, white)


__all__ = ["ITEMS", "Item", "Checklist", "paired_difference", "pgd_mask", "square_mask", "flat_gradient_share",
           "run_checklist"]
