"""Shared fixtures: an isolated cache and results dir, the real MNIST sample, a tiny trained model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def isolated_dirs(tmp_path_factory):
    """Keep the test suite's cache and results away from the user's."""
    base = tmp_path_factory.mktemp("advbook")
    os.environ["ADVBOOK_CACHE"] = str(base / "cache")
    os.environ["ADVBOOK_RESULTS"] = str(base / "results")
    os.environ["ADVBOOK_DOWNLOAD"] = "0"
    os.environ["ADVBOOK_PROGRESS"] = "0"  # no progress bars in test output
    yield base


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """``chapter.setup`` pins torch to one CPU thread and sets the training arithmetic, as chapters
    run; the tests that call it in this process must not change the tests after them."""
    from advbook import precision

    threads, arithmetic = torch.get_num_threads(), precision.training()
    yield
    torch.set_num_threads(threads)
    precision.set_training(arithmetic)


def write_fake_cifar10(root: Path, per_batch: int = 120, n_test: int = 200, seed: int = 0) -> Path:
    """CIFAR-10 in its real on-disk format (``cifar-10-batches-py/`` pickles), generated.

    Each class gets its own mean colour plus noise, so a model can learn something and
    every code path sees a non-degenerate task. Returns ``root`` (use it as ``ADVBOOK_DATA``).
    """
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    colours = rng.integers(40, 216, (10, 3))
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = colours[labels][:, :, None] + rng.normal(0, 40, (n, 3, 1024))
        entry = {b"data": images.clip(0, 255).astype(np.uint8).reshape(n, 3072), b"labels": labels.tolist()}
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh)
    return root


@pytest.fixture(scope="session")
def mnist():
    from advbook import data

    return data.load("mnist5k", n_train=600, n_test=200)


@pytest.fixture(scope="session")
def trained(mnist):
    """A small CNN trained for five epochs on 600 real MNIST images (about 85-90% test accuracy)."""
    from advbook import models, train

    torch.manual_seed(0)
    model = models.build("smallcnn", "mnist5k")
    train.fit(model, mnist.x_train, mnist.y_train, epochs=5, batch_size=32, generator=torch.Generator().manual_seed(0))
    return model.eval()
