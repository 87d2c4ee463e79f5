"""Registration quality metrics (units in names: ``_mm``)."""

from __future__ import annotations

from MMRegistrationLib.metrics.landmarks import target_registration_error_mm
from MMRegistrationLib.metrics.overlap import dice_per_label

__all__ = ["dice_per_label", "target_registration_error_mm"]
