"""Target registration error of corresponding landmarks."""

from __future__ import annotations

import numpy as np

from MMRegistrationLib.spatial.base import SpatialTransform


def target_registration_error_mm(
    transform: SpatialTransform | None, fixed_points: np.ndarray, moving_points: np.ndarray
) -> dict:
    """TRE per landmark ``|T(fixed_i) - moving_i|`` in mm, with ``T`` fixed -> moving (None = identity).

    Returns ``{"tre_mean_mm", "tre_median_mm", "tre_max_mm", "tre_mm": [...]}``.
    """
    fixed_points = np.asarray(fixed_points, dtype=np.float64).reshape(-1, 3)
    moving_points = np.asarray(moving_points, dtype=np.float64).reshape(-1, 3)
    if len(fixed_points) != len(moving_points):
        raise ValueError(f"landmark counts differ: fixed {len(fixed_points)}, moving {len(moving_points)}")
    mapped = fixed_points if transform is None else transform.map_points_np(fixed_points)
    tre = np.linalg.norm(mapped - moving_points, axis=1)
    return {
        "tre_mean_mm": float(tre.mean()),
        "tre_median_mm": float(np.median(tre)),
        "tre_max_mm": float(tre.max()),
        "tre_mm": [float(t) for t in tre],
    }
