"""Progress bars for training and attacks, shown only when someone is watching.

:func:`bar` wraps ``tqdm`` (the plain text bar, written to stderr: in a terminal it
redraws in place; in a notebook it is a stderr stream, which the book hides). The
switch is :func:`enabled`:

- ``ADVBOOK_PROGRESS=1`` / ``0`` forces bars on / off (the test suite sets ``0``);
- otherwise bars are on in a Jupyter kernel (a notebook or papermill run) and when
  stderr is a terminal, and off otherwise (logs, CI, pipes).

In a kernel the bar redraws at most every few seconds, so an executed notebook does
not fill up with thousands of updates.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable

ENV = "ADVBOOK_PROGRESS"
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (IPython with a kernel attached)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # pragma: no cover - an IPython without get_ipython
        return False
    return getattr(shell, "kernel", None) is not None


def enabled() -> bool:
    """``$ADVBOOK_PROGRESS`` if set (1/0, true/false, yes/no, on/off), else kernel or terminal stderr."""
    value = os.environ.get(ENV)
    if value is not None and value.strip():
        value = value.strip().lower()
        if value in _ON:
            return True
        if value in _OFF:
            return False
        raise ValueError(f"{ENV}={value!r} is not allowed; allowed: {', '.join(_ON + _OFF)}")
    if in_kernel():
        return True
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


class _Off:
    """A bar that shows nothing: iterates ``iterable`` and ignores updates."""

    def __init__(self, iterable: Iterable | None = None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable if self.iterable is not None else ())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def set_description(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
        unit: str = "it", leave: bool = False) -> Any:
    """A ``tqdm`` bar on stderr when :func:`enabled`, else a silent stand-in with the same methods.

    Use it as an iterable wrapper (``for xb in bar(batches, total=n)``) or manually
    (``with bar(total=n) as b: ... b.update()``). A known ``total`` below 2 shows no bar
    (one step has no progress to show).
    """
    if not enabled() or (total is not None and total < 2):
        return _Off(iterable)
    from tqdm import tqdm

    kernel = in_kernel()
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=not kernel,
                mininterval=3.0 if kernel else 0.2)
