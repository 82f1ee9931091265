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
   random search that never looks at gradients; ``n_queries >= 2000`` by default) finds no
   more of the points the white-box attacks left robust than a white-box restart does, up to
   noise (:func:`beats_white_box`).
5. **Transfer does not beat white-box**: adversarial examples crafted on *surrogates* (for
   instance a plain adversarially trained network, or the defended model with its defence
   removed) find no more of the white-box robust points than a white-box restart, up to noise.
6. **PGD does not overstate robustness more than for a control**: the share of points the PGD
   set leaves robust and a stronger attack (AutoAttack) breaks is no larger than for an honest
   control model on the same points, up to the paired noise (:func:`overstatement_item`). A
   defence that partly masks its gradients lets PGD overstate it by more.

"White-box" is the per-sample worst case (a point counts as robust only if it survives every
attack) of PGD-CE and PGD-CW at ``eps``, plus any further white-box robust masks the caller
adds (``extra_white``: e.g. an adaptive attack). Items 4 and 5 count the points the black-box
attack breaks that white-box left robust (``found``) against those a white-box restart with
another random start breaks (``restart``): points the black-box attack misses cannot cancel
points it finds, so partial masking of a few points fails them. Items 2, 3 and 6 compare two
robust accuracies on the *same* points by the paired (McNemar) standard error of their
difference (:func:`paired_difference`): such an item fails when the difference exceeds ``z``
standard errors plus ``slack``.

A model passes the checklist only if every item passes; an item that could not run (no surrogate,
no control) fails and says so (:data:`NOT_RUN`). Passing does not prove robustness
(no finite test can); failing any item means the white-box numbers must not be trusted.
:func:`verdict_text` and :func:`replicates_text` say a checklist's result in words, one checklist or
one per training seed, for every chapter that runs it.
The expensive parts (PGD masks, Square) are cached by model weights, points and settings
(:func:`advbook.cache.cached_result`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from . import attacks, cache, evaluation

ITEMS = ("gradients are informative", "robust accuracy -> ~0 as eps grows", "more PGD steps never help",
         "gradient-free (Square) does not beat white-box", "transfer does not beat white-box",
         "PGD does not overstate robustness more than for the control")
"""The checklist's items, in order (the ``check`` of each :class:`Item`)."""

NOT_RUN = "not run"
"""How the ``measured`` text of an item that could not run starts (such an item fails)."""


@dataclass
class Item:
    """One checklist item: what was checked, the numbers, the rule and whether it passed."""

    check: str
    measured: str
    threshold: str
    passed: bool
    values: dict = field(default_factory=dict)

    @property
    def ran(self) -> bool:
        """Whether the item was measured; one that could not run says so (:data:`NOT_RUN`) and fails."""
        return not str(self.measured).startswith(NOT_RUN)

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
        """The names of the items that failed (an item that could not run among them)."""
        return [item.check for item in self.items if not item.passed]

    def not_run(self) -> list:
        """The names of the items that could not run (:attr:`Item.ran`)."""
        return [item.check for item in self.items if not item.ran]

    def rows(self, model: str | None = None) -> list:
        """One dict per item (for a ``pandas.DataFrame``): check, measured, threshold, result."""
        lead = {"model": model} if model is not None else {}
        return [{**lead, "check": it.check, "measured": it.measured, "threshold": it.threshold,
                 "result": "PASS" if it.passed else "FAIL"} for it in self.items]

    def as_dict(self) -> dict:
        return {"passed": self.passed, "items": [it.as_dict() for it in self.items], "curves": self.curves}


def names_text(names: Sequence[str], mark: str = "'") -> str:
    """Checklist items by name for prose: each between two ``mark`` (``'`` quotes it, ``*`` sets it in
    italics in Markdown), joined by ``", "``."""
    return ", ".join(f"{mark}{name}{mark}" for name in names)


def verdict_text(checklist: Checklist, mark: str = "'") -> str:
    """A checklist's result for prose: ``passes every item``, or ``fails`` and the failed items by name
    (:func:`names_text`), an item that could not run among them."""
    return "passes every item" if checklist.passed else "fails " + names_text(checklist.failed(), mark)


def replicates_text(checklists: Mapping[Any, Checklist], unit: str = "seed", mark: str = "'") -> str:
    """The checklists of several replicates (``{seed: Checklist}``, one per training seed) for prose:
    ``passes every item on each of the 3 seed(s) alone``, or ``fails`` and, for every replicate that
    fails an item, its failed items (:func:`names_text`) ``on seed 1``, the replicates joined by ``"; "``."""
    bad = {r: cl.failed() for r, cl in checklists.items() if not cl.passed}
    if not bad:
        return f"passes every item on each of the {len(checklists)} {unit}(s) alone"
    return "fails " + "; ".join(f"{names_text(failed, mark)} on {unit} {r}" for r, failed in bad.items())


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
             attack: Callable = attacks.pgd, use_cache: bool = True) -> torch.Tensor:
    """Per-sample robust mask of ``model`` under PGD-``loss`` crafted on ``source`` (default: ``model``).

    ``source`` other than ``model`` makes it a transfer attack. ``attack(source, xb, yb, **pgd
    settings)`` replaces :func:`advbook.attacks.pgd` for an adaptive variant (its module and name are
    part of the cache key). Seeded random start; cached by both models' weights, the points and every
    setting when both are ``torch.nn.Module``.
    """
    source = model if source is None else source
    settings = {"eps": eps, "steps": steps, "loss": loss, "step_size": step_size, "seed": seed,
                "batch_size": batch_size, "target": _model_settings(model), "source": _model_settings(source),
                "transfer": source is not model}
    if attack is not attacks.pgd:
        settings["attack"] = f"{attack.__module__}.{attack.__qualname__}"

    def compute() -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        x_adv = evaluation.attack_all(attack, source, x, y, batch_size, eps=eps, steps=steps, loss=loss,
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


def beats_white_box(white: torch.Tensor, other: torch.Tensor, restart: torch.Tensor, z: float = 1.96) -> tuple[bool, dict]:
    """Whether an attack that should be weaker (``other``: gradient-free, transfer) finds points the white-box
    attacks missed more often than a white-box *restart* does (all robust masks on the same points).

    ``b`` counts the points ``white`` leaves robust and ``other`` breaks; ``r`` those ``white`` leaves
    robust and ``restart`` (the white-box attack again with another random start) breaks: the floor
    of points an honest white-box attack misses by chance. The item passes when
    ``b - r <= z * sqrt(b + r)`` (two Poisson counts). Unlike a net difference of accuracies, points
    that ``other`` misses cannot cancel points it finds, so a few points of partial masking fail it.
    """
    if not (white.shape == other.shape == restart.shape):
        raise ValueError(f"need masks of equal shape, got {tuple(white.shape)}, {tuple(other.shape)}, "
                         f"{tuple(restart.shape)}")
    white, other, restart = white.bool(), other.bool(), restart.bool()
    b = int((white & ~other).sum())
    r = int((white & ~restart).sum())
    allowed = z * math.sqrt(b + r)
    return b - r <= allowed, {"found": b, "restart_found": r, "allowed": allowed, "n": len(white)}


def overstatement(white: torch.Tensor, strong: torch.Tensor) -> torch.Tensor:
    """Per point: left robust by the PGD (white-box) set and broken by the stronger attack (AutoAttack)."""
    return white.bool() & ~strong.bool()


def overstatement_item(white: torch.Tensor, strong: torch.Tensor, control_white: torch.Tensor,
                       control_strong: torch.Tensor, *, control: str = "the control", z: float = 1.96,
                       slack: float = 0.01) -> Item:
    """Checklist item 6: PGD overstates the model's robustness no more than the control's, beyond noise.

    ``white`` / ``strong``: the model's robust masks under the PGD set and under a stronger attack
    (AutoAttack), ``control_*`` the same for a control model (an honest defence, e.g. plain AT), all
    on the same points in the same order (they may be pooled over several training seeds). Per point,
    the overstatement is :func:`overstatement`; the item is the paired difference model minus control
    (:func:`paired_difference`) and fails when it exceeds ``z`` standard errors plus ``slack``. A
    defence whose PGD robustness partly comes from masked gradients is overstated more than the control.
    """
    over, over_c = overstatement(white, strong), overstatement(control_white, control_strong)
    d = paired_difference(over, over_c)
    allowed = z * d["se"] + slack
    return Item(ITEMS[5], f"PGD overstates {_acc(over):.1%} vs {_acc(over_c):.1%} for {control} (paired gap "
                f"{d['diff']:+.1%} on {d['n']} points)", f"gap <= {z:g} SE + {slack:g}", d["diff"] <= allowed,
                {"overstated": _acc(over), "control_overstated": _acc(over_c), "control": control, "allowed": allowed,
                 **d})


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
                  extra_white: Mapping[str, torch.Tensor] | None = None, overstated: Item | None = None,
                  seed: int = 0, batch_size: int = 250,
                  tol_zero: float = 0.05, max_flat: float = 0.01, z: float = 1.96, slack: float = 0.01,
                  use_cache: bool = True) -> Checklist:
    """Run the six checks of the module docstring on ``model`` at ``(x, y)``; every number from a real attack.

    ``eps_sweep``: the eps values of item 2 (the largest should be far above ``eps``, e.g. 0.5
    on MNIST, 128/255 on CIFAR-10); ``steps_sweep``: the PGD step counts of item 3 (at ``eps``);
    ``steps``: PGD steps of the white-box attacks and of the eps sweep (``step_size`` ``None``:
    ``2.5 eps / steps``). ``surrogate``: the model, or ``{name: model}`` of models, transfer
    attacks are crafted on; a point survives transfer only if it survives every one (item 5
    fails, recorded as not run, without one). ``extra_white``: ``{name: robust mask}`` of
    further white-box attacks on the same points, joined into the white-box worst case.
    ``overstated``: item 6, :func:`overstatement_item` of this model against a control (it may
    pool several training seeds, so the caller computes it; without it the item fails as not run).
    ``n_sweep``: run the eps and steps sweeps of items 2-3 on the first ``n_sweep`` points only
    (default: all); items 1, 4 and 5 and the white-box worst case use every point.
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

    # white-box worst case at eps, and a restart of it (another random start): the white-box noise floor
    white_masks = {f"PGD-{loss.upper()}": pgd_mask(model, x, y, eps, steps=steps, loss=loss, step_size=step_size, **kw)
                   for loss in ("ce", "cw")}
    white_masks.update({k: v.cpu().bool() for k, v in (extra_white or {}).items()})
    white = torch.stack([clean, *white_masks.values()]).all(0)
    restart = clean & torch.stack([pgd_mask(model, x, y, eps, steps=steps, loss=loss, step_size=step_size,
                                            **{**kw, "seed": seed + 1}) for loss in ("ce", "cw")]).all(0)

    # 4. gradient-free does not beat white-box (every point)
    square = square_mask(model, x, y, eps, n_queries=n_queries, seed=seed, use_cache=use_cache) & clean
    ok, d = beats_white_box(white, square, restart, z)
    items.append(Item(ITEMS[3], f"white-box {_acc(white):.1%} vs Square ({n_queries} queries) {_acc(square):.1%} "
                      f"on {len(x)} points; Square breaks {d['found']} points white-box left robust, a white-box "
                      f"restart {d['restart_found']}", f"found - restart <= {z:g} sqrt(found + restart)", ok,
                      {"white": _acc(white), "square": _acc(square), "n_queries": n_queries, **d}))

    # 5. transfer does not beat white-box
    if surrogate is None:
        items.append(Item(ITEMS[4], f"{NOT_RUN} (no surrogate model given)", "a surrogate is required", False, {}))
    else:
        sources = dict(surrogate) if isinstance(surrogate, Mapping) else {"surrogate": surrogate}
        per_source = {name: torch.stack([pgd_mask(model, x, y, eps, steps=steps, loss=loss, step_size=step_size,
                                                  source=src, **kw) for loss in ("ce", "cw")]).all(0)
                      for name, src in sources.items()}
        transfer = torch.stack([clean, *per_source.values()]).all(0)
        ok, d = beats_white_box(white, transfer, restart, z)
        each = ", ".join(f"{name} {_acc(m):.1%}" for name, m in per_source.items())
        items.append(Item(ITEMS[4], f"white-box {_acc(white):.1%} vs transfer {_acc(transfer):.1%} ({each}); "
                          f"transfer breaks {d['found']} points white-box left robust, a white-box restart "
                          f"{d['restart_found']}", f"found - restart <= {z:g} sqrt(found + restart)", ok,
                          {"white": _acc(white), "transfer": _acc(transfer),
                           "per_surrogate": {name: _acc(m) for name, m in per_source.items()}, **d}))

    # 6. PGD does not overstate robustness more than for a control
    if overstated is None:
        items.append(Item(ITEMS[5], f"{NOT_RUN} (no stronger attack and control given)",
                          "a stronger attack and a control are required", False, {}))
    else:
        items.append(overstated)
    return Checklist(items, {"eps": eps_acc, "steps": step_acc}, white)


__all__ = ["ITEMS", "NOT_RUN", "Item", "Checklist", "names_text", "verdict_text", "replicates_text",
           "paired_difference", "beats_white_box", "overstatement",
           "overstatement_item", "pgd_mask", "square_mask", "flat_gradient_share", "run_checklist"]
