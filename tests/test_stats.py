"""Shared statistics against their SciPy references."""

import numpy as np
import pytest
import scipy.stats
import torch

from advbook import plots, stats


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


def test_wilson_error_bars_reach_the_interval_from_each_value():
    values = [0.0, 0.5, 0.93, 1.0]
    err = plots.wilson_errors(values, 100)
    assert err.shape == (2, 4) and (err >= 0).all()
    for p, down, up in zip(values, *err):
        lo, hi = stats.wilson_interval(p, 100)
        assert (p - down, p + up) == pytest.approx((lo, hi))
    assert err[0, 0] == 0.0 and err[1, 3] == 0.0  # the interval stops at 0 and 1
    assert (plots.wilson_errors([0.5], 1000)[:, 0] < plots.wilson_errors([0.5], 100)[:, 0]).all()


def test_t_interval_matches_scipy_and_is_wider_than_the_normal_one_for_few_values():
    v = [0.126, -0.069, 0.034]
    mean, lo, hi = stats.t_interval(v)
    ref = scipy.stats.t.interval(0.95, 2, loc=np.mean(v), scale=scipy.stats.sem(v))
    assert mean == pytest.approx(np.mean(v)) and (lo, hi) == pytest.approx(ref)
    assert stats.t_interval([1.0, 2.0, 3.0]) == pytest.approx((2.0, 2.0 - 2.4841, 2.0 + 2.4841), abs=1e-4)
    normal_half = 1.96 * np.std(v, ddof=1) / np.sqrt(len(v))
    assert lo < np.mean(v) - normal_half and hi > np.mean(v) + normal_half
    assert stats.t_interval([0.5]) == (0.5, float("-inf"), float("inf"))
    with pytest.raises(ValueError, match="at least one"):
        stats.t_interval([])
    with pytest.raises(ValueError, match="level"):
        stats.t_interval(v, level=95)

