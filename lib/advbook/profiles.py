"""What a profile means, in one table: ``tiny``, ``quick``, ``long`` and ``full``.

A profile is the scale of a whole run of the book. Everything a profile decides *for every
chapter* is one entry of :data:`PROFILES` (a :class:`Profile`):

* ``cell_timeout``: seconds one notebook cell may run (the runner's papermill limit);
* ``side``: whether its results are kept *beside* the build's own (``<chapter>.long.json``,
  recorded under ``book/measurements/runs``) instead of replacing them;
* ``autoattack``: the AutoAttack budget chapters evaluate robustness with (``cfg.autoattack``);
* ``recipes``: the training recipe of the book's reference standard / adversarially trained
  models, per dataset the profile accepts (``cfg.recipe``). A dataset a profile has no recipe
  for is refused with a message naming the ones it has, never silently trained with another
  profile's recipe.

What a profile decides for *one* chapter (its seeds, epochs, evaluation points) stays with that
chapter's method (``advbook.methods.<paper>.PROFILES``). ``auto`` is not a profile but a request:
:func:`resolve` turns it into ``full`` on a CUDA machine and ``quick`` elsewhere, once, in the
process that starts the run (the runner passes the resolved name to every chapter).

This module imports nothing heavy (no torch until ``auto`` is resolved), so the command line can
validate a profile in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

AUTO = "auto"

STANDARD_AUTOATTACK = ("apgd-ce", "apgd-t", "fab-t", "square")
"""The components of the standard AutoAttack (Croce & Hein 2020), in the order it runs them."""

STANDARD_AUTOATTACK_BUDGET = MappingProxyType(
    {"components": STANDARD_AUTOATTACK, "n_iter": 100, "n_queries": 5000, "n_target_classes": 9})
"""The standard AutoAttack's budget (``version="standard"``): 100 iterations, 9 target classes, Square with
5,000 queries. The ``full`` profile evaluates with it; the CPU profiles with a measured reduction."""

_QUICK_MNIST5K = MappingProxyType(
    # the real MNIST 5k sample on 2 CPU cores (~10 s standard, ~2 min PGD-7 AT)
    {"arch": "smallcnn", "std_epochs": 8, "at_epochs": 15, "eps": 0.3, "steps": 7, "warmup": 0.3})


@dataclass(frozen=True)
class Profile:
    """Everything one profile means for the whole book (see the module docstring)."""

    name: str
    purpose: str
    cell_timeout: int | None
    side: bool
    autoattack: Mapping[str, Any]
    recipes: Mapping[str, Mapping[str, Any]] = field(repr=False)

    def recipe(self, dataset: str, *, epochs: int | None = None, eps: float | None = None) -> dict:
        """The reference recipe on ``dataset`` (a copy), with a chapter's overrides applied.

        ``epochs`` replaces both the standard and the adversarial epochs, ``eps`` the training
        budget; :func:`advbook.book.chapter.setup` stores the result as ``cfg.recipe``, so the results
        JSON records the epochs and budget that really ran.
        """
        if dataset not in self.recipes:
            from .params import ParameterError

            others = [p.name for p in PROFILES.values() if dataset in p.recipes]
            hint = f"; profiles that train on {dataset!r}: {', '.join(others)}" if others else ""
            raise ParameterError(f"profile {self.name!r} has no reference recipe for dataset {dataset!r}; it has "
                                 f"one for: {', '.join(self.recipes)}{hint}")
        recipe = dict(self.recipes[dataset])
        if epochs is not None:
            recipe["std_epochs"] = recipe["at_epochs"] = epochs
        if eps is not None:
            recipe["eps"] = eps
        return recipe

    def autoattack_budget(self) -> dict:
        """The AutoAttack budget as keyword arguments of :func:`advbook.evaluation.autoattack` (a copy)."""
        budget = dict(self.autoattack)
        budget["components"] = list(budget["components"])
        return budget


def _table(*profiles: Profile) -> Mapping[str, Profile]:
    return MappingProxyType({p.name: p for p in profiles})


PROFILES: Mapping[str, Profile] = _table(
    Profile(
        "tiny", "the test suite: seconds per chapter, every code path, numbers not meaningful",
        cell_timeout=300, side=False,
        autoattack={"components": STANDARD_AUTOATTACK, "n_iter": 5, "n_queries": 50, "n_target_classes": 1},
        recipes={"mnist5k": {"arch": "smallcnn", "width": 8, "std_epochs": 1, "at_epochs": 1, "eps": 0.3,
                             "steps": 2, "warmup": 0.0},
                 # CIFAR-shaped data: the full profile's code path (ResNet-18, crop + flip) in seconds
                 "cifar10": {"arch": "resnet18", "width": 4, "std_epochs": 1, "at_epochs": 1, "eps": 8 / 255,
                             "steps": 2, "step_size": 4 / 255, "warmup": 0.0}}),
    Profile(
        "quick", "2 CPU cores, minutes per chapter: MNIST-5k, small CNNs",
        cell_timeout=1200, side=False,
        # chosen by measurement (advbook.calibration, book/measurements/autoattack_budget.json): on the
        # primer's adversarially trained quick model (300 points, eps 0.3) this budget finds the same robust
        # accuracy as standard AutoAttack (46.0%) in ~1/20 of its time. FAB-T and Square-5000 lowered it no
        # further there; 50 iterations left 2.3 points too many. Square (250 queries) stays as the
        # gradient-free check. Chapters state this budget where they use it.
        autoattack={"components": ("apgd-ce", "apgd-t", "square"), "n_iter": 100, "n_queries": 250,
                    "n_target_classes": 3},
        recipes={"mnist5k": _QUICK_MNIST5K}),
    Profile(
        "long", "the largest scale that fits 30-120 minutes a chapter on 2 CPU cores: more replicates, longer "
                "training; results kept beside the quick ones and recorded under book/measurements/runs",
        cell_timeout=3600, side=True,
        # the standard components and iterations, Square with 1,000 queries (not 5,000): named so wherever used
        autoattack={"components": STANDARD_AUTOATTACK, "n_iter": 100, "n_queries": 1000, "n_target_classes": 9},
        # the reference models are the quick ones: the long profile scales each chapter's own replicates
        recipes={"mnist5k": _QUICK_MNIST5K}),
    Profile(
        "full", "paper scale on one GPU",
        cell_timeout=7200, side=False,
        autoattack=STANDARD_AUTOATTACK_BUDGET,
        recipes={"mnist": {"arch": "smallcnn", "width": 32, "std_epochs": 10, "at_epochs": 30, "eps": 0.3,
                           "steps": 20, "warmup": 0.2},
                 "fashion": {"arch": "smallcnn", "width": 32, "std_epochs": 10, "at_epochs": 30, "eps": 0.1,
                             "steps": 20, "warmup": 0.2},
                 # Madry-style CIFAR-10 PGD-7 AT at 8/255 with step 2/255, ResNet-18
                 "cifar10": {"arch": "resnet18", "std_epochs": 30, "at_epochs": 30, "eps": 8 / 255, "steps": 7,
                             "step_size": 2 / 255, "warmup": 0.0}}),
)
"""The profiles, by name (read-only)."""

NAMES = (AUTO, *PROFILES)
"""What ``--profile`` and a chapter's ``profile`` parameter accept."""


def check(name: Any) -> str:
    """``name`` if it is a profile or ``auto``; else a :class:`~advbook.params.ParameterError` naming the allowed."""
    if name not in NAMES:
        from .params import ParameterError

        raise ParameterError(f"profile {name!r} is not known; allowed: {', '.join(map(repr, NAMES))}")
    return name


def resolve(name: str) -> str:
    """Validate ``name`` and resolve ``auto``: ``full`` when CUDA is available, else ``quick``."""
    if check(name) != AUTO:
        return name
    import torch

    return "full" if torch.cuda.is_available() else "quick"


def is_side(name: str | None) -> bool:
    """Whether ``name`` is a side profile (its results kept beside the build's own, like ``long``)."""
    return name in PROFILES and PROFILES[name].side


def get(name: str) -> Profile:
    """The :class:`Profile` called ``name`` (``auto`` resolved first)."""
    return PROFILES[resolve(name)]
