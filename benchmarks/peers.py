"""Peer registrations for the benchmarks — classic (ANTs, elastix) and convexAdam (benchmark-only dependencies:
``benchmarks/requirements.txt``).

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

``convex_adam_mind`` (``convexadam``) — intensity-based, the published deformable method convexAdam (Siebert et al.,
    Learn2Reg 2021 / IEEE TMI 2024; PyPI ``convexadam`` 0.2.0, ``convexAdam.convex_adam_MIND.convex_adam_pt``),
    fixed = TRUS, moving = MR. ``convex_adam_pt(img_fixed, img_moving, ...)`` takes two arrays on ONE voxel grid
    (any axis order; it never sees a spacing or direction) and returns an ``(H, W, D, 3)`` float64 array: the
    displacement in voxels, component ``c`` along array axis ``c``, fixed voxel ``p`` -> moving voxel ``p + u(p)``
    (the package's own ``apply_convex`` warps with ``moving(p + u(p))``), i.e. fixed -> moving. Method: MIND-SSC
    features of both images (``mind_r=1``, ``mind_d=2``), average-pooled to cells of ``grid_sp=6`` voxels; an SSD
    cost volume over the (2 x ``disp_hw`` + 1)^3 = 9^3 discrete displacements of up to +-4 cells (+-24 voxels:
    +-19 mm on the 0.8 mm sample/generated grids, +-36 mm on the 1.5 mm DeepReg grids); coupled convex optimisation
    (6 coupling weights 0.003..1); ``ic=True``: made inverse-consistent with the backward problem (15 iterations);
    then ``selected_niter=80`` Adam iterations (lr 1) on a ``grid_sp_adam=2`` voxel grid with diffusion
    regularisation ``lambda_weight=1.25`` and a triple 3^3 box smoothing of the parameters; ``selected_smooth=0`` (no
    final smoothing), ``use_mask=False``. These are ``convex_adam_pt``'s own defaults (:data:`CONVEXADAM_SETTINGS`);
    nothing was tuned. Input: the moving image resampled (linear, engine ``resample``, 0 outside the MR) onto the
    fixed grid by the identity world map — or, with ``initial=S`` (the DISA capture benchmark's start pose), through
    ``S`` — and the fixed image as is. The fixed grid is used as it is (no isotropic resampling: the benchmark's
    fixed grids are isotropic, 0.8 and 1.5 mm; convexAdam's own tests resample to 1 mm first). On an anisotropic or
    oblique grid convexAdam still works in voxel units (its MIND offsets, cells, search range and regulariser are
    then anisotropic in mm), and its field is converted exactly per fixed voxel: ``u_world = A (u_i, u_j, u_k)``
    with ``A = direction @ diag(spacing)`` (the grid's index -> LPS linear part; array axes k, j, i reversed to
    i, j, k). Intensities: the convexAdam documentation recommends no preprocessing (its tests and its MR/US
    CuRIOUS script feed raw intensities) and MIND-SSC is invariant to linear intensity maps, so each array is only
    mapped linearly onto [0, 1] (min-max; no clipping). Shape: both arrays are padded at the end of each axis
    (edge values) to a multiple of ``lcm(grid_sp, grid_sp_adam)`` = 6 voxels and the field is cropped back —
    ``convex_adam_pt`` pools ``floor(n / 6)`` cells and interpolates them back onto ``n`` voxels, which would
    otherwise stretch the field (up to ~5 voxels misplaced at the far border) and ignore the last ``n mod 6`` voxels.
    Conversion: engine ``DisplacementField`` on the fixed grid (0 outside it); with ``initial``
    ``ComposedTransform([field, S])``, a fixed point x goes to ``S(x + u(x))``. Direction and units checked on a
    known 5.9 mm translation between oblique, anisotropic (0.8 x 1.5 x 1.2 mm), non-zero-origin 48 x 48 x 56 grids,
    alone and after a start transform (Testing/Python/benchmarks/test_peers.py): every test point within 0.45 mm of
    the truth, where the inverse would be 11 mm off, k/j/i components read as i/j/k 10 mm, the direction ignored
    4.7 mm and voxels read as mm 1.8 mm.
    Device: ``convex_adam_pt``'s ``device`` default is chosen at import (CUDA when available) and its dtype default
    is float16 (replaced by float32, with a printed warning, only when the device equals ``torch.device("cpu")``); we
    pass ``device=torch.device("cpu")`` (``device=`` argument) and ``dtype=float32`` explicitly (float16 on CUDA, the
    package's default there). No site-packages code is changed. Side effects handled here: importing convexAdam calls
    ``warnings.filterwarnings("ignore")`` for the whole process (the import runs inside ``catch_warnings``, which
    drops that filter; the call itself runs with warnings ignored, as the package intends); ``torch.set_num_threads
    (threads)`` for the call, restored afterwards. Known quirk kept as published: the Adam stage converts voxels to
    ``grid_sample`` units with ``(n - 1) / 2`` under ``align_corners=False`` (n / 2 per voxel), so the returned
    displacement is about ``(n - 1) / n`` of the alignment the stage reached (n = padded size / 2 per axis; 45-57 on
    the sample/generated grids, 24-33 on DeepReg's): a 4.7 mm translation on a 36 x 40 x 44 voxel grid came out
    7-9 % short per axis, 1.5-4 % with that conversion corrected in a scratch copy (not used here).
    Seconds: the resampling (through ``initial`` when given), scaling, padding and ``convex_adam_pt``; not the
    conversion into an engine transform.

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


# ---- convexAdam (MIND-SSC, coupled convex + Adam) ----------------------------------------------------------
# convex_adam_pt's own defaults in convexadam 0.2.0 (convexAdam/convex_adam_MIND.py); see the module docstring
CONVEXADAM_SETTINGS = {
    "mind_r": 1,
    "mind_d": 2,
    "lambda_weight": 1.25,
    "grid_sp": 6,
    "disp_hw": 4,
    "selected_niter": 80,
    "selected_smooth": 0,
    "grid_sp_adam": 2,
    "ic": True,
    "use_mask": False,
}


def convexadam_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("convexAdam") is not None
    except (ImportError, ValueError):
        return False


def _import_convexadam():
    """``convex_adam_pt``; convexAdam's modules call ``warnings.filterwarnings("ignore")`` when imported, which
    would silence every warning of the process: the import runs inside ``catch_warnings`` so that filter is dropped."""
    import warnings

    with warnings.catch_warnings():
        from convexAdam.convex_adam_MIND import convex_adam_pt
    return convex_adam_pt


def _unit_range(array: np.ndarray) -> np.ndarray:
    """Linear map of ``array`` onto [0, 1] (min-max; a constant array -> 0), float32."""
    a = np.asarray(array, dtype=np.float32)
    lo, hi = float(a.min()), float(a.max())
    return np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo)


def convexadam_field(disp_kji_vox: np.ndarray, grid: Grid, source: str = "fixed", target: str = "moving"):
    """convexAdam's displacement (``(K, J, I, 3)``, voxels of ``grid``, component ``c`` along array axis ``c``:
    k, j, i) as an engine :class:`DisplacementField` on ``grid`` (LPS mm): ``u_world = A (u_i, u_j, u_k)``
    with ``A = direction @ diag(spacing)``, the grid's index -> world linear part."""
    disp = np.asarray(disp_kji_vox, dtype=np.float64)
    if disp.shape != (*grid.shape, 3):
        raise ValueError(f"convexadam_field: displacement shape {disp.shape} does not match the grid {grid.shape}")
    u_world = disp[..., ::-1] @ np.asarray(grid.affine[:3, :3]).T
    return DisplacementField(grid, torch.from_numpy(np.ascontiguousarray(u_world)), source, target)


def convex_adam_mind(case: dict, threads: int = 2, settings: dict | None = None, return_info: bool = False,
                     initial: SpatialTransform | None = None, device: str = "cpu", pad: bool = True):
    """convexAdam (MIND-SSC features, coupled convex discrete optimisation, then Adam instance optimisation) on
    the images, fixed = TRUS, moving = MR (see the module docstring).

    ``settings`` override :data:`CONVEXADAM_SETTINGS` (keywords of ``convex_adam_pt``; ``use_mask`` must stay
    False: the package reads masks from NIfTI files only). ``initial`` (fixed -> moving, optional): the moving
    image is resampled onto the fixed grid through it, and the result is ``x -> initial(x + u(x))``. ``pad``: pad
    both arrays (edge values) to a multiple of ``lcm(grid_sp, grid_sp_adam)`` voxels per axis (the field is
    cropped back). ``device``: ``cpu`` (float32) or ``cuda`` (float16, the package's GPU default).
    Returns ``(transform fixed -> moving, seconds)`` (``(..., info)`` with ``return_info``).
    """
    import math
    import warnings

    from MMRegistrationLib.spatial.resample import resample

    opts = dict(CONVEXADAM_SETTINGS, **(settings or {}))
    if opts.get("use_mask"):
        raise ValueError("convex_adam_mind: use_mask=True is not supported (convexAdam reads masks from files)")
    convex_adam_pt = _import_convexadam()
    torch_device = torch.device(device)
    dtype = torch.float16 if torch_device.type == "cuda" else torch.float32
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        t0 = time.perf_counter()
        grid = case["fixed"].grid
        moving_on_fixed = resample(case["moving"], grid, initial, interpolation="linear").array
        fixed_arr = _unit_range(case["fixed"].array)
        moving_arr = _unit_range(moving_on_fixed)
        shape = np.array(grid.shape)
        if pad:
            step = math.lcm(int(opts["grid_sp"]), int(opts["grid_sp_adam"]))
            extra = (-shape) % step
            width = [(0, int(e)) for e in extra]
            fixed_arr = np.pad(fixed_arr, width, mode="edge")
            moving_arr = np.pad(moving_arr, width, mode="edge")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's align_corners notices from inside the package
            disp = convex_adam_pt(torch.from_numpy(np.ascontiguousarray(fixed_arr)),
                                  torch.from_numpy(np.ascontiguousarray(moving_arr)),
                                  dtype=dtype, device=torch_device, verbose=False, **opts)
        if torch_device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous_threads)
    disp = np.asarray(disp, dtype=np.float64)[: shape[0], : shape[1], : shape[2]]  # crop the padding off
    if initial is None:
        field = transform = convexadam_field(disp, grid)
    else:  # x -> initial(x + u(x)): the field maps into the space the moving image was resampled from
        field = convexadam_field(disp, grid, "fixed", "fixed:convexadam")
        transform = ComposedTransform([field, _renamed_source(initial, "fixed:convexadam")])
    info = {"settings": opts, "device": str(torch_device), "dtype": str(dtype).replace("torch.", ""),
            "padded_shape": list(fixed_arr.shape), "shape": [int(v) for v in shape],
            "max_displacement_mm": float(np.linalg.norm(field.numpy(), axis=-1).max()),
            "initial": initial is not None}
    return (transform, seconds, info) if return_info else (transform, seconds)


def _renamed_source(transform: SpatialTransform, source: str) -> SpatialTransform:
    """A linear ``transform`` as an :class:`AffineTransform` with another source-space name."""
    from MMRegistrationLib.spatial.affine import AffineTransform

    if isinstance(transform, ComposedTransform) and transform.is_linear:
        transform = transform.as_affine()
    if isinstance(transform, AffineTransform):
        return AffineTransform(transform.matrix, source, transform.target)
    raise TypeError(f"convex_adam_mind: 'initial' must be linear (an AffineTransform), got {type(transform).__name__}")


PEERS = {
    "ants-syn-sdm": ants_syn_on_sdm,
    "ants-syn-sdm-quick": ants_syn_on_sdm_quick,
    "ants-syn-sdm-default": ants_syn_on_sdm_default,
    "elastix-bspline-mi": elastix_bspline_mi,
    "convexadam": convex_adam_mind,
}
PEER_AVAILABLE = {"ants-syn-sdm": ants_available, "ants-syn-sdm-quick": ants_available,
                  "ants-syn-sdm-default": ants_available,
                  "elastix-bspline-mi": elastix_available, "convexadam": convexadam_available}
