"""One plotting style for the whole book (seaborn, colour-blind-safe palette) and image grids.

**Legible at the rendered width.** A figure is shown in the page's content column, at most
:data:`COLUMN_PX` CSS pixels wide (a CSS pixel is 1/96 in): a PNG wider than that is scaled
down, and its text with it. A figure ``w`` inches wide, saved at ``dpi``, is ``w * dpi`` pixels,
so a font of ``f`` points appears at

    rendered(f) = f * (dpi / 96) * min(1, COLUMN_PX / (w * dpi))  CSS points        (1)

(:func:`rendered_pt`). The house rule is rendered(f) >= :data:`MIN_TEXT_PT` (9 pt) for every text
of every figure: with the house fonts (all >= :data:`SMALL_PT`) that holds for any figure at most
:data:`MAX_WIDTH_IN` wide, so wide figures are not drawn wider: their panels wrap into rows
(:func:`panels`) and image grids shrink their cells (:func:`image_grid`). :func:`legibility`
measures a drawn figure against (1). On a phone the column is about half as wide; the site
lets a reader tap a figure to see it at full size (``_static/advbook-figures.js``).
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

PALETTE = sns.color_palette("colorblind")
"""Okabe-Ito-like colour-blind-safe palette, used for every figure."""

COLUMN_PX = 720
"""Width of the page's content column in CSS pixels (sphinx-book-theme at desktop width)."""

CSS_PX_PER_IN = 96
DPI = 110
"""Resolution of the figures in the pages (``figure.dpi``: the inline backend saves at it)."""

MIN_TEXT_PT = 9.0
"""The smallest rendered text size (CSS points) of any figure, by (1)."""

MAX_WIDTH_IN = COLUMN_PX / CSS_PX_PER_IN
"""7.5 in: the widest figure whose text keeps its size in points at the column width, by (1)."""

SMALL_PT = 9.0
"""The smallest font a figure may ask for (tick labels of dense axes, bar annotations, image titles)."""

ROW_LABEL_IN = 1.0
"""Width an image grid keeps for its row labels (two short lines at :data:`SMALL_PT`)."""

TITLE_SPILL_IN = 0.5
"""Width an image grid keeps for titles wider than their cell (they spill out of the figure's edge)."""

FONT_SIZES = {"font.size": 10.5, "axes.titlesize": 11.0, "axes.labelsize": 10.5, "xtick.labelsize": 10.0,
              "ytick.labelsize": 10.0, "legend.fontsize": 9.5, "legend.title_fontsize": 10.0,
              "figure.titlesize": 11.5}
"""The house fonts in points: every one >= :data:`SMALL_PT`."""


def use_style() -> None:
    """Apply the book's figure style: white grid, the house fonts (:data:`FONT_SIZES`), the colour-blind palette."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    plt.rcParams.update({"figure.dpi": DPI, "savefig.dpi": 150, "figure.figsize": (6.4, 3.8),
                         "axes.titleweight": "bold", "image.cmap": "gray", **FONT_SIZES})


def rendered_pt(font_pt: float, fig_width_in: float, dpi: float = DPI, column_px: float = COLUMN_PX) -> float:
    """Equation (1): the size in CSS points of a ``font_pt`` font in a ``fig_width_in``-inch figure on the page."""
    return font_pt * dpi / CSS_PX_PER_IN * min(1.0, column_px / (fig_width_in * dpi))


def legibility(fig: plt.Figure, column_px: float = COLUMN_PX) -> list[tuple[str, float]]:
    """Every visible text of ``fig`` with its rendered size by (1), smallest first.

    The width is that of the saved PNG: the figure's tight bounding box (the inline backend
    saves with ``bbox_inches="tight"``), so text that sticks out of the figure counts.
    """
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width_in = fig.get_tightbbox(renderer).width + 2 * plt.rcParams["savefig.pad_inches"]
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
             and t.get_window_extent(renderer).width > 0]
    sizes = [(t.get_text(), rendered_pt(t.get_fontsize(), width_in, fig.dpi, column_px)) for t in texts]
    return sorted(sizes, key=lambda ts: ts[1])


def panels(n: int, ncols: int = 2, height: float = 3.2, width: float = MAX_WIDTH_IN, **subplot_kw):
    """``n`` axes in rows of at most ``ncols``, ``width`` inches wide: ``(fig, [ax, ...])``.

    Three or more panels wrap into rows instead of growing the figure past :data:`MAX_WIDTH_IN`
    (``height`` is per row); unused cells of the last row are switched off.
    """
    cols = max(1, min(n, ncols))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(min(width, MAX_WIDTH_IN), height * rows), squeeze=False,
                             **subplot_kw)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def to_image(x: torch.Tensor) -> np.ndarray:
    """A CHW tensor in [0, 1] as an HW or HWC array for ``imshow``."""
    x = x.detach().cpu().clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def image_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    nrows: int,
    ncols: int,
    titles: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    size: float = 1.3,
    suptitle: str | None = None,
    cmap: str = "gray",
) -> plt.Figure:
    """Show ``nrows * ncols`` images (row-major) with optional per-image titles and row/column labels.

    A cell is ``size`` inches, less where ``ncols`` cells (and the row labels, about
    :data:`ROW_LABEL_IN`, and titles that spill over, :data:`TITLE_SPILL_IN`) would be wider
    than :data:`MAX_WIDTH_IN`; titles and labels are
    :data:`SMALL_PT`, so by (1) they render at >= 9 pt.
    """
    spare = (ROW_LABEL_IN if row_labels else 0.0) + (TITLE_SPILL_IN if titles is not None else 0.0)
    size = min(size, (MAX_WIDTH_IN - spare) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.08), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        if i < len(images):
            ax.imshow(to_image(images[i]), cmap=cmap, vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(titles[i], fontsize=SMALL_PT, fontweight="normal")
        else:
            ax.axis("off")
    for r, label in enumerate(row_labels or []):
        axes[r, 0].set_ylabel(label, fontsize=SMALL_PT)
    for c, label in enumerate(col_labels or []):
        axes[0, c].set_title(label, fontsize=SMALL_PT, fontweight="normal")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def signed_image(delta: torch.Tensor) -> np.ndarray:
    """A perturbation rescaled from [-max|d|, max|d|] to [0, 1] for display (grey = 0)."""
    d = delta.detach().cpu()
    scale = d.abs().max().clamp_min(1e-12)
    return to_image(d / (2 * scale) + 0.5)


def map_images(maps: torch.Tensor) -> torch.Tensor:
    """Saliency maps (N, H, W) scaled per map to [0, 1] (divided by each map's maximum) for display, as
    (N, 1, H, W) on the CPU, the shape :func:`image_grid` shows."""
    m = maps / maps.flatten(1).amax(1).clamp_min(1e-30).view(-1, 1, 1)
    return m.unsqueeze(1).cpu()


def wilson_errors(values: Sequence[float], n: int) -> np.ndarray:
    """Error bars of proportions measured on ``n`` points each, as matplotlib's asymmetric ``yerr`` (shape
    ``(2, len(values))``): each value's distance down to and up to its 95% Wilson interval
    (:func:`advbook.stats.wilson_interval`), never negative."""
    from .stats import wilson_interval

    v = np.asarray(values, dtype=float).reshape(-1)
    bounds = np.array([wilson_interval(float(p), n) for p in v]).reshape(-1, 2)
    return np.clip(np.stack([v - bounds[:, 0], bounds[:, 1] - v]), 0, None)
