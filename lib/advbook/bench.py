"""Throughput figures for the hot paths: ``python -m advbook.bench`` (``make bench``).

Prints images per second for standard training, PGD adversarial training, the PGD
attack, AutoAttack's APGD-CE, ResNet-18 training steps and on-device augmentation, on
the device ``auto`` picks (or ``--device``). These are the numbers to compare before and
after a change to the library; they are measurements, not tests.
"""

from __future__ import annotations

import argparse
import time

import torch

from . import attacks, data, evaluation, models, runtime, train


def _timed(fn, device: torch.device, repeat: int = 1) -> float:
    fn()  # warm-up (allocations, cudnn autotune)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat


def run(device: str = "auto", n: int = 1024) -> list[tuple[str, float, str]]:
    dev = runtime.resolve_device(device)
    runtime.seed_everything(0)
    ds = data.load("mnist5k", device=dev, n_train=n, n_test=n)
    x, y = ds.x_train, ds.y_train
    cnn = models.build("smallcnn", "mnist5k").to(dev)
    gen = torch.Generator().manual_seed(0)
    rows = []

    seconds = _timed(lambda: train.fit(cnn, x, y, epochs=1, batch_size=128, generator=gen), dev)
    rows.append(("SmallCNN standard training (MNIST 28x28)", n / seconds, "images/s"))
    adv = train.pgd_adversary(0.3, steps=7, generator=gen)
    seconds = _timed(lambda: train.fit(cnn, x, y, epochs=1, batch_size=128, adversary=adv, generator=gen), dev)
    rows.append(("SmallCNN PGD-7 adversarial training", n / seconds, "images/s"))
    cnn.eval()
    seconds = _timed(lambda: evaluation.attack_all(attacks.pgd, cnn, x, y, 256, eps=0.3, steps=20, generator=gen), dev)
    rows.append(("PGD-20 attack on SmallCNN", n / seconds, "images/s"))
    m = min(n, 256)
    seconds = _timed(lambda: evaluation.autoattack(cnn, x[:m], y[:m], 0.3, components=("apgd-ce",), n_iter=20), dev)
    rows.append(("APGD-CE (20 iterations) on SmallCNN", m / seconds, "images/s"))

    width = 64 if dev.type == "cuda" else 16
    resnet = models.build("resnet18", "cifar10", width=width).to(dev)
    xc = torch.rand(256 if dev.type == "cuda" else 64, 3, 32, 32, device=dev)
    yc = torch.randint(0, 10, (len(xc),), device=dev)
    opt = torch.optim.SGD(resnet.parameters(), lr=0.01)

    def step():
        resnet.train()
        loss = torch.nn.functional.cross_entropy(resnet(xc), yc)
        opt.zero_grad()
        loss.backward()
        opt.step()

    seconds = _timed(step, dev, repeat=3)
    rows.append((f"ResNet-18 (width {width}) training step, CIFAR 32x32", len(xc) / seconds, "images/s"))
    big = torch.rand(4096, 3, 32, 32, device=dev)
    seconds = _timed(lambda: data.random_crop_flip(big, 4, gen), dev, repeat=3)
    rows.append(("random crop + flip augmentation (on device)", len(big) / seconds, "images/s"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--n", type=int, default=1024, help="images per measurement")
    args = parser.parse_args(argv)
    dev = runtime.resolve_device(args.device)
    print(f"advbook bench on {runtime.device_name(dev)}, torch {torch.__version__}")
    for name, value, unit in run(args.device, args.n):
        print(f"  {name:<52s} {value:>12,.0f} {unit}")


if __name__ == "__main__":
    main()
