"""Tables as a reader sees them: a few significant digits, human labels, no index of row numbers.

A chapter shows a :class:`pandas.DataFrame` through :func:`styled` instead of ``display(frame)``
or ``frame.round(3)``: pandas' own rendering prints six decimals, ``NaN``, ``True`` and a
``0, 1, 2`` index column, and truncates long cells with "...".
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable

import numpy as np
import pandas as pd

MISSING = "–"
"""What an empty cell shows (``None`` and ``NaN``)."""


def number(value, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, never in exponent notation below 10^6.

    Integers stay exact (thousands separated), booleans read "yes"/"no", ``None``/``NaN`` read
    :data:`MISSING`; other objects are shown with ``str``.
    """
    if value is None or isinstance(value, float) and math.isnan(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if v == 0:
            return "0"
        if abs(v) >= 1e6 or abs(v) < 1e-4:
            return f"{v:.{digits - 1}e}"
        if abs(v) >= 10 ** digits:
            return f"{v:,.0f}"
        text = np.format_float_positional(v, precision=digits, unique=False, fractional=False, trim="-")
        return text.rstrip(".")
    return str(value)


def percent(value, decimals: int = 1) -> str:
    """A share in [0, 1] as a percentage (``0.4567`` -> ``45.7%``); empty cells as :data:`MISSING`."""
    if value is None or isinstance(value, float) and math.isnan(value):
        return MISSING
    return f"{100 * float(value):.{decimals}f}%"


def styled(frame: pd.DataFrame | pd.Series, caption: str | None = None, *, digits: int = 3,
           percent_columns: Iterable = (), index: bool | None = None):
    """A :class:`pandas.io.formats.style.Styler` of ``frame`` formatted for the page.

    Every cell goes through :func:`number` (``digits`` significant digits), or :func:`percent`
    for the columns named in ``percent_columns``. The index is hidden when it carries no
    information (a default ``0, 1, 2, ...`` range) unless ``index`` says otherwise; a named or
    labelled index stays. Long cells wrap instead of being cut.
    """
    if isinstance(frame, pd.Series):
        frame = frame.to_frame(frame.name if frame.name is not None else "value")
    shares = set(percent_columns)
    unknown = shares - set(frame.columns)
    if unknown:
        raise ValueError(f"percent_columns {sorted(map(str, unknown))} are not columns of the table; "
                         f"columns: {', '.join(map(str, frame.columns))}")
    formats = {c: (percent if c in shares else (lambda v, d=digits: number(v, d))) for c in frame.columns}
    style = frame.style.format(formats).format_index(lambda v: number(v, digits), axis=0)
    if not isinstance(frame.columns, pd.MultiIndex):
        style = style.format_index(lambda v: number(v, digits), axis=1)
    if index is None:
        index = not (isinstance(frame.index, pd.RangeIndex) and frame.index.name is None)
    if not index:
        style = style.hide(axis="index")
    # table-wide CSS, not per-cell properties: those look rows up by label, which fails on a NaN in a MultiIndex
    style = style.set_table_attributes('class="advbook-table"').set_table_styles(
        [{"selector": "td, th", "props": [("white-space", "normal")]}], overwrite=False)
    if caption:
        style = style.set_caption(caption)
    return style
