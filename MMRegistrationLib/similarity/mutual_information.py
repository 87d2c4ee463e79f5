"""Mattes mutual information through SimpleITK (a baseline similarity; not differentiable in torch)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.image import Image


def mattes_mutual_information(
    fixed: Image,
    moving: Image,
    transform=None,
    bins: int = 50,
    fixed_mask: np.ndarray | None = None,
    sampling_fraction: float | None = None,
    seed: int = 0,
) -> float:
    """Mattes mutual information (nats, >= 0; larger = more similar) of ``fixed`` and ``moving`` through ``transform``.

    Args:
        fixed, moving: engine images (any geometry; world space LPS mm).
        transform: engine ``SpatialTransform`` fixed -> moving (the registration result convention); None = identity.
        bins: histogram bins per image.
        fixed_mask: optional boolean ``(K, J, I)`` array on the fixed grid (e.g. the ultrasound field of view).
        sampling_fraction: evaluate on a random fraction of the fixed voxels (seeded); None = every voxel.

    Raises:
        InputError: no fixed voxel maps inside the moving image (ITK: "too many samples map outside").
    """
    from MMRegistrationLib.io.transforms import to_sitk_transform

    if int(bins) < 4:
        raise InputError("bins", f"must be at least 4, got {bins}")
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    method.SetInterpolator(sitk.sitkLinear)
    if sampling_fraction is None:
        method.SetMetricSamplingStrategy(method.NONE)
    else:
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(float(sampling_fraction), int(seed))
    if fixed_mask is not None:
        mask = np.asarray(fixed_mask)
        if mask.shape != fixed.grid.shape:
            raise InputError("fixed_mask", f"shape {mask.shape} differs from the fixed grid {fixed.grid.shape}")
        method.SetMetricFixedMask(Image(mask.astype(np.uint8), fixed.grid).to_sitk())
    method.SetInitialTransform(sitk.Transform(3, sitk.sitkIdentity) if transform is None else to_sitk_transform(transform))
    f = sitk.Cast(fixed.to_sitk(), sitk.sitkFloat32)
    m = sitk.Cast(moving.to_sitk(), sitk.sitkFloat32)
    try:
        value = method.MetricEvaluate(f, m)
    except RuntimeError as err:
        raise InputError("moving", f"mutual information could not be evaluated ({str(err).strip().splitlines()[-1]}); "
                         "do the images overlap under the transform?") from err
    return float(-value)  # ITK minimises -MI
