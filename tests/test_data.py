import dataclasses
import gzip
import pickle

import numpy as np
import pytest
import torch

from advbook import data


def write_idx(path, array):
    """Write an IDX file (uint8) exactly as the MNIST distribution does."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(payload)


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    for split, n in (("train", 30), ("t10k", 10)):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def test_idx_reader_round_trips(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (5, 4, 3)).astype(np.uint8)
    write_idx(tmp_path / "a-idx3-ubyte", array)
    assert np.array_equal(data.read_idx(tmp_path / "a-idx3-ubyte"), array)


def test_idx_reader_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 2), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(ValueError, match="promises"):
        data.read_idx(tmp_path / "short")


def test_load_mnist_from_torchvision_layout(idx_dir):
    ds = data.load("mnist", root=idx_dir, download=False)
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    assert ds.y_train.dtype == torch.int64 and ds.num_classes == 10


def test_missing_dataset_explains_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="mnist5k"):
        data.load("mnist", root=tmp_path, download=False)
    with pytest.raises(ValueError, match="allowed"):
        data.load("imagenet")


def test_failed_download_explains_what_to_do(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(FileNotFoundError, match="without internet"):
        data.load("cifar10", root=tmp_path, download=True)


def test_cifar10_pickle_reader(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {b"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8), b"labels": [0, 1, 2, 3]}
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh)
    ds = data.load("cifar10", root=tmp_path, download=False)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    # channel-major layout: the first 1024 bytes are the red plane
    with open(folder / "test_batch", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")[b"data"][0]
    assert torch.allclose(ds.x_test[0, 0].flatten() * 255, torch.tensor(raw[:1024], dtype=torch.float32))


def test_mnist5k_is_real_balanced_and_seeded():
    a = data.load("mnist5k")
    assert a.x_train.shape == (4000, 1, 28, 28) and a.x_test.shape == (1000, 1, 28, 28)
    assert torch.bincount(a.y_test).tolist() == [100] * 10
    b = data.load("mnist5k")
    assert torch.equal(a.y_train, b.y_train)
    small = a.limit(100, 50, seed=0)
    assert torch.bincount(small.y_train).tolist() == [10] * 10


def test_stratified_split_is_disjoint():
    y = torch.arange(100) % 10
    tr, te = data.stratified_split(y, 20, torch.Generator().manual_seed(0))
    assert len(set(tr.tolist()) & set(te.tolist())) == 0 and len(tr) + len(te) == 100
    assert torch.bincount(y[te]).tolist() == [2] * 10


def test_batches_cover_everything_once():
    x = torch.arange(10).float()
    seen = torch.cat([xb for xb, _ in data.batches(x, None, 3, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10))


def test_random_crop_flip_shapes_and_content():
    x = torch.rand(8, 3, 32, 32)
    out = data.random_crop_flip(x, padding=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # with no padding the only change is a horizontal flip
    same = data.random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(0))
    for a, b in zip(x, same):
        assert torch.equal(a, b) or torch.equal(a.flip(2), b)


def test_a_training_split_is_identified_by_its_content():
    """The cache key of every trained model holds the split's identity: equal content, equal identity
    (device or a copy aside); a changed label or pixel, a smaller split or another name, another one."""
    d = data.load("mnist5k").limit(200, 50)
    same = dataclasses.replace(d, x_train=d.x_train.clone(), y_train=d.y_train.clone())
    assert d.identity() == same.identity() == {"name": "mnist5k", "n_train": 200, "fingerprint": d.fingerprint()}
    flipped = d.y_train.clone()
    flipped[0] = (flipped[0] + 1) % 10
    brighter = d.x_train.clone()
    brighter[7, 0, 3, 3] += 0.01
    others = [dataclasses.replace(d, y_train=flipped), dataclasses.replace(d, x_train=brighter), d.limit(150, 50),
              dataclasses.replace(d, name="fashion")]
    assert len({str(o.identity()) for o in others} | {str(d.identity())}) == 5
