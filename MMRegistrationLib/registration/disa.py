"""DISA registration (paper 001): image registration on pre-computed descriptor volumes.

Each image is described once (no gradient through the network); the similarity of a pose is the weighted mean
dot product (paper Eq. 2) between the fixed descriptors at the fixed descriptor positions ``p`` and the moving
descriptors sampled (trilinearly, ``grid_sample``) at ``T(p)``:

    ``loss(T) = 1 - sum_p w(p) <phi(F)[p], phi(M)[T(p)]>``,  ``sum_p w(p) = 1``

with ``phi(M)`` taken as 0 outside the moving field of view (a point that leaves the moving image costs as much
as a dissimilar one, so the optimiser gains nothing by leaving the overlap) and ``w(p)`` the LC2 weight (local
fixed intensity variance inside the field of view, ``weighting="variance"``) or uniform. Only fixed positions
inside the fixed field of view count (for ultrasound, the zero region around the sector never does; see
:mod:`MMRegistrationLib.similarity.disa`), optionally also restricted to a dilated fixed mask. Gradients flow to
the transform parameters only.

Transform models (fixed -> moving; ``A0`` the initial affine, ``c`` the weighted centroid of the fixed points):

- ``rigid``: ``T(x) = A0(R(x - c) + c + t)``, 6 parameters (rotation vector, translation mm);
- ``affine``: ``T(x) = A0((I + L)(x - c) + c + t)``, 12 parameters, started from the rigid result;
- ``probe``: ``T(x) = A0(R(P(x) - c) + c + t)`` with ``P`` the probe-pressure compression of
  :mod:`MMRegistrationLib.spatial.probe` (amplitude ``a`` mm at the probe, decay length ``b`` mm, along the beam
  direction of the ultrasound sector): 6 + 2 parameters;
- ``deformable``: after ``affine``, ``T(x) = A(x + u(x))`` with ``u = exp(v) - id`` a stationary velocity field
  on a coarse grid (``grid_spacing_mm``) over the fixed points, windowed to 0 at its border, with bending energy
  regularisation; forward ``exp(v)`` and inverse ``exp(-v)`` as in SINR.

Optimisation: L-BFGS (strong Wolfe line search) coarse to fine over a descriptor pyramid (``levels``). With
``search="global"``, ``starts`` random rigid poses (rotation-vector components within ``+-rotation_range_deg``,
translations within ``+-translation_range_mm``, clipped so that the fixed centre stays inside the moving field of
view) are evaluated in batches at the finest level (one ``grid_sample`` call per batch of poses); the ``refine``
best that overlap the moving image by at least ``min_overlap`` (and differ from each other by ``SEPARATION_MM``) are
each refined through every level, and the lowest finest-level loss wins. Measured on rigid capture-range starts
(sample, 3 generated and 2 DeepReg cases): ranking the starts, or choosing among the refined ones, at the coarse level
(a few hundred descriptors) picked a wrong basin far more often (synthetic cases converged 79 % -> 96 % with
the finest-level choice; DeepReg obs000 0/12 -> 9/12 with the finest-level ranking). Seeded and deterministic on a
given CPU (``precision="auto"`` uses bfloat16 only where the CPU has it natively, so two machines may differ by the
bfloat16 rounding of the descriptors; ``precision="float32"`` for identical results everywhere).

The pieces live by concept: options in :mod:`.disa_config`, the similarity objectives in
:mod:`MMRegistrationLib.similarity.objectives`, the transform models in :mod:`.pose_models`, the optimiser in
:mod:`.lbfgs`, the deformable stage in :mod:`.disa_deformable`, the Mattes MI baseline in :mod:`.mi_baseline`.

Similarities: ``disa`` (trained DISA network, default), ``mind`` (MIND-SSC descriptors, mean squared difference),
``lc2`` (LC2 recomputed on the resampled moving image at every evaluation: the slow reference), ``mi`` (Mattes
mutual information through SimpleITK's own registration framework; rigid/affine, local search only).
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Optional

import numpy as np
import torch

from MMRegistrationLib.core.box import OrientedBox
from MMRegistrationLib.core.errors import InputError, MMRegError
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.registration.base import RegistrationResult
from MMRegistrationLib.registration.disa_config import (  # re-exported: the method's options are part of its API
    DEFORMABLE_AFTER,
    MASKS,
    MODES,
    PRECISIONS,
    SEARCHES,
    SIMILARITIES,
    WEIGHTINGS,
    DISARegistrationConfig,
    config_dict,
    disa_config,
    resolution_plan,
    working_spacing,
)
from MMRegistrationLib.registration.deformable import region_box
from MMRegistrationLib.registration.disa_deformable import fit_velocity_field
from MMRegistrationLib.registration.global_search import best_poses, evaluate_in_batches, sample_poses, translation_bounds
from MMRegistrationLib.registration.lbfgs import minimize_lbfgs
from MMRegistrationLib.registration.mi_baseline import mi_register
from MMRegistrationLib.registration.pose_models import PARAMETER_SCALE_MM, PoseModel, nearest_rotation, rigid_to_affine
from MMRegistrationLib.similarity.descriptors import DescriptorBackend, make_backend
from MMRegistrationLib.similarity.disa import prepare_volume
from MMRegistrationLib.similarity.objectives import LC2Objective, descriptor_objectives, keep_on_grid
from MMRegistrationLib.spatial.affine import AffineTransform
from MMRegistrationLib.spatial.composite import ComposedTransform
from MMRegistrationLib.spatial.probe import ProbeCompression, infer_probe_geometry
from MMRegistrationLib.spatial.resample import resample

__all__ = [
    "DEFORMABLE_AFTER", "DISARegistrationConfig", "MASKS", "MODES", "PRECISIONS", "SEARCHES", "SIMILARITIES",
    "WEIGHTINGS", "config_dict", "disa_config", "disa_register", "working_spacing",
]

SEPARATION_MM = 10.0
"""Global search: a start is only kept for refinement if it differs by at least this much (translation + 50 mm x
rotation) from every better kept start, so the refined starts explore different basins."""


# ---- masks ----------------------------------------------------------------------------------------------------
def _dilated(mask_image: Image, margin_mm: float) -> Image:
    """Foreground of a label map dilated by ``margin_mm`` (float32 0/1 on its own grid)."""
    from scipy import ndimage

    fg = mask_image.array != 0
    if margin_mm > 0:
        fg = ndimage.distance_transform_edt(~fg, sampling=mask_image.grid.spacing[::-1]) <= margin_mm
    return mask_image.with_array(fg.astype(np.float32))


def _check_images(fixed: Image, moving: Image, config: DISARegistrationConfig, fixed_mask, moving_mask,
                  mask_arguments: tuple) -> None:
    """Refuse what cannot be described before any work: NaN/Inf voxels, an image constant inside its field of view
    (relative tolerance 1e-6: float32 resampling noise must not pass for structure), empty masks."""
    for image, threshold, argument in ((fixed, config.fixed_fov_threshold, "--fixed"),
                                       (moving, config.moving_fov_threshold, "--moving")):
        image.check_finite(argument)
        values = image.array if threshold is None else image.array[image.array > threshold]
        if values.size == 0:
            raise InputError(argument, f"has no voxel above the field-of-view threshold {threshold}")
        low, high = float(values.min()), float(values.max())
        if high - low <= 1e-6 * max(abs(low), abs(high), 1e-30):
            raise InputError(argument, "is constant inside its field of view; it has no structure to register")
    for mask, argument in ((fixed_mask, mask_arguments[0]), (moving_mask, mask_arguments[1])):
        if mask is not None and not np.any(mask.array != 0):
            raise InputError(argument, "is empty (no non-zero voxel); the similarity would have nothing to compare")


# ---- the registration -----------------------------------------------------------------------------------------
def _backend(config: DISARegistrationConfig, descriptors: Optional[DescriptorBackend], device) -> DescriptorBackend:
    return descriptors if descriptors is not None else make_backend(config.similarity, config.weights, device,
                                                                      config.precision)


def _levels(fixed: Image, moving: Image, config: DISARegistrationConfig, backend, fixed_keep_img, moving_keep_img,
            device) -> tuple:
    """``(objectives coarsest first, seconds spent preparing and describing, finest prepared fixed volume)``."""
    t0 = time.perf_counter()
    if config.similarity != "lc2":
        levels, prepared = descriptor_objectives(
            fixed, moving, backend, config.spacing_mm, config.levels, config.fixed_fov_threshold,
            config.moving_fov_threshold, config.weighting, fixed_keep_img, moving_keep_img, device,
            interpolate_finest=config.finest_points == "interpolated")
        return levels, time.perf_counter() - t0, prepared
    levels, prepared = [], None
    for level in range(config.levels):
        spacing = config.spacing_mm * 2 ** (config.levels - 1 - level)
        fp = prepare_volume(fixed, spacing, config.fixed_fov_threshold, "--fixed")
        mp = prepare_volume(moving, spacing, config.moving_fov_threshold, "--moving")
        if min(fp.array.shape) < 2 * 7 + 1 or min(mp.array.shape) < 2 * 7 + 1:
            if level == config.levels - 1:
                raise InputError("--fixed" if min(fp.array.shape) < 15 else "--moving",
                                 f"is too small for LC2 at {spacing:g} mm: every axis needs at least 15 voxels "
                                 "(patch radius 7); use a finer spacing_mm")
            continue
        levels.append(LC2Objective(fp, mp, keep_on_grid(fixed_keep_img, fp.grid),
                                   keep_on_grid(moving_keep_img, mp.grid), device))
        prepared = fp
    return levels, time.perf_counter() - t0, prepared


def _with_region(keep: Optional[Image], region: Optional[OrientedBox]) -> Optional[Image]:
    """``keep`` (an indicator image, or None = everywhere) restricted to the inside of ``region``: an indicator image
    on a grid along the box (about 1 mm, at most 200 voxels per axis)."""
    if region is None:
        return keep
    grid = region_box(region, max(1.0, float(2 * region.half_size.max()) / 200.0))
    inside = np.ones(grid.shape, dtype=np.float32)
    if keep is not None:
        inside *= resample(keep, grid).array > 0.5
    return Image(inside, grid)


def _check_levels(levels: list, has_fixed_mask: bool, has_moving_mask: bool, mask_arguments: tuple,
                  has_region: bool = False) -> list:
    finest = levels[-1]
    if finest.count == 0 and has_region:
        raise InputError("--roi", "the box holds no fixed point where the similarity is evaluated (outside the fixed "
                         "field of view" + (" or the dilated fixed mask" if has_fixed_mask else "") + "); move or "
                         "enlarge the box")
    if finest.count == 0:
        if has_fixed_mask:
            raise InputError(mask_arguments[0], "the fixed mask (dilated by mask_margin_mm) and the fixed field of "
                             "view share no point where the similarity is evaluated; check that the mask belongs to "
                             "the fixed image, or increase --mask-margin-mm")
        raise InputError("--fixed", "has no point where the similarity can be evaluated (field of view empty, too "
                         "thin, or without intensity variation); check --fixed-fov-threshold")
    if finest.moving_count == 0:
        if has_moving_mask:
            raise InputError(mask_arguments[1], "the moving mask (dilated by mask_margin_mm) and the moving field of "
                             "view share no descriptor; check that the mask belongs to the moving image")
        raise InputError("--moving", "has an empty field of view; check --moving-fov-threshold")
    return [lv for lv in levels if lv.count > 0 and lv.moving_count > 0]


def disa_register(
    fixed: Image,
    moving: Image,
    initial: Optional[AffineTransform] = None,
    config: DISARegistrationConfig = DISARegistrationConfig(),
    fixed_mask: Optional[Image] = None,
    moving_mask: Optional[Image] = None,
    descriptors: Optional[DescriptorBackend] = None,
    seed: int = 0,
    device=None,
    progress=None,
    cancel=None,
    mask_arguments: tuple = ("fixed_mask", "moving_mask"),
    region: Optional[OrientedBox] = None,
) -> RegistrationResult:
    """Register ``moving`` (e.g. MR) to ``fixed`` (e.g. TRUS) on images alone (module docstring).

    Args:
        fixed, moving: the images (any geometry, LPS mm).
        initial: fixed -> moving affine start (default identity).
        config: :class:`DISARegistrationConfig`.
        fixed_mask, moving_mask: optional label maps (non-zero = inside) restricting the similarity after dilation
            by ``config.mask_margin_mm``; used whatever ``config.mask`` says (that option is for the method wrapper).
        descriptors: descriptor backend replacing the default of ``similarity`` ``disa``/``mind`` (e.g. a
            :class:`NetworkDescriptors` of an untrained network in tests); ignored for ``lc2``/``mi``.
        seed: seed of the global search.
        mask_arguments: names used in errors about the masks (``--fixed-seg``/``--moving-seg`` from the CLI).
        region: a box (LPS mm, ``--roi``): the similarity counts only fixed points inside it.

    Returns:
        :class:`RegistrationResult` with ``transform`` fixed -> moving and ``inverse`` moving -> fixed.

    Raises:
        InputError: bad images (NaN/Inf, constant, too small for the descriptors), missing or damaged weights,
            masks that leave nothing to compare, no overlap between the images at the start.
        MMRegError: the loss became non-finite.
    """
    monitor = Monitor.wrap(progress, cancel)
    device = torch.device(device) if device is not None else torch.device("cpu")
    a0 = np.array((initial if initial is not None else AffineTransform.identity()).matrix, dtype=np.float64)
    times = {}
    t0 = time.perf_counter()
    _check_images(fixed, moving, config, fixed_mask, moving_mask, mask_arguments)
    fixed_keep = _with_region(_dilated(fixed_mask, config.mask_margin_mm) if fixed_mask is not None else None, region)
    moving_keep = _dilated(moving_mask, config.mask_margin_mm) if moving_mask is not None else None
    plan = resolution_plan(fixed, moving, config)
    config = replace(config, spacing_mm=plan.spacing_mm, levels=plan.levels)
    for warning in plan.warnings:
        monitor.report(0.0, f"DISA: {warning}")
    if config.similarity == "mi":
        return mi_register(fixed, moving, a0, config, fixed_keep, moving_keep, seed, monitor, mask_arguments)
    backend = None if config.similarity == "lc2" else _backend(config, descriptors, device)
    monitor.report(0.0, f"DISA: describing the images at {config.spacing_mm:g} mm ({plan.limited_by}; "
                        f"{config.levels} level{'s' if config.levels > 1 else ''})")
    levels, times["descriptors"], prepared = _levels(fixed, moving, config, backend, fixed_keep, moving_keep, device)
    levels = _check_levels(levels, fixed_mask is not None, moving_mask is not None, mask_arguments, region is not None)
    finest = levels[-1]
    centre = _weighted_centre(finest)
    times["setup"] = time.perf_counter() - t0 - times["descriptors"]
    info = _run_description(config, backend, centre, levels)
    info["resolution"] = plan.as_dict()
    if plan.warnings:
        info["warnings"] = [f"DISA: {w}" for w in plan.warnings]
    probe = None
    if config.mode == "probe":
        probe = infer_probe_geometry(prepared.mask, prepared.grid, config.probe_point, config.probe_direction)
        info["probe_point_mm"], info["probe_direction"] = probe[0].tolist(), probe[1].tolist()

    t1 = time.perf_counter()
    searched = levels[-2] if config.finest_points == "interpolated" and len(levels) > 1 else finest
    candidates = _starting_poses(searched, PoseModel("rigid", centre, a0), config, seed, monitor, info)
    times["search"] = time.perf_counter() - t1
    monitor.report(0.1, "DISA: refining")
    t2 = time.perf_counter()
    model, params = _Refiner(levels, config, monitor).run(candidates, centre, a0, probe, info)
    times["refine"] = time.perf_counter() - t2
    matrix = _linear_outcome(finest, model, params, a0, centre, info)
    t3 = time.perf_counter()
    transform, inverse = _final_transforms(config, model, params, matrix, probe, finest, monitor, info)
    if config.mode == "deformable":
        times["deformable"] = time.perf_counter() - t3
    info["seconds"] = dict(times)
    monitor.report(1.0, "DISA: done")
    return RegistrationResult(transform=transform, inverse=inverse, stage_seconds=times, info=info)


def _weighted_centre(level) -> np.ndarray:
    """The weighted centroid ``c`` (LPS mm) of a level's fixed points: the pose models' centre."""
    w = level.weights.detach().cpu()
    return (level.points.detach().cpu().to(torch.float64) * w[:, None]).sum(0).numpy() / float(w.sum())


def _run_description(config: DISARegistrationConfig, backend, centre: np.ndarray, levels: list) -> dict:
    return {
        "similarity": config.similarity,
        "descriptors": None if backend is None else backend.name,
        "mode": config.mode,
        "search": config.search,
        "centre_mm": centre.tolist(),
        "working_spacing_mm": config.spacing_mm,
        "precision": getattr(backend, "resolved_precision", None),
        "levels": [{"spacing_mm": lv.spacing_mm, "points": lv.count} for lv in levels],
        "config": asdict(config),
    }


def _starting_poses(finest, rigid: PoseModel, config: DISARegistrationConfig, seed: int, monitor: Monitor,
                    info: dict) -> list:
    """The rigid parameter vectors ``(6,)`` to refine: the initial pose (local search) or the best of the seeded
    global-search poses (at least :data:`SEPARATION_MM` apart). Records the search in ``info``."""
    zero = torch.zeros((1, 6), dtype=torch.float64)
    with torch.no_grad():
        start_overlap = float(finest.evaluate(rigid.map(zero, finest.points))[1][0])
    info["start_overlap"] = start_overlap
    if config.search != "global":
        if start_overlap <= 0.0:
            raise InputError("--init", "the fixed image's field of view does not overlap the moving image after "
                             "initialisation; start from --init com, an --initial-transform, or use --search global")
        return [zero[0]]
    centre, a0 = rigid.centre.numpy(), rigid.initial.numpy()
    lo, hi = translation_bounds(centre, a0, finest.moving_points, config.translation_range_mm)
    poses = sample_poses(config.starts, config.rotation_range_deg, lo, hi, seed)
    losses, overlaps = evaluate_in_batches(lambda p: finest.evaluate(rigid.map(p, finest.points)), poses,
                                           finest.batch_size(), lambda: monitor.check("DISA global search"))
    keep = best_poses(losses, overlaps, config.refine, config.min_overlap, poses, SEPARATION_MM, PARAMETER_SCALE_MM)
    if keep.numel() == 0:
        raise InputError("--min-overlap", f"none of the {len(poses)} global-search poses maps "
                         f"{config.min_overlap:.0%} of the fixed points inside the moving image; start closer "
                         "(--init, --initial-transform) or lower --min-overlap")
    info["global_search"] = {
        "starts": int(len(poses)),
        "overlapping": int((overlaps >= config.min_overlap).sum()),
        "best_start_loss": float(losses[keep[0]]),
        "start_loss_of_initial": float(losses[0]),
        "translation_bounds_mm": [lo.tolist(), hi.tolist()],
    }
    return [poses[i] for i in keep.tolist()]


class _Refiner:
    """Local refinement of poses with L-BFGS through every level, coarse to fine (progress 0.1 -> 0.7)."""

    def __init__(self, levels: list, config: DISARegistrationConfig, monitor: Monitor):
        self.levels, self.config, self.monitor = levels, config, monitor
        self.evaluations, self.step, self.total_steps = 0, 0, 1

    def run(self, candidates: list, centre: np.ndarray, a0: np.ndarray, probe, info: dict) -> tuple:
        """Every kept start is refined through all levels and the finest loss decides (a coarse level of a few
        hundred descriptors may prefer a wrong basin that the finest level rejects); then the affine stage when the
        mode has one. Returns ``(last pose model, its parameters)``; records the history in ``info``."""
        config = self.config
        first = PoseModel("probe", centre, a0, probe, config.probe_decay_mm) if config.mode == "probe" else \
            PoseModel("rigid", centre, a0)
        if first.kind == "probe":
            candidates = [torch.cat([c, torch.zeros(2, dtype=torch.float64)]) for c in candidates]
        with_affine = config.mode == "affine" or (config.mode == "deformable" and config.deformable_after == "affine")
        stages = [first] + ([PoseModel("affine", centre, a0)] if with_affine else [])
        self.total_steps = max((len(candidates) + len(stages) - 1) * len(self.levels), 1)
        results = [self.refine(c, first) for c in candidates]
        best = int(np.argmin([r[1] for r in results]))
        params = results[best][0]
        history = [{"stage": first.kind, "level_losses": results[best][2], "starts": len(results),
                    "finest_losses": [r[1] for r in results], "chosen": best}]
        for model in stages[1:]:
            params, _, losses = self.refine(rigid_to_affine(params), model)
            history.append({"stage": model.kind, "level_losses": losses, "starts": 1})
        info.update({"history": history, "evaluations": self.evaluations})
        return stages[-1], params

    def refine(self, start: torch.Tensor, model: PoseModel) -> tuple:
        """One start through every level: ``(params, finest loss, per-level losses)``."""
        p, losses = start, []
        for li, level in enumerate(self.levels):
            p, loss, count = minimize_lbfgs(p, lambda q, lv=level: lv.evaluate(model.map(q[None], lv.points))[0][0],
                                            self.config.iterations, self.monitor, f"DISA {model.kind}")
            p = model.project(p)
            self.evaluations += count
            losses.append(loss)
            self.step += 1
            self.monitor.report(0.1 + 0.6 * self.step / self.total_steps,
                                f"DISA: {model.kind} level {li + 1}, loss {loss:.4f}")
        return p, losses[-1], losses


def _linear_outcome(finest, model: PoseModel, params: torch.Tensor, a0: np.ndarray, centre: np.ndarray,
                    info: dict) -> np.ndarray:
    """The fitted 4x4 matrix; its loss, overlap, rotation and translation go into ``info``."""
    with torch.no_grad():
        final_loss, final_overlap = (float(v[0]) for v in finest.evaluate(model.map(params[None], finest.points)))
    info.update({"final_loss": final_loss, "final_overlap": final_overlap})
    if final_overlap <= 0.0:
        raise MMRegError("DISA registration: the result maps no fixed point inside the moving image; try --search "
                         "global or a closer initial transform")
    matrix = model.matrix(params)
    info["matrix"] = matrix.tolist()
    local = np.linalg.inv(a0) @ matrix
    cosine = (np.trace(nearest_rotation(local[:3, :3])) - 1) / 2
    info["rotation_deg"] = float(np.degrees(np.arccos(np.clip(cosine, -1, 1))))
    info["translation_mm"] = (local[:3, :3] @ centre + local[:3, 3] - centre).tolist()
    return matrix


def _final_transforms(config: DISARegistrationConfig, model: PoseModel, params: torch.Tensor, matrix: np.ndarray,
                      probe, finest, monitor: Monitor, info: dict) -> tuple:
    """``(fixed -> moving, moving -> fixed)`` of the mode: the matrix, the probe compression then the matrix, or
    the velocity field fitted after the matrix."""
    if config.mode == "probe":
        amplitude, decay = (float(v[0]) for v in model.probe_parameters(params[None]))
        info["probe_amplitude_mm"], info["probe_decay_mm"] = amplitude, decay
        compression = ProbeCompression(probe[0], probe[1], amplitude, decay, "fixed", "fixed:probe")
        affine = AffineTransform(matrix, "fixed:probe", "moving")
        return ComposedTransform([compression, affine]), ComposedTransform([affine.inverse(), compression.inverse()])
    if config.mode == "deformable":
        transform, inverse, info["deformable"] = fit_velocity_field(finest, matrix, config, monitor.stage(0.7, 1.0))
        return transform, inverse
    transform = AffineTransform(matrix, "fixed", "moving")
    return transform, transform.inverse()
