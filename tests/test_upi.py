"""Unit tests of advbook.methods.upi (universal perturbations of interpretations)."""

import time

import pytest
import torch
from scipy import stats

from advbook import cache, models, params, protocol
from advbook.methods import upi


def tiny_net(act="softplus", dataset="mnist5k", seed=0):
    torch.manual_seed(seed)
    return models.build("smallcnn", dataset, width=4, act=act).eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 28, 28, generator=g)
    model = tiny_net()
    return model, x, upi.predicted_labels(model, x)


def test_spearman_matches_scipy_and_extremes():
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(5, 7, 7, generator=g), torch.rand(5, 7, 7, generator=g)
    b[:, :2] = 0.0  # ties
    ours = upi.spearman(a, b)
    ref = [stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(5)]
    assert torch.allclose(ours, torch.tensor(ref, dtype=torch.float32), atol=1e-5)
    assert torch.allclose(upi.spearman(a, a), torch.ones(5))
    assert torch.allclose(upi.spearman(a, -a), -torch.ones(5))


def test_topk_intersection():
    a = torch.arange(16.0).view(1, 4, 4).repeat(2, 1, 1)
    assert torch.allclose(upi.topk_intersection(a, a, 4), torch.ones(2))
    assert torch.allclose(upi.topk_intersection(-a, a, 4), torch.zeros(2))
    b = a.clone()
    b[0, 3, 3] = -1.0  # one of the top 4 of a drops out of b's top 4
    assert upi.topk_intersection(b, a, 4)[0].item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="topk"):
        upi.topk_intersection(a, a, 17)


def test_l2_dissimilarity():
    a = torch.rand(3, 5, 5)
    assert torch.allclose(upi.l2_dissimilarity(a, a), torch.zeros(3), atol=1e-6)
    assert torch.allclose(upi.l2_dissimilarity(torch.zeros_like(a), a), torch.ones(3))


def test_prob_gradient_matches_autograd_and_is_stable_when_confident(batch):
    model, x, y = batch
    xx = x.clone().requires_grad_(True)
    p = torch.softmax(model(xx), 1).gather(1, y[:, None]).sum()
    (ref,) = torch.autograd.grad(p, xx)
    assert torch.allclose(upi.prob_gradient(model, x, y), ref, rtol=1e-4, atol=1e-9)

    # a confident model: p_y rounds to 1 in float32; compare with a float64 computation
    class Scaled(torch.nn.Module):
        def __init__(self, net, scale):
            super().__init__()
            self.net, self.scale = net, scale

        def forward(self, inp):
            return self.net(inp) * self.scale

    confident = Scaled(model, 400.0)
    ours = upi.simple_gradient(confident, x, y)
    m64 = Scaled(tiny_net().double(), 400.0)
    ref64 = upi.simple_gradient(m64, x.double(), y)
    assert (ours - ref64.float()).abs().sum((1, 2)).max() < 1e-3
    naive = torch.autograd.grad(torch.softmax(confident(xx), 1).gather(1, y[:, None]).sum(), xx)[0].abs().sum(1)
    assert (upi.normalise_map(naive) - ref64.float()).abs().sum((1, 2)).max() > 1e-2  # the naive form is wrong


def test_saliency_maps_normalised_and_shapes(batch):
    model, x, y = batch
    for method in upi.SALIENCY:
        s = upi.saliency(model, x, y, method, ig_steps=4)
        assert s.shape == (12, 28, 28)
        assert torch.allclose(s.sum((1, 2)), torch.ones(12), atol=1e-5)
        assert (s >= 0).all()
    with pytest.raises(ValueError, match="allowed"):
        upi.saliency(model, x, y, "lime")


def test_integrated_gradients_completeness(batch):
    model, x, y = batch
    ig = upi.ig_attributions(model, x[:4], y[:4], steps=128)
    with torch.no_grad():
        p = torch.softmax(model(x[:4]), 1).gather(1, y[:4, None]).squeeze(1)
        p0 = torch.softmax(model(torch.zeros_like(x[:4])), 1).gather(1, y[:4, None]).squeeze(1)
    assert torch.allclose(ig.flatten(1).sum(1), p - p0, atol=2e-3)


def test_softplus_has_curvature_relu_does_not():
    """The logit Hessian of a ReLU net is zero a.e.; with softplus it is not (why the chapter uses softplus)."""
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    for act, zero in (("relu", True), ("softplus", False)):
        model = tiny_net(act)
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xx)[:, 0].sum(), xx, create_graph=True)
        (h,) = torch.autograd.grad(g.pow(2).sum(), xx, allow_unused=True)
        norm = 0.0 if h is None else h.abs().max().item()
        assert (norm < 1e-8) == zero, (act, norm)


def test_saliency_is_differentiable_in_delta(batch):
    model, x, y = batch
    clean = upi.simple_gradient(model, x, y)
    for method in upi.SALIENCY:
        delta = (0.1 * torch.randn(1, 1, 28, 28)).requires_grad_(True)
        maps = upi.saliency(model, x, y, method, ig_steps=3)
        d = upi.interpretation_objective(model, method, ig_steps=3)(x, delta, y, maps)
        (g,) = torch.autograd.grad(d.mean(), delta)
        assert g.shape == delta.shape and g.abs().sum() > 0
    assert clean.requires_grad is False


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


def test_universal_perturbations_stay_in_ball_and_upi_beats_random(batch):
    model, x, y = batch
    eps = 2.0
    clean = upi.saliency_maps(model, x, y)
    delta = upi.UNIVERSAL["upi_grad"](model, x, eps, norm="l2", steps=8, batch_size=6, generator=rng(),
                                      clean_maps=clean)
    assert delta.shape == (1, 1, 28, 28) and delta.norm() <= eps + 1e-4
    uap = upi.UNIVERSAL["sgd_uap"](model, x, eps, y=y, norm="l2", steps=4, batch_size=6, generator=rng())
    assert uap.shape == (1, 1, 28, 28) and uap.norm() <= eps + 1e-4
    rnd = upi.UNIVERSAL["random"](model, x, eps, norm="l2", generator=rng())
    assert rnd.norm().item() == pytest.approx(eps, rel=1e-5)

    def score(d):
        return upi.l2_dissimilarity(upi.simple_gradient(model, upi.perturb(x, d), y), clean).mean().item()

    rand_scores = [score(upi.UNIVERSAL["random"](model, x, eps, norm="l2", generator=rng(s))) for s in range(3)]
    assert score(delta) > max(rand_scores)
    with pytest.raises(ValueError, match="label-free"):
        upi.UNIVERSAL["upi_grad"](model, x, eps, y=y, norm="l2")


def test_per_sample_attack_beats_its_start(batch):
    model, x, y = batch
    eps = 1.0
    delta = upi.per_sample_attack(model, x, y, eps, steps=5, generator=rng())
    assert delta.shape == x.shape
    assert (delta.flatten(1).norm(dim=1) <= eps + 1e-4).all()
    clean = upi.saliency_maps(model, x, y)
    attacked = upi.l2_dissimilarity(upi.simple_gradient(model, upi.perturb(x, delta), y), clean)
    rnd = upi.UNIVERSAL["random"](model, x, eps, norm="l2", generator=rng(5))
    random = upi.l2_dissimilarity(upi.simple_gradient(model, upi.perturb(x, rnd), y), clean)
    assert attacked.mean() > random.mean()


def test_upi_pca_direction_and_sign(batch):
    model, x, y = batch
    u, s = upi.upi_pca_direction(model, x, y, generator=rng(), batch_size=5)
    assert u.shape == (1, 1, 28, 28)
    assert u.norm().item() == pytest.approx(1.0, abs=1e-4)
    assert (s[:-1] >= s[1:] - 1e-6).all()
    for eps in (0.5, 2.0):
        delta = upi.UNIVERSAL["upi_pca"](model, x, eps, norm="l2", direction=u, batch_size=5)
        assert delta.norm().item() == pytest.approx(eps, rel=1e-4)
        _, scores = upi.choose_sign(model, x, y, u, eps, batch_size=5)
        sign = 1.0 if torch.allclose(delta, eps * u) else -1.0
        assert scores[sign] == max(scores.values())
    # without a direction, the same generator gives the same u
    fresh = upi.UNIVERSAL["upi_pca"](model, x, 2.0, norm="l2", generator=rng(), batch_size=5)
    assert torch.allclose(fresh.abs(), (2.0 * u).abs(), atol=1e-6)
    with pytest.raises(ValueError, match="not supported"):
        upi.UNIVERSAL["upi_pca"](model, x, 0.1, norm="linf")
    # the direction is the top eigenvector of G^T G
    G = torch.cat([upi.offset_gradients(model, x, y, generator=rng())]).double()
    v = torch.ones(G.shape[1], dtype=torch.float64)
    for _ in range(300):  # power iteration on G^T G
        v = G.T @ (G @ v)
        v = v / v.norm()
    u = upi.upi_pca_direction(model, x, y, generator=rng())[0].flatten().double()
    assert abs(float(v @ u)) > 0.99


def test_evaluate_universal_and_per_sample(batch):
    model, x, y = batch
    clean = {m: upi.saliency_maps(model, x, y, m, ig_steps=3, batch_size=5) for m in upi.SALIENCY}
    zero = upi.evaluate(model, x, y, torch.zeros(1, 1, 28, 28), clean_maps=clean, topk=20, ig_steps=3, batch_size=5)
    s = upi.summarise(zero)
    for m in upi.SALIENCY:
        assert s[m]["l2"] < 1e-4 and s[m]["topk"] == pytest.approx(1.0) and s[m]["spearman"] == pytest.approx(1.0, abs=1e-5)
    assert s["fooling_rate"] == 0.0
    per = torch.randn_like(x) * 0.3
    out = upi.evaluate(model, x, y, per, clean_maps=clean, topk=20, ig_steps=3, batch_size=5)
    assert out["grad"]["l2"].shape == (12,) and out["fooled"].dtype == torch.bool
    assert upi.summarise(out)["grad"]["l2"] > 0.01


def test_cifar_shaped_paths():
    """Every code path on 3x32x32 input: a ResNet-18 (softplus) for the saliency and one UPI step, a small CNN for the rest."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    torch.manual_seed(0)
    resnet = models.build("resnet18", "cifar10", width=2, act="softplus").eval()
    y = upi.predicted_labels(resnet, x)
    assert upi.simple_gradient(resnet, x, y).shape == (2, 32, 32)
    assert upi.UNIVERSAL["upi_grad"](resnet, x, 0.5, norm="l2", steps=1, batch_size=2, generator=g).shape \
        == (1, 3, 32, 32)
    model = tiny_net(dataset="cifar10")
    x = torch.rand(4, 3, 32, 32, generator=g)
    y = upi.predicted_labels(model, x)
    for m in upi.SALIENCY:
        assert upi.saliency(model, x, y, m, ig_steps=2).shape == (4, 32, 32)
    clean = {m: upi.saliency_maps(model, x, y, m, ig_steps=2) for m in upi.SALIENCY}
    per = upi.per_sample_attack(model, x, y, 0.5, steps=1, generator=g, batch_size=2)
    deltas = [per]
    for name, spec in upi.UNIVERSAL.items():
        options = {"steps": 2, "batch_size": 2} if name in ("upi_grad", "sgd_uap") else {}
        options.update({"batch_size": 2} if name == "upi_pca" else {})
        delta = spec(model, x, 0.5, y=y if spec.labels else None, norm="l2", generator=g, **options)
        assert delta.shape == (1, 3, 32, 32)
        deltas.append(delta)
    for d in deltas:
        out = upi.summarise(upi.evaluate(model, x, y, d, clean_maps=clean, topk=50, ig_steps=2, batch_size=3))
        assert 0.0 <= out["grad"]["topk"] <= 1.0


def test_model_fingerprint_tracks_weights():
    model = tiny_net()
    before = cache.model_fingerprint(model)
    assert before == cache.model_fingerprint(tiny_net())
    with torch.no_grad():
        model.head.bias.add_(1.0)
    assert cache.model_fingerprint(model) != before


def test_profiles_resolve_and_bad_values_fail():
    for profile in ("quick", "full", "tiny"):
        cfg = params.resolve({"profile": profile}, upi.PROFILES, upi.SCHEMA)
        assert cfg.eps_grid and cfg.n_fit >= 2
    with pytest.raises(params.ParameterError, match="epochs"):
        params.resolve({"profile": "tiny", "epochs": -3}, upi.PROFILES, upi.SCHEMA)
    with pytest.raises(params.ParameterError, match="eps_grid"):
        params.resolve({"profile": "tiny", "eps_grid": [1.0, -2.0]}, upi.PROFILES, upi.SCHEMA)
    cfg = params.resolve({"profile": "tiny", "eps": 5.0}, upi.PROFILES, upi.SCHEMA)
    assert cfg.eps == 5.0  # l_2 radii above 1 are allowed here


def test_cross_parameter_checks_and_loop_options():
    def cfg(**kw):
        return params.resolve({"profile": "tiny", **kw}, upi.PROFILES, upi.SCHEMA)

    upi.check(cfg())
    with pytest.raises(params.ParameterError, match="upi_batch"):
        upi.check(cfg(n_fit=8, upi_batch=16))
    with pytest.raises(params.ParameterError, match="topk"):
        upi.check(cfg(topk=785))
    with pytest.raises(params.ParameterError, match="n_train"):
        upi.check(cfg(n_fit=400))
    with pytest.raises(params.ParameterError, match="n_val"):
        upi.check(cfg(n_fit=280, n_val=40, upi_batch=16))
    with pytest.raises(params.ParameterError, match="grad_budgets"):
        upi.check(cfg(grad_budgets=[0.5, 2.0]))
    quick = params.resolve({"profile": "quick"}, upi.PROFILES, upi.SCHEMA)
    assert upi.ascent(quick) == {"steps": 30, "batch_size": 100, "lr": 0.25, "optimizer": "pgd"}
    assert upi.ascent(quick, 3)["steps"] == 90
    assert upi.ascent(quick, 0.25)["steps"] == 8 and upi.ascent(quick, 0.001)["steps"] == 1
    for profile in ("quick", "long", "full", "tiny"):
        upi.check(params.resolve({"profile": profile}, upi.PROFILES, upi.SCHEMA))


def test_timed_returns_the_value_and_counts_cpu_time_not_waiting():
    value, seconds = upi.timed(lambda n: sum(range(n)), 10**5, device="cpu")
    assert value == sum(range(10**5))
    # on a CPU the clock is the process's CPU time: waiting (another process holding the core) is not counted
    _, slept = upi.timed(time.sleep, 0.5, device="cpu")
    assert slept < 0.1


def test_per_sample_attack_started_from_a_universal_perturbation_dominates_it(batch):
    model, x, y = batch
    eps = 1.5
    clean = upi.saliency_maps(model, x, y)
    start = upi.UNIVERSAL["random"](model, x, eps, norm="l2", generator=rng(3))
    per = upi.per_sample_attack(model, x, y, eps, steps=3, start=start)
    assert (per.flatten(1).norm(dim=1) <= eps + 1e-4).all()

    def d(delta):
        return upi.l2_dissimilarity(upi.simple_gradient(model, upi.perturb(x, delta), y), clean)

    with torch.no_grad():
        kept_start = model(upi.perturb(x, start)).argmax(1) == y
        kept_per = model(upi.perturb(x, per)).argmax(1) == y
    # where the start keeps the label, the result keeps it too and changes the map at least as much
    assert kept_per[kept_start].all()
    assert (d(per)[kept_start] >= d(start)[kept_start] - 1e-5).all()
    assert d(per).mean() > d(start).mean()


def test_evaluate_reports_the_effective_norm(batch):
    model, x, y = batch
    clean = {"grad": upi.saliency_maps(model, x, y)}
    delta = -0.5 * torch.ones(1, 1, 28, 28)
    out = upi.evaluate(model, x, y, delta, clean_maps=clean, topk=20)
    expected = (upi.perturb(x, delta) - x).flatten(1).norm(dim=1)
    assert torch.allclose(out["effective_l2"], expected)
    assert (out["effective_l2"] <= delta.norm() + 1e-5).all()
    s = upi.summarise(out)
    assert s["effective_l2"] == pytest.approx(expected.mean().item())
    assert "l2_kept" in s["grad"]


def test_matched_noise_reaches_the_reference_effective_norm():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0  # black background, white square: the clip removes much of any noise
    ref = 0.4 * torch.ones(1, 1, 28, 28)
    noise = upi.matched_noise(x, ref, 4.0, generator=g)
    target = (upi.perturb(x, ref) - x).flatten(1).norm(dim=1).mean()
    got = (upi.perturb(x, noise) - x).flatten(1).norm(dim=1).mean()
    assert got.item() == pytest.approx(target.item(), rel=1e-3)
    assert noise.norm() > ref.norm() * 0.5


def fake_eval(d_by_method, fooled=None, n=50, seed=0):
    """evaluate()-shaped per-image results: D values drawn around the given means."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, mean in d_by_method.items():
        vals = (mean * (1 + 0.2 * torch.randn(n, generator=g))).clamp_min(0)
        flip = torch.zeros(n, dtype=torch.bool) if not fooled or m not in fooled else torch.rand(n, generator=g) < fooled[m]
        out[m] = {"grad": {"l2": vals}, "fooled": flip}
    return out


def test_statistics_drop_flipped_images_and_guard_the_reference():
    ev = {m: {"grad": {"l2": torch.tensor([1.0, 1.0, 5.0])}, "fooled": torch.tensor([False, False, False])}
          for m in ("random", "upi_grad")}
    ev["upi_grad"] = {"grad": {"l2": torch.tensor([2.0, 2.0, 9.0])}, "fooled": torch.tensor([False, False, True])}
    assert upi.ratio_stat(ev, "upi_grad", "random") == pytest.approx(2.0)  # the flipped image is left out
    ev["per_sample"] = {"grad": {"l2": torch.tensor([3.0, 3.0, 9.0])}, "fooled": torch.tensor([False] * 3)}
    assert upi.share_stat(ev, "upi_grad", "per_sample", guard=True) == pytest.approx(0.5)
    ev["per_sample"]["grad"]["l2"] = torch.tensor([1.5, 1.5, 9.0])  # a reference weaker than UPI-Grad
    assert torch.isnan(torch.tensor(upi.share_stat(ev, "upi_grad", "per_sample", guard=True)))


def test_null_baselines_are_not_graded_as_an_effect():
    """Random noise in place of the method, through every claim's own statistic, over seeds: never (partly) reproduced."""
    methods = ("random", "random2", "upi_pca", "upi_grad", "sgd_uap", "per_sample")
    for eps_mean in (0.3, 0.6):
        # a method that does nothing (UPI-PCA = noise) next to a UPI-Grad and a reference that do
        means = {"random": eps_mean, "random2": eps_mean, "upi_pca": eps_mean, "upi_grad": 1.6 * eps_mean,
                 "sgd_uap": 1.5 * eps_mean, "per_sample": 2.0 * eps_mean}
        per_seed = [upi.seed_statistics(fake_eval(means, n=300, seed=s)) for s in range(6)]
        for key in upi.RADIUS_CLAIMS:
            claim = upi.CLAIMS[key]
            null_key = key + ":null"
            if null_key in per_seed[0]:
                null = protocol.grade_null(claim, [v[null_key] for v in per_seed])
                assert null["verdict"] not in ("reproduced", "partly reproduced"), (key, null)
        # UPI-PCA equal to noise: neither of its claims is (partly) reproduced
        for key in ("pca-vs-random", "pca-near-grad"):
            g = protocol.grade(upi.CLAIMS[key], [v[key] for v in per_seed])
            assert g.verdict not in ("reproduced", "partly reproduced"), (key, g.verdict)
            assert not upi.beats_null(g)
        # UPI-Grad well above noise: its claim against noise is reproduced and beats the null
        g = protocol.grade(upi.CLAIMS["grad-vs-random"], [v["grad-vs-random"] for v in per_seed])
        assert g.verdict == "reproduced" and upi.beats_null(g)
    assert set(per_seed[0]) >= set(upi.RADIUS_CLAIMS)
    assert set(methods) <= set(fake_eval(means))


def test_claims_are_declared_for_every_profile():
    assert set(upi.RADIUS_CLAIMS) | {"pca-cheap"} == set(upi.CLAIMS)
    for key, claim in upi.CLAIMS.items():
        assert claim.key == key and claim.unit == "optimisation seed" and claim.replicates == "seeds"
        planned = claim.planned(upi.PROFILES)
        assert planned["quick"] >= 5 and planned["long"] >= planned["quick"] and planned["tiny"] >= 1
    fam = upi.family("grad-vs-random", [0.5, 2.0])
    assert fam[2.0].key == "grad-vs-random@eps 2" and fam[0.5].setting == "eps 0.5"


def test_converged_budget_and_time_saving():
    # the objective plateaus from budget 1 on: 1 is the cheapest converged budget
    val = {0.25: [0.50, 0.52], 0.5: [0.60, 0.61], 1.0: [0.700, 0.705], 2.0: [0.702, 0.708]}
    assert upi.converged_budget(val) == 1.0
    assert upi.converged_budget({0.5: [0.1, 0.1], 1.0: [0.2, 0.2]}) == 1.0
    assert upi.time_saving(1.0, 4.0) == pytest.approx(0.75)
    assert upi.time_saving(4.0, 4.0) == 0.0
    g = protocol.grade(upi.CLAIMS["pca-cheap"], [])
    assert not upi.beats_null(g)


def test_random_streams_are_distinct_and_reproducible():
    draws = {(m, j, s): upi.seeded(m, j, s).initial_seed() for m in upi.STREAM for j in range(3) for s in range(3)}
    assert len(set(draws.values())) == len(draws)  # no two (method, radius, seed) share a stream
    assert torch.equal(torch.rand(4, generator=upi.seeded("upi_grad", 1, 2)),
                       torch.rand(4, generator=upi.seeded("upi_grad", 1, 2)))
    assert upi.grad_key(1.0) == "upi_grad" and upi.grad_key(4.0) == "upi_grad x4"
    assert upi.clock_name("cpu") == "process CPU time"


def test_the_cached_experiment_fits_every_perturbation_once_and_evaluates_it(batch):
    model, x, y = batch
    cfg = params.resolve({"profile": "tiny", "n_fit": 6, "upi_batch": 3, "upi_epochs": 1, "eps": 1.0,
                          "batch_size": 4}, upi.PROFILES, upi.SCHEMA)
    maps = upi.clean_maps(model, x, y, ig_steps=3, batch_size=4)
    assert torch.allclose(maps, upi.saliency_maps(model, x, y, batch_size=4))
    fit, val, more = (upi.Images(x[i], y[i], maps[i]) for i in (slice(0, 6), slice(6, 9), slice(0, 12)))
    radii, budgets = [0.5, 1.0], [1.0, 2.0]
    before = dict(cache.STATS)
    out = upi.fit_seed(model, cfg, 0, radii, budgets, fit=fit, val=val, more=more)
    assert cache.STATS["misses"] == before["misses"] + 1
    keys = {f"{m}@{e}" for m in ("random", "random2", "upi_pca", "upi_pca_more", "upi_grad", "sgd_uap")
            for e in radii} | {"upi_grad x2@1.0"}
    assert set(out["delta"]) == keys and set(out["seconds"]) == keys - {f"upi_pca_more@{e}" for e in radii}
    for k, d in out["delta"].items():
        assert d.shape == (1, 1, 28, 28) and d.norm() <= float(k.split("@")[1]) + 1e-4
    # UPI-PCA's time holds its direction's; the validation objective is the mean D of each budget's fit
    assert out["seconds"]["upi_pca@0.5"] >= out["direction_seconds"]
    d2 = out["delta"]["upi_grad x2@1.0"]
    assert out["validation"]["2.0"] == pytest.approx(
        upi.l2_dissimilarity(upi.saliency_maps(model, upi.perturb(val.x, d2), val.y), val.maps).mean().item())
    again = upi.fit_seed(model, cfg, 0, radii, budgets, fit=fit, val=val, more=more)  # a hit: the same numbers
    assert cache.STATS["misses"] == before["misses"] + 1 and again["seconds"] == out["seconds"]
    assert all(torch.equal(again["delta"][k], out["delta"][k]) for k in keys)
    other = upi.fit_seed(model, cfg, 1, radii, budgets, fit=fit, val=val, more=more)
    assert not torch.equal(other["delta"]["random@0.5"], out["delta"]["random@0.5"])

    start = out["delta"]["upi_grad@1.0"]
    delta, secs = upi.per_sample(model, x, y, 1.0, start, steps=2, batch_size=4)
    assert delta.shape == x.shape and secs >= 0 and (delta.flatten(1).norm(dim=1) <= 1.0 + 1e-4).all()
    clean = {"grad": maps}
    ev = upi.evaluated(model, x, y, start, clean, topk=20, ig_steps=3, batch_size=4)
    direct = upi.evaluate(model, x, y, start, clean_maps=clean, topk=20, ig_steps=3, batch_size=4)
    assert torch.equal(ev["grad"]["l2"], direct["grad"]["l2"]) and torch.equal(ev["fooled"], direct["fooled"])


def test_evaluations_at_swaps_a_fit_and_kept_share_counts_images_both_keep():
    ev = {(0, m, 1.0): {"name": m} for m in (*upi.EVALUATED, "upi_grad x4")}
    at = upi.evaluations_at(ev, 0, 1.0, upi_grad="upi_grad x4")
    assert set(at) == set(upi.EVALUATED) and at["upi_grad"]["name"] == "upi_grad x4"
    assert at["random"]["name"] == "random"
    a = {"fooled": torch.tensor([False, True, False, False])}
    b = {"fooled": torch.tensor([False, False, True, False])}
    assert upi.kept_share(a, b) == 0.5 and upi.kept_share(a, a) == 0.75


def test_seed_means_average_each_column_over_the_seeds():
    def summary(l2, kept, topk, rho, fool, eff):
        return {"grad": {"l2": l2, "l2_kept": kept, "topk": topk, "spearman": rho}, "fooling_rate": fool,
                "effective_l2": eff}

    row = upi.seed_means([summary(1.0, 2.0, 0.5, 0.1, 0.2, 3.0), summary(3.0, 4.0, 0.7, 0.3, 0.4, 5.0)], topk=20)
    assert row == pytest.approx({"D (l2)": 2.0, "D, label kept": 3.0, "top-20": 0.6, "Spearman": 0.2,
                                 "fooling rate": 0.3, "effective norm": 4.0})
    assert list(row) == ["D (l2)", "D, label kept", "top-20", "Spearman", "fooling rate", "effective norm"]
