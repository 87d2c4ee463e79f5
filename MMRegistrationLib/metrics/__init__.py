"""Registration quality metrics (units in names: ``_mm``). The evaluation that combines them, with the
definitions every reported number follows, is :mod:`MMRegistrationLib.evaluation`."""

from __future__ import annotations

from MMRegistrationLib.metrics.deformation import (
    gradient_magnitude_per_mm,
    jacobian_determinant_on_grid,
    jacobian_summary,
)
from MMRegistrationLib.metrics.landmarks import target_registration_error_mm
from MMRegistrationLib.metrics.overlap import dice_per_label
from MMRegistrationLib.metrics.surface import (
    surface_distance_metrics,
    surface_distances_mm,
    surface_points_mm,
    surface_voxels,
)

__all__ = [
    "dice_per_label",
    "gradient_magnitude_per_mm",
    "jacobian_determinant_on_grid",
    "jacobian_summary",
    "surface_distance_metrics",
    "surface_distances_mm",
    "surface_points_mm",
    "surface_voxels",
    "target_registration_error_mm",
]
