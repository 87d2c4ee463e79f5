"""Mattes mutual information baseline of DISA registration: rigid/affine, local search, through SimpleITK's own
registration framework on the same prepared (isotropic, normalised) volumes."""

from __future__ import annotations

import time

import numpy as np

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.registration.base import RegistrationResult
from MMRegistrationLib.registration.disa_config import DISARegistrationConfig
from MMRegistrationLib.similarity.disa import prepare_volume
from MMRegistrationLib.similarity.objectives import keep_on_grid
from MMRegistrationLib.spatial.affine import AffineTransform


def mi_register(fixed: Image, moving: Image, a0: np.ndarray, config: DISARegistrationConfig, fixed_keep, moving_keep,
                 seed: int, monitor: Monitor, mask_arguments: tuple) -> RegistrationResult:
    """Rigid/affine Mattes MI with SimpleITK's framework on the prepared (isotropic, normalised) volumes."""
    import SimpleITK as sitk

    from MMRegistrationLib.io.transforms import from_sitk_transform, to_sitk_transform

    t0 = time.perf_counter()
    fp = prepare_volume(fixed, config.spacing_mm, config.fixed_fov_threshold, "--fixed")
    mp = prepare_volume(moving, config.spacing_mm, config.moving_fov_threshold, "--moving")
    fmask = fp.mask & (keep_on_grid(fixed_keep, fp.grid) if fixed_keep is not None else True)
    mmask = mp.mask & (keep_on_grid(moving_keep, mp.grid) if moving_keep is not None else True)
    if not fmask.any():
        raise InputError(mask_arguments[0] if fixed_keep is not None else "--fixed",
                         "leaves no fixed voxel for mutual information (mask and field of view do not overlap)")
    if not mmask.any():
        raise InputError(mask_arguments[1] if moving_keep is not None else "--moving",
                         "leaves no moving voxel for mutual information (mask and field of view do not overlap)")
    k, j, i = np.nonzero(fmask)
    centre = fp.grid.index_to_world(np.stack([i, j, k], axis=-1).mean(axis=0))
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetNumberOfThreads(1)  # threads add their histograms in varying order: results differed by ~1e-3 mm
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    # SimpleITK reads a seed of 0 as 'seed from the wall clock': shift by one so that every seed is reproducible
    reg.SetMetricSamplingPercentage(0.5, 1 + int(seed) % (2**31 - 2))
    reg.SetMetricFixedMask(Image(fmask.astype(np.uint8), fp.grid).to_sitk())
    reg.SetMetricMovingMask(Image(mmask.astype(np.uint8), mp.grid).to_sitk())
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3,
                                                 numberOfIterations=config.iterations * 5, relaxationFactor=0.6,
                                                 gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    shrink = [2 ** (config.levels - 1 - n) for n in range(config.levels)]
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel([0.5 * (s - 1) for s in shrink])
    tx = sitk.Euler3DTransform() if config.mode == "rigid" else sitk.AffineTransform(3)
    tx.SetCenter(tuple(float(c) for c in centre))
    reg.SetMovingInitialTransform(to_sitk_transform(AffineTransform(a0)))  # applied after the optimised transform
    reg.SetInitialTransform(tx, inPlace=True)
    monitor.check("MI")
    try:
        reg.Execute(sitk.Cast(Image(fp.array, fp.grid).to_sitk(), sitk.sitkFloat32),
                    sitk.Cast(Image(mp.array, mp.grid).to_sitk(), sitk.sitkFloat32))
    except RuntimeError as err:
        raise InputError("--moving", "mutual information registration failed "
                         f"({str(err).strip().splitlines()[-1]}); do the images overlap after initialisation?") from err
    monitor.check("MI")
    local = from_sitk_transform(tx).matrix
    matrix = a0 @ local
    transform = AffineTransform(matrix, "fixed", "moving")
    info = {
        "similarity": "mi", "mode": config.mode, "search": "local", "centre_mm": centre.tolist(),
        "iterations": int(reg.GetOptimizerIteration()), "final_metric": float(reg.GetMetricValue()),
        "stop": reg.GetOptimizerStopConditionDescription(), "matrix": matrix.tolist(),
    }
    seconds = {"register": time.perf_counter() - t0}
    return RegistrationResult(transform=transform, inverse=transform.inverse(), stage_seconds=seconds, info=info)
