"""Progress bars, the bench's loop comparison and the AutoAttack budget choice."""

import io
import sys

import pytest
import torch

from advbook import calibration, models, precision, progress, train
from advbook.tools import bench


def test_progress_switch(monkeypatch):
    monkeypatch.setenv("ADVBOOK_PROGRESS", "0")
    assert not progress.enabled()
    assert list(progress.bar(range(3))) == [0, 1, 2]
    with progress.bar(total=3) as b:  # the silent stand-in has the manual API too
        b.update()
        b.set_postfix(loss=1.0)
    monkeypatch.setenv("ADVBOOK_PROGRESS", "1")
    assert progress.enabled()
    monkeypatch.setenv("ADVBOOK_PROGRESS", "maybe")
    with pytest.raises(ValueError, match="allowed"):
        progress.enabled()
    monkeypatch.delenv("ADVBOOK_PROGRESS")
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal, not a kernel
    assert not progress.enabled()


def test_forced_bar_goes_to_stderr_and_leaves_results_alone(monkeypatch, mnist):
    def run():
        torch.manual_seed(2)
        model = models.build("smallcnn", "mnist5k", width=4)
        hist = train.fit(model, mnist.x_train[:128], mnist.y_train[:128], epochs=2, batch_size=64,
                         generator=torch.Generator().manual_seed(2))
        return hist.epochs, model.state_dict()

    quiet_hist, quiet_w = run()
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("ADVBOOK_PROGRESS", "1")
    loud_hist, loud_w = run()
    assert "training" in err.getvalue() and "4/4" in err.getvalue()
    assert [{k: v for k, v in r.items() if k != "train_seconds"} for r in quiet_hist] == \
        [{k: v for k, v in r.items() if k != "train_seconds"} for r in loud_hist]
    assert all(torch.equal(quiet_w[k], loud_w[k]) for k in quiet_w)


def ticking_clock(monkeypatch):
    """Replace the benchmark's clock with one that advances one second per reading, so that every
    timed region lasts exactly one second and a figure is the count it divides by."""
    ticks = iter(range(10**6))
    monkeypatch.setitem(bench._CLOCK, "now", lambda: float(next(ticks)))


def test_bench_loops_train_the_same_images(mnist, monkeypatch):
    x, y = mnist.x_train[:256], mnist.y_train[:256]
    ticking_clock(monkeypatch)
    rates = bench.compare_training_loops(x, y, batch_size=64, repeats=1)
    # one epoch of all 256 images in each loop, timed between two readings: 256 images per (fake) second
    assert rates == {"library": 256.0, "minimal": 256.0, "dataloader": 256.0}
    # the reader's dataset yields the same pixels as the on-device tensors
    from torchvision import transforms

    images = (x.squeeze(1) * 255).round().to(torch.uint8).numpy()
    ds = bench.ReaderMNIST(images, y.numpy(), transforms.ToTensor())
    xi, yi = ds[3]
    assert torch.allclose(xi, x[3], atol=1e-6) and yi == int(y[3])


def test_flops_are_counted_forward_and_backward_and_against_the_limit(mnist):
    layer = torch.nn.Linear(20, 30)
    x = torch.randn(8, 20, requires_grad=True)
    assert bench.count_flops(lambda: layer(x)) == 2 * 8 * 20 * 30
    # backward: the input gradient and the weight gradient, one product each
    assert bench.count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 8 * 20 * 30
    # with respect to an input only, as an attack takes it (FlopCounterMode's tracker refuses this)
    assert bench.count_flops(lambda: torch.autograd.grad(layer(x).sum(), x)) == 2 * 2 * 8 * 20 * 30
    with pytest.raises(ValueError, match="allowed: fp32, bf16"):
        precision.autocast(torch.device("cpu"), "fp16")
    rows = bench.against_the_limit(mnist.x_train[:64], mnist.y_train[:64], torch.device("cpu"), repeats=1,
                                   batch_size=32, only="standard training")
    assert [r["precision"] for r in rows] == ["fp32", "bf16"]
    for r in rows:  # a share above 2x the measured GEMM rate would be a counting or timing error
        assert r["images_per_s"] > 0 and 0 < r["share"] < 2 and r["gflops"] == pytest.approx(r["share"] * r["gemm_gflops"])
    table = bench.limit_table(rows)
    assert "standard training" in table and "bf16 img/s" in table


def test_conv_weights_are_channels_last_and_compute_the_same_function(mnist, monkeypatch):
    import copy

    torch.manual_seed(0)
    net = models.build("smallcnn", "mnist5k")
    assert net.body[0].weight.is_contiguous(memory_format=models.MEMORY_FORMAT)
    plain = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    x = mnist.x_test[:32]
    assert torch.allclose(net(x), plain(x), atol=1e-4)
    grads = [torch.autograd.grad(m(x).logsumexp(1).sum(), m.body[0].weight)[0] for m in (net, plain)]
    assert torch.allclose(*grads, atol=1e-4)
    resnet = models.build("resnet18", "cifar10", width=4)  # see models.MEMORY_FORMAT: not channels-last
    assert not resnet.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    ticking_clock(monkeypatch)  # both formats timed over the same number of steps: equal times, a ratio of 1
    speedup = bench.compare_memory_formats(x, mnist.y_test[:32], batch_size=32, steps=3, repeats=1)
    assert speedup == {"train": 1.0, "input_grad": 1.0}


def test_budget_choice_is_cheapest_within_tolerance():
    cands = {"a": {"robust": 0.48, "total_seconds": 10}, "b": {"robust": 0.455, "total_seconds": 30},
             "c": {"robust": 0.45, "total_seconds": 90}, "d": {"robust": 0.452, "total_seconds": 20}}
    assert calibration.choose(0.45, cands, tolerance=0.01) == "d"
    assert calibration.choose(0.45, cands, tolerance=0.0) == "c"
    assert calibration.choose(0.40, cands, tolerance=0.01) is None
