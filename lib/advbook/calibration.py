"""Choose the quick profile's AutoAttack budget by measurement: ``python -m advbook.calibration``.

The reference is the *standard* AutoAttack of Croce & Hein (2020) as packaged by
``pyautoattack`` (``version="standard"``: APGD-CE, APGD-T with 9 target classes, FAB-T,
Square with 5,000 queries; 100 iterations, one restart). On a CPU it takes many minutes
for a few hundred MNIST points, too slow for a quick chapter, so the quick profile uses a
reduced budget. This module measures, on the primer's adversarially trained quick model
and its evaluation points, the robust accuracy and wall time of the reference and of
each candidate budget (run through :func:`advbook.evaluation.autoattack`), and picks the
cheapest candidate that leaves robust at most ``tolerance`` (a share of the points) of the
points the reference breaks. The comparison is *per sample* (:func:`agreement`): two budgets
can agree in the aggregate while breaking different points, so the record holds, for every
candidate, how many points it leaves robust that the reference breaks and the other way round.
The default record covers the primer's adversarially trained model only. ``--model sgn``
runs the same per-sample comparison on chapter 2's quick self-gradient network (training seed 0,
its first 150 evaluation points, eps 0.2) and writes ``book/measurements/autoattack_budget_sgn.json``
(:data:`SGN_OUT`). ``--model student`` and ``--model student-hard`` compare chapter 3's quick students
(the AT teacher's and the hard-label student of student seed 0, 150 points, eps 0.2) against the
reference; their candidate is the chapter's whole attack suite (:func:`student_suite`: PGD-CE and
PGD-CW, then APGD-CE, APGD-DLR and Square on the survivors), at the quick and the long settings.

The result is written with its provenance (date, git commit, device, torch threads,
settings) to ``book/measurements/autoattack_budget.json``; ``make calibrate-autoattack``
re-measures it. Every run is cached (:func:`advbook.cache.cached_result`), so a re-run
only rewrites the record; ``--fresh`` recomputes and re-times everything.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import subprocess
import time
from pathlib import Path

import torch

from . import __version__, cache, data, evaluation, precision, profiles, runtime, zoo
from .methods import logits, primer, self_gradient

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / primer.MEASUREMENT
SGN_OUT = ROOT / self_gradient.CALIBRATION
STUDENT_OUT = ROOT / logits.CALIBRATION_RECORDS["student"]
STUDENT_HARD_OUT = ROOT / logits.CALIBRATION_RECORDS["student-hard"]
"""Where each record goes: the paths the chapters read them from."""

CANDIDATES = {
    # the quick budget before this measurement
    "previous quick": {"components": ("apgd-ce", "apgd-t", "square"), "n_iter": 50, "n_queries": 250,
                       "n_target_classes": 3},
    "with FAB-T": {"components": ("apgd-ce", "apgd-t", "fab-t", "square"), "n_iter": 50, "n_queries": 250,
                   "n_target_classes": 3},
    "1000 queries": {"components": ("apgd-ce", "apgd-t", "square"), "n_iter": 50, "n_queries": 1000,
                     "n_target_classes": 3},
    "100 iterations": {"components": ("apgd-ce", "apgd-t", "square"), "n_iter": 100, "n_queries": 250,
                       "n_target_classes": 3},
    "9 targets": {"components": ("apgd-ce", "apgd-t", "square"), "n_iter": 50, "n_queries": 250,
                  "n_target_classes": 9},
    "100 iterations, 5 targets": {"components": ("apgd-ce", "apgd-t", "square"), "n_iter": 100, "n_queries": 250,
                                  "n_target_classes": 5},
    "100 iterations, 9 targets": {"components": ("apgd-ce", "apgd-t", "square"), "n_iter": 100, "n_queries": 250,
                                  "n_target_classes": 9},
    "100 iterations, with FAB-T": {"components": ("apgd-ce", "apgd-t", "fab-t", "square"), "n_iter": 100,
                                   "n_queries": 250, "n_target_classes": 3},
}
"""Candidate quick budgets (keyword arguments of :func:`advbook.evaluation.autoattack`)."""


def evaluation_points(profile: str = "quick", n_eval: int = 300, device: str = "cpu"):
    """The primer's adversarially trained model and evaluation points: ``(model, x, y)``.

    The model is ``zoo.reference_model(data.load("mnist5k"), profiles.get(profile).recipe("mnist5k"), "adversarial")``
    (trained once, then loaded from the cache); the points are the first ``n_eval`` test
    images of the split, as the primer slices them.
    """
    dev = runtime.resolve_device(device)
    runtime.seed_everything(0)
    ds = data.load("mnist5k", device=dev)
    model, _ = zoo.reference_model(ds, profiles.get(profile).recipe(ds.name), "adversarial")
    return model, ds.x_test[:n_eval], ds.y_test[:n_eval]


def sgn_evaluation_points(profile: str = "quick", n_eval: int = 150, device: str = "cpu", seed: int = 0):
    """Chapter 2's self-gradient network of training ``seed`` and its first ``n_eval`` evaluation points.

    The model is ``self_gradient.train_pair(ds, cfg, seed, kinds=("sgn",))["sgn"]`` with ``cfg`` the
    chapter's ``profile`` and ``ds`` the chapter's data (``data.load(cfg.dataset, n_train=cfg.n_train)``: the
    split is fixed, as in every chapter), loaded from the cache when the chapter has run (else trained exactly
    as the chapter trains it); the points are ``ds.x_test[:n_eval]``, as the chapter slices them (``n_eval`` at most the
    profile's).
    """
    from . import params
    from .methods import self_gradient as sg

    dev = runtime.resolve_device(device)
    cfg = params.resolve({"profile": profile, "seed": seed}, sg.PROFILES, sg.SCHEMA)
    if n_eval > cfg["n_eval"]:
        raise ValueError(f"n_eval = {n_eval} exceeds the chapter's {profile} n_eval = {cfg['n_eval']}")
    runtime.seed_everything(seed)
    ds = data.load(cfg["dataset"], device=dev, n_train=cfg.get("n_train"))
    model, _ = sg.train_pair(ds, cfg, seed=seed, kinds=("sgn",))["sgn"]
    return model.eval(), ds.x_test[:n_eval], ds.y_test[:n_eval]


def student_evaluation_points(profile: str = "quick", n_eval: int = 150, device: str = "cpu", seed: int = 0,
                              kind: str = "at_full"):
    """Chapter 3's student ``kind`` of student seed 0 at the headline temperature, and its first ``n_eval`` points.

    Built exactly as the chapter builds it (``notebooks/03_logit_distributions.ipynb``): the teachers are
    ``zoo.reference_model(ds, recipe, kind, s)`` of the first (standard, AT) seed pair of
    :func:`advbook.methods.logits.model_seed_layout`, the targets :func:`~advbook.methods.logits.teacher_targets`
    at ``T = temperatures[0]`` and the student :func:`~advbook.methods.logits.train_student` with the chapter's
    seeds, so it is loaded from the cache when the chapter has run. The points are ``ds.x_test[:n_eval]``, the
    start of the chapter's evaluation points.
    """
    from . import params
    from .methods import logits as L

    dev = runtime.resolve_device(device)
    cfg = params.resolve({"profile": profile, "seed": seed}, L.PROFILES, L.SCHEMA)
    if n_eval > cfg["n_eval"]:
        raise ValueError(f"n_eval = {n_eval} exceeds the chapter's {profile} n_eval = {cfg['n_eval']}")
    runtime.seed_everything(seed)
    ds = data.load(cfg["dataset"], device=dev, n_train=cfg["n_train"], n_test=cfg["n_test"])
    recipe = profiles.get(profile).recipe(cfg["dataset"], **{k: cfg[k] for k in L.RECIPE_OVERRIDES})
    pair = L.model_seed_layout(cfg["model_seeds"], seed)["pair"][0]
    std = zoo.reference_model(ds, recipe, "standard", pair)[0]
    at = zoo.reference_model(ds, recipe, "adversarial", pair)[0]
    with torch.no_grad():
        at_logits, std_logits = evaluation.predict(at, ds.x_train), evaluation.predict(std, ds.x_train)
    teacher_id = str({"std": ds.fingerprint(), "recipe": recipe, "seed": seed})
    temperature = cfg["temperatures"][0]
    targets = L.teacher_targets(kind, ds.y_train, at_logits, std_logits, temperature,
                                torch.Generator().manual_seed(seed))
    student = L.train_student(ds, kind, targets, arch=recipe["arch"], width=recipe.get("width"),
                              epochs=cfg["student_epochs"], temperature=temperature, seed=seed + 100,
                              teacher_id=teacher_id)[0]
    return student.eval(), ds.x_test[:n_eval], ds.y_test[:n_eval]


def student_suite(profile: str = "quick"):
    """Candidates for a chapter-3 student: the chapter's own attack suite at ``profile``'s settings.

    Chapter 3 reports the per-sample worst case of :func:`advbook.methods.logits.robust_suite` (PGD-CE and
    PGD-CW on every point, then APGD-CE, APGD-DLR and Square on the survivors), so that suite, not an
    AutoAttack budget alone, is what the reference must be compared with. Returns ``{name: run}`` with
    ``run(model, x, y, eps, seed) -> (robust_mask, robust, seconds)``.
    """
    from . import params
    from .methods import logits as L

    def suite_at(name: str):
        cfg = params.resolve({"profile": name}, L.PROFILES, L.SCHEMA)
        budget = profiles.get(name).autoattack_budget()

        def run(model, x, y, eps, seed):
            start = time.perf_counter()
            out = L.robust_suite(model, x, y, eps, suite=tuple(cfg["attack_suite"]), steps=cfg["attack_steps"],
                                 aa_budget=budget, seed=seed, use_cache=False, return_mask=True)
            return out["robust_mask"], out["worst"], time.perf_counter() - start

        run.budget = {"suite": list(cfg["attack_suite"]), "steps": cfg["attack_steps"],
                      **{k: budget[k] for k in ("n_iter", "n_queries", "n_target_classes")}}
        return run

    return {f"chapter 3's {name} suite": suite_at(name) for name in dict.fromkeys((profile, "long"))}


MODELS = {
    "primer": {"points": evaluation_points, "eps": 0.3, "n_eval": 300, "out": DEFAULT_OUT,
               "model": "zoo.reference_model(data.load('mnist5k'), profiles.get('quick').recipe('mnist5k'), "
                        "'adversarial')",
               "points_text": "first {n} test images of mnist5k (the primer's quick evaluation points)",
               "covers": "the primer's adversarially trained quick model (seed 0) only; not the other defended "
                         "models"},
    "sgn": {"points": sgn_evaluation_points, "eps": 0.2, "n_eval": 150, "out": SGN_OUT,
            "model": "self_gradient.train_pair(data.load('mnist5k', n_train=2000, seed=0), quick cfg, seed=0, "
                     "kinds=('sgn',))['sgn'] (chapter 2's quick SGN, training seed 0)",
            "points_text": "first {n} test images of mnist5k (chapter 2's quick evaluation points of seed 0)",
            "covers": "chapter 2's quick self-gradient network of training seed 0 only, at the chapter's eps"},
    "student": {"points": student_evaluation_points, "eps": 0.2, "n_eval": 150, "out": STUDENT_OUT,
                "suites": student_suite,
                "model": "calibration.student_evaluation_points('quick', kind='at_full'): chapter 3's quick student "
                         "of the AT teacher (full logits), T = 30, student seed 0",
                "points_text": "first {n} test images of mnist5k (the start of chapter 3's quick evaluation points)",
                "covers": "chapter 3's quick AT-teacher student of seed 0 at the headline radius; the chapter's "
                          "whole attack suite (PGD-CE, PGD-CW, then APGD-CE, APGD-DLR, Square) is the candidate"},
    "student-hard": {"points": functools.partial(student_evaluation_points, kind="hard_labels"), "eps": 0.2,
                     "n_eval": 150, "out": STUDENT_HARD_OUT, "suites": student_suite,
                     "model": "calibration.student_evaluation_points('quick', kind='hard_labels'): chapter 3's quick "
                              "hard-label student, student seed 0",
                     "points_text": "first {n} test images of mnist5k (the start of chapter 3's quick evaluation "
                                    "points)",
                     "covers": "chapter 3's quick hard-label student of seed 0 at the headline radius, against the "
                               "chapter's whole attack suite"},
}
"""The defended models a calibration can cover (``--model``): how to load the model and its points, the
eps and number of points of the chapter that evaluates it, and where the record goes."""


class _Record(logging.Handler):
    """Collects pyautoattack's "robust accuracy after X: Y% (total time Z s)" debug lines."""

    pattern = re.compile(r"robust accuracy after ([\w-]+): ([\d.]+)% \(total time ([\d.]+) s\)")

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.after, self.elapsed = {}, {}

    def emit(self, record):
        match = self.pattern.search(record.getMessage())
        if match:
            name = match.group(1).lower()
            self.after[name] = float(match.group(2)) / 100
            self.elapsed[name] = float(match.group(3))


def reference_autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int = 0,
                         batch_size: int = 500, use_cache: bool = True) -> dict:
    """The standard AutoAttack (``pyautoattack``, ``version="standard"``) on ``(x, y)`` at l_inf ``eps``.

    Returns ``{"clean", "after": {component: cumulative robust acc}, "robust",
    "seconds": {component: time}, "total_seconds", "robust_mask", "settings"}``.
    Cached by model weights, points and settings (:func:`advbook.cache.cached_result`).
    """
    settings = {"version": "standard", "eps": eps, "norm": "Linf", "seed": seed, "n": len(x),
                "library": "pyautoattack"}

    def compute() -> dict:
        from pyautoattack import AutoAttack

        aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", device=x.device, seed=seed)
        aa.verbose = True
        logger = logging.getLogger("auto-attack")
        handler, level = _Record(), logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        start = time.perf_counter()
        try:
            x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=batch_size)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
        total = time.perf_counter() - start
        with torch.no_grad():
            clean = (evaluation.predict(model, x).argmax(1) == y).float().mean().item()
            robust_mask = evaluation.predict(model, x_adv).argmax(1) == y
        elapsed = [0.0] + list(handler.elapsed.values())
        seconds = {name: elapsed[i + 1] - elapsed[i] for i, name in enumerate(handler.elapsed)}
        return {"clean": clean, "after": handler.after, "robust": robust_mask.float().mean().item(),
                "seconds": seconds, "total_seconds": total, "robust_mask": robust_mask.cpu(),
                "settings": {**settings, "components": list(aa.attacks_to_run), "n_iter": aa.apgd.n_iter,
                             "n_queries": aa.square.n_queries, "n_target_classes": aa.apgd_targeted.n_target_classes}}

    if not use_cache:
        return compute()
    return cache.cached_result("autoattack-reference", model, (x, y), settings, compute)


def agreement(reference_mask: torch.Tensor, candidate_mask: torch.Tensor) -> dict:
    """Per-sample agreement of two robust masks on the same points.

    ``only_candidate``: points the candidate leaves robust that the reference breaks (the
    candidate's misses); ``only_reference``: the other way round; ``both`` and ``neither``;
    ``n``; ``agree``: the share of points on which the two masks agree.
    """
    ref, cand = reference_mask.bool().cpu(), candidate_mask.bool().cpu()
    if ref.shape != cand.shape:
        raise ValueError(f"masks differ in shape: {tuple(ref.shape)} and {tuple(cand.shape)}")
    n = int(ref.numel())
    out = {"n": n, "only_candidate": int((cand & ~ref).sum()), "only_reference": int((ref & ~cand).sum()),
           "both": int((cand & ref).sum()), "neither": int((~cand & ~ref).sum())}
    out["agree"] = (out["both"] + out["neither"]) / n if n else float("nan")
    return out


def choose(reference: float, candidates: dict, tolerance: float = 0.01) -> str | None:
    """The cheapest candidate (by total seconds) within ``tolerance`` of the reference.

    With a per-sample ``agreement`` (:func:`agreement`) in a candidate's row: it may leave robust at
    most ``tolerance * n`` points that the reference breaks. Without one (an old record): its
    aggregate robust accuracy may be at most ``tolerance`` above ``reference``.
    """
    def within(c: dict) -> bool:
        a = c.get("agreement")
        if a:
            return a["only_candidate"] <= tolerance * a["n"] + 1e-9
        return c["robust"] <= reference + tolerance + 1e-9

    ok = [(c["total_seconds"], name) for name, c in candidates.items() if within(c)]
    return min(ok)[1] if ok else None


def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def measure(eps: float | None = None, n_eval: int | None = None, candidates: dict | None = None,
            tolerance: float = 0.01, device: str = "cpu", seed: int = 0, fresh: bool = False,
            model: str = "primer") -> dict:
    """Run every candidate and the reference; return the measurement record (see the module docstring).

    ``model``: a key of :data:`MODELS` (``eps`` and ``n_eval`` default to that model's chapter).
    Runs are cached (keyed by model, points and budget); their ``seconds`` are those of the
    run that computed them, and ``from_cache`` says which came from the cache. ``fresh``
    recomputes (and re-times) everything.
    """
    if model not in MODELS:
        raise ValueError(f"model {model!r} is not known; allowed: {', '.join(MODELS)}")
    spec = MODELS[model]
    eps = spec["eps"] if eps is None else eps
    n_eval = spec["n_eval"] if n_eval is None else n_eval
    candidates = CANDIDATES if candidates is None else candidates
    net, x, y = spec["points"]("quick", n_eval, device)
    model_name, model = model, net
    dev = x.device
    rows, masks = {}, {}
    if "suites" in spec and candidates is CANDIDATES:  # a student: the chapter's own suite is the candidate
        for name, run in spec["suites"]("quick").items():
            mask, robust, seconds = run(model, x, y, eps, seed)
            masks[name] = mask.cpu()
            rows[name] = {"budget": run.budget, "robust": robust, "seconds": {"suite": seconds},
                          "total_seconds": seconds, "from_cache": False}
            print(f"{name:<28s} robust {robust:.1%} in {seconds:.0f} s", flush=True)
        candidates = {}
    for name, budget in candidates.items():  # first: they are cheap, and a reference run may hold its lock
        hits = cache.STATS["hits"]
        out = evaluation.autoattack(model, x, y, eps, seed=seed, cache=not fresh, **budget)
        masks[name] = out["robust_mask"].cpu()
        rows[name] = {"budget": {**budget, "components": list(budget["components"])}, "clean": out["clean"],
                      "after": out["after"], "robust": out["robust"], "seconds": out["seconds"],
                      "total_seconds": sum(out["seconds"].values()), "from_cache": cache.STATS["hits"] > hits}
        print(f"{name:<28s} robust {out['robust']:.1%} in {rows[name]['total_seconds']:.0f} s", flush=True)
    hits = cache.STATS["hits"]
    ref = reference_autoattack(model, x, y, eps, seed, use_cache=not fresh)
    ref_cached = cache.STATS["hits"] > hits
    print(f"reference (standard AutoAttack): robust {ref['robust']:.1%} in {ref['total_seconds']:.0f} s"
          + (" (from the cache)" if ref_cached else ""), flush=True)
    for name, mask in masks.items():
        rows[name]["agreement"] = agreement(ref["robust_mask"], mask)
        a = rows[name]["agreement"]
        print(f"{name:<28s} per sample: {a['only_candidate']} robust here but broken by the reference, "
              f"{a['only_reference']} the other way round", flush=True)
    chosen = choose(ref["robust"], rows, tolerance)
    return {
        "what": "robust accuracy and wall time of standard AutoAttack vs candidate quick budgets",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_sha": _git_sha(),
        "library": __version__,
        "torch": torch.__version__,
        "device": runtime.device_name(dev),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "model": spec["model"],
        "model_key": model_name,
        "model_fingerprint": cache.model_fingerprint(model),
        "training_precision": precision.training(),
        "points": spec["points_text"].format(n=len(x)),
        "eps": eps,
        "seed": seed,
        "tolerance": tolerance,
        "timing": "wall-clock seconds of the run that computed each result; "
                  "the machine's load average at the time of writing is recorded beside it",
        "reference": {k: v for k, v in ref.items() if k != "robust_mask"},
        "reference_from_cache": ref_cached,
        "candidates": rows,
        "agreement": {name: row["agreement"] for name, row in rows.items()},
        "comparison": "per sample: a candidate may leave robust at most tolerance x n points the reference breaks",
        "covers": spec["covers"],
        "chosen": chosen,
        "rerun": "make calibrate-autoattack  (python -m advbook.calibration)" if model_name == "primer" else
                 f"python -m advbook.calibration --model {model_name}",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="primer",
                        help="the defended model to calibrate on (default: the primer's AT model)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON record (default: the "
                        "model's record under book/measurements/)")
    parser.add_argument("--eps", type=float, default=None, help="default: the model's chapter's eps")
    parser.add_argument("--n-eval", type=int, default=None, help="default: 300 (primer), 150 (sgn, students)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    from .params import CELL_HEAD

    book_default = {name: value for name, value, _ in CELL_HEAD}["precision"]
    parser.add_argument("--precision", default=book_default, choices=precision.PRECISIONS,
                        help="the arithmetic the model was trained in, as the chapters' `precision` parameter "
                             f"(default {book_default}, the chapters' default, so the calibrated weights are the book's)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="allowed excess over the reference accuracy")
    parser.add_argument("--fresh", action="store_true", help="recompute and re-time everything (ignore the cache)")
    parser.add_argument("--candidates", nargs="+", choices=sorted(CANDIDATES), default=None,
                        help="measure only these candidate budgets (default: all)")
    parser.add_argument("--reference-only", action="store_true",
                        help="only compute (and cache) the reference run; write nothing")
    args = parser.parse_args(argv)
    spec = MODELS[args.model]
    out = spec["out"] if args.out is None else args.out
    precision.set_training(precision.resolve(args.precision, runtime.resolve_device(args.device)))
    if args.reference_only:
        n_eval = spec["n_eval"] if args.n_eval is None else args.n_eval
        model, x, y = spec["points"]("quick", n_eval, args.device)
        ref = reference_autoattack(model, x, y, spec["eps"] if args.eps is None else args.eps)
        print(json.dumps({k: v for k, v in ref.items() if k != "robust_mask"}, indent=1))
        return
    chosen = None if args.candidates is None else {name: CANDIDATES[name] for name in args.candidates}
    record = measure(args.eps, args.n_eval, candidates=chosen, tolerance=args.tolerance, device=args.device,
                     fresh=args.fresh, model=args.model)
    if argv is None:
        import shlex
        import sys

        record["command"] = "python -m advbook.calibration " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"chosen: {record['chosen']!r}; written to {out}")


if __name__ == "__main__":
    main()
