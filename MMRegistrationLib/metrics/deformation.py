"""Regularity of a transform: its Jacobian determinant on a grid, folding and smoothness.

The transform ``T`` (fixed -> moving) is sampled as a displacement field on the fixed grid
(``DisplacementField.from_transform``) and ``det(I + du/dx)`` is taken with
:func:`MMRegistrationLib.spatial.jacobian.jacobian_determinant` (world-mm derivatives). A linear transform has
the constant determinant ``det(A)``, used directly (no finite differences).

``mean_abs_grad_jacobian_per_mm`` is the mean over voxels of ``|grad_x det J|`` (1/mm): ``np.gradient`` along
the array axes (central differences, one-sided at the border), then the chain rule with the grid's
``(direction @ diag(spacing))^-1`` as in ``jacobian.py``, so oblique and anisotropic grids are handled.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.spatial.base import SpatialTransform
from MMRegistrationLib.spatial.composite import ComposedTransform
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.spatial.jacobian import jacobian_determinant, jacobian_statistics

JACOBIAN_KEYS = ("jacobian_min", "jacobian_max", "folding_fraction", "mean_abs_grad_jacobian_per_mm")


def linear_matrix(transform: SpatialTransform) -> np.ndarray:
    """The 3x3 linear part ``A`` of a linear transform (``ValueError`` if it is not linear)."""
    if not transform.is_linear:
        raise ValueError(f"linear_matrix: {type(transform).__name__} is not linear")
    matrix = getattr(transform, "matrix", None)
    if matrix is None:
        matrix = ComposedTransform([transform]).as_affine().matrix
    return np.asarray(matrix, dtype=np.float64)[:3, :3]


def jacobian_determinant_on_grid(
    transform: Optional[SpatialTransform], grid: Grid, progress=None, cancel=None
) -> np.ndarray:
    """``det(dT/dx)`` of ``T`` (None = identity) at every voxel centre of ``grid``, ``(K, J, I)`` float64.

    Linear transforms give the exact constant ``det(A)``; others are sampled as a displacement field on
    ``grid`` and differentiated by :func:`jacobian_determinant`.
    """
    monitor = Monitor.wrap(progress, cancel)
    if transform is None:
        return np.ones(grid.shape)
    if transform.is_linear:
        return np.full(grid.shape, float(np.linalg.det(linear_matrix(transform))))
    monitor.report(0.0, "sampling the transform")
    field = DisplacementField.from_transform(transform, grid)
    monitor.report(0.5, "Jacobian determinant")
    det = jacobian_determinant(field)
    monitor.report(1.0, "Jacobian determinant")
    return det


def gradient_magnitude_per_mm(values: np.ndarray, grid: Grid) -> np.ndarray:
    """``|grad_x f|`` (units of ``f`` per mm) of a scalar map ``(K, J, I)`` on ``grid``.

    ``df/d(index)`` by ``np.gradient`` (central differences, one-sided at the border; 0 along an axis of size
    1); ``grad_x f = (df/d index) @ (direction @ diag(spacing))^-1``.
    """
    values = np.asarray(values, dtype=np.float64)
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
