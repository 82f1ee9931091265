"""The primer chapter: threat model, FGSM/PGD, standard vs adversarial training.

Profiles and the sweeps the chapter runs. The models themselves are the book's
reference pair, :func:`advbook.zoo.reference_models`, which later chapters reuse.
"""

from __future__ import annotations

import torch

from .. import attacks, evaluation
from ..params import ListOf, Number

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
    "quick": {
        "dataset": "mnist5k", "device": "auto", "seed": 0, "epochs": None, "eps": 0.3,
        "n_train": None, "n_test": None, "n_eval": 300,
        "eps_grid": [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4],
        "autoattack_grid": [0.2, 0.3],
        "steps_grid": [1, 2, 5, 10, 20, 40, 80],
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


def worst_case(*accuracies: float) -> float:
    """The robust accuracy to report: the minimum over attacks (each attack is a lower bound on the error)."""
    return min(accuracies)


def example_grid(model, x, y, eps: float, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` clean images, their PGD-40 adversarial versions, and the model's predictions on both."""
    gen = torch.Generator().manual_seed(seed)
    x, y = x[:n], y[:n]
    x_adv = attacks.pgd(model, x, y, eps, steps=40, generator=gen)
    with torch.no_grad():
        return x_adv, model(x).argmax(1), model(x_adv).argmax(1)
