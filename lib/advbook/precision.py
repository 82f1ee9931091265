"""The arithmetic of training: one switch between float32 and bfloat16 autocast.

Every loop that *fits* something runs its forward pass under :func:`autocast`: :func:`advbook.train.fit`
(reference models, adversarial training with its inner PGD, students, the self-gradient networks), the
INN loop of :mod:`advbook.methods.invariance`, and :func:`advbook.universal.ascend` (dominant
patterns, UAP baselines, UPI fitting). Under ``bf16`` the matrix products and convolutions run in
bfloat16 (8 bits of mantissa) with float32 weights, gradients and optimiser state, as
``torch.autocast`` does; on a CPU with native bf16 (``avx512_bf16`` / AMX) or a CUDA GPU that is about
twice the throughput (``make bench``).

Nothing that *measures* runs under it: attacks, accuracies, AutoAttack and the evaluation of fitted
perturbations see float32 models and float32 logits, whatever the switch says. So ``bf16`` can change
which weights training ends at (as another seed does), never the arithmetic of a robustness number.

The switch is a process-wide setting (:func:`set_training`), set once per chapter run from its
``precision`` parameter (default ``fp32``; :func:`resolve`: ``auto`` is ``bf16`` where the device has it
natively). The default stays ``fp32`` because the evidence does not clear bf16 yet: in two quick builds
of every chapter (``book/measurements/precision.json``, shown on the Reproducibility page) some bf16
estimates fell outside the fp32 run's 95% interval and some verdict words differed. The value is
recorded in the run's provenance, and part of every cache key when it is not ``fp32``
(:func:`advbook.cache.entry_key`), so entries of the two never mix.
"""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "fp32", "bf16")
"""What the ``precision`` parameter accepts; ``auto`` resolves to one of the other two (:func:`resolve`)."""

_training = "fp32"


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU whose oneDNN
    kernels use native bf16 instructions (``avx512_bf16`` or AMX); elsewhere bf16 is emulated and slower."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve(precision: str, device: torch.device | str) -> str:
    """``auto`` -> ``bf16`` where :func:`native_bf16`, else ``fp32``; ``fp32`` / ``bf16`` as given."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not allowed; allowed: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def set_training(precision: str) -> None:
    """Set the arithmetic of every training / fitting loop in this process (``fp32`` or ``bf16``)."""
    global _training
    if precision not in PRECISIONS[1:]:
        raise ValueError(f"training precision {precision!r} is not allowed; allowed: {', '.join(PRECISIONS[1:])} "
                         "(resolve 'auto' with precision.resolve first)")
    _training = precision


def training() -> str:
    """The arithmetic training loops use now: ``fp32`` (the default) or ``bf16``."""
    return _training


def autocast(device: torch.device | str, precision: str | None = None):
    """The context a fitting loop runs its forward pass in: ``torch.autocast`` to bfloat16 when
    ``precision`` (default: :func:`training`) is ``bf16``, a no-op for ``fp32``."""
    precision = training() if precision is None else precision
    if precision not in PRECISIONS[1:]:
        raise ValueError(f"precision {precision!r} is not allowed here; allowed: {', '.join(PRECISIONS[1:])}")
    device = torch.device(device)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
