"""Statistics shared by the chapters: ranks, correlations, per-sample norms, intervals.

Everything is batched torch code (no Python loops over samples) and matches the reference
definitions in SciPy where one exists (tests check it against ``scipy.stats``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


def rankdata(v: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n along the last dimension, ties given their average rank (``scipy.stats.rankdata``, 'average').

    For each entry, ``rank = (#{v < v_i} + 1 + #{v <= v_i}) / 2``: both counts come from
    one sort and two binary searches, so a 2-D input ranks every row at once.
    """
    v = v.double().contiguous()
    sorted_v = v.sort(-1).values
    below = torch.searchsorted(sorted_v, v, side="left")
    upto = torch.searchsorted(sorted_v, v, side="right")
    return (below + 1 + upto).double() / 2


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along the last dimension (one value per row of a batch)."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-300)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two 1-D samples, ``rho = Pearson(rank(a), rank(b))`` (as ``scipy.stats.spearmanr``)."""
    if a.shape != b.shape or a.dim() != 1 or len(a) < 2:
        raise ValueError(f"need two 1-D tensors of the same length >= 2, got {tuple(a.shape)} and {tuple(b.shape)}")
    return pearson(rankdata(a), rankdata(b)).item()


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rho per sample between two batches of maps (each sample flattened), as a float tensor."""
    return pearson(rankdata(a.detach().flatten(1)), rankdata(b.detach().flatten(1))).float()


def spearman_bootstrap(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None, n_boot: int = 500,
                       seed: int = 0) -> torch.Tensor:
    """Bootstrap replicates of Spearman's rho (resampling samples with replacement), all at once.

    With ``c`` given, returns the replicates of ``rho(a, c) - rho(a, b)`` on the *same*
    resamples (a paired comparison). Ranks are recomputed within each resample.
    """
    gen = torch.Generator().manual_seed(seed)
    n = len(a)
    idx = torch.randint(0, n, (n_boot, n), generator=gen).to(a.device)

    def rho(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return pearson(rankdata(u.double()[idx]), rankdata(v.double()[idx]))

    r_ab = rho(a, b)
    return r_ab if c is None else rho(a, c) - r_ab


def l2_norm(t: torch.Tensor, floor: float = 1e-20) -> torch.Tensor:
    """Per-sample l_2 norm over all but the first dimension, ``sqrt(sum t^2 + floor)`` (safe to differentiate at 0)."""
    return (t.flatten(1).pow(2).sum(1) + floor).sqrt()


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    v = torch.tensor(list(values), dtype=torch.float64)
    return v.mean().item(), (v.std().item() if len(v) > 1 else 0.0)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of a few repeated measurements (e.g. one per seed) and its Student-t interval.

    ``mean -+ t_{(1+level)/2, n-1} sd / sqrt(n)``: for the handful of refits a chapter can
    afford, the normal interval ``mean -+ 1.96 sd / sqrt(n)`` is too narrow (with 3 values the 95%
    quantile is 4.30, not 1.96). Returns ``(mean, low, high)``; one value gives ``(v, -inf, inf)``.
    """
    from scipy.stats import t as student_t

    v = torch.as_tensor(list(values), dtype=torch.float64).flatten()
    if v.numel() == 0:
        raise ValueError("t_interval needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    mean = v.mean().item()
    if v.numel() == 1:
        return mean, float("-inf"), float("inf")
    half = float(student_t.ppf((1 + level) / 2, v.numel() - 1)) * v.std().item() / math.sqrt(v.numel())
    return mean, mean - half, mean + half


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion ``p`` measured on ``n`` points (95% for ``z = 1.96``).

    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``: unlike ``p -+ z SE`` it stays
    inside [0, 1] and is not degenerate at ``p = 0`` or ``1``.
    """
    if n <= 0:
        return (0.0, 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
