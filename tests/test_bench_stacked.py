"""The stacked-replicates comparison of `make bench` compares like with like: one stacked step is k steps."""

import torch
import torch.nn.functional as F

from advbook import models
from advbook.tools import bench


def test_one_stacked_step_equals_one_step_of_each_model():
    device = torch.device("cpu")
    nets = []
    for i in range(3):
        torch.manual_seed(i)
        nets.append(models.build("smallcnn", "mnist5k", width=4))
    gen = torch.Generator().manual_seed(0)
    xs, ys = torch.rand(3, 16, 1, 28, 28, generator=gen), torch.randint(0, 10, (3, 16), generator=gen)
    step, params = bench.stacked_step(nets, device)
    step(xs, ys)
    for i, (net, xb, yb) in enumerate(zip(nets, xs, ys)):
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        net.train()
        loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for name, p in net.named_parameters():
            assert torch.allclose(params[name][i], p, atol=1e-6), (i, name)
    # a model's step depends on its own batch only
    assert not torch.allclose(params["head.weight"][0], params["head.weight"][1])


def test_compare_stacked_replicates_reports_both_rates():
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    out = bench.compare_stacked_replicates(x, y, torch.device("cpu"), k=2, batch_size=16, repeats=1)
    assert out["k"] == 2 and abs(out["speedup"] - out["stacked_images_per_s"] / out["sequential_images_per_s"]) < 1e-9
