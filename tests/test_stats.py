"""Shared statistics against their SciPy references."""

import numpy as np
import pytest
import scipy.stats
import torch

from advbook import stats


def test_rankdata_and_spearman_match_scipy_with_ties():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (40,), generator=gen).double()
    b = a + torch.randn(40, generator=gen, dtype=torch.float64)
    assert np.allclose(stats.rankdata(a).numpy(), scipy.stats.rankdata(a.numpy()))
    assert stats.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a.numpy(), b.numpy())[0], abs=1e-12)
    rows = stats.spearman_rows(torch.stack([a, b]).view(2, 4, 10), torch.stack([b, a]).view(2, 4, 10))
    assert rows.shape == (2,) and torch.allclose(rows, torch.full((2,), stats.spearman(a, b)).float(), atol=1e-6)
    with pytest.raises(ValueError, match="1-D"):
        stats.spearman(a[:1], b[:1])


def test_wilson_interval_and_l2_norm():
    lo, hi = stats.wilson_interval(0.0, 100)
    assert lo == 0.0 and 0.02 < hi < 0.05
    lo, hi = stats.wilson_interval(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert stats.l2_norm(torch.ones(3, 2, 2)).allclose(torch.full((3,), 2.0))
    assert stats.mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))


def test_t_interval_matches_scipy_and_is_wider_than_the_normal_one_for_few_values():
    v = [0.126, -0.069, 0.034]
    mean, lo, hi = stats.t_interval(v)
    ref = scipy.stats.t.interval(0.95, 2, loc=np.mean(v), scale=scipy.stats.sem(v))
    assert mean == pytest.approx(np.mean(v)) and (lo, hi) == pytest.approx(ref)
    assert stats.t_interval([1.0, 2.0, 3.0]) == pytest.approx((2.0, 2.0 - 2.4841, 2.0 + 2.4841), abs=1e-4)
    normal = stats.mean_interval(torch.tensor(v))
    assert lo < normal[1] and hi > normal[2]
    assert stats.t_interval([0.5]) == (0.5, float("-inf"), float("inf"))
    with pytest.raises(ValueError, match="at least one"):
        stats.t_interval([])
    with pytest.raises(ValueError, match="level"):
        stats.t_interval(v, level=95)


def test_mean_interval_is_the_normal_interval_of_the_mean():
    v = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    mean, lo, hi = stats.mean_interval(v)
    half = 1.96 * v.double().std().item() / 8 ** 0.5
    assert mean == pytest.approx(0.625) and lo == pytest.approx(0.625 - half) and hi == pytest.approx(0.625 + half)
    paired = stats.mean_interval(torch.tensor([1.0, -1.0] * 50))  # differences that cancel
    assert paired[1] < 0 < paired[2]
    assert stats.mean_interval(torch.tensor([0.5]))[1] == float("-inf")  # one value: no interval
    with pytest.raises(ValueError, match="at least one"):
        stats.mean_interval(torch.tensor([]))
