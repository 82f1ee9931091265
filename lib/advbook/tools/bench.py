"""Throughput figures for the hot paths: ``python -m advbook.tools.bench`` (``make bench``).

One run, one process, one device (the one ``auto`` picks, or ``--device``), so the
figures compare as ratios:

- **training loops**, the same SmallCNN from the same initial weights on the same
  MNIST images, one epoch each at batch 128 with Adam:

  - the library's :func:`advbook.train.fit`;
  - a minimal hand-written loop over the same on-device tensors (``randperm`` + index,
    forward, backward, step: the floor any loop can reach);
  - the loop a reader would write from the torchvision tutorials: a ``Dataset`` of uint8
    images that turns each sample into a PIL image and through ``transforms.ToTensor()``,
    and a ``DataLoader`` with ``shuffle=True`` (no worker processes: on a small CPU they
    compete with training for the same cores);

  each is timed several times, interleaved, and the median is reported;
- **attack steps**: the cost of one step on one image of the library's PGD
  (:func:`advbook.attacks.pgd`) and of APGD-CE from ``pyautoattack`` (the first
  AutoAttack component), on the same model and images;
- **memory format**: the same SmallCNN step (training, and the input gradient an attack
  takes) with its conv weights channels-last (:data:`advbook.models.MEMORY_FORMAT`, what
  :func:`advbook.models.build` returns) and contiguous, as a speed-up;
- throughput of PGD-7 adversarial training, a ResNet-18 training step and the on-device
  crop + flip augmentation;
- **against the limit** (:func:`against_the_limit`): every hot loop (standard and PGD-7
  training, PGD-20, APGD-CE, a universal-perturbation fit, INN training, ResNet-18) in fp32
  and under bf16 autocast, as images/s, achieved GFLOP/s (:func:`count_flops`) and the share
  of the core's GEMM rate of the same precision, measured in the same run (:func:`gemm_rate`).

Clock: wall time, except on a CPU with one torch thread, where the process's CPU time is
used (the same as wall time on an idle machine, but not inflated by other processes
sharing the cores); the JSON records which.

The figures are printed and written, with the device, thread count and versions, to
``<results>/bench.json`` (``$ADVBOOK_RESULTS`` or ``book/results``), which the
reproducibility page shows. They are measurements, not tests.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import attacks, data, models, results, runtime, train
from ..precision import PRECISIONS as PRECISION_CHOICES, autocast


_CLOCK = {"name": "wall", "now": time.perf_counter}


def _use_clock(device: torch.device) -> str:
    """Process CPU time on a one-thread CPU run, else wall time (see the module docstring)."""
    cpu_time = device.type == "cpu" and torch.get_num_threads() == 1
    _CLOCK.update(name="process CPU time" if cpu_time else "wall", now=time.process_time if cpu_time else time.perf_counter)
    return _CLOCK["name"]


def _now() -> float:
    return _CLOCK["now"]()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device, repeat: int = 1) -> float:
    fn()  # warm-up (allocations, cudnn autotune)
    _sync(device)
    start = _now()
    for _ in range(repeat):
        fn()
    _sync(device)
    return (_now() - start) / repeat


class ReaderMNIST(torch.utils.data.Dataset):
    """A dataset as a reader writes it after torchvision's ``MNIST``: uint8 images, PIL + transform per sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def library_loop(model, x, y, batch_size: int, seed: int) -> int:
    """One epoch of :func:`advbook.train.fit`; returns the number of images trained on."""
    train.fit(model, x, y, epochs=1, batch_size=batch_size, lr=1e-3, optimizer="adam",
              generator=torch.Generator().manual_seed(seed))
    return len(x) - len(x) % batch_size


def minimal_loop(model, x, y, batch_size: int, seed: int) -> int:
    """One epoch of the shortest correct loop over on-device tensors."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).to(x.device)
    model.train()
    stop = len(x) - len(x) % batch_size
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return stop


def dataloader_loop(model, dataset, batch_size: int, seed: int, device: torch.device) -> int:
    """One epoch of the torchvision-style loop: ``DataLoader(dataset, shuffle=True)``, batches moved to the device."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    model.train()
    seen = 0
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(xb)
    return seen


def compare_training_loops(x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, repeats: int = 5,
                           seed: int = 0) -> dict:
    """Images/s of the three loops (median of ``repeats`` interleaved epochs), same model and images."""
    from torchvision import transforms

    device = x.device
    torch.manual_seed(seed)
    base = models.build("smallcnn", "mnist5k").to(device)
    images = (x.squeeze(1) * 255).round().to(torch.uint8).cpu().numpy()
    dataset = ReaderMNIST(images, y.cpu().numpy(), transforms.ToTensor())

    def make(xs, ys, reader) -> dict:
        return {
            "library": lambda m: library_loop(m, xs, ys, batch_size, seed),
            "minimal": lambda m: minimal_loop(m, xs, ys, batch_size, seed),
            "dataloader": lambda m: dataloader_loop(m, reader, batch_size, seed, device),
        }

    small = max(batch_size, len(x) // 4)
    for loop in make(x[:small], y[:small], torch.utils.data.Subset(dataset, range(small))).values():
        loop(copy.deepcopy(base))  # warm-up on a quarter of the data
    loops = make(x, y, dataset)
    rates = {name: [] for name in loops}
    for _ in range(repeats):
        for name, loop in loops.items():
            model = copy.deepcopy(base)
            _sync(device)
            start = _now()
            seen = loop(model)
            _sync(device)
            rates[name].append(seen / (_now() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def compare_attack_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 0.3,
                         steps: int = 20, repeats: int = 3) -> dict:
    """Seconds per image and step of library PGD and of pyautoattack's APGD-CE (``steps`` iterations each).

    Both run on all of ``x`` (APGD through ``attack_single_run``, so it does not skip
    misclassified points); median of ``repeats`` interleaved runs after a warm-up.
    """
    from pyautoattack.autopgd_base import APGDAttack

    device = x.device
    apgd = APGDAttack(model, n_iter=steps, norm="Linf", n_restarts=1, eps=eps, seed=0, loss="ce", device=device)

    def run_apgd():
        apgd.init_hyperparam(x)
        apgd.attack_single_run(x, y)

    runs = {"pgd": lambda: attacks.pgd(model, x, y, eps, steps=steps, generator=torch.Generator().manual_seed(0)),
            "apgd": run_apgd}
    seconds = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in runs.items():
            _sync(device)
            start = _now()
            fn()
            _sync(device)
            seconds[name].append(_now() - start)
    return {name: statistics.median(s) / (len(x) * steps) for name, s in seconds.items()}


def compare_memory_formats(x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, steps: int = 10,
                           repeats: int = 5) -> dict:
    """Speed-up of channels-last conv weights over contiguous ones for a SmallCNN: ``{"train", "input_grad"}``.

    Each figure is ``time(contiguous) / time(channels-last)`` for ``steps`` steps on one batch
    (median of ``repeats`` interleaved runs after a warm-up); > 1 means channels-last is faster.
    """
    device = x.device
    xb, yb = x[:batch_size], y[:batch_size]
    torch.manual_seed(0)
    nets = {"channels_last": models.build("smallcnn", "mnist5k").to(device)}
    nets["contiguous"] = copy.deepcopy(nets["channels_last"]).to(memory_format=torch.contiguous_format)
    opts = {name: torch.optim.Adam(net.parameters(), lr=1e-3) for name, net in nets.items()}

    def train_step(name):
        loss = F.cross_entropy(nets[name](xb), yb)
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    def input_grad(name):
        xa = xb.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(nets[name](xa), yb), xa)

    out = {}
    for kind, step in (("train", train_step), ("input_grad", input_grad)):
        seconds = {name: [] for name in nets}
        for name in nets:
            step(name)  # warm-up
        for _ in range(repeats):
            for name in nets:
                seconds[name].append(_timed(lambda: step(name), device, repeat=steps))
        out[kind] = statistics.median(seconds["contiguous"]) / statistics.median(seconds["channels_last"])
    return out


# ----------------------------------------------------------------------------- against the core's limit

PRECISIONS = tuple(p for p in PRECISION_CHOICES if p != "auto")
"""``fp32``: plain float32; ``bf16``: ``torch.autocast`` to bfloat16 (:func:`advbook.precision.autocast`, the
switch the chapters' training loops use)."""


class _InPrecision(torch.nn.Module):
    """``model`` evaluated under :func:`advbook.precision.autocast`, returning float32 logits (what an attack sees)."""

    def __init__(self, model: torch.nn.Module, precision: str, device: torch.device):
        super().__init__()
        self.model, self.precision, self.device = model, precision, device

    def forward(self, x):
        with autocast(self.device, self.precision):
            return self.model(x).float()


def gemm_rate(device: torch.device, precision: str, size: int = 1024, repeat: int = 5) -> float:
    """The device's practical matrix-multiply rate in FLOP/s: ``2 n^3`` per ``n x n`` product.

    ``bf16`` multiplies bfloat16 matrices (what autocast runs the layers in); the rate is the
    denominator of every "share of the limit" the bench reports.
    """
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    return 2 * size ** 3 / _timed(lambda: a @ b, device, repeat=repeat)


def count_flops(fn) -> int:
    """Floating-point operations of one call of ``fn``, by ``torch.utils.flop_counter``'s formulas.

    The formulas (``flop_registry``) cover matrix multiplies and convolutions, forward and
    backward, where all but a few percent of a network's arithmetic goes; element-wise work is
    not counted, so a share of the GEMM rate computed from it slightly under-states the work.
    Counted in a plain dispatch mode: ``FlopCounterMode``'s module tracker breaks
    ``torch.autograd.grad`` with respect to an input, which every attack takes.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Count.total += formula(*args, **kwargs, out_val=out)
            return out

    with Count():
        fn()
    return Count.total


def optimiser_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, labels: torch.Tensor, precision: str,
                   device: torch.device):
    """``step(inputs)``: one optimiser step of ``model`` on a batch, cross-entropy against ``labels``, the
    forward pass under ``precision`` (:func:`advbook.precision.autocast`)."""
    def step(inputs: torch.Tensor) -> None:
        model.train()
        with autocast(device, precision):
            loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def hot_loops(x: torch.Tensor, y: torch.Tensor, device: torch.device, precision: str, batch_size: int = 128) -> dict:
    """The book's hot loops as ``name -> (step, images per step)``; each step runs under ``precision``.

    Standard training and PGD-7 adversarial training of the SmallCNN (Adam, batch
    ``batch_size``), a PGD-20 attack and APGD-CE (20 iterations, ``pyautoattack``) on a batch,
    a universal-perturbation fit (10 steps of SGD-UAP's objective), one epoch of INN training
    (chapter 1's invertible classifier, CE + likelihood) and a ResNet-18 training step on
    CIFAR-shaped input. Attacks see float32 logits; in ``bf16`` the network runs in bfloat16.
    """
    from .. import universal
    from ..methods import invariance

    ctx = lambda: autocast(device, precision)  # noqa: E731
    gen = torch.Generator().manual_seed(0)
    xb, yb = x[:batch_size], y[:batch_size]
    cnn = models.build("smallcnn", "mnist5k").to(device)
    opt = torch.optim.Adam(cnn.parameters(), lr=1e-3)
    attacked = _InPrecision(cnn, precision, device)

    def step_of(model, optimizer, labels):
        return optimiser_step(model, optimizer, labels, precision, device)

    train_step = step_of(cnn, opt, yb)

    def pgd_at_step():
        cnn.eval()
        adv = attacks.pgd(attacked, xb, yb, 0.3, steps=7, generator=gen)
        train_step(adv)

    def apgd():
        from .. import evaluation

        cnn.eval()
        evaluation.autoattack(attacked, xb, yb, 0.3, components=["apgd-ce"], n_iter=20, cache=False)

    def uap_fit():
        cnn.eval()
        universal.ascend(universal.cross_entropy_objective(attacked), xb, 0.3, y=yb, steps=10,
                         batch_size=batch_size, generator=gen)

    n_inn = min(len(x), 4 * batch_size)
    quick = invariance.PROFILES["quick"]  # the chapter's quick architecture
    inn = invariance.InvertibleClassifier(tuple(x.shape[1:]), 10, seed=0, **{k: quick[k] for k in (
        "levels", "blocks", "hidden", "dense_blocks", "dense_hidden", "coupling", "logit_bn")}).to(device)

    def inn_epoch():
        with ctx():
            invariance.train_inn(inn, x[:n_inn], y[:n_inn], objective="ce_mle", epochs=1, batch_size=batch_size,
                                 generator=gen)

    width = 64 if device.type == "cuda" else 16
    resnet = models.build("resnet18", "cifar10", width=width).to(device)
    ropt = torch.optim.SGD(resnet.parameters(), lr=0.01, momentum=0.9)
    xc = torch.rand(batch_size if device.type == "cuda" else 32, 3, 32, 32, device=device)
    yc = torch.randint(0, 10, (len(xc),), device=device, generator=torch.Generator(device=device).manual_seed(0))
    resnet_step = step_of(resnet, ropt, yc)

    return {
        f"standard training (SmallCNN, batch {batch_size})": (lambda: train_step(xb), batch_size),
        "PGD-7 adversarial training": (pgd_at_step, batch_size),
        "PGD-20 attack": (lambda: attacks.pgd(attacked, xb, yb, 0.3, steps=20, generator=gen), batch_size),
        "APGD-CE, 20 iterations": (apgd, batch_size),
        "UAP fit (SGD-UAP objective), 10 steps": (uap_fit, 10 * batch_size),
        "INN training (ch.1, CE + likelihood), 1 epoch": (inn_epoch, n_inn - n_inn % batch_size),
        f"ResNet-18 training step (width {width})": (lambda: resnet_step(xc), len(xc)),
    }


def stacked_step(nets: list, device: torch.device, precision: str = "fp32", lr: float = 1e-3):
    """One Adam step of the models ``nets`` stacked: ``(step, params)`` with ``step(xs, ys)`` on batches of
    shape ``[len(nets), batch, ...]`` and ``params`` the stacked parameters (leading model dimension).

    The parameters (:func:`torch.func.stack_module_state`) run in one forward pass ``vmap(functional_call)``
    over the models and their own batches (a batched convolution: grouped over models); the sum of the
    models' mean losses is backpropagated at once (each model's gradient is that of its own loss), and one
    Adam step over the stacked tensors is ``len(nets)`` independent Adams (Adam is element-wise).
    """
    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state(nets)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    base = copy.deepcopy(nets[0]).to("meta")
    opt = torch.optim.Adam(params.values(), lr=lr)

    def one(p, b, xb):
        return functional_call(base, (p, b), (xb,))

    def step(xs: torch.Tensor, ys: torch.Tensor) -> None:
        with autocast(device, precision):
            logits = vmap(one)(params, buffers, xs)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), ys.flatten(0, 1)) * len(nets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, params


def compare_stacked_replicates(x: torch.Tensor, y: torch.Tensor, device: torch.device, k: int = 4,
                               batch_size: int = 128, repeats: int = 5, precision: str = "fp32") -> dict:
    """Replicates at the cost of one? ``k`` SmallCNNs trained one step each, one after another, against the
    same ``k`` models stacked and trained in one vectorised step (:func:`stacked_step`).

    Each model gets its own batch; both variants run interleaved ``repeats`` times (median). Returns
    per-model images/s of each and ``speedup`` = stacked / sequential: below 1, stacking does not pay.
    """
    nets = []
    for i in range(k):
        torch.manual_seed(i)
        nets.append(models.build("smallcnn", "mnist5k").to(device))
    opts = [torch.optim.Adam(n.parameters(), lr=1e-3) for n in nets]
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(x), (k, batch_size), generator=gen).to(x.device)
    xs, ys = x[idx], y[idx]

    steps = [optimiser_step(net, opt, yb, precision, device) for net, opt, yb in zip(nets, opts, ys)]

    def sequential():
        for step_one, xb in zip(steps, xs):
            step_one(xb)

    step, _ = stacked_step(nets, device, precision)
    stacked = lambda: step(xs, ys)  # noqa: E731
    sequential(), stacked()  # warm-up
    times = {"sequential": [], "stacked": []}
    for _ in range(repeats):
        times["sequential"].append(_timed(sequential, device))
        times["stacked"].append(_timed(stacked, device))
    seq, stk = statistics.median(times["sequential"]), statistics.median(times["stacked"])
    return {"k": k, "precision": precision, "sequential_images_per_s": k * batch_size / seq,
            "stacked_images_per_s": k * batch_size / stk, "speedup": seq / stk}


def against_the_limit(x: torch.Tensor, y: torch.Tensor, device: torch.device, repeats: int = 3,
                      batch_size: int = 128, only: str = "") -> list[dict]:
    """Each hot loop in fp32 and bf16: images/s, achieved GFLOP/s and its share of the GEMM rate.

    The GEMM rate of each precision is measured in the same run (:func:`gemm_rate`), so the
    share compares a loop with what this core does on large matrix multiplies right now.
    Rows ``{"loop", "precision", "images_per_s", "gflops", "share", "gemm_gflops"}``; ``only``
    keeps the loops whose name contains it.
    """
    rows = []
    for precision in PRECISIONS:
        limit = gemm_rate(device, precision)
        for name, (step, images) in hot_loops(x, y, device, precision, batch_size).items():
            if only not in name:
                continue
            step()  # warm-up and ActNorm initialisation
            flops = count_flops(step)
            seconds = statistics.median(_timed(step, device) for _ in range(repeats))
            rows.append({"loop": name, "precision": precision, "images_per_s": images / seconds,
                         "gflops": flops / seconds / 1e9, "share": flops / seconds / limit,
                         "gemm_gflops": limit / 1e9})
    return rows


def limit_table(rows: list[dict]) -> str:
    """The hot loops against the limit as a text table, fp32 and bf16 side by side."""
    by = {(r["loop"], r["precision"]): r for r in rows}
    loops = list(dict.fromkeys(r["loop"] for r in rows))
    gemm = {r["precision"]: r["gemm_gflops"] for r in rows}
    lines = ["", "  hot loops against the core's GEMM rate "
             + ", ".join(f"({p}: {g:,.0f} GFLOP/s)" for p, g in gemm.items()),
             f"  {'loop':<48s} " + " ".join(f"{p + ' img/s':>11s} {'GFLOP/s':>8s} {'share':>6s}" for p in gemm)]
    for loop in loops:
        cells = []
        for p in gemm:
            r = by.get((loop, p))
            cells.append(f"{r['images_per_s']:>11,.0f} {r['gflops']:>8.1f} {r['share']:>6.0%}" if r else " " * 27)
        lines.append(f"  {loop:<48s} " + " ".join(cells))
    return "\n".join(lines)


def run(device: str = "auto", n: int = 2048, repeats: int = 5) -> tuple[list[dict], list[dict]]:
    """The figures as rows ``{"name", "value", "unit"}``, and the hot loops against the limit
    (:func:`against_the_limit`)."""
    dev = runtime.resolve_device(device)
    _use_clock(dev)
    runtime.seed_everything(0)
    ds = data.load("mnist5k", device=dev, n_train=n, n_test=256)
    x, y = ds.x_train, ds.y_train
    rows = []

    def row(name: str, value: float, unit: str) -> None:
        rows.append({"name": name, "value": float(value), "unit": unit})

    loops = compare_training_loops(x, y, repeats=repeats)
    row("train.fit (library), SmallCNN, MNIST, batch 128", loops["library"], "images/s")
    row("minimal loop over on-device tensors", loops["minimal"], "images/s")
    row("torchvision-style Dataset + DataLoader loop", loops["dataloader"], "images/s")
    row("train.fit / minimal loop", loops["library"] / loops["minimal"], "ratio")
    row("train.fit / DataLoader loop", loops["library"] / loops["dataloader"], "ratio")

    cnn = models.build("smallcnn", "mnist5k").to(dev)
    gen = torch.Generator().manual_seed(0)
    train.fit(cnn, x, y, epochs=1, batch_size=128, generator=gen)
    cnn.eval()
    m = min(len(ds.x_test), 256)
    step = compare_attack_steps(cnn, ds.x_test[:m], ds.y_test[:m], repeats=repeats)
    row("PGD step (library), per image", step["pgd"] * 1e6, "us")
    row("APGD-CE step (pyautoattack), per image", step["apgd"] * 1e6, "us")
    row("APGD-CE step / PGD step", step["apgd"] / step["pgd"], "ratio")

    speedup = compare_memory_formats(x, y, repeats=repeats)
    row("SmallCNN train step, channels-last speed-up", speedup["train"], "ratio")
    row("SmallCNN input-gradient step, channels-last speed-up", speedup["input_grad"], "ratio")

    k = min(len(x), 1024)
    adv = train.pgd_adversary(0.3, steps=7, generator=gen)
    seconds = _timed(lambda: train.fit(cnn, x[:k], y[:k], epochs=1, batch_size=128, adversary=adv, generator=gen), dev)
    row("SmallCNN PGD-7 adversarial training", k / seconds, "images/s")

    width = 64 if dev.type == "cuda" else 16
    resnet = models.build("resnet18", "cifar10", width=width).to(dev)
    xc = torch.rand(256 if dev.type == "cuda" else 64, 3, 32, 32, device=dev)
    yc = torch.randint(0, 10, (len(xc),), device=dev)
    opt = torch.optim.SGD(resnet.parameters(), lr=0.01)

    def resnet_step():
        resnet.train()
        loss = F.cross_entropy(resnet(xc), yc)
        opt.zero_grad()
        loss.backward()
        opt.step()

    seconds = _timed(resnet_step, dev, repeat=3)
    row(f"ResNet-18 (width {width}) training step, CIFAR 32x32", len(xc) / seconds, "images/s")
    big = torch.rand(4096, 3, 32, 32, device=dev)
    seconds = _timed(lambda: data.random_crop_flip(big, 4, gen), dev, repeat=3)
    row("random crop + flip augmentation (on device)", len(big) / seconds, "images/s")
    for k in (2, 4, 8):
        for precision in PRECISIONS:
            st = compare_stacked_replicates(x, y, dev, k=k, repeats=repeats, precision=precision)
            row(f"{k} SmallCNNs stacked (vmap) vs one after another, {precision}: speed-up", st["speedup"], "ratio")
    return rows, against_the_limit(x, y, dev, repeats=max(1, min(repeats, 3)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--n", type=int, default=2048, help="training images per epoch in the loop comparison")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs per compared loop / attack (median)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: <results>/bench.json)")
    args = parser.parse_args(argv)
    dev = runtime.resolve_device(args.device)
    print(f"advbook bench on {runtime.device_name(dev)}, torch {torch.__version__}", flush=True)
    rows, limit = run(args.device, args.n, args.repeats)
    print(f"  (clock: {_CLOCK['name']})")
    for r in rows:
        fmt = "{:>12,.2f}" if r["unit"] == "ratio" else "{:>12,.0f}"
        print(f"  {r['name']:<52s} {fmt.format(r['value'])} {r['unit']}")
    print(limit_table(limit))
    record = {"rows": rows, "against_the_limit": limit, "device": runtime.device_name(dev), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "clock": _CLOCK["name"], "n": args.n, "repeats": args.repeats, "batch_size": 128,
              "provenance": results.provenance(dev)}
    out = args.out or results.results_dir() / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
