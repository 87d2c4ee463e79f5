"""Regularity of a transform: its Jacobian determinant on a grid, folding and smoothness.

The transform ``T`` (fixed -> moving) is sampled as a displacement field on the fixed grid
(``DisplacementField.from_transform``) and ``det(I + du/dx)`` is taken with
:func:`MMRegistrationLib.spatial.jacobian.jacobian_determinant` (world-mm derivatives). A linear transform has
the constant determinant ``det(A)``, used directly (no finite differences).

``mean_abs_grad_jacobian_per_mm`` is the mean over voxels of ``|grad_x det J|`` (1/mm): ``np.gradient`` along
the array axes (central differences, one-sided at the border), then the chain rule with the grid's
``(direction @ diag(spacing))^-1`` as in ``jacobian.py``, so oblique and anisotropic grids are handled.

Memory: both maps are computed in slabs of whole k-slices (about ``SLAB_VOXELS`` voxels each) extended by one slice
on each side for the finite differences, so a large grid needs the output plus a few slabs' worth of temporaries
rather than ~20 copies of the whole displacement field; the values are identical to computing them whole (central
differences inside a slab see the same neighbours, the one-sided ones only occur at the grid's own border).
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.spatial.base import SpatialTransform
from MMRegistrationLib.spatial.composite import ComposedTransform
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.spatial.jacobian import jacobian_determinant, jacobian_statistics

JACOBIAN_KEYS = ("jacobian_min", "jacobian_max", "folding_fraction", "mean_abs_grad_jacobian_per_mm")

SLAB_VOXELS = 2**21
"""Voxels per slab of the chunked computations (a few hundred MB of float64 temporaries per slab)."""


def slabs(num_slices: int, slice_voxels: int, slab_voxels: int = SLAB_VOXELS) -> Iterator[tuple]:
    """``(k0, k1, lo, hi)`` per slab: the slices ``k0:k1`` it computes and ``lo:hi``, the same grown by one slice on
    each side within ``0:num_slices`` (the neighbours finite differences need)."""
    step = max(1, int(slab_voxels) // max(1, int(slice_voxels)))
    for k0 in range(0, num_slices, step):
        k1 = min(num_slices, k0 + step)
        yield k0, k1, max(0, k0 - 1), min(num_slices, k1 + 1)


def linear_matrix(transform: SpatialTransform) -> np.ndarray:
    """The 3x3 linear part ``A`` of a linear transform (``ValueError`` if it is not linear)."""
    if not transform.is_linear:
        raise ValueError(f"linear_matrix: {type(transform).__name__} is not linear")
    matrix = getattr(transform, "matrix", None)
    if matrix is None:
        matrix = ComposedTransform([transform]).as_affine().matrix
    return np.asarray(matrix, dtype=np.float64)[:3, :3]


def jacobian_determinant_on_grid(
    transform: Optional[SpatialTransform], grid: Grid, progress=None, cancel=None, slab_voxels: int = SLAB_VOXELS
) -> np.ndarray:
    """``det(dT/dx)`` of ``T`` (None = identity) at every voxel centre of ``grid``, ``(K, J, I)`` float64.

    Linear transforms give the exact constant ``det(A)``; others are sampled as a displacement field on
    ``grid`` (``u(x) = T(x) - x``, as :meth:`DisplacementField.from_transform`) and differentiated by
    :func:`jacobian_determinant`, one slab of about ``slab_voxels`` voxels at a time (see the module docstring).
    """
    monitor = Monitor.wrap(progress, cancel)
    if transform is None:
        return np.ones(grid.shape)
    if transform.is_linear:
        return np.full(grid.shape, float(np.linalg.det(linear_matrix(transform))))
    det = np.empty(grid.shape)
    for k0, k1, lo, hi in slabs(grid.shape[0], grid.shape[1] * grid.shape[2], slab_voxels):
        monitor.report(k0 / grid.shape[0], "Jacobian determinant")
        det[k0:k1] = jacobian_determinant(sampled_slab(transform, grid, lo, hi))[k0 - lo:k1 - lo]
    monitor.report(1.0, "Jacobian determinant")
    return det


def sampled_slab(transform: SpatialTransform, grid: Grid, lo: int, hi: int) -> DisplacementField:
    """``u(x) = T(x) - x`` (float64) on the slices ``lo:hi`` of ``grid``, as a field on that part of the grid."""
    points = grid.world_points_torch(dtype=torch.float64, k_range=(lo, hi))
    part = grid.cropped((0, 0, lo), (grid.shape[2], grid.shape[1], hi))
    return DisplacementField(part, transform.map_points(points) - points, transform.source, transform.target)


def gradient_magnitude_per_mm(values: np.ndarray, grid: Grid, slab_voxels: int = SLAB_VOXELS) -> np.ndarray:
    """``|grad_x f|`` (units of ``f`` per mm) of a scalar map ``(K, J, I)`` on ``grid``, ``(K, J, I)`` float64.

    ``df/d(index)`` by ``np.gradient`` (central differences, one-sided at the border; 0 along an axis of size
    1); ``grad_x f = (df/d index) @ (direction @ diag(spacing))^-1``. Computed one slab of about ``slab_voxels``
    voxels at a time (see the module docstring).
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.empty(values.shape)
    for k0, k1, lo, hi in slabs(values.shape[0], values.shape[1] * values.shape[2], slab_voxels):
        out[k0:k1] = _gradient_magnitude(values[lo:hi], grid)[k0 - lo:k1 - lo]
    return out


def _gradient_magnitude(values: np.ndarray, grid: Grid) -> np.ndarray:
    """:func:`gradient_magnitude_per_mm` of one block of whole slices (differences taken within the block)."""
    didx = np.zeros((*values.shape, 3))
    for col, axis in enumerate((2, 1, 0)):  # index axes i, j, k are array axes 2, 1, 0
        if values.shape[axis] > 1:
            didx[..., col] = np.gradient(values, axis=axis)
    grad_world = didx @ np.linalg.inv(grid.affine[:3, :3])  # (..., 3 index) @ (3 index, 3 world)
    return np.linalg.norm(grad_world, axis=-1)


def jacobian_summary(
    det: np.ndarray, grid: Grid, mask: Optional[np.ndarray] = None, grad_magnitude: Optional[np.ndarray] = None
) -> dict:
    """``{"jacobian_min", "jacobian_max", "folding_fraction", "mean_abs_grad_jacobian_per_mm"}`` of a
    determinant map, over all voxels or over ``mask`` (gradients are always taken on the whole grid).

    ``folding_fraction`` is the fraction of voxels with ``det <= 0``. ``grad_magnitude`` may pass a
    precomputed :func:`gradient_magnitude_per_mm` of ``det`` (to summarise several masks at the cost of one).
    """
    det = np.asarray(det, dtype=np.float64)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != det.shape or not mask.any():
            raise ValueError("jacobian_summary: 'mask' must be a non-empty boolean array shaped like 'det'")
    stats = jacobian_statistics(det, mask)
    grad = gradient_magnitude_per_mm(det, grid) if grad_magnitude is None else grad_magnitude
    stats["mean_abs_grad_jacobian_per_mm"] = float(grad[mask].mean() if mask is not None else grad.mean())
    return stats
