"""Overlap of label maps on a common grid."""

from __future__ import annotations

import numpy as np


def dice_per_label(reference: np.ndarray, test: np.ndarray, labels=None) -> dict:
    """Dice similarity coefficient per label of two label arrays of the same shape.

    Returns ``{label: dice}``; a label absent from both gives NaN (never a silent 0 or 1).
    """
    if reference.shape != test.shape:
        raise ValueError(f"dice_per_label: shapes differ {reference.shape} vs {test.shape}")
    if labels is None:
        labels = sorted(set(np.unique(reference).tolist()) - {0})
    out = {}
    for lab in labels:
        a = reference == lab
        b = test == lab
        denom = int(a.sum()) + int(b.sum())
        out[int(lab)] = float(2.0 * np.logical_and(a, b).sum() / denom) if denom else float("nan")
    return out


def field_of_view_coverage(fixed_grid, moving_grid, transform=None, samples_per_axis: int = 24) -> float:
    """Fraction (0..1) of the fixed image's field of view whose points ``T(x)`` (fixed -> moving; None = identity)
    fall inside the moving image's field of view (ITK's rule: within half a voxel of its border voxels).

    Estimated on a regular sample of the fixed voxel box (``samples_per_axis`` cell centres per axis at most, fewer
    along a shorter axis), so it costs one transform evaluation of at most ``samples_per_axis ** 3`` points.
    """
    import torch

    counts = np.minimum(np.asarray(fixed_grid.size_ijk), samples_per_axis)
    axes = [(np.arange(n) + 0.5) / n * size - 0.5 for n, size in zip(counts, fixed_grid.size_ijk)]
    index = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)  # (i, j, k)
    points = torch.as_tensor(fixed_grid.index_to_world(index), dtype=torch.float64)
    if transform is not None:
        points = transform.map_points(points)
    inside = moving_grid.inside_mask(moving_grid.world_to_index_torch(points))
    return float(inside.double().mean())
