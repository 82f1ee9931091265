"""Unit tests of advbook.methods.logits (chapter 3: logit distributions of AT networks)."""

import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from advbook import attacks, params
from advbook.data import TensorData
from advbook.methods import logits as L


def test_logit_statistics_and_shift_invariance():
    z = torch.tensor([[3.0, 1.0, -2.0], [0.5, 2.5, 2.0]])
    assert torch.allclose(L.max_logit(z), torch.tensor([3.0, 2.5]))
    assert torch.allclose(L.logit_gap(z), torch.tensor([2.0, 0.5]))
    p = F.softmax(z, 1).max(1).values
    assert torch.allclose(L.confidence(z), p)
    assert torch.allclose(L.confidence_logodds(z), torch.log(p / (1 - p)), atol=1e-5)
    # the gap and the confidence are shift-invariant, the max logit is not
    assert torch.allclose(L.logit_gap(z + 7), L.logit_gap(z))
    assert torch.allclose(L.confidence(z + 7), L.confidence(z))
    assert torch.allclose(L.max_logit(z + 7), L.max_logit(z) + 7)
    s = L.summarize(L.logit_stats(z), torch.tensor([0, 2]))
    assert s["accuracy"] == 0.5 and math.isclose(s["mean_gap"], 1.25)


def test_logodds_does_not_saturate():
    z = torch.tensor([[60.0, 0.0, -5.0], [40.0, 0.0, 0.0]])
    assert (L.confidence(z) == 1.0).all()  # float32 softmax saturates: the ranks would tie
    lo = L.confidence_logodds(z)
    assert torch.isfinite(lo).all() and lo[0] > lo[1]
    assert math.isclose(lo[1].item(), 40 - math.log(2), rel_tol=1e-6)


def test_rankdata_and_spearman_match_scipy():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 20, (300,), generator=gen).float()  # many ties
    b = a + torch.randn(300, generator=gen) * 5
    assert torch.allclose(L.rankdata(a), torch.from_numpy(stats.rankdata(a.numpy())))
    assert math.isclose(L.spearman(a, b), stats.spearmanr(a.numpy(), b.numpy()).statistic, abs_tol=1e-10)
    assert math.isclose(L.spearman(a, a.exp()), 1.0, abs_tol=1e-12)  # invariant to monotone maps
    assert math.isclose(L.spearman(a, -a), -1.0, abs_tol=1e-12)
    rows = torch.stack([a, b])
    assert torch.allclose(L.rankdata(rows)[1], L.rankdata(b))
    with pytest.raises(ValueError):
        L.spearman(a, b[:10])


def test_spearman_bootstrap_is_paired_and_centred():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(400, generator=gen)
    close = a + 0.1 * torch.randn(400, generator=gen)
    far = a + 2.0 * torch.randn(400, generator=gen)
    reps = L.spearman_bootstrap(a, far, close, n_boot=200, seed=0)
    diff = L.spearman(a, close) - L.spearman(a, far)
    assert reps.shape == (200,)
    assert abs(reps.mean().item() - diff) < 0.05 and (reps > 0).all()
    torch.testing.assert_close(reps, L.spearman_bootstrap(a, far, close, n_boot=200, seed=0))


def test_top_differences_directions():
    a = torch.arange(10.0)
    b = torch.arange(10.0).flip(0)
    more_a, more_b = L.top_differences(a, b, 2)
    assert set(more_a.tolist()) == {9, 8} and set(more_b.tolist()) == {0, 1}


def test_binary_robust_loss_is_exact_and_is_an_l1_penalty():
    gen = torch.Generator().manual_seed(0)
    x, w, b = torch.rand(50, 20, generator=gen), torch.randn(20, generator=gen), torch.tensor(0.3)
    y = torch.where(torch.rand(50, generator=gen) < 0.5, -1.0, 1.0)
    eps = 0.05
    closed = L.binary_robust_loss(w, b, x, y, eps)
    delta = L.binary_worst_delta(w, y, eps)
    assert delta.abs().max() <= eps + 1e-7
    attained = F.softplus(-y * ((x + delta) @ w + b))
    torch.testing.assert_close(closed, attained)
    # no point of the eps-box (its vertices are where a convex loss peaks) does better
    signs = torch.where(torch.rand(2000, 20, generator=gen) < 0.5, -1.0, 1.0) * eps
    others = F.softplus(-y[:, None] * ((x @ w)[:, None] + signs @ w + b))
    assert (others <= closed[:, None] + 1e-6).all()
    assert torch.allclose(closed, F.softplus(-y * (x @ w + b) + eps * w.abs().sum()))


def test_linear_robust_logits_give_exact_worst_margins():
    gen = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(12, 4)
    x, y, eps = torch.rand(30, 12, generator=gen), torch.randint(0, 4, (30,), generator=gen), 0.1
    z = lin(x).detach()
    zr = L.linear_robust_logits(z, lin.weight.detach(), y, eps)
    assert torch.equal(zr.gather(1, y[:, None]), z.gather(1, y[:, None]))
    # margin to class j under delta = -eps sign(w_y - w_j) is exactly the robust margin
    j = (y + 1) % 4
    dw = lin.weight[y] - lin.weight[j]
    xa = x - eps * dw.sign()
    za = lin(xa).detach()
    margin_attained = za.gather(1, y[:, None]).squeeze(1) - za.gather(1, j[:, None]).squeeze(1)
    margin_robust = zr.gather(1, y[:, None]).squeeze(1) - zr.gather(1, j[:, None]).squeeze(1)
    torch.testing.assert_close(margin_attained, margin_robust.detach())


def test_linear_at_shrinks_weights_and_gaps():
    gen = torch.Generator().manual_seed(0)
    n, d = 400, 30
    y = torch.randint(0, 3, (n,), generator=gen)
    centers = torch.randn(3, d, generator=gen)
    x = (centers[y] + 1.5 * torch.randn(n, d, generator=gen)) * 0.2 + 0.5  # overlapping classes
    std = L.fit_linear(x, y, 3, eps=0.0, steps=150)
    adv = L.fit_linear(x, y, 3, eps=0.1, steps=150)
    assert adv.weight.abs().sum() < 0.8 * std.weight.abs().sum()
    with torch.no_grad():
        assert L.logit_gap(adv(x)).mean() < L.logit_gap(std(x)).mean()
    w, b = L.fit_binary(x, torch.where(y == 0, 1.0, -1.0), eps=0.05, steps=100)
    w0, _ = L.fit_binary(x, torch.where(y == 0, 1.0, -1.0), eps=0.0, steps=100)
    assert w.abs().sum() < w0.abs().sum()


def test_teacher_manipulations():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(64, 10, generator=gen) * 3
    T = 4.0
    # shuffled: same max, class, and multiset of non-max values; confidence unchanged at any T
    s = L.shuffle_nonmax(z, torch.Generator().manual_seed(1))
    assert torch.equal(s.argmax(1), z.argmax(1)) and torch.equal(s.max(1).values, z.max(1).values)
    assert torch.equal(s.sort(1).values, z.sort(1).values)
    torch.testing.assert_close(L.confidence(s / T), L.confidence(z / T))
    assert not torch.equal(s, z)
    # mean: non-max logits all equal to their mean
    m = L.mean_nonmax(z)
    assert torch.equal(m.argmax(1), z.argmax(1))
    others = m.masked_fill(F.one_hot(z.argmax(1), 10).bool(), float("nan"))
    assert torch.allclose(others.nanmean(1), (z.sum(1) - z.max(1).values) / 9)
    spread = torch.where(torch.isnan(others), torch.zeros_like(others), others - others.nanmean(1, keepdim=True))
    assert spread.abs().max() < 1e-5
    # permuted confidence: same class order per sample, sorted values of another sample
    p = L.permute_confidence(z, torch.Generator().manual_seed(2))
    assert torch.equal(p.argsort(1), z.argsort(1))
    assert torch.equal(p.sort(1).values.sort(0).values, z.sort(1).values.sort(0).values)
    assert not torch.allclose(L.confidence(p), L.confidence(z))
    # targets
    y = z.argmax(1)
    for kind in L.TEACHERS:
        t = L.teacher_targets(kind, y, z, z + 1, T, torch.Generator().manual_seed(0))
        if kind == "hard_labels":
            assert torch.equal(t, y)
        else:
            assert t.shape == z.shape and torch.allclose(t.sum(1), torch.ones(64))
    with pytest.raises(ValueError):
        L.teacher_targets("nope", y, z, z, T)


def _fake(name, shape, n=48):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, *shape, generator=gen)
    y = torch.arange(n) % 10
    return TensorData(name, x[:32], y[:32], x[32:], y[32:], tuple(str(i) for i in range(10)))


@pytest.mark.parametrize("name,shape,arch,width", [("mnist5k", (1, 28, 28), "smallcnn", 4), ("cifar10", (3, 32, 32), "resnet18", 4)])
def test_student_and_robust_suite_on_both_input_shapes(tmp_path, monkeypatch, name, shape, arch, width):
    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path))
    data = _fake(name, shape)
    z = torch.randn(len(data.y_train), 10)
    targets = L.teacher_targets("at_shuffled", data.y_train, z, z, 5.0, torch.Generator().manual_seed(0))
    kw = dict(arch=arch, width=width, epochs=1, temperature=5.0, seed=0, teacher_id="t", batch_size=16)
    student, hist = L.train_student(data, "at_shuffled", targets, **kw)
    again, _ = L.train_student(data, "at_shuffled", targets, **kw)  # cache hit: identical weights
    for a, b in zip(student.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    res = L.robust_suite(student, data.x_test, data.y_test, 8 / 255, steps=2,
                         aa_budget={"n_iter": 2, "n_queries": 5, "n_target_classes": 1})
    assert 0 <= res["worst"] <= min(res["pgd-ce"], res["pgd-cw"]) <= res["clean"] <= 1
    res0 = L.robust_suite(student, data.x_test, data.y_test, 0.0, suite=("pgd-ce",), steps=2)
    assert res0["worst"] == res0["clean"]


def test_robust_suite_breaks_an_undefended_linear_model():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(100, 1, 4, 4, generator=gen)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10))
    y = model(x).argmax(1).detach()
    res = L.robust_suite(model, x, y, 0.5, suite=("pgd-cw",), steps=10)
    assert res["clean"] == 1.0 and res["worst"] < 0.2


def test_parameters_fail_clearly():
    for profile in ("quick", "full", "tiny"):
        cfg = params.resolve({"profile": profile}, L.PROFILES, L.SCHEMA)
        assert cfg.temperature > 0 and set(cfg.teachers) <= set(L.TEACHERS)
    with pytest.raises(params.ParameterError, match="teachers"):
        params.resolve({"profile": "tiny", "teachers": ["at_full", "oracle"]}, L.PROFILES, L.SCHEMA)
    with pytest.raises(params.ParameterError, match="temperature"):
        params.resolve({"profile": "tiny", "temperature": -1.0}, L.PROFILES, L.SCHEMA)


def test_paired_test_matches_scipy_and_reports_power():
    d = [0.10, 0.05, 0.12, 0.00, 0.08, 0.09]
    out = L.paired_test(d, effect=0.1)
    ref = stats.ttest_1samp(d, 0.0)
    assert out["n"] == 6 and math.isclose(out["p"], ref.pvalue, rel_tol=1e-9)
    ci = ref.confidence_interval(0.95)
    assert math.isclose(out["ci"][0], ci.low, rel_tol=1e-9) and math.isclose(out["ci"][1], ci.high, rel_tol=1e-9)
    # the minimum detectable effect is detected with ~80% power (non-central t), by construction of the formula
    at_mde = L.paired_test(d, effect=out["mde"])["power_at"]
    assert 0.75 < at_mde < 0.85
    assert out["power_at"] > at_mde  # 0.1 > MDE here: more power
    one = L.paired_test([0.3])
    assert one["mean"] == 0.3 and math.isnan(one["p"]) and math.isnan(one["mde"])


def test_seeds_needed_grows_with_the_spread():
    n_small, n_large = L.seeds_needed(0.04, 0.1), L.seeds_needed(0.08, 0.1)
    assert 2 <= n_small < n_large
    sd_n = 0.08 / math.sqrt(n_large)
    assert L.paired_test([0.1 + sd_n * math.sqrt(n_large) * z for z in (-1, 1)] * (n_large // 2))["n"] >= 2
    assert L.seeds_needed(10.0, 0.01, max_n=20) is None


def test_distillation_claim_is_paired_by_seed():
    # a seed effect shared by all students (large) cancels in the paired differences
    seed_effect = [0.0, 0.3, -0.2, 0.1, 0.25]
    per_seed = {"hard_labels": [0.1 + s for s in seed_effect],
                "at_full": [0.2 + s + 0.01 * i for i, s in enumerate(seed_effect)],
                "at_shuffled": [0.1 + s for s in seed_effect],
                "at_mean": [0.2 + s for s in seed_effect],
                "at_permuted_conf": [0.12 + s for s in seed_effect]}
    out = L.distillation_claim(per_seed)
    assert out["transfers"] and out["transfer"]["ci"][0] > 0.05
    assert out["removes"] == {"at_shuffled": True, "at_mean": False, "at_permuted_conf": True}
    assert out["n_removed"] == 2.0 and out["excludes_half"]["at_mean"] and not out["excludes_half"]["at_shuffled"]
    # the same numbers unpaired (seed effect not cancelled) would be inconclusive: the spread dwarfs the gain
    assert stats.ttest_ind(per_seed["at_full"], per_seed["hard_labels"]).pvalue > 0.05
    no_gain = L.distillation_claim({**per_seed, "at_full": per_seed["hard_labels"]})
    assert not no_gain["transfers"] and math.isnan(no_gain["n_removed"])
    missing = L.distillation_claim({"at_full": [0.1, 0.2]})
    assert missing["transfer"] is None and math.isnan(missing["n_removed"])


def test_check_rejects_inconsistent_parameters():
    from advbook import chapter

    with pytest.raises(params.ParameterError, match="student_eps"):
        chapter.setup(L.CHAPTER, "t", L, {"profile": "tiny", "seed": 0, "student_eps": []}, show=False)
    with pytest.raises(params.ParameterError, match="n_eval"):
        chapter.setup(L.CHAPTER, "t", L, {"profile": "tiny", "seed": 0, "n_eval": 500}, show=False)
    ch = chapter.setup(L.CHAPTER, "t", L, {"profile": "long", "device": "cpu", "seed": 0}, show=False)
    assert ch.cfg.student_seeds >= 8 and ch.cfg.autoattack["n_iter"] == 100
    assert ch.cfg.recipe == chapter.setup(L.CHAPTER, "t", L, {"profile": "quick", "device": "cpu", "seed": 0},
                                          show=False).cfg.recipe  # the long profile reuses the quick models


def test_robust_suite_is_cached_by_model_and_settings():
    from advbook import cache

    gen = torch.Generator().manual_seed(1)
    x = torch.rand(30, 1, 4, 4, generator=gen)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10))
    y = model(x).argmax(1).detach()
    first = L.robust_suite(model, x, y, 0.2, suite=("pgd-ce",), steps=3)
    hits = cache.STATS["hits"]
    assert L.robust_suite(model, x, y, 0.2, suite=("pgd-ce",), steps=3) == first
    assert cache.STATS["hits"] == hits + 1
    L.robust_suite(model, x, y, 0.2, suite=("pgd-ce",), steps=4)  # another setting: computed afresh
    assert cache.STATS["hits"] == hits + 1
    assert L.robust_suite(model, x, y, 0.2, suite=("pgd-ce",), steps=3, use_cache=False) == first
