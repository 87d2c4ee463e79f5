"""Jacobian determinant of a displacement field, in world units."""

from __future__ import annotations

import numpy as np

from MMRegistrationLib.spatial.displacement import DisplacementField


def jacobian_determinant(field: DisplacementField) -> np.ndarray:
    """``det(I + du/dx)`` at every voxel of ``field.grid``, derivatives taken in world mm.

    ``du/d(index)`` uses central differences (one-sided at the border); the chain rule with the grid's
    ``(direction @ diag(spacing))^-1`` turns it into ``du/dx``, so oblique and anisotropic grids are handled.

    Returns:
        ``(K, J, I)`` float64 array; values <= 0 mark folding.
    """
    u = field.numpy()  # (K, J, I, 3)
    grads = []
    for axis in (2, 1, 0):  # derivative along i, j, k (array axes 2, 1, 0)
        if u.shape[axis] > 1:
            grads.append(np.gradient(u, axis=axis))
        else:
            grads.append(np.zeros_like(u))
    du_didx = np.stack(grads, axis=-1)  # (K, J, I, 3 [component], 3 [index axis])
    didx_dx = np.linalg.inv(field.grid.affine[:3, :3])  # (3 [index], 3 [world])
    jac = np.eye(3) + du_didx @ didx_dx
    return np.linalg.det(jac)


def jacobian_statistics(det: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Summary of a Jacobian determinant map (optionally inside ``mask``)."""
    values = det[mask] if mask is not None else det.ravel()
    return {
        "jacobian_min": float(values.min()),
        "jacobian_max": float(values.max()),
        "folding_fraction": float(np.mean(values <= 0)),
    }
