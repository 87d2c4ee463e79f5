"""Input checks of the evaluation; every error is an :class:`InputError` naming the argument at fault."""

from __future__ import annotations

from typing import Optional

import numpy as np

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.metrics.landmarks import target_registration_error_mm
from MMRegistrationLib.spatial.base import SpatialTransform


def check_label_map(seg, argument: str) -> Image:
    """A non-empty integer label map (0 = background, positive labels)."""
    if not isinstance(seg, Image):
        raise InputError(argument, f"must be an Image label map, got {type(seg).__name__}")
    dtype = seg.array.dtype
    if not (np.issubdtype(dtype, np.integer) or dtype == np.bool_):
        raise InputError(argument, f"has voxel type {dtype}; a label map (integers, 0 = background) is needed")
    if seg.array.size and np.issubdtype(dtype, np.signedinteger) and seg.array.min() < 0:
        raise InputError(argument, f"has negative labels (minimum {seg.array.min()}); 0 = background, labels > 0")
    if not np.any(seg.array):
        raise InputError(argument, "is empty (no non-zero voxel)")
    return seg


def check_transform(transform, argument: str = "transform") -> Optional[SpatialTransform]:
    """None (identity) or a fixed -> moving :class:`SpatialTransform`."""
    if transform is None:
        return None
    if not isinstance(transform, SpatialTransform):
        raise InputError(argument, f"must be a SpatialTransform (fixed -> moving) or None, got {type(transform).__name__}")
    if transform.source == "moving" and transform.target == "fixed":
        raise InputError(argument, "maps moving -> fixed; the evaluation needs the fixed -> moving transform (its inverse)")
    return transform


def _points(points, argument: str) -> np.ndarray:
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(argument, "must be an (N, 3) array of LPS mm coordinates") from None
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(argument, f"must be an (N, 3) array of LPS mm coordinates, got shape {arr.shape}")
    if len(arr) == 0:
        raise InputError(argument, "contains no landmark")
    if not np.all(np.isfinite(arr)):
        raise InputError(argument, "contains NaN/Inf coordinates")
    return arr


def landmark_errors(
    transform: Optional[SpatialTransform],
    fixed_landmarks,
    moving_landmarks,
    fixed_argument: str = "fixed_landmarks",
    moving_argument: str = "moving_landmarks",
) -> Optional[dict]:
    """TRE dict of :func:`target_registration_error_mm`, or None when no landmarks are given."""
    if fixed_landmarks is None and moving_landmarks is None:
        return None
    if fixed_landmarks is None or moving_landmarks is None:
        missing = fixed_argument if fixed_landmarks is None else moving_argument
        raise InputError(missing, f"landmarks must be given for both images ({fixed_argument} and {moving_argument})")
    fixed = _points(fixed_landmarks, fixed_argument)
    moving = _points(moving_landmarks, moving_argument)
    if len(fixed) != len(moving):
        raise InputError(
            moving_argument,
            f"has {len(moving)} landmarks but {fixed_argument} has {len(fixed)}; rows must correspond",
        )
    return target_registration_error_mm(transform, fixed, moving)
