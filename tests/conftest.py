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
    yield base


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
