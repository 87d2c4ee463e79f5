"""From files to a registration and its outputs: what ``mmreg register`` and the demo run.

Outputs (all in one folder, written whole or not at all):
``transform.h5`` (fixed -> moving), ``inverse_transform.h5`` (moving -> fixed, when available),
``warped_moving.nrrd`` (moving resampled on the fixed grid, linear), ``warped_moving_seg.nrrd``
(moving labels on the fixed grid, nearest neighbour), ``result.json``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from MMRegistrationLib import __version__
from MMRegistrationLib.core.device import resolve_device, seed_everything
from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.options import MethodConfig
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.core.threads import ThreadChoice, choose_threads, engine_threads
from MMRegistrationLib.evaluation.case import jsonable
from MMRegistrationLib.io.images import read_image, write_image
from MMRegistrationLib.io.landmarks import check_landmark_pair, read_landmarks
from MMRegistrationLib.io.outputs import atomic_output_dir
from MMRegistrationLib.io.regions import check_region, read_region
from MMRegistrationLib.io.segmentations import Segmentation, check_on_image, match_segmentations, read_segmentation
from MMRegistrationLib.io.target_label import (
    choose_target,
    foreground_labels,
    moved_names,
    relabel,
    restored_names,
    target_first,
    to_engine,
)
from MMRegistrationLib.io.transforms import write_transform
from MMRegistrationLib.metrics.overlap import field_of_view_coverage
from MMRegistrationLib.registration.base import RegistrationInputs, RegistrationResult
from MMRegistrationLib.registration.initializers import center_init, center_of_mass_init, rigid_mask_init
from MMRegistrationLib.registration.methods import RunContext, get_method
from MMRegistrationLib.segmentation.predict import PROSTATE
from MMRegistrationLib.segmentation.auto import auto_modality, check_auto_weights, predicted_segmentation, target_only
from MMRegistrationLib.spatial.affine import AffineTransform
from MMRegistrationLib.spatial.base import SpatialTransform
from MMRegistrationLib.spatial.composite import ComposedTransform
from MMRegistrationLib.spatial.resample import resample, resample_labels

INITS = ("none", "com", "rigid-mask", "auto", "center")
"""``auto``: ``rigid-mask`` when the segmentations share two or more structures, else ``com``. With the prostate
alone the rotation is ill-posed (a near-ellipsoid fits at many angles): on 10 DeepReg gland-only pairs
``rigid-mask`` turned by 23 deg on average (up to 62) and raised the landmark error from 6.1 mm (``com``) to
7.3 mm, whereas context structures (bladder, rectum, bone) pin the rotation down. ``center`` (paper 004): the
translation taking the fixed image's centre to the moving gland's centre of mass (to the moving image's centre
without a moving segmentation): a TRUS is acquired with the prostate near its centre."""

MIN_COVERAGE = 0.01
"""Below this fraction of the fixed field of view covered by the (transformed) moving image, a warning says the images
hardly overlap: the warped moving image is (nearly) all zero and the metrics describe no real overlap."""


@dataclass(frozen=True)
class LoadedInputs(RegistrationInputs):
    """:class:`RegistrationInputs` read from files (:func:`load_inputs`), plus what reading them decided.

    Attributes:
        target: the target structure (the gland) as ``result.json`` records it (label value and name in the files,
            and the rule that chose it), or None without segmentations.
        file_values: engine label value -> the files' value, for the values moved so that the target is label 1
            (where every method looks for it); empty when nothing moved. Outputs map the labels back.
        warnings: what the user must know about the inputs (also printed by the CLI).
        predicted: side (``fixed``/``moving``) -> the record of a segmentation predicted by the segmentation network
            (``--fixed-seg auto``); those segmentations are written beside the outputs.
    """

    target: Optional[dict] = None
    file_values: dict = field(default_factory=dict)
    warnings: tuple = ()
    predicted: dict = field(default_factory=dict)


def check_segmentations_given(method: str, fixed_seg, moving_seg) -> None:
    """A method that needs both segmentations gets both (:class:`InputError` naming the missing one)."""
    if get_method(method).needs_segmentations and (fixed_seg is None or moving_seg is None):
        missing = "--fixed-seg" if fixed_seg is None else "--moving-seg"
        raise InputError(missing, f"method '{method}' needs segmentations of both images (--fixed-seg and --moving-seg)")


def resolve_init(init: str, inputs: RegistrationInputs) -> str:
    """The concrete initialiser for ``init`` (``auto`` resolved from the number of shared structures)."""
    if init != "auto":
        return init
    if not inputs.has_segmentations:
        return "none"
    shared = set(inputs.fixed_seg.labels()) & set(inputs.moving_seg.labels())
    return "rigid-mask" if len(shared) >= 2 else "com"


def load_inputs(
    fixed: str | os.PathLike,
    moving: str | os.PathLike,
    fixed_seg: Optional[str | os.PathLike] = None,
    moving_seg: Optional[str | os.PathLike] = None,
    fixed_landmarks: Optional[str | os.PathLike] = None,
    moving_landmarks: Optional[str | os.PathLike] = None,
    label_channel: Optional[int] = None,
    region=None,
    target_label: Optional[str] = None,
    device=None,
    progress=None,
    cancel=None,
) -> LoadedInputs:
    """Read and validate one case; errors name the CLI argument at fault.

    One segmentation alone is accepted (methods that need both say so when they run). Each segmentation must be of
    its own image (:func:`~MMRegistrationLib.io.segmentations.check_on_image`: on its grid, or inside its field of
    view; one on the other image's grid is refused as swapped).
    ``label_channel``: with 4-D label images (one binary channel per structure), the channel used as label 1.
    ``region``: a region of interest (``--roi``): an :class:`~MMRegistrationLib.core.box.OrientedBox` (LPS mm), a
    Slicer markups ROI file or ``"cx,cy,cz,sx,sy,sz"`` (LPS mm); parsed before any image is read and checked
    against the fixed image right after it is read.
    ``target_label``: the target structure (``--target-label``: a value or a segment name); default and warnings:
    :mod:`MMRegistrationLib.io.target_label`. The segmentations are relabelled so that it is label 1.
    ``fixed_seg`` / ``moving_seg`` ``"auto"`` (or ``"auto:mr"``, ``"auto:trus"``): the gland predicted by the shipped
    segmentation network on ``device`` (:mod:`MMRegistrationLib.segmentation.auto`), recorded in ``predicted``.
    """
    box = read_region(region, "--roi") if region is not None else None
    if (fixed_landmarks is None) != (moving_landmarks is None):
        missing = "--moving-landmarks" if moving_landmarks is None else "--fixed-landmarks"
        raise InputError(missing, "landmarks must be given for both images")
    if target_label is not None and fixed_seg is None and moving_seg is None:
        raise InputError("--target-label", "needs a segmentation (--fixed-seg, --moving-seg) to choose a label from")
    fixed_img = read_image(fixed, "--fixed")
    if box is not None:
        check_region(box, fixed_img, "--roi")
    moving_img = read_image(moving, "--moving")
    flm = mlm = None
    if fixed_landmarks is not None:
        flm = read_landmarks(fixed_landmarks, "--fixed-landmarks")
        mlm = read_landmarks(moving_landmarks, "--moving-landmarks")
        check_landmark_pair(flm, mlm)
    segs = {"fixed": fixed_seg, "moving": moving_seg}
    if any(auto_modality(value, side, f"--{side}-seg") for side, value in segs.items()):
        return _with_predictions(fixed_img, moving_img, segs, label_channel, flm, mlm, box, target_label, device,
                                 progress, cancel)
    fseg, mseg, names = _read_segmentations(fixed_seg, moving_seg, label_channel, fixed_img, moving_img)
    return with_target(RegistrationInputs(fixed_img, moving_img, fseg, mseg, names, flm, mlm, box), target_label)


def _with_predictions(fixed_img, moving_img, segs: dict, label_channel, flm, mlm, box, target_label, device, progress,
                      cancel) -> LoadedInputs:
    """The inputs when one or both segmentations are predicted: the predicted gland is label 1 'prostate'; a file on
    the other side is reduced to its target structure (the gland) as label 1."""
    images = {"fixed": fixed_img, "moving": moving_img}
    others = {"fixed": (moving_img, "--moving"), "moving": (fixed_img, "--fixed")}
    given = {side: seg for side, seg in segs.items() if seg is not None}
    if target_label is not None and all(auto_modality(v, s, f"--{s}-seg") for s, v in given.items()):
        raise InputError("--target-label", "has nothing to choose from: the segmentations are predicted (one gland)")
    out, predicted, warnings = {}, {}, []
    monitor = Monitor.wrap(progress, cancel).stage(0.0, 0.02)
    for side, value in given.items():
        argument = f"--{side}-seg"
        modality = auto_modality(value, side, argument)
        if modality is not None:
            out[side], predicted[side] = predicted_segmentation(images[side], side, modality, device, monitor)
            warnings += predicted[side]["warnings"]
        else:
            own = _own_segmentation(value, argument, label_channel, images[side], f"--{side}", *others[side])
            out[side], chosen = target_only(own, target_label, argument)
            warnings += chosen
    fseg, mseg = (out[side].labelmap if side in out else None for side in ("fixed", "moving"))
    inputs = with_target(RegistrationInputs(fixed_img, moving_img, fseg, mseg, {1: PROSTATE}, flm, mlm, box))
    return replace(inputs, warnings=(*inputs.warnings, *warnings), predicted=predicted)


def _own_segmentation(path, flag: str, channel, image, image_flag: str, other, other_flag: str) -> Segmentation:
    """Read one segmentation and check it is of its own image (not on the other image's grid, inside its view)."""
    seg = read_segmentation(path, flag, channel)
    check_on_image(seg.labelmap, image.grid, flag, image_flag, other.grid, other_flag)
    return seg


def _read_segmentations(fixed_seg, moving_seg, label_channel, fixed_img, moving_img) -> tuple:
    """``(fixed labelmap or None, moving labelmap or None, names)``: both matched (same values for the same
    structures), or the one given (e.g. the MR mask a network takes)."""
    fixed = moving = None
    if fixed_seg is not None:
        fixed = _own_segmentation(fixed_seg, "--fixed-seg", label_channel, fixed_img, "--fixed", moving_img, "--moving")
    if moving_seg is not None:
        moving = _own_segmentation(moving_seg, "--moving-seg", label_channel, moving_img, "--moving", fixed_img,
                                   "--fixed")
    if fixed is not None and moving is not None:
        return match_segmentations(fixed, moving)
    single = fixed if fixed is not None else moving
    if single is None:
        return None, None, {}
    return (single.labelmap if fixed is not None else None, single.labelmap if moving is not None else None,
            dict(single.names))


def with_target(inputs: RegistrationInputs, target_label: Optional[str] = None) -> LoadedInputs:
    """``inputs`` with the target structure chosen (``target_label``, else the rule of
    :mod:`MMRegistrationLib.io.target_label`; a guess adds a warning) and made label 1, where every method looks
    for it (the values swapped in both segmentations; outputs swap them back)."""
    labels = foreground_labels(inputs.fixed_seg, inputs.moving_seg)
    choice = choose_target(labels, inputs.label_names, target_label)
    base = {name: getattr(inputs, name) for name in RegistrationInputs.__dataclass_fields__}
    if choice is None:
        return LoadedInputs(**base)
    file_values = target_first(choice.value, labels)
    engine = to_engine(file_values)
    if file_values:
        base.update(fixed_seg=relabel(inputs.fixed_seg, engine), moving_seg=relabel(inputs.moving_seg, engine),
                    label_names=moved_names(inputs.label_names, labels, engine))
    return LoadedInputs(**base, target=choice.as_record(), file_values=file_values,
                        warnings=(choice.warning,) if choice.warning else ())


def check_method_takes_region(method: str) -> None:
    """``--roi`` is refused for a method that does not use a region (an InputError naming ``--roi``)."""
    from MMRegistrationLib.registration.methods import METHODS

    if not get_method(method).region_use:
        users = ", ".join(name for name, spec in METHODS.items() if spec.region_use) or "none"
        raise InputError("--roi", f"method '{method}' does not use a region; methods that do: {users}")


def initial_transform(
    init: str, inputs: RegistrationInputs, device=None, monitor=None, start: Optional[AffineTransform] = None,
    seed: int = 0,
) -> AffineTransform:
    """The ``--init`` transform (fixed -> moving).

    ``start`` is a caller's fixed -> moving affine (e.g. a Slicer transform node): ``none`` returns it as is and
    ``rigid-mask`` refines it; ``com`` would discard it, so it is an error.
    """
    if init not in INITS:
        raise InputError("--init", f"unknown initialiser '{init}'; choose one of {', '.join(INITS)}")
    if init == "none":
        return start if start is not None else AffineTransform.identity()
    if init == "center":
        if start is not None:
            raise InputError("--init", "'center' replaces the given initial transform; use 'none' with it")
        return center_init(inputs.fixed.grid, inputs.moving.grid, inputs.moving_seg)
    if not inputs.has_segmentations:
        raise InputError("--init", f"'{init}' needs --fixed-seg and --moving-seg")
    if init == "com":
        if start is not None:
            raise InputError("--init", "'com' replaces the given initial transform; use 'none' or 'rigid-mask' with it")
        return center_of_mass_init(inputs.fixed_seg, inputs.moving_seg)
    return rigid_mask_init(inputs.fixed_seg, inputs.moving_seg, initial=start, seed=seed, device=device,
                           progress=monitor)


def _as_start(initial) -> Optional[AffineTransform]:
    """A caller's initial transform as a fixed -> moving :class:`AffineTransform` (linear transforms only)."""
    if initial is None:
        return None
    if not isinstance(initial, SpatialTransform) or not initial.is_linear:
        raise InputError("initial", f"the initial transform must be linear (affine), got {type(initial).__name__}")
    affine = initial if isinstance(initial, AffineTransform) else ComposedTransform([initial]).as_affine()
    if not np.all(np.isfinite(affine.matrix)) or abs(np.linalg.det(affine.matrix[:3, :3])) < 1e-9:
        raise InputError("initial", "the initial transform is not invertible")
    return AffineTransform(affine.matrix, "fixed", "moving")


def run_registration(
    method: str,
    inputs: RegistrationInputs,
    init: Optional[str] = None,
    options=None,
    seed: int = 0,
    device: str = "auto",
    progress=None,
    cancel=None,
    initial: Optional[SpatialTransform] = None,
    threads: Optional[int | ThreadChoice] = None,
) -> tuple:
    """Run ``method`` on ``inputs``.

    Args:
        init: the initialiser (``none``, ``com``, ``rigid-mask``; default: the method's, or ``none`` when
            ``initial`` is given).
        threads: CPU threads (``--threads``), or a :class:`ThreadChoice`; ``None`` = the engine's thread policy
            (:mod:`MMRegistrationLib.core.threads`), by the size of the images.
        options: the method's options, as keywords (``{"iterations": 50}``, strings allowed) or an instance of its
            configuration dataclass.
        initial: a linear fixed -> moving transform to start from (e.g. a manual alignment): used as is with
            ``init='none'``, refined with ``init='rigid-mask'``.

    Returns:
        ``(result, record)``: the :class:`RegistrationResult` (fixed -> moving) and a dict describing the run
        (method, init, options, seed, device, per-stage wall seconds).
    """
    spec = get_method(method)
    if inputs.region is not None:
        check_method_takes_region(method)
        check_region(inputs.region, inputs.fixed, "--roi")
    check_segmentations_given(method, inputs.fixed_seg, inputs.moving_seg)
    start = _as_start(initial)
    config = options if isinstance(options, spec.config) else spec.build_config(options)
    if init is None and start is None and spec.init_for is not None:
        init = spec.init_for(config, inputs)
    init = init or ("none" if start is not None or not inputs.has_segmentations else spec.default_init)
    if init == "auto" and start is not None:
        init = "none"
    init = resolve_init(init, inputs) if init in INITS else init
    torch_device = resolve_device(device)
    choice = threads if isinstance(threads, ThreadChoice) else choose_threads(threads, work_voxels(inputs))
    with engine_threads(choice):
        result, record = _run_method(spec, inputs, init, config, seed, torch_device, progress, cancel, start)
    preset = {"preset": spec.preset_of(options)} if spec.presets and not isinstance(options, MethodConfig) else {}
    record = {"method": method, "init": init, "parameters": {**preset, **config.as_dict()}, **record,
              "threads": choice.as_dict()}
    if start is not None:
        record["initial_matrix"] = start.matrix.tolist()  # the caller's start (fixed -> moving, LPS)
    if inputs.region is not None:  # the user's box (--roi), LPS mm
        record["region"] = {**inputs.region.as_record(), "use": spec.region_use}
    return result, record


def work_voxels(inputs: RegistrationInputs) -> int:
    """The size of a registration problem for the thread policy: the larger image's voxel count."""
    return max(inputs.fixed.grid.num_voxels, inputs.moving.grid.num_voxels)


def _run_method(spec, inputs: RegistrationInputs, init: str, config, seed: int, torch_device, progress, cancel,
                start) -> tuple:
    """The initialiser then the method (see :func:`run_registration`); ``(result, record)``."""
    seed_everything(seed)
    monitor = Monitor.wrap(progress, cancel)
    times = {}
    t0 = time.perf_counter()
    start_transform = initial_transform(init, inputs, torch_device, monitor.stage(0.0, 0.3), start=start, seed=seed)
    times["init"] = time.perf_counter() - t0
    coverage = field_of_view_coverage(inputs.fixed.grid, inputs.moving.grid, start_transform)
    t1 = time.perf_counter()
    context = RunContext(torch_device, seed, monitor.stage(0.3, 1.0))
    result: RegistrationResult = spec.run(inputs, start_transform, config, context)
    times["register"] = time.perf_counter() - t1
    times.update({f"method_{k}": v for k, v in result.stage_seconds.items()})
    record = {
        "seed": seed,
        "device": str(torch_device),
        "wall_seconds": times,
        "method_info": result.info,
        "field_of_view_overlap": {"after_init": coverage},
    }
    if result.info.get("warnings"):  # what the method needs the user to know (e.g. a slow working grid)
        record["warnings"] = list(result.info["warnings"])
    return result, record


FLATTEN_SPACING_MM = 2.0
"""A dense transform file holds the image's grid coarsened to at most this spacing, and to at most half the spacing of
the finest displacement field inside the transform: ITK's and Slicer's trilinear interpolation of it then reproduces
the transform within a few hundredths of a mm (tested), at a fraction of the voxels of a fine image grid."""


def finest_field_spacing(transform: Optional[SpatialTransform]) -> float:
    """The smallest grid spacing (mm) of the displacement or velocity fields a transform is made of; ``inf`` for a
    linear one."""
    from MMRegistrationLib.spatial.displacement import DisplacementField
    from MMRegistrationLib.spatial.velocity import VelocityField

    if isinstance(transform, ComposedTransform):
        return min((finest_field_spacing(t) for t in transform.transforms), default=float("inf"))
    if isinstance(transform, (DisplacementField, VelocityField)):
        return float(np.min(transform.grid.spacing))
    return float("inf")


def output_grid(grid: Grid, transform: Optional[SpatialTransform] = None, max_voxels: int = 2**24) -> Grid:
    """The grid a dense ``transform`` is written on: ``grid``'s field of view at ``grid``'s spacing, or coarser where
    the transform's own fields are coarser (half their spacing, up to :data:`FLATTEN_SPACING_MM`), and coarsened
    further past ``max_voxels``. Outside it the stored displacement is 0 (ITK's rule), so it covers the whole image the transform
    resamples (same outer corners as ``grid``)."""
    spacing = np.asarray(grid.spacing, dtype=np.float64)
    finest = finest_field_spacing(transform)
    if np.isfinite(finest):
        spacing = np.maximum(spacing, min(finest / 2, FLATTEN_SPACING_MM))
    voxels = np.prod(np.round(grid.spacing * np.array(grid.size_ijk) / spacing))
    if voxels > max_voxels:
        spacing = spacing * (voxels / max_voxels) ** (1 / 3)
    return grid if np.allclose(spacing, grid.spacing) else grid.resized(spacing)


def compute_metrics(inputs: RegistrationInputs, transform: Optional[SpatialTransform]) -> dict:
    """Dice, MSD, HD95 and HD per label name (moving labels warped onto the fixed grid, nearest) and landmark TRE
    (mm), all from :func:`MMRegistrationLib.evaluation.evaluate_case` (the one implementation of the metrics).

    Returns ``{"dice": {name: v}, "msd_mm": {name: v}, "hd95_mm": {name: v}, "hd_mm": {name: v}}`` (NaN for an
    undefined distance) plus the TRE keys of
    :func:`MMRegistrationLib.metrics.landmarks.target_registration_error_mm` when landmarks are given.
    """
    from MMRegistrationLib.evaluation.case import evaluate_case
    from MMRegistrationLib.evaluation.checks import landmark_errors

    metrics: dict = {}
    if inputs.has_segmentations:
        ev = evaluate_case(inputs.fixed_seg, inputs.moving_seg, transform, inputs.label_names,
                           inputs.fixed_landmarks, inputs.moving_landmarks, jacobian=False)
        for key in ("dice", "msd_mm", "hd95_mm", "hd_mm"):
            metrics[key] = {row["name"]: row[key] for row in ev.rows}
        tre = ev.tre
    else:
        tre = landmark_errors(transform, inputs.fixed_landmarks, inputs.moving_landmarks)
    if tre is not None:
        metrics.update(tre)
    return metrics


def coverage_warning(overlap: dict, init: Optional[str] = None) -> Optional[str]:
    """The warning for fields of view that (nearly) do not overlap, or None. ``overlap``: the fractions of the fixed
    field of view the moving image covers, ``after_registration`` and optionally ``after_init``."""
    after, before = overlap["after_registration"], overlap.get("after_init")
    start = f"the initial transform (--init {init})" if init else "the initial transform"
    if after < MIN_COVERAGE:
        told = f" ({before:.1%} after {start})" if before is not None else ""
        return (f"the moving image covers {after:.1%} of the fixed image's field of view after registration{told}: the "
                f"images (nearly) do not overlap, the warped moving image is (nearly) all zero and the metrics "
                f"describe no real alignment; check the images' origins and directions, or start from --init "
                f"com/center or --initial-transform")
    if before is not None and before < MIN_COVERAGE:
        return (f"the moving image covered {before:.1%} of the fixed image's field of view after {start}: the method "
                f"started without overlap (it ends at {after:.1%}); check the result")
    return None


def _output_labels(inputs: RegistrationInputs) -> dict:
    """``result.json`` entries about labels: names and the target, in the files' values."""
    names = restored_names(inputs.label_names, getattr(inputs, "file_values", {}))
    out = {"label_names": {str(k): v for k, v in sorted(names.items())}}
    if getattr(inputs, "target", None) is not None:
        out["target_label"] = inputs.target
    return out


def write_predicted_segmentations(folder, inputs: RegistrationInputs) -> dict:
    """``predicted_fixed_seg.seg.nrrd`` / ``predicted_moving_seg.seg.nrrd`` (segment ``prostate``) for the
    segmentations the network predicted; ``files`` entries."""
    from pathlib import Path

    from MMRegistrationLib.io.segmentations import write_segmentation

    files = {}
    for side in getattr(inputs, "predicted", {}) or {}:
        name = f"predicted_{side}_seg.seg.nrrd"
        write_segmentation(getattr(inputs, f"{side}_seg"), {1: PROSTATE}, Path(folder) / name)
        files[f"predicted_{side}_seg"] = name
    return files


def write_outputs(
    out_dir: str | os.PathLike,
    inputs: RegistrationInputs,
    result: RegistrationResult,
    record: dict,
    t_start: Optional[float] = None,
    extra_outputs=None,
) -> dict:
    """Write every output into ``out_dir`` atomically; returns the completed record (also ``result.json``).

    ``t_start`` (a ``time.perf_counter()`` value) sets ``wall_seconds.total`` just before ``result.json``.
    ``extra_outputs(folder, warped_moving, warped_moving_seg) -> dict`` may add files (e.g. a figure) inside the
    same atomic folder; its dict is merged into ``files``.
    """
    times = record["wall_seconds"]
    t0 = time.perf_counter()
    metrics = {"before": compute_metrics(inputs, None), "after": compute_metrics(inputs, result.transform)}
    overlap = {**record.get("field_of_view_overlap", {}),
               "after_registration": field_of_view_coverage(inputs.fixed.grid, inputs.moving.grid, result.transform)}
    warnings = [*getattr(inputs, "warnings", ()), *record.get("warnings", ()),
                *filter(None, [coverage_warning(overlap, record.get("init"))])]
    times["metrics"] = time.perf_counter() - t0
    with atomic_output_dir(out_dir) as tmp:
        t1 = time.perf_counter()
        # dense results are stored as one displacement field (what Slicer shows as a grid transform)
        write_transform(result.transform, tmp / "transform.h5",
                        flatten_on=output_grid(inputs.fixed.grid, result.transform))
        files = {"transform": "transform.h5"}
        if result.inverse is not None:
            write_transform(result.inverse, tmp / "inverse_transform.h5",
                            flatten_on=output_grid(inputs.moving.grid, result.inverse))
            files["inverse_transform"] = "inverse_transform.h5"
        warped = resample(inputs.moving, inputs.fixed.grid, result.transform, interpolation="linear")
        write_image(warped.with_array(warped.array.astype(np.float32)), tmp / "warped_moving.nrrd")
        files["warped_moving"] = "warped_moving.nrrd"
        wseg = None
        if inputs.moving_seg is not None:
            wseg = relabel(resample_labels(inputs.moving_seg, inputs.fixed.grid, result.transform),
                           getattr(inputs, "file_values", {}))  # the files' label values
            write_image(wseg, tmp / "warped_moving_seg.nrrd")
            files["warped_moving_seg"] = "warped_moving_seg.nrrd"
        files.update(write_predicted_segmentations(tmp, inputs))
        if extra_outputs is not None:
            files.update(extra_outputs(tmp, warped, wseg))
        times["write"] = time.perf_counter() - t1
        record = dict(record)
        record.update(
            {
                "transform_direction": "fixed->moving (ITK convention: resamples the moving image onto the fixed grid)",
                "files": files,
                "metrics": metrics,
                **_output_labels(inputs),
                **({"predicted_segmentations": inputs.predicted} if getattr(inputs, "predicted", None) else {}),
                "field_of_view_overlap": overlap,
                "warnings": warnings,
                "version": __version__,
                "platform": platform.platform(),
            }
        )
        if t_start is not None:
            record["wall_seconds"]["total"] = time.perf_counter() - t_start
        (tmp / "result.json").write_text(json.dumps(jsonable(record), indent=2), encoding="utf-8")
    return record


def register_files(
    method: str,
    fixed: str | os.PathLike,
    moving: str | os.PathLike,
    out: str | os.PathLike,
    fixed_seg=None,
    moving_seg=None,
    fixed_landmarks=None,
    moving_landmarks=None,
    init: Optional[str] = None,
    options: Optional[dict] = None,
    seed: int = 0,
    device: str = "auto",
    progress=None,
    cancel=None,
    initial_transform: Optional[str | os.PathLike] = None,
    label_channel: Optional[int] = None,
    roi=None,
    threads: Optional[int] = None,
    target_label: Optional[str] = None,
) -> dict:
    """Load, register, write. Returns the record written to ``out/result.json``.

    ``initial_transform``: an ITK transform file (fixed -> moving, linear) to start from (``--initial-transform``).
    ``roi``: a region of interest (``--roi``): a Slicer markups ROI file (``.mrk.json``), ``"cx,cy,cz,sx,sy,sz"``
    (LPS mm) or an :class:`~MMRegistrationLib.core.box.OrientedBox`; only for methods that use one. The method and
    the value are checked before any image is read; ``result.json`` records the box under ``"region"``.
    ``threads``: CPU threads (``--threads``); ``None`` = the engine's thread policy (recorded under ``"threads"``).
    ``target_label``: the target structure (``--target-label``, see :func:`load_inputs`). ``result.json`` lists
    ``warnings`` (a guessed target, fields of view that do not overlap), also printed by the CLI.
    """
    t_start = time.perf_counter()
    choice = choose_threads(threads)  # a bad --threads / MMREG_THREADS is refused before any image is read
    get_method(method).build_config(options)  # bad options are refused before any image is read
    check_segmentations_given(method, fixed_seg, moving_seg)
    if (fixed_seg is None) != (moving_seg is None) and init in ("com", "rigid-mask"):
        raise InputError("--fixed-seg" if fixed_seg is None else "--moving-seg",
                         f"--init {init} needs --fixed-seg and --moving-seg")
    box = None
    if roi is not None:  # refused before any image is read: a method without region use, a bad value
        check_method_takes_region(method)
        box = read_region(roi, "--roi")
    check_auto_weights(fixed_seg, moving_seg)  # the networks 'auto' needs, before any image is read
    with engine_threads(choice):
        inputs = load_inputs(fixed, moving, fixed_seg, moving_seg, fixed_landmarks, moving_landmarks, label_channel,
                             region=box, target_label=target_label, device=resolve_device(device),
                             progress=progress, cancel=cancel)
    choice = choose_threads(threads, work_voxels(inputs))
    start = None
    if initial_transform is not None:
        from MMRegistrationLib.io.transforms import read_transform

        start = read_transform(initial_transform, "--initial-transform")
        if not start.is_linear:
            raise InputError("--initial-transform", f"{initial_transform} is not linear; an affine/rigid start is needed")
    t_loaded = time.perf_counter()
    result, record = run_registration(method, inputs, init, options, seed, device, progress, cancel, initial=start,
                                      threads=choice)
    record["inputs"] = {
        k: str(v)
        for k, v in dict(
            fixed=fixed, moving=moving, fixed_seg=fixed_seg, moving_seg=moving_seg,
            fixed_landmarks=fixed_landmarks, moving_landmarks=moving_landmarks, initial_transform=initial_transform,
            roi=None if roi is None or box is roi else roi,
        ).items()
        if v is not None
    }
    if label_channel is not None:
        record["inputs"]["label_channel"] = int(label_channel)
    if target_label is not None:
        record["inputs"]["target_label"] = str(target_label)
    record["wall_seconds"] = {"load": t_loaded - t_start, **record["wall_seconds"]}
    Monitor.wrap(progress, cancel).check("writing outputs")
    with engine_threads(choice):
        return write_outputs(out, inputs, result, record, t_start=t_start)
