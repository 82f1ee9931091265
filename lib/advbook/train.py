"""Training loops over on-device tensors: standard, adversarial (PGD / FGSM-RS), distillation.

One loop, :func:`fit`, covers them all. Adversarial training passes an ``adversary``
that maps a clean batch to the inputs to train on (Madry et al. 2018, eq. 2.1: the
inner maximisation); distillation passes soft targets instead of labels (cross-entropy
accepts class probabilities). The optimiser follows a one-cycle learning-rate schedule
(linear warm-up then linear decay), which trains small nets well in few epochs.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from . import attacks, precision, progress
from .data import batches

OPTIMIZERS = ("sgd", "adam")



def default_optimizer(arch: str) -> dict:
    """Adam 1e-3 for the small CNN; SGD 0.1 (Nesterov, weight decay 5e-4) for ResNets."""
    if arch == "resnet18":
        return {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4}
    return {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}

@dataclass
class History:
    """Per-epoch records; ``train_seconds`` excludes time spent in ``on_epoch`` callbacks."""

    epochs: list = field(default_factory=list)

    def append(self, record: dict) -> None:
        self.epochs.append(record)

    def column(self, key: str) -> list:
        return [r.get(key) for r in self.epochs]

    def as_dict(self) -> list:
        return list(self.epochs)


def one_cycle(total_steps: int, peak: float, warmup: float = 0.2) -> Callable[[int], float]:
    """Learning-rate multiplier: linear 0 -> 1 over ``warmup`` of training, then linear to 0."""
    up = max(1, int(total_steps * warmup))

    def factor(step: int) -> float:
        if step < up:
            return (step + 1) / up
        return max(0.0, (total_steps - step) / max(1, total_steps - up))

    return factor


def make_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer {name!r} is not known; allowed: {', '.join(OPTIMIZERS)}")


def fit(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    adversary: Callable | None = None,
    augment: Callable | None = None,
    loss_fn: Callable | None = None,
    generator: torch.Generator | None = None,
    on_epoch: Callable[[int, torch.nn.Module], dict] | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> History:
    """Train ``model`` on ``(x, y)`` for ``epochs`` and return the per-epoch :class:`History`.

    ``y`` holds int labels or (for distillation) per-sample class probabilities.
    ``adversary(model, xb, yb, progress) -> xb_adv`` is called with the model in eval
    mode (so batch-norm statistics are not polluted by the attack); ``progress`` in
    ``[0, 1)`` is the share of training done, for eps warm-up. ``augment(xb, generator)``
    runs on the device before the adversary. ``on_epoch(epoch, model)`` may return extra
    metrics to record; its time is excluded from ``train_seconds``.

    ``checkpoint``: a file written atomically after every epoch (model, optimiser,
    schedule, history and the data-order generator). If it exists when ``fit`` starts,
    training resumes after the last finished epoch, so an interrupted run loses at most
    one epoch and, on CPU, ends with the same weights as an uninterrupted one.

    The loop never waits for the device inside an epoch: the loss and accuracy sums stay
    on the device (in float64, so the recorded numbers equal a Python-float sum) and are
    read once per epoch. A progress bar (:mod:`advbook.progress`) counts the batches.

    The forward passes of training and of the ``adversary`` run in the training arithmetic
    (:func:`advbook.precision.autocast`: bfloat16 under the ``bf16`` switch); ``on_epoch`` and
    everything after ``fit`` see the float32 model.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    loss_fn = loss_fn or F.cross_entropy
    opt = make_optimizer(model, optimizer, lr, weight_decay)
    steps_per_epoch = max(1, len(x) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, one_cycle(epochs * steps_per_epoch, lr))
    history, train_seconds, first = History(), 0.0, 1
    if checkpoint is not None and Path(checkpoint).exists():
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            if generator is not None:
                generator.set_state(state["generator"])
            history.epochs, first = state["history"], state["epoch"] + 1
            train_seconds = history.epochs[-1]["train_seconds"] if history.epochs else 0.0
        except Exception as exc:  # a damaged checkpoint: start over rather than use it
            warnings.warn(f"checkpoint {checkpoint} is unusable ({exc.__class__.__name__}); training from scratch")
            history, train_seconds, first = History(), 0.0, 1
    bar = progress.bar(total=(epochs - first + 1) * steps_per_epoch, desc="training", unit="batch")
    for epoch in range(first, epochs + 1):
        start = time.perf_counter()
        total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
        correct = torch.zeros((), dtype=torch.long, device=x.device)
        seen = 0
        for i, (xb, yb) in enumerate(batches(x, y, batch_size, shuffle=True, generator=generator, drop_last=True)):
            if augment is not None:
                xb = augment(xb, generator)
            if adversary is not None:
                model.eval()
                with precision.autocast(x.device):
                    xb = adversary(model, xb, yb, ((epoch - 1) * steps_per_epoch + i) / (epochs * steps_per_epoch))
            model.train()
            with precision.autocast(x.device):
                logits = model(xb)
                loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            labels = yb if yb.dtype == torch.long else yb.argmax(1)
            total_loss += loss.detach().double() * len(xb)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(xb)
            bar.update()
        model.eval()
        total_loss, correct = total_loss.item(), correct.item()
        train_seconds += time.perf_counter() - start
        record = {"epoch": epoch, "loss": total_loss / seen, "train_acc": correct / seen, "train_seconds": train_seconds}
        bar.set_postfix(epoch=epoch, loss=f"{record['loss']:.3f}", acc=f"{record['train_acc']:.3f}")
        if on_epoch is not None:
            record.update(on_epoch(epoch, model) or {})
        history.append(record)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, model, opt, schedule, generator, history, epoch)
    bar.close()
    model.eval()
    return history


def _save_checkpoint(path, model, opt, schedule, generator, history: History, epoch: int) -> None:
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": schedule.state_dict(),
             "history": history.epochs, "epoch": epoch}
    if generator is not None:
        state["generator"] = generator.get_state()
    tmp = Path(f"{path}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def eps_schedule(eps: float, progress: float, warmup: float) -> float:
    """Linear eps warm-up: ``eps * min(1, progress / warmup)`` (0 warm-up: constant eps).

    Ramping eps up over the first part of training is the standard remedy for
    adversarial training that never leaves chance accuracy at large eps (MNIST, eps 0.3).
    """
    return eps if warmup <= 0 else eps * min(1.0, progress / warmup)


def pgd_adversary(eps: float, steps: int = 10, step_size: float | None = None, warmup: float = 0.0,
                  generator: torch.Generator | None = None) -> Callable:
    """The inner maximisation of PGD adversarial training (Madry et al. 2018): PGD-``steps`` on cross-entropy.

    ``step_size`` defaults to ``2.5 * eps / steps``, scaled with the warmed-up eps.
    """

    def adversary(model, xb, yb, progress=1.0):
        e = eps_schedule(eps, progress, warmup)
        step = None if step_size is None else step_size * e / eps
        return attacks.pgd(model, xb, yb, e, steps=steps, step_size=step, generator=generator)

    return adversary


def fgsm_rs_adversary(eps: float, warmup: float = 0.0, generator: torch.Generator | None = None) -> Callable:
    """FGSM with random start, step ``1.25 eps`` (Wong et al. 2020): adversarial training at ~2x standard cost."""

    def adversary(model, xb, yb, progress=1.0):
        return attacks.fgsm_random_start(model, xb, yb, eps_schedule(eps, progress, warmup), generator=generator)

    return adversary


def distillation_loss(temperature: float) -> Callable:
    """Hinton et al. (2015) soft-target loss ``T^2 * CE(softmax(z_s / T), p_teacher)``.

    ``p_teacher`` must already be ``softmax(z_teacher / T)`` (see :func:`soft_targets`).
    """

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits / temperature, targets) * temperature**2

    return loss


def soft_targets(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(z / T)``: the teacher's class probabilities at temperature ``T``."""
    return F.softmax(teacher_logits / temperature, dim=1)
