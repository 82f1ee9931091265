"""Unit tests of advbook.methods.dominant (dominant patterns and universal baselines)."""

import pytest
import torch
from torch import nn

from advbook import data, models, params, protocol
from advbook.methods import dominant as dm


def small_model(dataset="mnist5k", seed=0):
    torch.manual_seed(seed)
    return models.build("smallcnn", dataset, 10, width=4).eval()


def images(n=32, shape=(1, 28, 28), seed=0):
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def test_profiles_resolve_and_bad_values_fail():
    for profile in ("quick", "long", "full", "tiny"):
        cfg = params.resolve({"profile": profile}, dm.PROFILES, dm.SCHEMA)
        assert set(cfg.methods) <= set(dm.METHODS)
    with pytest.raises(params.ParameterError, match="methods"):
        params.resolve({"profile": "tiny", "methods": ["deepfool"]}, dm.PROFILES, dm.SCHEMA)
    with pytest.raises(params.ParameterError, match="eps_grid"):
        params.resolve({"profile": "tiny", "eps_grid": [0.1, -0.2]}, dm.PROFILES, dm.SCHEMA)
    with pytest.raises(params.ParameterError, match="steps"):
        params.resolve({"profile": "tiny", "steps": 0}, dm.PROFILES, dm.SCHEMA)


def make(method, model, x, eps, y=None, **loop):
    """A chapter-4 pattern through the registry, labels only where the method uses them."""
    spec = dm.UNIVERSAL[method]
    options = {} if method == "random" else {"steps": 6, "batch_size": 16, **loop}
    return spec(model, x, eps, y=y if spec.labels else None, norm="linf",
                generator=torch.Generator().manual_seed(0), **options)


@pytest.mark.parametrize("method", dm.METHODS)
def test_patterns_respect_budget(method):
    model, x = small_model(), images()
    y = torch.randint(0, 10, (len(x),), generator=torch.Generator().manual_seed(1))
    record = []
    delta = make(method, model, x, 0.1, y=y, **({} if method == "random" else {"record": record}))
    assert delta.shape == (1, 1, 28, 28)
    assert delta.abs().max() <= 0.1 + 1e-7
    if method == "random":
        assert torch.allclose(delta.abs(), torch.full_like(delta, 0.1))
    else:
        assert len(record) == 6 and all(torch.isfinite(torch.tensor(record)))


def test_dominant_objective_is_label_free_and_increases():
    model, x = small_model(), images(64)
    objective = dm.dominant_objective(model, "logits")
    with pytest.raises(ValueError, match="label-free"):
        dm.dominant_pattern(model, x, 0.3, y=torch.zeros(64, dtype=torch.long))
    record = []
    delta = dm.dominant_pattern(model, x, 0.3, steps=60, batch_size=64, generator=torch.Generator().manual_seed(0),
                                record=record)
    assert record[-1] > record[0]
    # eq. (1) at the returned delta: 1 - the objective equals 1 - mean cosine, computed by hand
    g_p, g_d = model(dm.perturb(x, delta)), model(delta)
    by_hand = (g_p @ g_d.T).squeeze(1) / (g_p.norm(dim=1) * g_d.norm())
    assert torch.allclose(objective(x, delta, None, None), by_hand, atol=1e-5)


def test_same_seed_same_pattern():
    model, x = small_model(), images()
    a = make("dominant_features", model, x, 0.2, steps=5, batch_size=8)
    b = make("dominant_features", model, x, 0.2, steps=5, batch_size=8)
    assert torch.equal(a, b)


def test_sgd_uap_needs_labels():
    model, x = small_model(), images(8)
    with pytest.raises(ValueError, match="labels"):
        dm.UNIVERSAL["sgd_uap"](model, x, 0.1, steps=1, batch_size=8)


class Constant(nn.Module):
    """A toy classifier: class = argmax of a fixed linear map of the image (mean-centred)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(784, 3)

    def features(self, x):
        return x.flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


def test_metrics_by_hand():
    model, x = Constant(), images(50)
    delta = torch.full((1, 1, 28, 28), 0.2)
    out = dm.evaluate_pattern(model, x, delta, 3)
    clean = model(x).argmax(1)
    pert = model((x + delta).clamp(0, 1)).argmax(1)
    alone = model(delta).argmax(1)
    assert out["fooling_rate"] == pytest.approx((pert != clean).float().mean().item())
    assert out["dominance"] == pytest.approx((pert == alone).float().mean().item())
    assert sum(out["perturbed_hist"]) == 50 and sum(out["clean_hist"]) == 50
    # a zero pattern fools nobody
    assert dm.evaluate_pattern(model, x, torch.zeros_like(delta), 3)["fooling_rate"] == 0.0


def test_huge_pattern_dominates():
    # a strong pattern on a linear model: x + delta is classified like delta (dominance 1)
    model, x = Constant(), images(40) * 0.01
    w = model.head.weight[1] - model.head.weight[[0, 2]].max(0).values
    delta = (w.sign() * 1.0).view(1, 1, 28, 28)
    out = dm.evaluate_pattern(model, x, delta, 3)
    assert out["pattern_class"] == 1
    assert out["dominance"] > 0.9


def split_data(n=60, shape=(1, 28, 28)):
    x = images(n, shape)
    y = torch.arange(n) % 10
    return data.TensorData("mnist5k", x, y, x[: n // 2], y[: n // 2], classes=data.MNIST_CLASSES)


def test_split_classes_gives_a_task_with_unseen_classes():
    up, down = dm.split_classes(split_data(), 5)
    assert up.classes == tuple("01234") and down.classes == tuple("56789")
    assert up.y_train.max() == 4 and down.y_train.min() == 0 and down.y_train.max() == 4
    assert len(up.y_train) + len(down.y_train) == 60 and len(down.y_test) == 15
    with pytest.raises(ValueError, match="upstream_classes"):
        dm.split_classes(split_data(), 9)


def test_retrained_classifier_keeps_the_conv_part_frozen():
    upstream = small_model()
    before = {k: v.clone() for k, v in upstream.state_dict().items()}
    x = images(96)
    y = torch.randint(0, 5, (96,), generator=torch.Generator().manual_seed(0))
    net, hist = dm.retrain_classifier(upstream, x, y, 5, epochs=2, batch_size=32, lr=1e-2)
    assert all(torch.equal(before[n], v) for n, v in upstream.state_dict().items())  # backbone untouched
    assert net(x).shape == (96, 5) and len(hist) == 2
    # the whole fully-connected classifier is new: fc(hidden) re-initialised, a new head
    assert not torch.equal(net.classifier[0].weight, upstream.body[7].weight)
    assert torch.allclose(net(x), net.head(net.features(x)), atol=1e-6)
    assert torch.allclose(net.conv(x), upstream.body[:7](upstream.normalize(x)))
    net.train()
    assert not net.upstream.training


def test_dominance_counts_only_images_that_must_move():
    model, x = Constant(), images(50)
    delta = torch.full((1, 1, 28, 28), 0.2)
    out = dm.evaluate_pattern(model, x, delta, 3)
    clean, alone = model(x).argmax(1), model(delta).argmax(1).item()
    pert = model((x + delta).clamp(0, 1)).argmax(1)
    move = clean != alone
    assert out["n_moved"] == int(move.sum())
    assert out["dominance_moved"] == pytest.approx((pert[move] == alone).float().mean().item())
    # a zero pattern moves nobody: dominance among the images that must move is 0, not the class share
    zero = dm.evaluate_pattern(model, x, torch.zeros_like(delta), 3)
    assert zero["dominance_moved"] == 0.0 and zero["dominance"] > 0


def test_seed_statistic_is_the_grid_mean_gap_per_seed():
    tab = {0: {"a": {0.1: {"fooling_rate": 0.5}, 0.2: {"fooling_rate": 0.7}},
               "b": {0.1: {"fooling_rate": 0.3}, 0.2: {"fooling_rate": 0.5}}},
           1: {"a": {0.1: {"fooling_rate": 0.2}, 0.2: {"fooling_rate": 0.2}},
               "b": {0.1: {"fooling_rate": 0.3}, 0.2: {"fooling_rate": 0.3}}},
           2: {"a": {0.1: {"fooling_rate": 0.2}, 0.2: {"fooling_rate": 0.2}}}}  # b not run: skipped
    assert dm.seed_statistic(tab, "a", "b") == pytest.approx([0.2, -0.1])
    assert dm.seed_statistic(tab, "a", "b", budgets=[0.2]) == pytest.approx([0.2, -0.1])


def test_claims_are_declared_with_seeds_as_replicates():
    assert set(dm.CLAIMS) == set(dm.COMPARATORS)
    for key, claim in dm.CLAIMS.items():
        assert claim.key == key and claim.unit == "optimisation seed" and claim.replicates == "seeds"
        assert claim.null and claim.deviations and claim.sesoi > 0
        assert any("eps/2" in d for d in claim.deviations) and any("proxy" in d for d in claim.deviations)
        planned = claim.planned(dm.PROFILES)
        assert planned["quick"] >= 3 and planned["long"] > planned["quick"] and planned["tiny"] >= 2


def test_random_noise_as_null_is_never_reproduced():
    """Random noise put where the dominant pattern was, through each claim's own statistic, on a real
    (tiny) model: never graded reproduced or partly reproduced."""
    model, x = small_model(), images(200)
    tabs = {}
    for s in range(4):
        noise = [dm.UNIVERSAL["random"](None, x, e, generator=torch.Generator().manual_seed(s + k))
                 for k, e in ((0, 0.2), (0, 0.3), (dm.NULL_SEED_OFFSET, 0.2), (dm.NULL_SEED_OFFSET, 0.3))]
        ev = [dm.evaluate_pattern(model, x, d, 10) for d in noise]
        tabs[s] = {"random": {0.2: ev[0], 0.3: ev[1]}, "dominant_logits": {0.2: ev[2], 0.3: ev[3]},
                   # a comparator that fools as much as noise does (the weakest a UAP baseline could be)
                   "cos_uap": {0.2: ev[0], 0.3: ev[1]}, "sgd_uap": {0.2: ev[0], 0.3: ev[1]}}
    for key, claim in dm.CLAIMS.items():
        metric = "dominance_moved" if key == "dominance" else "fooling_rate"
        budgets = None if key in ("free", "labels") else [0.3]
        values = dm.seed_statistic(tabs, "dominant_logits", dm.COMPARATORS[key], metric, budgets)
        null = protocol.grade_null(claim, values)
        assert null["verdict"] not in ("reproduced", "partly reproduced"), (key, values, null)
    # synthetic: noise replicates around 0 with seed-to-seed spread
    rng = torch.Generator().manual_seed(0)
    for claim in dm.CLAIMS.values():
        values = (torch.randn(8, generator=rng) * 0.02).tolist()
        assert protocol.grade_null(claim, values)["verdict"] not in ("reproduced", "partly reproduced")


def test_sgd_uap_gets_the_clipped_loss():
    cfg = params.resolve({"profile": "tiny"}, dm.PROFILES, dm.SCHEMA)
    assert dm.method_options("sgd_uap", cfg) == {"max_loss": cfg.sgd_max_loss}
    assert dm.method_options("dominant_logits", cfg) == {}
    model, x = small_model(), images(16)
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(1))
    record = []
    make("sgd_uap", model, x, 0.3, y=y, record=record, max_loss=0.5)
    assert max(record) <= 0.5 + 1e-6  # every per-image loss is clipped


def test_cifar_shaped_resnet():
    torch.manual_seed(0)
    model = models.build("resnet18", "cifar10", 10, width=4).eval()
    x = images(16, (3, 32, 32))
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(0))
    for method in dm.METHODS:
        delta = make(method, model, x, 8 / 255, y=y, steps=2, batch_size=8)
        assert delta.shape == (1, 3, 32, 32) and delta.abs().max() <= 8 / 255 + 1e-7
        out = dm.evaluate_pattern(model, x, delta, 10)
        assert 0.0 <= out["fooling_rate"] <= 1.0
    net, _ = dm.retrain_classifier(model, x, y % 5, 5, epochs=1, batch_size=8)
    assert net(x).shape == (16, 5)


def test_cross_parameter_checks():
    dm.check(params.resolve({"profile": "tiny"}, dm.PROFILES, dm.SCHEMA))
    with pytest.raises(params.ParameterError, match="eps"):
        dm.check(params.resolve({"profile": "tiny", "eps": 0.0}, dm.PROFILES, dm.SCHEMA))
    with pytest.raises(params.ParameterError, match="methods"):
        dm.check(params.resolve({"profile": "tiny", "methods": []}, dm.PROFILES, dm.SCHEMA))
    with pytest.raises(params.ParameterError, match="seeds"):
        dm.check(params.resolve({"profile": "tiny", "seeds": [1, 1]}, dm.PROFILES, dm.SCHEMA))
    with pytest.raises(params.ParameterError, match="stronger_seeds"):
        dm.check(params.resolve({"profile": "tiny", "stronger_seeds": 5}, dm.PROFILES, dm.SCHEMA))
    loop = dm.loop_options(params.resolve({"profile": "tiny"}, dm.PROFILES, dm.SCHEMA))
    assert loop["optimizer"] == "adam" and loop["steps"] == dm.PROFILES["tiny"]["steps"]


def test_the_cached_experiment_fits_each_pattern_once_and_evaluates_it():
    from advbook import cache

    model, ds = small_model(), split_data(40)
    cfg = params.resolve({"profile": "tiny", "steps": 4, "batch_size": 8}, dm.PROFILES, dm.SCHEMA)
    before = cache.STATS["misses"]
    pats, tab = dm.fit_seed(model, ds, cfg, 0, [0.1, 0.2], ["random", "dominant_logits"])
    assert cache.STATS["misses"] == before + 8  # 2 methods x 2 budgets, a pattern and its evaluation each
    for m in ("random", "dominant_logits"):
        for e in (0.1, 0.2):
            assert pats[m][e]["delta"].abs().max() <= e + 1e-6
            assert str(tab[m][e]) == str(dm.evaluate_pattern(model, ds.x_test, pats[m][e]["delta"], 10))  # NaN-safe
    assert pats["random"][0.1]["record"] == [] and len(pats["dominant_logits"][0.1]["record"]) > 0
    # the same pattern from the registry directly, with the chapter's loop
    direct = make("dominant_logits", model, ds.x_train, 0.2, **{**dm.loop_options(cfg), "steps": 4})
    assert torch.equal(pats["dominant_logits"][0.2]["delta"], direct)
    again = dm.pattern(model, ds, "dominant_logits", 0.2, 0, cfg)  # a hit
    assert cache.STATS["misses"] == before + 8 and torch.equal(again["delta"], direct)
    longer = dm.pattern(model, ds, "dominant_logits", 0.2, 0, cfg, steps=8)  # more steps: another entry
    assert cache.STATS["misses"] == before + 9 and not torch.equal(longer["delta"], direct)
    rows = dm.seed_rows({0: tab}, "fooling_rate", [0.1, 0.2])
    assert len(rows) == 4 and rows[0] == {"method": dm.UNIVERSAL["random"].label, "eps": 0.1, "seed": 0,
                                          "fooling_rate": tab["random"][0.1]["fooling_rate"]}


def test_claim_statistic_and_the_paired_stronger_setting():
    def tab(dp, cos):
        return {"dominant_logits": {0.1: {"fooling_rate": dp}}, "cos_uap": {0.1: {"fooling_rate": cos}}}

    per_seed = {0: tab(0.5, 0.3), 1: tab(0.4, 0.4), 2: tab(0.6, 0.3)}
    values = dm.claim_statistic(per_seed, "free")  # the dominant pattern minus free's comparator, cos_uap
    assert values == pytest.approx([0.2, 0.0, 0.3])
    strong = {0: tab(0.7, 0.3), 1: tab(0.4, 0.5)}  # more steps moved seed 0 by +0.2 and seed 1 by -0.1
    mean = sum(values) / 3
    assert dm.stronger_replicates("free", values, per_seed, strong) == pytest.approx([mean + 0.2, mean - 0.1])
    assert dm.stronger_replicates("free", values, per_seed, {}) == []
