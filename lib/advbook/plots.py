"""One plotting style for the whole book (seaborn, colour-blind-safe palette) and image grids."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

PALETTE = sns.color_palette("colorblind")
"""Okabe-Ito-like colour-blind-safe palette, used for every figure."""


def use_style() -> None:
    """Apply the book's figure style: white grid, readable sizes, the colour-blind palette."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "figure.figsize": (6.4, 3.8),
                         "axes.titleweight": "bold", "image.cmap": "gray"})


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
    """Show ``nrows * ncols`` images (row-major) with optional per-image titles and row/column labels."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.08), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        if i < len(images):
            ax.imshow(to_image(images[i]), cmap=cmap, vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(titles[i], fontsize=8, fontweight="normal")
        else:
            ax.axis("off")
    for r, label in enumerate(row_labels or []):
        axes[r, 0].set_ylabel(label, fontsize=8)
    for c, label in enumerate(col_labels or []):
        axes[0, c].set_title(label, fontsize=8, fontweight="normal")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def signed_image(delta: torch.Tensor) -> np.ndarray:
    """A perturbation rescaled from [-max|d|, max|d|] to [0, 1] for display (grey = 0)."""
    d = delta.detach().cpu()
    scale = d.abs().max().clamp_min(1e-12)
    return to_image(d / (2 * scale) + 0.5)
