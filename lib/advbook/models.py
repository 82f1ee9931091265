"""Classifiers used across chapters.

Every model takes images in ``[0, 1]`` and normalises them itself (a fixed
:class:`Normalize` first layer), so attacks work in pixel space. Every model exposes
``features(x)`` (the penultimate representation) and ``head`` (the final linear map),
so that ``model(x) == model.head(model.features(x))``.

The invertible classifier of chapter 1 and the self-gradient network of chapter 2 are
in their chapters' modules under :mod:`advbook.methods`.
"""

from __future__ import annotations

import torch
from torch import nn

MEANS = {"mnist5k": (0.1307,), "mnist": (0.1307,), "fashion": (0.2860,), "cifar10": (0.4914, 0.4822, 0.4465)}
STDS = {"mnist5k": (0.3081,), "mnist": (0.3081,), "fashion": (0.3530,), "cifar10": (0.2470, 0.2435, 0.2616)}
ACTIVATIONS = ("relu", "softplus")


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with fixed (non-trainable) statistics."""

    def __init__(self, mean: tuple, std: tuple):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def activation(name: str, beta: float = 10.0) -> nn.Module:
    """ReLU, or softplus with sharpness ``beta`` (smooth, with non-zero second derivatives)."""
    if name == "relu":
        return nn.ReLU()
    if name == "softplus":
        return nn.Softplus(beta=beta)
    raise ValueError(f"activation {name!r} is not known; allowed: {', '.join(ACTIVATIONS)}")


class SmallCNN(nn.Module):
    """A two-conv, two-FC network for 28x28 (or 32x32) images.

    conv3x3(w)-pool-conv3x3(2w)-pool-fc(hidden)-fc(classes), the shape of the classic
    MNIST networks of the adversarial-training literature, scaled by ``width``. With
    width 16 / hidden 128 it has ~0.2M parameters, and an epoch over 4,000 MNIST images
    takes about a second on 2 CPU cores.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        width: int = 16,
        hidden: int = 128,
        act: str = "relu",
        mean: tuple = (0.1307,),
        std: tuple = (0.3081,),
    ):
        super().__init__()
        self.normalize = Normalize(mean, std)
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), activation(act),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), activation(act),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * w * (image_size // 4) ** 2, hidden), activation(act),
        )
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """The ResNet basic block: two 3x3 convs with batch norm and an identity/1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, act: str):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act = activation(act)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet18(nn.Module):
    """The CIFAR ResNet-18 (He et al. 2016, 3x3 stem, no max-pool), with a width knob.

    ``width=64`` is the standard 11M-parameter net used in adversarial-training papers;
    smaller widths keep the same topology for CPU runs.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        width: int = 64,
        act: str = "relu",
        mean: tuple = (0.4914, 0.4822, 0.4465),
        std: tuple = (0.2470, 0.2435, 0.2616),
    ):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), activation(act))
        layers, c_in = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            c_out = width * 2**i
            layers += [BasicBlock(c_in, c_out, stride, act), BasicBlock(c_out, c_out, 1, act)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(self.stem(self.normalize(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


ARCHITECTURES = ("smallcnn", "resnet18")
MEMORY_FORMAT = torch.channels_last
"""The memory format of the SmallCNN's conv weights (:func:`build`), and of the convolutions in the
invertible net's coupling subnets (chapter 1) and the self-gradient transform (chapter 2). With
channels-last weights the convolutions run in NHWC, which on the 2-core AVX2 CPUs the book is
built on made a SmallCNN training step and an input-gradient (attack) step 25-35% faster with one
torch thread; ``make bench`` measures it on any machine ("channels-last speed-up"). It changes
no value beyond float rounding, and the same seed still gives the same numbers.

Not the ResNet-18: in torch 2.14 on CPU, the backward pass of a strided 1x1 convolution (its
down-sampling shortcut) in channels-last corrupts memory when it has fewer than 8 input channels
(found by the test suite at width 4), so it keeps the default layout."""


def build(arch: str, dataset: str, num_classes: int = 10, width: int | None = None, act: str = "relu", **kwargs) -> nn.Module:
    """Build architecture ``arch`` for ``dataset`` (input shape and normalisation follow the dataset);
    a SmallCNN's conv weights are in :data:`MEMORY_FORMAT`."""
    if dataset not in MEANS:
        raise ValueError(f"dataset {dataset!r} is not known; allowed: {', '.join(MEANS)}")
    channels, size = (3, 32) if dataset == "cifar10" else (1, 28)
    stats = dict(mean=MEANS[dataset], std=STDS[dataset])
    if arch == "smallcnn":
        return SmallCNN(channels, num_classes, size, width=width or 16, act=act, **stats, **kwargs).to(memory_format=MEMORY_FORMAT)
    if arch == "resnet18":
        return ResNet18(channels, num_classes, width=width or 64, act=act, **stats, **kwargs)
    raise ValueError(f"architecture {arch!r} is not known; allowed: {', '.join(ARCHITECTURES)}")
