"""Trained classifiers shared between chapters, built once and then served from the cache.

:func:`train_classifier` is the one place where a standard, PGD-adversarially-trained or
FGSM-RS-trained classifier is made. Its cache key covers the data (name, size and a
fingerprint of the split), the architecture and every training setting, so the primer's
standard and adversarially trained models are reused by later chapters that ask for the
same settings, and never reused when anything differs.
"""

from __future__ import annotations

import torch

from . import cache, models
from .data import TensorData, random_crop_flip
from .train import default_optimizer, fgsm_rs_adversary, fit, pgd_adversary

METHODS = ("standard", "pgd", "fgsm_rs")


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
        "data": data.identity(),
        "arch": arch, "width": width, "act": act, "method": method, "epochs": epochs,
        "eps": eps if method != "standard" else 0.0, "steps": steps if method == "pgd" else None,
        "step_size": step_size if method == "pgd" else None, "warmup": warmup if method != "standard" else 0.0,
        "batch_size": batch_size, "seed": seed, "tag": tag, **opt,
    }
    name = f"{method}-{arch}-{data.name}" + (f"-{tag}" if tag else "")
    torch.manual_seed(seed)
    model = models.build(arch, data.name, data.num_classes, width=width, act=act)
    with cache.trained_model(name, config, model, (train_classifier,), data.x_train.device) as run:
        if run.needed:
            gen = torch.Generator().manual_seed(seed)
            adversary = None
            if method == "pgd":
                adversary = pgd_adversary(eps, steps, step_size, warmup, generator=gen)
            elif method == "fgsm_rs":
                adversary = fgsm_rs_adversary(eps, warmup, generator=gen)
            augment = (lambda xb, g: random_crop_flip(xb, generator=g)) if data.name == "cifar10" else None
            run.record = fit(model, data.x_train, data.y_train, epochs=epochs, batch_size=batch_size,
                             adversary=adversary, augment=augment, generator=gen, checkpoint=run.checkpoint,
                             **opt).as_dict()
    return model, run.record


REFERENCE_KINDS = ("standard", "adversarial")


def reference_model(data: TensorData, recipe: dict, kind: str = "standard", seed: int = 0,
                    tag: str = "") -> tuple[torch.nn.Module, list]:
    """One of the book's reference models, ``(model, history)``: the one way chapters get them.

    ``recipe`` is ``cfg.recipe`` (:meth:`advbook.profiles.Profile.recipe`). ``standard`` is trained on clean
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
