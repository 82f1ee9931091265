"""Seeding and device selection."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a CPU generator for data order.

    On CPU the same seed gives the same numbers run after run with the same number of
    torch threads (a different thread count changes the order of floating-point
    reductions, and so the last digits, which training amplifies). On CUDA some kernels
    are non-deterministic; we do not force deterministic algorithms there because the
    full profile would slow down several-fold.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    return torch.Generator().manual_seed(seed)


DEFAULT_THREADS = 1
"""torch CPU threads of every chapter unless ``$ADVBOOK_THREADS`` says otherwise. The quick profile's
nets are small: one thread per chapter and chapters side by side use the cores best, and one
fixed count makes every run of a chapter give the same numbers."""


def cpu_threads() -> int:
    """``$ADVBOOK_THREADS`` (a positive integer), else :data:`DEFAULT_THREADS`."""
    threads = os.environ.get("ADVBOOK_THREADS")
    if not threads:
        return DEFAULT_THREADS
    if not threads.isdigit() or int(threads) < 1:
        raise ValueError(f"ADVBOOK_THREADS={threads!r} must be a positive integer")
    return int(threads)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU. Asking for ``cuda`` without one fails clearly.

    Also sets torch's CPU thread count to :func:`cpu_threads` (1 unless ``$ADVBOOK_THREADS``
    says otherwise): a chapter gives the same numbers whether it runs alone, beside others in
    a build, or in Jupyter, because the thread count changes the order of floating-point sums
    (and the cache keeps entries computed with another count apart, :func:`advbook.cache.entry_key`).
    """
    torch.set_num_threads(cpu_threads())
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but torch finds no CUDA device; use 'auto' or 'cpu'")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not allowed; allowed: 'auto', 'cpu', 'cuda'")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    """A readable name of the device (GPU model or CPU with its thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'' if n == 1 else 's'})"
