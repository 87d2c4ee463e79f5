"""Classic peer registrations for the benchmarks (benchmark-only dependencies: ``benchmarks/requirements.txt``).

Each peer is ``fn(case, threads=2) -> (transform, seconds)`` where ``case`` is a dict from
:mod:`benchmarks.datasets` (fixed = TRUS, moving = MR, engine images, label 1 = gland) and ``transform`` is an
engine :class:`SpatialTransform` **fixed -> moving** (maps fixed points to moving points, i.e. resamples the
moving image onto the fixed grid — the engine's, ITK's, ANTs' and elastix's output convention).

``ants_syn_on_sdm`` — segmentation-driven, the ANTs version of the classic distance-map approach of SlicerProstate's
    DistanceMapBasedRegistration (Fedorov et al. 2015: rigid -> affine -> deformable, mean squares on the gland's
    distance maps). Inputs: signed distance maps (SimpleITK ``SignedMaurerDistanceMap``, mm, negative inside) of
    the gland (label 1) only, on each image's own grid (deepreg has only the gland; ``multivariate_extras`` would
    need ``SyNOnly`` and drop the linear stages), clipped to +-10 mm (a narrow band: far from the surface the maps
    carry no correspondence and dominate the mean squares; on the sample + 2 DeepReg + 1 generated case the
    gland DSC was 0.97-0.98 with 5, 8 or 10 mm, but 0.86-0.95 with 15 mm and 0.83-0.87 unclipped, worse than the
    affine stage alone). Initial transform: translation aligning the two gland centres of
    mass (ANTs' own default initialiser uses image intensity moments, meaningless on distance maps). Then ANTsPy
    ``type_of_transform='SyNRA'``: Rigid[0.25] -> Affine[0.25] (2100x1200x1200x0 iterations at shrink 4x2x2x1,
    sigmas 3x2x1x0 vox, 20 % regular sampling) -> SyN[0.2, 3, 0] with reg_iterations 100x70x50x20 at shrink
    8x4x2x1 (sigmas 3x2x1x0 vox; the SyN stage schedule of ``antsRegistrationSyN.sh``); every stage uses
    MeanSquares. The SyN field lives on the fixed grid.
    Conversion: ``fwdtransforms = [1Warp.nii.gz, 0GenericAffine.mat]`` (the COM initialiser is collapsed into the
    .mat); a fixed point x goes to ``A(W(x))`` — the warp first, then the affine — checked against
    ``ants.apply_transforms_to_points(fwdtransforms)`` to < 1e-4 mm and, for the direction, on a known translation
    (Testing/Python/benchmarks/test_peers.py). Engine: ``ComposedTransform([DisplacementField W, AffineTransform
    A])`` (the .mat read by SimpleITK, the warp as a vector image).
    ``ants_syn_on_sdm_quick``: the same with ``antsRegistrationSyNQuick.sh``'s SyN schedule 100x70x50x0.
    Seconds: distance maps + COM initialiser + engine->ANTs image conversion + ``ants.registration`` (including
    ANTs writing its transform files to a temporary folder); not the reading back into an engine transform.

``elastix_bspline_mi`` — intensity-based: itk-elastix, the default ``rigid`` then ``bspline`` parameter maps
    (AdvancedMattesMutualInformation, 256 iterations per resolution, 2048 random samples per iteration, adaptive
    stochastic gradient descent; rigid: 4 resolutions; B-spline: final grid spacing 10 mm with the default
    bending-energy penalty, weight 1, and 2 resolutions — grid 20 mm then 10 mm — instead of the default 4
    (28/20/14/10 mm)), fixed = TRUS, moving = MR, raw intensities (float32). Why 2 B-spline resolutions: with
    the default 4 the B-spline stage undid the rigid stage on the sample and a generated case (gland DSC
    0.87/0.90 after rigid -> 0.69/0.66 after B-spline, TRE 1.7/2.3 -> 7.9/9.8 mm); 2 resolutions kept it near
    the rigid result (0.85/0.87, TRE 2.9/2.3 mm) and were the best of the variants tried (bending weight 10 or
    100, grid 20 mm, 8192 samples, no mask, centre-of-gravity or no initialisation). Rigid initialisation: the geometric
    centres of the two images (``AutomaticTransformInitialization``), the usual elastix preset. Fixed mask: the
    TRUS non-zero region (the imaged sector; closed and hole-filled) when it leaves out at least 2 % of the
    grid, so the black outside-sector area does not enter the metric. No segmentation is used.
    Conversion: ``itk.transformix_deformation_field`` samples the final (rigid + B-spline) transform on the fixed
    grid as ``u(x) = T(x) - x`` (fixed -> moving) -> engine ``DisplacementField`` on the fixed grid (0 outside it,
    as ITK's rule; every metric is computed on the fixed grid). Direction checked on a known translation
    (Testing/Python/benchmarks/test_peers.py).
    Seconds: engine->ITK image conversion, the mask and ``elastix_registration_method``; not transformix.

Threads: ANTs reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` when its library is loaded, so the first call of
:func:`ants_syn_on_sdm` fixes the thread count for the process (set before ``import ants``); ``ANTS_RANDOM_SEED``
makes its random sampling repeatable. elastix: the global ITK thread limits of itk-elastix's ITK
(``MultiThreaderBase.SetGlobalMaximumNumberOfThreads`` / ``SetGlobalDefaultNumberOfThreads``) — not the
``number_of_threads=`` argument, which crashes (SIGSEGV) multi-metric registrations such as the default B-spline map
(InsightSoftwareConsortium/ITKElastix#160); ``RandomSeed`` is fixed. Should elastix reject the fixed mask (seen
with small masks on oblique grids), the case is registered without it and ``info['note']`` says so.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io.transforms import from_sitk_transform
from MMRegistrationLib.registration.initializers import center_of_mass_mm
from MMRegistrationLib.spatial.base import SpatialTransform
from MMRegistrationLib.spatial.composite import ComposedTransform
from MMRegistrationLib.spatial.displacement import DisplacementField

ANTS_SEED = "1"
_ants_threads = None


def _import_ants(threads: int):
    """Import ANTsPy with ``threads`` ITK threads (fixed at the first import for the whole process)."""
    global _ants_threads
    import sys

    if "ants" not in sys.modules:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(threads))
        os.environ["ANTS_RANDOM_SEED"] = ANTS_SEED
        _ants_threads = int(threads)
    elif _ants_threads is not None and _ants_threads != int(threads):
        print(f"peers: ANTs already loaded with {_ants_threads} threads; {threads} requested (ignored)", flush=True)
    os.environ["ANTS_RANDOM_SEED"] = ANTS_SEED
    import ants

    return ants


def ants_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("ants") is not None
    except (ImportError, ValueError):
        return False


def elastix_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("itk") is not None and importlib.util.find_spec("itk.ElastixPython") is not None
    except (ImportError, ValueError):
        return False


# ---- shared helpers -------------------------------------------------------------------------------------
def signed_distance_map(seg: Image, label: int = 1) -> np.ndarray:
    """Signed distance (mm, negative inside) to the boundary of ``label``; float32 ``(K, J, I)``."""
    mask = sitk.Cast(seg.to_sitk() == label, sitk.sitkUInt8)
    sdm = sitk.SignedMaurerDistanceMap(mask, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return sitk.GetArrayFromImage(sdm).astype(np.float32)


def _to_ants(ants, array_kji: np.ndarray, grid: Grid):
    return ants.from_numpy(
        np.ascontiguousarray(np.asarray(array_kji, dtype=np.float32).transpose(2, 1, 0)),
        origin=tuple(float(v) for v in grid.origin),
        spacing=tuple(float(v) for v in grid.spacing),
        direction=np.array(grid.direction),
    )


def ants_transforms_to_engine(transform_files: list, source: str = "fixed", target: str = "moving") -> SpatialTransform:
    """ANTs ``fwdtransforms`` (fixed -> moving for points; list order = the order a point goes through them,
    e.g. ``[1Warp.nii.gz, 0GenericAffine.mat]`` maps x to ``A(W(x))``) as one engine transform."""
    parts = []
    names = [source] + [f"{source}:ants{n}" for n in range(1, len(transform_files))] + [target]
    for n, path in enumerate(transform_files):
        path = str(path)
        if path.endswith((".mat", ".txt", ".tfm")):
            tx = sitk.ReadTransform(path)
        else:
            tx = sitk.DisplacementFieldTransform(sitk.ReadImage(path, sitk.sitkVectorFloat64))
        parts.append(from_sitk_transform(tx, names[n], names[n + 1]))
    return parts[0] if len(parts) == 1 else ComposedTransform(parts)


# ---- ANTs SyN on signed distance maps ----------------------------------------------------------------------
ANTS_CLIP_MM = 10.0
ANTS_SETTINGS = {
    "type_of_transform": "SyNRA",
    "aff_metric": "meansquares",
    "syn_metric": "meansquares",
    "aff_random_sampling_rate": 0.2,
    "grad_step": 0.2,
    "flow_sigma": 3,
    "total_sigma": 0,
    "reg_iterations": (100, 70, 50, 20),
}


def ants_syn_on_sdm(case: dict, threads: int = 2, settings: dict | None = None, clip_mm: float | None = ANTS_CLIP_MM,
                    return_info: bool = False):
    """ANTs rigid -> affine -> SyN between the gland's signed distance maps (see the module docstring).

    ``settings`` override :data:`ANTS_SETTINGS` (keywords of ``ants.registration``); ``clip_mm`` clips both maps
    to ``[-clip_mm, clip_mm]`` (None: unclipped). Returns ``(transform fixed -> moving, seconds)``
    (``(..., info)`` with ``return_info``).
    """
    ants = _import_ants(threads)
    opts = dict(ANTS_SETTINGS, **(settings or {}))
    workdir = tempfile.mkdtemp(prefix="mmreg_ants_")
    try:
        t0 = time.perf_counter()
        fixed_seg, moving_seg = case["fixed_seg"], case["moving_seg"]
        f_arr, m_arr = signed_distance_map(fixed_seg, 1), signed_distance_map(moving_seg, 1)
        if clip_mm is not None:
            f_arr, m_arr = np.clip(f_arr, -clip_mm, clip_mm), np.clip(m_arr, -clip_mm, clip_mm)
        f_sdm = _to_ants(ants, f_arr, fixed_seg.grid)
        m_sdm = _to_ants(ants, m_arr, moving_seg.grid)
        shift = center_of_mass_mm(moving_seg, 1) - center_of_mass_mm(fixed_seg, 1)
        init = ants.create_ants_transform(transform_type="AffineTransform", dimension=3, translation=tuple(shift))
        init_path = os.path.join(workdir, "init.mat")
        ants.write_transform(init, init_path)
        reg = ants.registration(f_sdm, m_sdm, initial_transform=[init_path], outprefix=os.path.join(workdir, "reg_"),
                                **opts)
        seconds = time.perf_counter() - t0
        transform = ants_transforms_to_engine(reg["fwdtransforms"])
        info = {"fwdtransforms": [os.path.basename(p) for p in reg["fwdtransforms"]], "settings": opts,
                "clip_mm": clip_mm}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return (transform, seconds, info) if return_info else (transform, seconds)


# ---- elastix rigid + B-spline, Mattes MI --------------------------------------------------------------------
def _to_itk(itk, image: Image, dtype=np.float32):
    out = itk.image_from_array(np.ascontiguousarray(image.array.astype(dtype)))
    out.SetSpacing([float(v) for v in image.grid.spacing])
    out.SetOrigin([float(v) for v in image.grid.origin])
    out.SetDirection(itk.matrix_from_array(np.ascontiguousarray(image.grid.direction, dtype=np.float64)))
    return out


def trus_sector_mask(fixed: Image, min_excluded: float = 0.02) -> np.ndarray | None:
    """The TRUS non-zero region (closed, holes filled, largest component), or None when it covers almost all of
    the grid (then a mask would not change anything)."""
    nonzero = fixed.array > 0
    mask = ndimage.binary_closing(nonzero, iterations=2, border_value=0) | nonzero
    mask = ndimage.binary_fill_holes(mask)
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum(mask, labels, index=range(1, count + 1))
        mask = labels == (1 + int(np.argmax(sizes)))
    if mask.mean() > 1.0 - min_excluded:
        return None
    return mask


def elastix_parameter_object(itk, iterations: int | None = None):
    po = itk.ParameterObject.New()
    rigid = po.GetDefaultParameterMap("rigid")
    rigid["AutomaticTransformInitialization"] = ["true"]
    rigid["AutomaticTransformInitializationMethod"] = ["GeometricalCenter"]
    bspline = po.GetDefaultParameterMap("bspline")
    bspline["FinalGridSpacingInPhysicalUnits"] = ["10.0"]
    bspline["NumberOfResolutions"] = ["2"]  # control-point grid 20 mm, then 10 mm (see the module docstring)
    bspline["GridSpacingSchedule"] = ["2", "1"]
    for m in (rigid, bspline):
        m["WriteResultImage"] = ["false"]
        m["RandomSeed"] = ["121212"]
        if iterations is not None:
            m["MaximumNumberOfIterations"] = [str(int(iterations))]
    po.AddParameterMap(rigid)
    po.AddParameterMap(bspline)
    return po


def elastix_bspline_mi(case: dict, threads: int = 2, iterations: int | None = None, use_mask: bool = True,
                       return_info: bool = False):
    """elastix rigid + B-spline with Mattes MI on the images (see the module docstring).

    Returns ``(transform fixed -> moving, seconds)`` (``(..., info)`` with ``return_info``).
    """
    import itk

    # not number_of_threads=: itk-elastix crashes (SIGSEGV) with it on multi-metric (B-spline + bending energy)
    # registrations (InsightSoftwareConsortium/ITKElastix#160); the global ITK thread limits work.
    itk.MultiThreaderBase.SetGlobalMaximumNumberOfThreads(int(threads))
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(int(threads))
    t0 = time.perf_counter()
    fixed = _to_itk(itk, case["fixed"])
    moving = _to_itk(itk, case["moving"])
    mask_arr = trus_sector_mask(case["fixed"]) if use_mask else None
    kwargs = {}
    if mask_arr is not None:
        kwargs["fixed_mask"] = _to_itk(itk, case["fixed"].with_array(mask_arr.astype(np.uint8)), np.uint8)
    params = elastix_parameter_object(itk, iterations)
    mask_note = None
    try:
        _, result_params = itk.elastix_registration_method(
            fixed, moving, parameter_object=params, log_to_console=False, **kwargs
        )
    except RuntimeError as err:
        if not kwargs:
            raise
        # elastix rejects some masks ("the bounding box of the mask lies entirely out of the InputImageRegion",
        # seen with small masks on oblique grids); register without it rather than lose the case
        mask_note = f"elastix failed with the fixed mask ({str(err).strip().splitlines()[-1][:120]}); ran without it"
        _, result_params = itk.elastix_registration_method(
            fixed, moving, parameter_object=elastix_parameter_object(itk, iterations), log_to_console=False
        )
    seconds = time.perf_counter() - t0
    workdir = tempfile.mkdtemp(prefix="mmreg_transformix_")  # transformix writes deformationField.nii there
    try:
        field = itk.transformix_deformation_field(moving, result_params, output_directory=workdir)
        disp = np.array(itk.array_from_image(field), dtype=np.float64)  # (K, J, I, 3), fixed -> moving
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    grid = Grid.from_geometry(
        disp.shape[:3],
        tuple(field.GetSpacing()),
        tuple(field.GetOrigin()),
        np.asarray(itk.array_from_matrix(field.GetDirection()), dtype=np.float64),
    )
    transform = DisplacementField(grid, torch.from_numpy(np.ascontiguousarray(disp)))
    info = {"fixed_mask": mask_arr is not None and mask_note is None,
            "fixed_mask_fraction": None if mask_arr is None else float(mask_arr.mean())}
    if mask_note:
        info["note"] = mask_note
    return (transform, seconds, info) if return_info else (transform, seconds)


def ants_syn_on_sdm_quick(case: dict, threads: int = 2, return_info: bool = False):
    """:func:`ants_syn_on_sdm` with the SyN schedule of ``antsRegistrationSyNQuick.sh`` (100x70x50x0: no
    full-resolution SyN iterations) — about 2-3x faster, gland DSC about 0.005 lower on the sample/generated cases."""
    return ants_syn_on_sdm(case, threads, settings={"reg_iterations": (100, 70, 50, 0)}, return_info=return_info)


def ants_syn_on_sdm_default(case: dict, threads: int = 2, return_info: bool = False):
    """:func:`ants_syn_on_sdm` with antspy's own ``SyN`` defaults (affine then SyN, ``reg_iterations`` (40, 20, 0),
    its default metrics' sampling; mean squares on the maps): what a user calling ``ants.registration(fixed_sdm,
    moving_sdm, "SyN")`` gets — the fastest ANTs configuration, typically about 1 s on DeepReg-size maps."""
    settings = {"type_of_transform": "SyN", "aff_metric": "meansquares", "syn_metric": "meansquares",
                "reg_iterations": (40, 20, 0), "grad_step": 0.2, "flow_sigma": 3, "total_sigma": 0,
                "aff_random_sampling_rate": 0.2}
    return ants_syn_on_sdm(case, threads, settings=settings, return_info=return_info)


PEERS = {
    "ants-syn-sdm": ants_syn_on_sdm,
    "ants-syn-sdm-quick": ants_syn_on_sdm_quick,
    "ants-syn-sdm-default": ants_syn_on_sdm_default,
    "elastix-bspline-mi": elastix_bspline_mi,
}
PEER_AVAILABLE = {"ants-syn-sdm": ants_available, "ants-syn-sdm-quick": ants_available,
                  "ants-syn-sdm-default": ants_available,
                  "elastix-bspline-mi": elastix_available}
