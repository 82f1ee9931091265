"""Trained classifiers shared between chapters, built once and then served from the cache.

:func:`train_classifier` is the one place where a standard, PGD-adversarially-trained or
FGSM-RS-trained classifier is made. Its cache key covers the data (name, size and a
fingerprint of the split), the architecture and every training setting, so the primer's
standard and adversarially trained models are reused by later chapters that ask for the
same settings, and never reused when anything differs.
"""

from __future__ import annotations

import hashlib

import torch

from . import cache, models
from .data import TensorData, random_crop_flip
from .train import fgsm_rs_adversary, fit, pgd_adversary

METHODS = ("standard", "pgd", "fgsm_rs")


def data_fingerprint(data: TensorData) -> str:
    """A short hash of the training split (labels and pixel sums), part of every cache key."""
    h = hashlib.sha256()
    h.update(data.y_train.cpu().numpy().tobytes())
    h.update(data.x_train.flatten(1).sum(1).double().cpu().numpy().round(4).tobytes())
    return h.hexdigest()[:12]


def default_optimizer(arch: str) -> dict:
    """Adam 1e-3 for the small CNN; SGD 0.1 (Nesterov, weight decay 5e-4) for ResNets."""
    if arch == "resnet18":
        return {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4}
    return {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}


def train_classifier(
    data: TensorData,
    *,
    method: str = "standard",
    arch: str = "smallcnn",
    width: int | None = None,
    act: str = "relu",
    epochs: int = 10,
    eps: float = 0.0,
    steps: int = 10,
    step_size: float | None = None,
    warmup: float = 0.0,
    batch_size: int = 128,
    seed: int = 0,
    optimizer: str | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    tag: str = "",
) -> tuple[torch.nn.Module, list]:
    """Train (or load from the cache) a classifier on ``data``; return ``(model, history)``.

    ``method``: ``standard``; ``pgd`` (Madry et al. 2018, PGD-``steps`` at ``eps``);
    ``fgsm_rs`` (Wong et al. 2020); ``warmup`` is the share of training over which eps
    ramps up linearly (:func:`advbook.train.eps_schedule`). CIFAR-10 gets random-crop + flip augmentation.
    ``tag`` distinguishes otherwise identical runs (e.g. a control model).
    """
    if method not in METHODS:
        raise ValueError(f"training method {method!r} is not known; allowed: {', '.join(METHODS)}")
    if method != "standard" and eps <= 0:
        raise ValueError(f"adversarial training ({method}) needs eps > 0, got {eps}")
    opt = default_optimizer(arch)
    opt.update({k: v for k, v in dict(optimizer=optimizer, lr=lr, weight_decay=weight_decay).items() if v is not None})
    config = {
        "data": {"name": data.name, "n_train": len(data.y_train), "fingerprint": data_fingerprint(data)},
        "arch": arch, "width": width, "act": act, "method": method, "epochs": epochs,
        "eps": eps if method != "standard" else 0.0, "steps": steps if method == "pgd" else None,
        "step_size": step_size if method == "pgd" else None, "warmup": warmup if method != "standard" else 0.0,
        "batch_size": batch_size, "seed": seed, "tag": tag, **opt,
    }
    device = data.x_train.device

    def build() -> torch.nn.Module:
        torch.manual_seed(seed)
        return models.build(arch, data.name, data.num_classes, width=width, act=act)

    name = f"{method}-{arch}-{data.name}" + (f"-{tag}" if tag else "")

    def train(model: torch.nn.Module) -> list:
        gen = torch.Generator().manual_seed(seed)
        adversary = None
        if method == "pgd":
            adversary = pgd_adversary(eps, steps, step_size, warmup, generator=gen)
        elif method == "fgsm_rs":
            adversary = fgsm_rs_adversary(eps, warmup, generator=gen)
        augment = (lambda xb, g: random_crop_flip(xb, generator=g)) if data.name == "cifar10" else None
        history = fit(model, data.x_train, data.y_train, epochs=epochs, batch_size=batch_size, adversary=adversary,
                      augment=augment, generator=gen, checkpoint=cache.checkpoint_path(name, config), **opt)
        return history.as_dict()

    return cache.cached_model(name, config, build, train, device)


REFERENCE_RECIPES = {
    # quick: the real MNIST 5k sample on 2 CPU cores (~10 s standard, ~2 min PGD-7 AT)
    ("quick", "mnist5k"): {"arch": "smallcnn", "std_epochs": 8, "at_epochs": 15, "eps": 0.3, "steps": 7, "warmup": 0.3},
    ("full", "mnist"): {"arch": "smallcnn", "width": 32, "std_epochs": 10, "at_epochs": 30, "eps": 0.3, "steps": 20, "warmup": 0.2},
    ("full", "fashion"): {"arch": "smallcnn", "width": 32, "std_epochs": 10, "at_epochs": 30, "eps": 0.1, "steps": 20, "warmup": 0.2},
    # full: Madry-style CIFAR-10 PGD-7 AT at 8/255 with step 2/255, ResNet-18
    ("full", "cifar10"): {"arch": "resnet18", "std_epochs": 30, "at_epochs": 30, "eps": 8 / 255, "steps": 7,
                          "step_size": 2 / 255, "warmup": 0.0},
    # tiny: for tests only
    ("tiny", "mnist5k"): {"arch": "smallcnn", "width": 8, "std_epochs": 1, "at_epochs": 1, "eps": 0.3, "steps": 2, "warmup": 0.0},
    # tiny on CIFAR-shaped data: the full profile's code path (ResNet-18, crop + flip) in seconds
    ("tiny", "cifar10"): {"arch": "resnet18", "width": 4, "std_epochs": 1, "at_epochs": 1, "eps": 8 / 255, "steps": 2,
                          "step_size": 4 / 255, "warmup": 0.0},
}


def reference_recipe(profile: str, dataset: str) -> dict:
    """The training recipe of the book's reference standard / adversarially trained pair.

    Falls back to the recipe of another profile for the same dataset (e.g. ``quick`` on
    ``mnist``), then to the ``full`` CIFAR-10 recipe for ``cifar10``.
    """
    for key in ((profile, dataset), ("full", dataset), ("quick", dataset), ("tiny", dataset)):
        if key in REFERENCE_RECIPES:
            return dict(REFERENCE_RECIPES[key])
    raise ValueError(f"no reference recipe for dataset {dataset!r}; known: {sorted({d for _, d in REFERENCE_RECIPES})}")


def resolve_recipe(profile: str, dataset: str, *, epochs: int | None = None, eps: float | None = None) -> dict:
    """The reference recipe of ``profile`` on ``dataset`` with a chapter's overrides applied.

    ``epochs`` replaces both the standard and the adversarial epochs, ``eps`` the training
    budget. :func:`advbook.chapter.setup` stores the result as ``cfg.recipe``, so the results
    JSON records the epochs and budget that really ran.
    """
    recipe = reference_recipe(profile, dataset)
    if epochs is not None:
        recipe["std_epochs"] = recipe["at_epochs"] = epochs
    if eps is not None:
        recipe["eps"] = eps
    return recipe


REFERENCE_KINDS = ("standard", "adversarial")


def reference_model(data: TensorData, recipe: dict, kind: str = "standard", seed: int = 0,
                    tag: str = "") -> tuple[torch.nn.Module, list]:
    """One of the book's reference models, ``(model, history)``: the one way chapters get them.

    ``recipe`` is ``cfg.recipe`` (:func:`resolve_recipe`). ``standard`` is trained on clean
    inputs, ``adversarial`` with PGD (Madry et al. 2018) at ``recipe["eps"]``; both are cached,
    so every chapter that asks with the same recipe and seed gets the primer's models.
    """
    if kind not in REFERENCE_KINDS:
        raise ValueError(f"reference model kind {kind!r} is not known; allowed: {', '.join(REFERENCE_KINDS)}")
    common = {"arch": recipe["arch"], "width": recipe.get("width"), "seed": seed, "tag": tag}
    if kind == "standard":
        return train_classifier(data, method="standard", epochs=recipe["std_epochs"], **common)
    return train_classifier(data, method="pgd", epochs=recipe["at_epochs"], eps=recipe["eps"], steps=recipe["steps"],
                            step_size=recipe.get("step_size"), warmup=recipe["warmup"], **common)


def reference_models(data: TensorData, recipe: dict, seed: int = 0, tag: str = "") -> dict:
    """The standard and PGD-trained reference pair (see :func:`reference_model`).

    Returns ``{"standard": (model, history), "adversarial": (model, history), "recipe": recipe}``.
    """
    pair = {kind: reference_model(data, recipe, kind, seed, tag) for kind in REFERENCE_KINDS}
    return {**pair, "recipe": recipe}
