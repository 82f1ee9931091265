"""Unit tests of advbook.methods.logits (chapter 3: logit distributions of AT networks)."""

import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from advbook import attacks, params, protocol
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
        assert all(T > 0 for T in cfg.temperatures) and set(cfg.teachers) <= set(L.TEACHERS)
    with pytest.raises(params.ParameterError, match="teachers"):
        params.resolve({"profile": "tiny", "teachers": ["at_full", "oracle"]}, L.PROFILES, L.SCHEMA)
    with pytest.raises(params.ParameterError, match="temperatures"):
        params.resolve({"profile": "tiny", "temperatures": [-1.0]}, L.PROFILES, L.SCHEMA)


def test_check_rejects_inconsistent_parameters():
    from advbook.book import chapter

    with pytest.raises(params.ParameterError, match="student_eps"):
        chapter.setup(L, {"profile": "tiny", "seed": 0, "student_eps": []}, show=False)
    with pytest.raises(params.ParameterError, match="n_eval"):
        chapter.setup(L, {"profile": "tiny", "seed": 0, "n_eval": 500}, show=False)
    ch = chapter.setup(L, {"profile": "long", "device": "cpu", "seed": 0}, show=False)
    assert ch.cfg.student_seeds >= 6 and ch.cfg.model_seeds >= 3 and ch.cfg.autoattack["n_iter"] == 100
    assert ch.cfg.recipe == chapter.setup(L, {"profile": "quick", "device": "cpu", "seed": 0},
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


def test_centred_max_logit_is_shift_invariant():
    z = torch.tensor([[3.0, 1.0, -1.0], [0.0, 2.0, 4.0]])
    torch.testing.assert_close(L.centred_max_logit(z), torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(L.centred_max_logit(z + 5), L.centred_max_logit(z))
    assert L.summarize(L.logit_stats(z))["mean_centred_max_logit"] == pytest.approx(2.0)


def test_claims_are_declared_with_replicates_in_every_profile():
    assert set(L.CLAIMS) == {"shrink", "rank", "transfer", "nonmax"}
    for claim in L.CLAIMS.values():
        assert claim.method_claim and claim.replicates in L.SCHEMA
        planned = claim.planned(L.PROFILES)
        assert all(planned[p] >= 1 for p in L.PROFILES)
        assert planned["quick"] >= 2 and planned["long"] >= planned["quick"]
    # claim 1's control: at least 3 standard and 2 AT networks in the quick profile
    layout = L.model_seed_layout(L.PROFILES["quick"]["model_seeds"])
    std = layout["pair"] + layout["control"] + layout["null"]
    assert len(set(std)) == len(std) >= 3 and len(layout["pair"]) >= 2


def test_families_cover_every_setting_with_unique_keys():
    fam = L.family("transfer", [0.2, 0.1], [30.0, 4.0])
    assert len(fam) == 2 * 2 * 2 and {o for _, o, _, _ in fam} == set(L.COMPARATORS)
    nonmax = L.family("nonmax", [0.2, 0.1], [30.0, 4.0])
    assert len(nonmax) == 3 * 2 * 2 and {o for _, o, _, _ in nonmax} == set(L.MANIPULATIONS)
    keys = [c.key for c, *_ in fam + nonmax]
    assert len(set(keys)) == len(keys) and all(c.setting for c, *_ in fam)
    assert L.family("transfer", [0.2], [30.0], teachers=["hard_labels", "standard"]) == []
    assert len(L.family("transfer", [0.2], [30.0], teachers=["at_full", "hard_labels"])) == 1


def test_replicate_values():
    assert L.shrink_values([4.0, 5.0], [2.0, 5.0]) == [0.5, 0.0]
    with pytest.raises(ValueError):
        L.shrink_values([1.0], [1.0, 2.0])
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(200, generator=gen)
    close, far = a + 0.1 * torch.randn(200, generator=gen), torch.randn(200, generator=gen)
    vals = L.rank_values([a], [close], [far])
    assert vals[0] == pytest.approx(L.spearman(a, close) - L.spearman(a, far)) and vals[0] > 0.5
    per_seed = {"at_full": [0.3, 0.4], "hard_labels": [0.1, 0.3]}
    assert L.contrast_values(per_seed, "at_full", "hard_labels") == pytest.approx([0.2, 0.1])
    assert L.contrast_values(per_seed, "at_full", "standard") == []


def _standard_like_nets(n, seed):
    """n networks' test-set means that differ only by training noise (no AT effect)."""
    gen = torch.Generator().manual_seed(seed)
    return (5.8 + 0.3 * torch.randn(n, generator=gen)).tolist()


@pytest.mark.parametrize("seed", range(5))
def test_nulls_are_never_reproduced(seed):
    # claim 1: a second standard network in place of the AT one
    null1 = L.shrink_values(_standard_like_nets(3, seed), _standard_like_nets(3, seed + 100))
    assert protocol.grade(L.CLAIMS["shrink"], null1).verdict not in ("reproduced", "partly reproduced")
    # claim 2: a third standard network in place of the AT one (same noise as the control)
    gen = torch.Generator().manual_seed(seed)
    base = [torch.randn(300, generator=gen) for _ in range(3)]
    noisy = [[b + 0.5 * torch.randn(300, generator=gen) for b in base] for _ in range(2)]
    null2 = L.rank_values(base, noisy[0], noisy[1])
    assert protocol.grade(L.CLAIMS["rank"], null2).verdict not in ("reproduced", "partly reproduced")
    # claim 3a: a student whose targets carry nothing the comparator's lack (seed effect shared)
    seed_effect = (0.05 * torch.randn(4, generator=gen)).tolist()
    noise = (0.01 * torch.randn(4, generator=gen)).tolist()
    per_seed = {"standard": [0.1 + e + n for e, n in zip(seed_effect, noise)],
                "hard_labels": [0.1 + e for e in seed_effect]}
    null3 = L.contrast_values(per_seed, "standard", "hard_labels")
    for claim, *_ in L.family("transfer", [0.2], [30.0]):
        assert protocol.grade(claim, null3).verdict not in ("reproduced", "partly reproduced")


def test_a_real_effect_is_reproduced_through_the_family():
    members = [(c, [0.2, 0.21, 0.19, 0.2]) for c, *_ in L.family("transfer", [0.2, 0.1], [30.0])]
    assert all(g.verdict == "reproduced" for g in protocol.grade_family(members))


def test_linear_shrink_ratio_does_not_depend_on_the_step_budget():
    gen = torch.Generator().manual_seed(0)
    n, d = 300, 20
    y = torch.randint(0, 3, (n,), generator=gen)
    x = (torch.randn(3, d, generator=gen)[y] + 0.5 * torch.randn(n, d, generator=gen)) * 0.2 + 0.5

    def ratio(steps, l2):
        w = [L.fit_linear(x, y, 3, eps=e, steps=steps, l2=l2).weight.abs().sum().item() for e in (0.0, 0.2)]
        return w[1] / w[0]

    r300, r600 = ratio(300, 1e-2), ratio(600, 1e-2)
    assert r300 < 0.9 and abs(r300 - r600) < 0.02


def test_robust_suite_mask_matches_its_worst_case():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(24, 1, 4, 4), torch.randint(0, 3, (24,))
    out = L.robust_suite(model, x, y, 0.05, suite=("pgd-ce", "pgd-cw"), steps=3, use_cache=False, return_mask=True)
    assert out["robust_mask"].dtype == torch.bool and out["robust_mask"].shape == (24,)
    assert out["robust_mask"].double().mean().item() == pytest.approx(out["worst"])
    assert "robust_mask" not in L.robust_suite(model, x, y, 0.05, suite=("pgd-ce",), steps=3, use_cache=False)


def test_calibration_sentence_reads_the_student_records(tmp_path):
    import json

    from advbook import calibration

    assert calibration.MODELS["student"]["eps"] in L.PROFILES["quick"]["student_eps"]
    assert calibration.MODELS["student"]["n_eval"] <= L.PROFILES["quick"]["n_eval"]
    assert "no calibration record for the AT-teacher student" in L.calibration_sentence(root=tmp_path)
    for key, misses in (("student", 2), ("student-hard", 0)):
        path = tmp_path / calibration.MODELS[key]["out"].relative_to(calibration.ROOT)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "measured": "2026-12-03T10:00:00+0000", "eps": 0.2, "model_fingerprint": f"fp-{key}",
            "reference": {"robust": 0.08},
            "candidates": {"chapter 3's quick suite": {"robust": 0.0933, "agreement": {
                "n": 150, "only_candidate": misses, "only_reference": 0}}}}))
    text = L.calibration_sentence({"student": "fp-student", "student-hard": "another"}, root=tmp_path)
    assert "2026-12-03" in text and "8.0%" in text and "9.3%" in text
    assert "leaves robust 2 point(s)" in text and "leaves robust 0 point(s)" in text
    assert "this build's weights" in text and "other weights than this build's" in text


def test_two_logit_model_has_the_binary_loss_and_linear_ratios_shrink():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(50, 1, 4, 4, generator=gen)
    ybin = torch.where(torch.rand(50, generator=gen) < 0.5, 1.0, -1.0)
    w, b = torch.randn(16, generator=gen), torch.tensor(0.3)
    ce = F.cross_entropy(L.TwoLogit(w, b)(x), (ybin > 0).long(), reduction="none")
    torch.testing.assert_close(ce, L.binary_robust_loss(w, b, x.flatten(1), ybin, 0.0))
    n, d = 300, 20
    y = torch.randint(0, 3, (n,), generator=gen)
    xs = (torch.randn(3, d, generator=gen)[y] + 0.5 * torch.randn(n, d, generator=gen)) * 0.2 + 0.5
    r = L.linear_ratios(xs, y, xs, 3, 0.2, steps=150, l2=1e-2)
    std = L.fit_linear(xs, y, 3, eps=0.0, steps=150, l2=1e-2)
    adv = L.fit_linear(xs, y, 3, eps=0.2, steps=150, l2=1e-2)
    assert r["w"] == pytest.approx(adv.weight.abs().sum().item() / std.weight.abs().sum().item())
    assert r["w"] < 0.9 and r["gap"] < 1


def test_student_helpers_train_attack_and_read_per_seed(tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path))
    data = _fake("mnist5k", (1, 28, 28))
    z = torch.randn(len(data.y_train), 10, generator=torch.Generator().manual_seed(1))
    kw = dict(at_logits=z, std_logits=z, n_seeds=2, arch="smallcnn", width=4, epochs=1, seed=3, teacher_id="t",
              hard_temperature=5.0)
    first = L.train_students(data, ("at_full", "hard_labels"), 5.0, **kw)
    other = L.train_students(data, ("at_full", "hard_labels"), 10.0, **kw)
    assert set(first) == {(k, 5.0, s) for k in ("at_full", "hard_labels") for s in (0, 1)}
    assert set(other) == {("at_full", 10.0, s) for s in (0, 1)}  # hard labels: one temperature only
    targets = L.teacher_targets("at_full", data.y_train, z, z, 5.0, torch.Generator().manual_seed(3 + 1))
    direct, _ = L.train_student(data, "at_full", targets, arch="smallcnn", width=4, epochs=1, temperature=5.0,
                                seed=3 + 100 + 1, teacher_id="t")
    assert all(torch.equal(a, b) for a, b in zip(first["at_full", 5.0, 1].state_dict().values(),
                                                 direct.state_dict().values()))
    students = {**first, **other}
    rows = L.attack_students(students, list(students), data.x_test, data.y_test, [0.0, 0.1], suite=("pgd-ce",),
                             steps=2)
    assert len(rows) == 2 * len(students)
    assert all(r["T"] is None for r in rows if r["student"] == "hard_labels")
    assert all(r["worst"] == r["clean"] for r in rows if r["eps"] == 0.0)
    table = pd.DataFrame(rows)
    per_seed = L.worst_per_seed(table, 0.1, 10.0, ("at_full", "hard_labels", "standard"))
    assert set(per_seed) == {"at_full", "hard_labels"}  # hard labels at any temperature; no standard student
    assert per_seed["at_full"] == [r["worst"] for r in rows if r["eps"] == 0.1 and r["T"] == 10.0]


def test_target_statistics_and_fidelity():
    uniform = L.target_stats(torch.zeros(5, 10), 1.0)
    assert uniform["mean max prob"] == pytest.approx(0.1) and uniform["mean relative entropy"] == pytest.approx(1.0)
    sharp = L.target_stats(torch.eye(10)[:5] * 50, 1.0)
    assert sharp["mean max prob"] > 0.99 and sharp["mean relative entropy"] < 0.01
    assert L.target_stats(torch.eye(10)[:5] * 50, 100.0)["mean relative entropy"] > 0.9  # T flattens the targets
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10))
    x = torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p = F.softmax(model(x) / 2.0, 1)
    assert L.kl_to_teacher(model, x, p, 2.0) == pytest.approx(0.0, abs=1e-6)
    assert L.kl_to_teacher(model, x, torch.full_like(p, 0.1), 2.0) > 0
    assert L.seed_means([{"mean_gap": 1.0}, {"mean_gap": 3.0}], "gap") == [1.0, 3.0]
