"""What every registration method receives and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from MMRegistrationLib.core.box import OrientedBox
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.spatial.base import SpatialTransform


@dataclass(frozen=True)
class RegistrationInputs:
    """Images and optional segmentations/landmarks of one case (all geometry in LPS mm).

    ``fixed_seg``/``moving_seg`` already share label values for corresponding structures
    (see :func:`MMRegistrationLib.io.match_segmentations`); ``label_names`` maps value -> name.
    ``region``: an optional box in the fixed image's world space (``--roi``; checked against the fixed image by
    :func:`MMRegistrationLib.io.regions.check_region`), used only by methods whose ``MethodSpec.region_use`` says how.
    """

    fixed: Image
    moving: Image
    fixed_seg: Optional[Image] = None
    moving_seg: Optional[Image] = None
    label_names: dict = field(default_factory=dict)
    fixed_landmarks: Optional[np.ndarray] = None
    moving_landmarks: Optional[np.ndarray] = None
    region: Optional[OrientedBox] = None  # a user's box in the fixed image's space (--roi, a Slicer ROI), LPS mm

    @property
    def has_segmentations(self) -> bool:
        return self.fixed_seg is not None and self.moving_seg is not None


@dataclass
class RegistrationResult:
    """A method's output.

    Attributes:
        transform: fixed -> moving (resamples the moving image onto the fixed grid).
        inverse: moving -> fixed, when the method provides one.
        stage_seconds: wall time per stage (seconds).
        info: method-specific facts for ``result.json`` (iterations, losses ...).
    """

    transform: SpatialTransform
    inverse: Optional[SpatialTransform] = None
    stage_seconds: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
