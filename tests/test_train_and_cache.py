import json

import pytest
import torch

from advbook import cache, codehash, models, train, zoo


def test_fit_learns_and_records_history(mnist):
    torch.manual_seed(0)
    model = models.build("smallcnn", "mnist5k", width=8)
    hist = train.fit(model, mnist.x_train, mnist.y_train, epochs=2, batch_size=64,
                     generator=torch.Generator().manual_seed(0))
    assert len(hist.epochs) == 2 and hist.epochs[1]["loss"] < hist.epochs[0]["loss"]
    assert hist.epochs[1]["train_seconds"] >= hist.epochs[0]["train_seconds"] > 0


def test_same_seed_same_numbers_on_cpu(mnist):
    def run():
        torch.manual_seed(1)
        model = models.build("smallcnn", "mnist5k", width=8)
        adv = train.pgd_adversary(0.1, steps=2, generator=torch.Generator().manual_seed(1))
        train.fit(model, mnist.x_train[:256], mnist.y_train[:256], epochs=1, batch_size=64, adversary=adv,
                  generator=torch.Generator().manual_seed(1))
        return model.state_dict()

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_eps_warmup_schedule():
    assert train.eps_schedule(0.3, 0.0, 0.5) == 0.0
    assert train.eps_schedule(0.3, 0.25, 0.5) == pytest.approx(0.15)
    assert train.eps_schedule(0.3, 0.9, 0.5) == 0.3
    assert train.eps_schedule(0.3, 0.1, 0.0) == 0.3


def test_distillation_targets_and_loss():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    p = train.soft_targets(logits, temperature=2.0)
    assert torch.allclose(p.sum(1), torch.ones(2))
    loss = train.distillation_loss(2.0)(logits, p)
    assert loss.item() > 0


def test_cache_round_trip_and_key_sensitivity():
    payload = {"w": torch.arange(5.0), "history": [{"epoch": 1, "loss": 0.5}]}
    cache.save("unit-test", {"a": 1}, payload)
    back = cache.load("unit-test", {"a": 1})
    assert torch.equal(back["w"], payload["w"]) and back["history"] == payload["history"]
    assert cache.load("unit-test", {"a": 2}) is None
    assert not list(cache.cache_dir().glob("*.tmp"))


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "drop_manifest", "bad_manifest"])
def test_corrupt_entries_are_detected_and_rebuilt(damage):
    config = {"damage": damage}
    calls = []

    def compute():
        return calls.append(1) or {"w": torch.zeros(3)}

    code = codehash.digest_of(codehash.code_identity(compute))
    path = cache.save("corrupt-test", config, {"w": torch.ones(100)}, code=code)
    manifest = path.with_suffix(".json")
    if damage == "flip_byte":
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:50])
    elif damage == "drop_manifest":
        manifest.unlink()
    else:
        manifest.write_text("{not json")
    with pytest.warns(UserWarning, match="rebuilding"):
        assert cache.load("corrupt-test", config, code=code) is None
    out = cache.cached("corrupt-test", config, compute)
    assert calls == [1] and torch.equal(out["w"], torch.zeros(3))
    assert json.loads(manifest.read_text())["sha256"]


def test_train_classifier_trains_once(mnist):
    small = mnist.limit(200, 50)
    before = dict(cache.STATS)
    m1, h1 = zoo.train_classifier(small, epochs=1, width=8, seed=5)
    m2, h2 = zoo.train_classifier(small, epochs=1, width=8, seed=5)
    assert cache.STATS["misses"] == before["misses"] + 1 and cache.STATS["hits"] == before["hits"] + 1
    assert h1 == h2 and all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    zoo.train_classifier(small, epochs=1, width=8, seed=6)
    assert cache.STATS["misses"] == before["misses"] + 2


def test_trained_model_loads_weights_and_record_on_a_hit(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path))

    def train(model):
        with torch.no_grad():
            model.weight.fill_(0.5)
        return [{"epoch": 1, "loss": 0.25}]

    trained = []
    for _ in range(2):
        model = torch.nn.Linear(3, 2)
        model.train()
        with cache.trained_model("trained-test", {"k": 1}, model, (train,)) as run:
            trained.append(run.needed)
            if run.needed:
                run.record = train(model)
        assert torch.all(model.weight == 0.5) and run.record == [{"epoch": 1, "loss": 0.25}]
        assert not model.training  # eval mode after the block, hit or miss
    assert trained == [True, False]


def test_an_entry_the_block_leaves_empty_or_breaks_is_not_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path))

    def compute():
        return {"w": torch.ones(2)}

    with pytest.raises(RuntimeError, match="computed nothing"):
        with cache.entry("empty-test", {"k": 1}, (compute,)) as e:
            assert e.missing
    with pytest.raises(ZeroDivisionError):
        with cache.entry("empty-test", {"k": 1}, (compute,)) as e:
            e.value = 1 / 0
    assert not list(tmp_path.glob("empty-test-*.pt")) and not list(tmp_path.glob("*.lock"))
    assert cache._COMPUTING == []
    with cache.entry("empty-test", {"k": 1}, (compute,)) as e:
        e.value = compute()
    with cache.entry("empty-test", {"k": 1}, (compute,)) as e:
        assert not e.missing and torch.equal(e.value["w"], torch.ones(2))


def test_bad_training_arguments():
    with pytest.raises(ValueError, match="allowed"):
        models.build("vgg", "mnist5k")
    with pytest.raises(ValueError, match="eps > 0"):
        zoo.train_classifier(None, method="pgd", eps=0.0)
    with pytest.raises(ValueError, match="allowed"):
        zoo.train_classifier(None, method="trades")


def test_resnet18_shapes():
    net = models.build("resnet18", "cifar10", width=8).eval()
    x = torch.rand(2, 3, 32, 32)
    assert net(x).shape == (2, 10)
    assert torch.allclose(net.head(net.features(x)), net(x))


def test_interrupted_training_resumes_to_the_same_weights(mnist, tmp_path):
    x, y = mnist.x_train[:256], mnist.y_train[:256]

    def fresh():
        torch.manual_seed(3)
        return models.build("smallcnn", "mnist5k", width=8)

    reference = fresh()
    train.fit(reference, x, y, epochs=3, batch_size=64, generator=torch.Generator().manual_seed(3))

    class Interrupt(Exception):
        pass

    def stop_after_two(epoch, model):
        if epoch == 2:
            raise Interrupt

    ckpt = tmp_path / "run.partial.pt"
    model = fresh()
    with pytest.raises(Interrupt):
        # the checkpoint is written after on_epoch, so epoch 2 is lost and redone
        train.fit(model, x, y, epochs=3, batch_size=64, generator=torch.Generator().manual_seed(3),
                  on_epoch=stop_after_two, checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    resumed = fresh()
    hist = train.fit(resumed, x, y, epochs=3, batch_size=64, generator=torch.Generator().manual_seed(3), checkpoint=ckpt)
    assert [r["epoch"] for r in hist.epochs] == [1, 2, 3]
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()))


def test_cifar_shaped_training_through_the_zoo():
    """The full profile's path: 3x32x32 data, ResNet-18, on-device crop+flip augmentation, PGD AT."""
    from advbook.data import CIFAR10_CLASSES, TensorData

    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 3, 32, 32, generator=gen), torch.arange(32) % 10
    fake = TensorData("cifar10", x, y, x[:8], y[:8], CIFAR10_CLASSES)
    model, hist = zoo.train_classifier(fake, method="pgd", arch="resnet18", width=4, epochs=1, eps=8 / 255,
                                       steps=1, batch_size=16)
    assert len(hist) == 1 and model(x[:2]).shape == (2, 10)
