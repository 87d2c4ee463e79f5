"""Evaluation figures: contours and Jacobian map on three orthogonal views; cohort box plots (matplotlib Agg)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import numpy as np

from MMRegistrationLib.core.image import Image
from MMRegistrationLib.visualization.figures import plane_aspects, normalise_intensity, orthogonal_planes, label_center, pyplot

VIEW_NAMES = ["k-plane (axial-like)", "j-plane (coronal-like)", "i-plane (sagittal-like)"]
BOX_PANELS = (
    ("DSC", ("dice_",)),
    ("MSD (mm)", ("msd_mm_",)),
    ("HD95 (mm)", ("hd95_mm_",)),
    ("HD (mm)", ("hd_mm_",)),
    ("TRE (mm)", ("tre_mean_mm", "tre_median_mm", "tre_max_mm")),
    ("Jacobian determinant", ("jacobian_min", "jacobian_max")),
    ("folding fraction (det <= 0)", ("folding_fraction",)),
    ("mean |grad det J| (1/mm)", ("mean_abs_grad_jacobian_per_mm",)),
)


def evaluation_figure(
    fixed_seg: Image,
    warped_seg: Image,
    path: str | os.PathLike,
    jacobian_image: Optional[Image] = None,
    fixed_image: Optional[Image] = None,
    title: str = "",
) -> Path:
    """Write a PNG. Row 1: three orthogonal voxel planes through the fixed labels' centroid, fixed contours
    (green, solid) and warped moving contours (magenta, dashed) over ``fixed_image`` (resampled onto the
    segmentation grid if needed) or a grey rendering of the fixed labels. Row 2 (with ``jacobian_image``):
    the Jacobian determinant on the same planes (blue < 1 < red, white = 1), folding (det <= 0) outlined black.
    """
    plt = pyplot()
    from matplotlib.colors import TwoSlopeNorm

    grid = fixed_seg.grid
    center = label_center(fixed_seg.array)
    if fixed_image is not None:
        if not fixed_image.grid.same_as(grid):
            from MMRegistrationLib.spatial.resample import resample

            fixed_image = resample(fixed_image, grid, None, interpolation="linear")
        background = normalise_intensity(fixed_image.array.astype(np.float32))
    else:
        background = 0.25 + 0.5 * (fixed_seg.array != 0)
    rows = 2 if jacobian_image is not None else 1
    fig, axes = plt.subplots(rows, 3, figsize=(12, 4 * rows + 0.5), dpi=90, squeeze=False, layout="constrained")
    aspects = plane_aspects(grid.spacing)
    fixed_views, warped_views = orthogonal_planes(fixed_seg.array, center), orthogonal_planes(warped_seg.array, center)
    for col, view in enumerate(orthogonal_planes(background, center)):
        ax = axes[0, col]
        ax.imshow(view, cmap="gray", vmin=0, vmax=1, aspect=aspects[col], origin="lower")
        for views, color, style in ((fixed_views, "lime", "solid"), (warped_views, "magenta", "dashed")):
            for lab in np.unique(views[col][views[col] > 0]):
                ax.contour(views[col] == lab, levels=[0.5], colors=color, linestyles=style, linewidths=1.0)
        ax.set_title(VIEW_NAMES[col], fontsize=9)
    axes[0, 0].set_ylabel("green fixed, magenta warped moving", fontsize=8)
    if jacobian_image is not None:
        det = jacobian_image.array.astype(np.float64)
        lo, hi = float(min(det.min(), 0.999)), float(max(det.max(), 1.001))
        norm = TwoSlopeNorm(vmin=lo, vcenter=1.0, vmax=hi)
        for col, view in enumerate(orthogonal_planes(det, center)):
            ax = axes[1, col]
            shown = ax.imshow(view, cmap="RdBu_r", norm=norm, aspect=aspects[col], origin="lower")
            if np.any(view <= 0):
                ax.contour(view <= 0, levels=[0.5], colors="black", linewidths=1.0)
            for lab in np.unique(fixed_views[col][fixed_views[col] > 0]):
                ax.contour(fixed_views[col] == lab, levels=[0.5], colors="lime", linewidths=0.6)
        axes[1, 0].set_ylabel(f"Jacobian determinant (min {det.min():.3g}, max {det.max():.3g})", fontsize=8)
        fig.colorbar(shown, ax=list(axes[1]), shrink=0.8, label="det J")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _finite(rows: list, column: str) -> list:
    values = [row.get(column) for row in rows]
    return [float(v) for v in values if v is not None and isinstance(v, (int, float)) and math.isfinite(v)]


def cohort_boxplots(rows: list, path: str | os.PathLike) -> Path:
    """Write a PNG with one box-plot panel per metric family (one box per label or statistic; the dots are
    the cases). Undefined (NaN) values are left out; each box's label gives its number of cases."""
    plt = pyplot()
    columns: list = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    panels = []
    for title, prefixes in BOX_PANELS:
        chosen = [c for c in columns if any(c == p or (p.endswith("_") and c.startswith(p)) for p in prefixes)]
        data = [(c, _finite(rows, c)) for c in chosen]
        data = [(c, v) for c, v in data if v]
        if data:
            panels.append((title, prefixes, data))
    ncols = min(4, max(1, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.6 * nrows), dpi=90, squeeze=False)
    for ax, (title, prefixes, data) in zip(axes.ravel(), panels):
        strip = prefixes[0] if prefixes[0].endswith("_") else ""
        labels = [f"{c[len(strip):]}\n(n={len(v)})" for c, v in data]
        ax.boxplot([v for _, v in data], showmeans=True)
        ax.set_xticks(range(1, len(data) + 1))
        ax.set_xticklabels(labels, fontsize=7)
        for x, (_, v) in enumerate(data, start=1):
            ax.plot(np.full(len(v), x) + np.linspace(-0.08, 0.08, len(v)), v, "k.", markersize=3, alpha=0.6)
        ax.set_title(title, fontsize=9)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"cohort evaluation ({len(rows)} cases)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
