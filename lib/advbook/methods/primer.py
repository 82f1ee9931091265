"""The primer chapter: threat model, FGSM/PGD, standard vs adversarial training.

Profiles and the sweeps the chapter runs. The models themselves are the book's
reference pair, :func:`advbook.zoo.reference_models`, which later chapters reuse.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .. import attacks, cache, evaluation
from ..params import ListOf, Number, ParameterError
from ..stats import wilson_interval

CHAPTER = "00_primer"
"""The notebook this module backs (``notebooks/00_primer.ipynb``)."""

RECIPE_OVERRIDES = ("epochs", "eps")
"""``epochs`` and ``eps`` of this chapter change the reference models' recipe (``cfg.recipe``)."""

FULL_PATH_TEST = {"dataset": "cifar10"}
"""Overrides that, added to the ``tiny`` profile, run the ``full`` profile's code path on generated
CIFAR-shaped data in the test suite (``tests/test_notebooks.py``)."""

SCHEMA = {
    "n_train": Number(int, 100, 10_000_000),
    "n_test": Number(int, 50, 10_000_000),
    "n_eval": Number(int, 10, 100_000),
    "eps_grid": ListOf(Number(float, 0.0, 1.0)),
    "autoattack_grid": ListOf(Number(float, 0.0, 1.0)),
    "steps_grid": ListOf(Number(int, 1, 10_000)),
}

PROFILES = {
    # quick: AutoAttack only at the headline eps (each run on the AT model costs about a minute on
    # one core) and a 5-point PGD-20 curve; the cold build on 2 cores is the budget (issue 10).
    "quick": {
        "dataset": "mnist5k", "device": "auto", "seed": 0, "epochs": None, "eps": 0.3,
        "n_train": None, "n_test": None, "n_eval": 300,
        "eps_grid": [0.0, 0.1, 0.2, 0.3, 0.4],
        "autoattack_grid": [0.3],
        "steps_grid": [1, 2, 5, 10, 20, 40, 80],
    },
    # long (2 CPU cores, about 30 minutes): is the AT model's robustness limited by its training budget?
    # Both reference models trained 40 epochs instead of 8 / 15 (same data, net and PGD-7 recipe),
    # evaluated on all 1,000 test images with the long AutoAttack budget (the standard components).
    "long": {
        "dataset": "mnist5k", "device": "auto", "seed": 0, "epochs": 40, "eps": 0.3,
        "n_train": None, "n_test": None, "n_eval": 1000,
        "eps_grid": [0.0, 0.1, 0.2, 0.3, 0.4],
        "autoattack_grid": [0.3],
        "steps_grid": [1, 2, 5, 10, 20, 40, 80, 160],
    },
    "full": {
        "dataset": "cifar10", "device": "auto", "seed": 0, "epochs": None, "eps": 8 / 255,
        "n_train": None, "n_test": None, "n_eval": 1000,
        "eps_grid": [0.0, 1 / 255, 2 / 255, 4 / 255, 6 / 255, 8 / 255, 10 / 255, 12 / 255, 16 / 255],
        "autoattack_grid": [4 / 255, 8 / 255, 12 / 255],
        "steps_grid": [1, 2, 5, 10, 20, 50, 100],
    },
    "tiny": {
        "dataset": "mnist5k", "device": "auto", "seed": 0, "epochs": None, "eps": 0.3,
        "n_train": 512, "n_test": 100, "n_eval": 60,
        "eps_grid": [0.0, 0.1, 0.3], "autoattack_grid": [0.3], "steps_grid": [1, 3],
    },
}


def accuracy_vs_eps(model, x, y, eps_grid, steps: int = 20, seed: int = 0) -> dict:
    """Clean (eps = 0) and PGD-``steps`` robust accuracy for every eps of the grid."""
    return {float(e): (evaluation.accuracy(model, x, y) if e == 0 else
                       evaluation.pgd_accuracy(model, x, y, e, steps=steps, seed=seed)) for e in eps_grid}


def accuracy_vs_steps(model, x, y, eps: float, steps_grid, step_size: float, seed: int = 0) -> dict:
    """PGD robust accuracy against the number of steps, with a fixed step size and random start.

    With the same seed every run starts from the same point and follows the same
    trajectory, and :func:`advbook.attacks.pgd` keeps each sample's best iterate, so the
    curve must be non-increasing in the number of steps. A rise is a red flag (gradient
    masking or a broken attack), which is why the chapter plots it.
    """
    return {int(s): evaluation.pgd_accuracy(model, x, y, eps, steps=int(s), step_size=step_size, seed=seed)
            for s in steps_grid}


def fgsm_accuracy(model, x, y, eps: float) -> float:
    """Robust accuracy under single-step FGSM (:func:`advbook.attacks.fgsm`)."""
    return evaluation.robust_accuracy(attacks.fgsm, model, x, y, eps=eps)


def check(cfg) -> None:
    """Cross-parameter checks run by :func:`advbook.chapter.setup` before any work."""
    if cfg.eps <= 0:
        raise ParameterError(f"eps must be > 0 (the headline budget of the worst-case table), got {cfg.eps}")
    if cfg.n_test is not None and cfg.n_eval > cfg.n_test:
        raise ParameterError(f"n_eval ({cfg.n_eval}) must not exceed n_test ({cfg.n_test}): "
                             "the evaluation points are the first n_eval test images")


ATTACKS = ("fgsm", "pgd20", "autoattack")
"""The attacks of the worst-case table, in the order they are shown."""


def robust_masks(model, x, y, eps: float, autoattack: dict, steps: int = 20, seed: int = 0) -> dict:
    """Per-sample robust masks at ``eps``: ``clean``, ``fgsm``, ``pgd20``, ``autoattack`` and ``worst``.

    Each mask is True where the model classifies the point correctly *and* the attack did
    not change that (an attack only counts on points that were correct to begin with). The
    AutoAttack mask is :func:`advbook.evaluation.autoattack`'s ``robust_mask``: its
    components already run in sequence on the survivors, so it is the intersection over
    them. ``worst`` is the intersection of all masks: a point is robust only if it survives
    every attack, which is the per-sample worst case (never the minimum of the aggregate
    accuracies, which can overstate robustness when attacks break *different* points).
    Cached (:func:`advbook.cache.cached_result`) by weights, points and settings.
    """
    budget = dict(autoattack)
    settings = {"eps": eps, "steps": steps, "seed": seed,
                "autoattack": {**budget, "components": list(budget.get("components", ()))}}

    def compute() -> dict:
        clean = evaluation.predict(model, x).argmax(1) == y
        x_fgsm = evaluation.attack_all(attacks.fgsm, model, x, y, eps=eps)
        fgsm = clean & (evaluation.predict(model, x_fgsm).argmax(1) == y)
        gen = torch.Generator().manual_seed(seed)
        x_pgd = evaluation.attack_all(attacks.pgd, model, x, y, eps=eps, steps=steps, generator=gen)
        pgd = clean & (evaluation.predict(model, x_pgd).argmax(1) == y)
        aa = evaluation.autoattack(model, x, y, eps, seed=seed, **budget)["robust_mask"].to(clean.device)
        masks = {"clean": clean, "fgsm": fgsm, "pgd20": pgd, "autoattack": clean & aa}
        masks["worst"] = worst_case_mask(*(masks[a] for a in ATTACKS))
        return {k: v.cpu() for k, v in masks.items()}

    return cache.cached_result("primer-robust-masks", model, (x, y), settings, compute)


def worst_case_mask(*masks: torch.Tensor) -> torch.Tensor:
    """The per-sample worst case: a point is robust only if it is robust under every attack (logical AND)."""
    if not masks:
        raise ValueError("need at least one robust mask")
    out = masks[0].bool().clone()
    for m in masks[1:]:
        out &= m.bool()
    return out


def rate(mask: torch.Tensor) -> dict:
    """``{"value", "lo", "hi", "n"}``: the share of True in ``mask`` with its 95% Wilson interval."""
    n = int(mask.numel())
    p = mask.double().mean().item() if n else float("nan")
    lo, hi = wilson_interval(p, n)
    return {"value": p, "lo": lo, "hi": hi, "n": n}


def extra_breaks(masks: dict, base: str = "pgd20") -> dict:
    """Share of points robust under ``base`` that some other attack breaks: ``mean(base & ~worst)``.

    It is how far ``base`` alone overstates the robustness, measured per sample, so it is a
    proportion of the evaluated points and gets a Wilson interval (:func:`rate`).
    """
    return rate(masks[base] & ~masks["worst"])


def with_interval(r: dict, fmt: str = ".1%") -> str:
    """``"47.3% [41.8%, 52.9%]"``: a :func:`rate` with its 95% interval, for tables and prose."""
    return f"{r['value']:{fmt}} [{r['lo']:{fmt}}, {r['hi']:{fmt}}]"


def non_increasing(curve: dict, tol: float = 1e-9) -> bool:
    """Whether the values of ``curve`` (ordered by key) never rise: the step-sweep sanity check."""
    values = [curve[k] for k in sorted(curve)]
    return all(b <= a + tol for a, b in zip(values, values[1:]))


# ----------------------------------------------------------------------------- AutoAttack budget measurement

MEASUREMENT = Path("book") / "measurements" / "autoattack_budget.json"
"""The AutoAttack budget calibration, relative to the repository root (written by ``make calibrate-autoattack``)."""


def load_measurement(root: Path | None = None) -> dict | None:
    """The calibration record at ``<root>/`` :data:`MEASUREMENT`, or ``None`` when there is none (or unreadable)."""
    from ..results import repo_root

    path = (Path(root) if root is not None else repo_root()) / MEASUREMENT
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def budget_text(b: dict) -> str:
    """An AutoAttack budget in words: ``apgd-ce, apgd-t, square; 50 iterations; 3 targets; 250 queries``."""
    comps = ", ".join(str(c) for c in b.get("components", ()))
    parts = [comps] if comps else []
    for key, one, many in (("n_iter", "iteration", "iterations"), ("n_target_classes", "target class", "target classes"),
                           ("n_queries", "query", "queries")):
        if b.get(key) is not None:
            parts.append(f"{b[key]} {one if b[key] == 1 else many}")
    return "; ".join(parts)


def _seconds(row: dict) -> float | None:
    for key in ("total_seconds", "seconds"):
        v = row.get(key)
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, dict) and v:
            return float(sum(x for x in v.values() if isinstance(x, (int, float))))
    return None


def measurement_rows(record: dict) -> list[dict]:
    """The calibration as table rows: the standard AutoAttack first, then every candidate quick budget.

    Reads both layouts the calibration may write: ``{"reference": {...}, "candidates":
    {name: {"budget", "robust", "total_seconds"}}, "chosen": name}`` and ``{"standard": {...},
    "candidates": [{"budget", "robust", "seconds"}], "chosen": {...}}``. Each row holds
    ``budget`` (a name), ``settings`` (text), ``robust``, ``seconds``, ``vs_standard`` (the
    candidate's robust accuracy minus the standard one: positive = the quick budget misses
    adversarial examples) and ``chosen``.
    """
    ref = record.get("reference") or record.get("standard") or {}
    ref_settings = ref.get("settings", ref.get("budget", {}))
    rows = [{"budget": "standard AutoAttack", "settings": budget_text(ref_settings), "robust": ref.get("robust"),
             "seconds": _seconds(ref), "vs_standard": 0.0, "chosen": False}]
    cands = record.get("candidates") or {}
    items = list(cands.items()) if isinstance(cands, dict) else [(c.get("name", budget_text(c.get("budget", {}))), c)
                                                                  for c in cands]
    chosen = record.get("chosen")
    for name, c in items:
        budget = c.get("budget", {})
        is_chosen = (chosen == name) if isinstance(chosen, str) else (isinstance(chosen, dict) and
                                                                        chosen.get("budget", chosen) == budget)
        robust = c.get("robust")
        rows.append({"budget": name, "settings": budget_text(budget), "robust": robust, "seconds": _seconds(c),
                     "vs_standard": (robust - ref["robust"]) if robust is not None and ref.get("robust") is not None
                     else None, "chosen": is_chosen})
    return rows


def measurement_provenance(record: dict) -> dict:
    """When, where and how the calibration was measured: ``measured``, ``git_sha``, ``device``, ``threads``,
    ``points``, ``eps``, ``load_average`` (of the machine when it was written) and ``rerun``."""
    prov = {**record, **record.get("provenance", {})}
    return {"measured": prov.get("measured") or prov.get("date") or "unknown",
            "git_sha": str(prov.get("git_sha", "unknown"))[:12], "device": prov.get("device", "unknown"),
            "threads": prov.get("threads"), "points": prov.get("points", ""), "eps": prov.get("eps"),
            "load_average": prov.get("load_average"),
            "rerun": prov.get("rerun") or prov.get("command") or "make calibrate-autoattack"}


def example_grid(model, x, y, eps: float, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` clean images, their PGD-40 adversarial versions, and the model's predictions on both."""
    gen = torch.Generator().manual_seed(seed)
    x, y = x[:n], y[:n]
    x_adv = attacks.pgd(model, x, y, eps, steps=40, generator=gen)
    with torch.no_grad():
        return x_adv, model(x).argmax(1), model(x_adv).argmax(1)
