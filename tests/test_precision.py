"""The training-arithmetic switch: where bf16 applies, where it never does, and how it keys the cache."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from advbook import cache, models, precision, train
from advbook.book import chapter
from advbook.methods import invariance as inv
from advbook import universal
from advbook.methods import primer


def test_resolve_and_set_validate_and_name_what_is_allowed(monkeypatch):
    assert precision.training() == "fp32"
    assert precision.resolve("fp32", "cpu") == "fp32" and precision.resolve("bf16", "cpu") == "bf16"
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert precision.resolve("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert precision.resolve("auto", "cpu") == "fp32"
    with pytest.raises(ValueError, match="allowed: auto, fp32, bf16"):
        precision.resolve("fp16", "cpu")
    with pytest.raises(ValueError, match="resolve 'auto'"):
        precision.set_training("auto")
    precision.set_training("bf16")
    assert precision.training() == "bf16"
    precision.set_training("fp32")
    assert precision.training() == "fp32"


@contextlib.contextmanager
def training_as(arithmetic: str):
    """Within the block, training loops use ``arithmetic`` (the process-wide switch); fp32 again after."""
    precision.set_training(arithmetic)
    try:
        yield
    finally:
        precision.set_training("fp32")


def _fit(arithmetic: str, mnist, **kw):
    torch.manual_seed(0)
    model = models.build("smallcnn", "mnist5k")
    with training_as(arithmetic):
        hist = train.fit(model, mnist.x_train[:256], mnist.y_train[:256], epochs=2, batch_size=64,
                         generator=torch.Generator().manual_seed(0), **kw)
    return model, hist


def test_fit_trains_in_the_switched_arithmetic_and_hands_back_a_float32_model(mnist):
    seen = {}

    def adversary(model, xb, yb, progress):  # adversarial training's inner attack runs in the training arithmetic
        seen.setdefault("adversary", torch.is_autocast_enabled("cpu"))
        return xb

    def on_epoch(epoch, model):  # what a chapter measures during training does not
        seen.setdefault("on_epoch", torch.is_autocast_enabled("cpu"))
        return {}

    m32, h32 = _fit("fp32", mnist)
    m16, h16 = _fit("bf16", mnist, adversary=adversary, on_epoch=on_epoch)
    assert seen == {"adversary": True, "on_epoch": False}
    losses = h16.column("loss")
    assert losses[-1] < losses[0] and all(math.isfinite(v) for v in losses)
    w32, w16 = m32.state_dict(), m16.state_dict()
    assert all(w16[k].dtype == w32[k].dtype for k in w32)  # master weights stay float32
    assert any(not torch.equal(w32[k], w16[k]) for k in w32)  # the switch reached the arithmetic
    assert m16(mnist.x_test[:8]).dtype == torch.float32  # evaluation after fit is float32
    again, _ = _fit("fp32", mnist)  # fp32 is the arithmetic of before the switch existed: deterministic
    assert all(torch.equal(w32[k], again.state_dict()[k]) for k in w32)


def test_universal_fitting_and_inn_training_follow_the_switch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    def objective(xb, delta, _y, _c):
        return net(xb + delta).logsumexp(1)

    deltas = {}
    for arithmetic in ("fp32", "bf16"):
        with training_as(arithmetic):
            deltas[arithmetic] = universal.ascend(objective, x, 0.1, steps=5, batch_size=32,
                                                  generator=torch.Generator().manual_seed(1))
    assert deltas["bf16"].dtype == torch.float32
    assert not torch.equal(deltas["fp32"], deltas["bf16"])

    y = torch.randint(0, 4, (64,), generator=g)
    nets = {}
    for arithmetic in ("fp32", "bf16"):
        torch.manual_seed(0)
        inn = inv.InvertibleClassifier((1, 8, 8), 4, levels=1, blocks=1, hidden=8)
        with training_as(arithmetic):
            hist = inv.train_inn(inn, x, y, objective="ce", epochs=1, batch_size=32,
                                 generator=torch.Generator().manual_seed(0))
        assert math.isfinite(hist[-1]["loss"])
        nets[arithmetic] = inn
    a, b = nets["fp32"].state_dict(), nets["bf16"].state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert inv.reconstruction_error(nets["bf16"], x).max().item() < 1e-3  # invertible in fp32 afterwards


def test_bf16_entries_never_share_a_key_with_fp32_ones():
    fp32_key = cache.entry_key("model", {"a": 1}, "code")
    with training_as("bf16"):
        bf16_key = cache.entry_key("model", {"a": 1}, "code")
    assert fp32_key != bf16_key
    assert cache.entry_key("model", {"a": 1}, "code") == fp32_key  # fp32 keys are those of before the switch


def test_chapter_setup_resolves_records_and_sets_the_switch(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    ch = chapter.setup(primer, {"profile": "tiny", "device": "cpu"}, show=False)
    assert ch.cfg.precision == "fp32" and precision.training() == "fp32"  # the default: fp32 (the evidence, book/measurements/precision.json)
    ch = chapter.setup(primer, {"profile": "tiny", "device": "cpu", "precision": "auto"}, show=False)
    assert ch.cfg.precision == "bf16" and precision.training() == "bf16"
    assert ch.results.data["provenance"]["training_precision"] == "bf16"
    assert "training in bf16" in chapter.summary_line(ch)
    assert "-p precision auto" in chapter.rerun_commands(ch)[0]
    ch = chapter.setup(primer, {"profile": "tiny", "device": "cpu", "precision": "fp32"}, show=False)
    assert precision.training() == "fp32" and "precision" not in chapter.rerun_commands(ch)[0]  # the default: not repeated
