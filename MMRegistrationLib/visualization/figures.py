"""Registration figure: three orthogonal views with contours, and a checkerboard of fixed and warped moving."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from MMRegistrationLib.core.image import Image


def normalise_intensity(array: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(array, [1, 99.5])
    return np.clip((array - lo) / max(hi - lo, 1e-6), 0, 1)


def orthogonal_planes(array: np.ndarray, center_kji) -> list:
    k, j, i = center_kji
    return [array[k], array[:, j, :], array[:, :, i]]  # axial-like (k), coronal-like (j), sagittal-like (i)


def plane_aspects(spacing_ijk) -> list:
    si, sj, sk = spacing_ijk
    return [sj / si, sk / si, sk / sj]


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed), imported lazily."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label_center(seg: np.ndarray, label: Optional[int] = None) -> list:
    """Array index (k, j, i) of the centroid of ``label`` (default: label 1 if present, else all labels)."""
    if label is None:
        label = 1 if np.any(seg == 1) else None
    nz = np.argwhere(seg == label) if label is not None else np.argwhere(seg != 0)
    return [int(round(c)) for c in nz.mean(0)] if len(nz) else [s // 2 for s in seg.shape]


def checkerboard(a: np.ndarray, b: np.ndarray, squares: int = 8) -> np.ndarray:
    """2-D checkerboard of two equally shaped images (``squares`` tiles along the longer side)."""
    tile = max(1, max(a.shape) // squares)
    yy, xx = np.indices(a.shape)
    return np.where(((yy // tile) + (xx // tile)) % 2 == 0, a, b)


def registration_figure(
    fixed: Image,
    warped_moving: Image,
    path: str | os.PathLike,
    fixed_seg: Optional[Image] = None,
    warped_seg: Optional[Image] = None,
    title: str = "",
) -> Path:
    """Write a PNG: row 1 fixed image with fixed (green) and warped-moving (magenta) contours on three
    orthogonal voxel planes through the fixed segmentation's centre; row 2 checkerboards of fixed/warped."""
    plt = pyplot()
    center = label_center(fixed_seg.array) if fixed_seg is not None else [s // 2 for s in fixed.grid.shape]
    f = normalise_intensity(fixed.array.astype(np.float32))
    w = normalise_intensity(warped_moving.array.astype(np.float32))
    fig, axes = plt.subplots(2, 3, figsize=(12, 8), dpi=90)
    aspects = plane_aspects(fixed.grid.spacing)
    names = ["k-plane (axial-like)", "j-plane (coronal-like)", "i-plane (sagittal-like)"]
    segs = [
        (orthogonal_planes(fixed_seg.array, center) if fixed_seg is not None else None, "lime", "solid"),
        (orthogonal_planes(warped_seg.array, center) if warped_seg is not None else None, "magenta", "dashed"),
    ]
    for col, (fv, wv) in enumerate(zip(orthogonal_planes(f, center), orthogonal_planes(w, center))):
        top, bottom = axes[0, col], axes[1, col]
        top.imshow(fv, cmap="gray", aspect=aspects[col], origin="lower")
        for views, color, style in segs:
            if views is not None and np.any(views[col]):
                for lab in np.unique(views[col][views[col] > 0]):
                    top.contour(views[col] == lab, levels=[0.5], colors=color, linestyles=style, linewidths=1.0)
        bottom.imshow(checkerboard(fv, wv), cmap="gray", aspect=aspects[col], origin="lower")
        top.set_title(names[col], fontsize=9)
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("fixed + contours\n(green fixed, magenta warped moving)", fontsize=8)
    axes[1, 0].set_ylabel("checkerboard fixed / warped moving", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
