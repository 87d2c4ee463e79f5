"""``generate_case``: a seeded synthetic MR (moving) / TRUS (fixed) prostate pair with an exact ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.synthetic.anatomy import LABEL_NAMES, LABEL_OF_TISSUE, Anatomy
from MMRegistrationLib.synthetic.config import SyntheticCaseConfig
from MMRegistrationLib.synthetic.deformation import SmoothField, check_invertible, place_probe
from MMRegistrationLib.synthetic.geometry import (
    CaseFrames,
    ProbeGeometry,
    make_fixed_grid,
    make_frames,
    make_moving_grid,
    make_probe,
)
from MMRegistrationLib.synthetic.landmarks import place_calcifications
from MMRegistrationLib.synthetic.mr import render_mr
from MMRegistrationLib.synthetic.trus import render_trus

DESCRIPTION = (
    "Synthetic prostate case: T2-like MR (moving) and B-mode TRUS (fixed) of one analytic pelvic anatomy "
    "(prostate with zones, capsule, nodules and calcifications; bladder; rectum; pubic bone). The TRUS anatomy "
    "is the MR anatomy evaluated at T(x) for every TRUS voxel x, where T (fixed -> moving; rigid offset, smooth "
    "random deformation and probe compression) is ground_truth.h5 with trilinear interpolation, so it is exact. "
    "Landmarks are calcification centres; fixed = T^-1(moving). World coordinates are LPS mm."
)


@dataclass(frozen=True)
class SyntheticCase:
    """A generated case.

    Attributes:
        config: the configuration it was generated from.
        fixed: TRUS ``Image`` (uint8, 0 exactly outside the sector).
        moving: MR ``Image`` (uint16, T2-like).
        fixed_seg / moving_seg: uint8 label maps on the fixed / moving grids (:data:`LABEL_NAMES`).
        fixed_landmarks / moving_landmarks: ``(N, 3)`` LPS mm calcification centres; rows correspond.
        ground_truth: ``DisplacementField`` fixed -> moving on a coarse grid covering the TRUS field of view.
        probe: TRUS probe and sector geometry (fixed world).
        info: JSON-friendly summary (rigid offset, Jacobian range, displacement magnitudes).
        label_names: label value -> name.
        description: one paragraph describing the case.
    """

    config: SyntheticCaseConfig
    fixed: Image
    moving: Image
    fixed_seg: Image
    moving_seg: Image
    fixed_landmarks: np.ndarray
    moving_landmarks: np.ndarray
    ground_truth: DisplacementField
    probe: ProbeGeometry
    info: dict = field(default_factory=dict)
    label_names: dict = field(default_factory=lambda: dict(LABEL_NAMES))
    description: str = DESCRIPTION

    def sector_mask(self) -> np.ndarray:
        """Boolean ``(K, J, I)`` mask of the TRUS voxels inside the imaged sector."""
        return self.probe.sector_mask(self.fixed.grid)


def _evaluate(anatomy: Anatomy, frames: CaseFrames, moving_points: np.ndarray, shape: tuple) -> tuple:
    """Tissue classes and texture at MR-world points ``(K, J, I, 3)``."""
    q = frames.moving_to_local(moving_points.reshape(-1, 3))
    return anatomy.evaluate(q).reshape(shape), anatomy.texture(q).reshape(shape)


def _info(frames: CaseFrames, ground_truth: DisplacementField, det_min: float, probe_y: float) -> dict:
    rigid = np.eye(4)
    rigid[:3, :3] = frames.rigid_rotation
    rigid[:3, 3] = frames.centre - frames.rigid_rotation @ frames.centre + frames.rigid_translation
    angle = np.degrees(np.arccos(np.clip((np.trace(frames.rigid_rotation) - 1.0) / 2.0, -1.0, 1.0)))
    disp = np.linalg.norm(ground_truth.numpy(), axis=-1)
    return {
        "rigid_matrix_fixed_to_moving": np.round(rigid, 9).tolist(),
        "rigid_rotation_deg": round(float(angle), 4),
        "rigid_translation_mm": round(float(np.linalg.norm(frames.rigid_translation)), 4),
        "jacobian_min": round(det_min, 4),
        "displacement_max_mm": round(float(disp.max()), 4),
        "displacement_mean_mm": round(float(disp.mean()), 4),
        "probe_axis_local_y_mm": round(float(probe_y), 4),
    }


def generate_case(config: SyntheticCaseConfig | None = None, progress=None, cancel=None) -> SyntheticCase:
    """Generate a synthetic case; deterministic for a given ``config``.

    Args:
        config: generator settings (defaults when ``None``).
        progress: ``Monitor`` or ``callable(fraction, message)``.
        cancel: ``callable() -> bool``; raises :class:`~MMRegistrationLib.core.errors.Cancelled` when True.

    Returns:
        :class:`SyntheticCase`.
    """
    cfg = config if config is not None else SyntheticCaseConfig()
    monitor = Monitor.wrap(progress, cancel)
    monitor.report(0.0, "synthetic case: geometry")
    streams = np.random.SeedSequence(int(cfg.seed)).spawn(7)
    rng_frames, rng_anat, rng_def, rng_calc, rng_mr, rng_trus, rng_count = (np.random.default_rng(s) for s in streams)

    frames = make_frames(rng_frames, cfg.oblique, cfg.rigid_rotation_deg, cfg.rigid_translation_mm)
    anatomy = Anatomy.random(rng_anat)
    smooth = SmoothField.random(rng_def, cfg.deformation_mm, cfg.deformation_smoothness_mm)
    model = place_probe(
        frames, smooth, anatomy.rectal_inner_wall_y, cfg.probe_radius_mm, cfg.probe_compression_mm,
        cfg.probe_compression_decay_mm,
    )
    fixed_grid = make_fixed_grid(frames, model.probe_y_local, *cfg.fixed_geometry)
    moving_grid = make_moving_grid(frames, *cfg.moving_geometry)
    probe = make_probe(frames, model.probe_y_local, cfg.probe_radius_mm, cfg.sector_radius_mm,
                       cfg.sector_half_angle_deg, cfg.sector_length_mm)

    monitor.report(0.08, "synthetic case: ground-truth deformation")
    gt_grid: Grid = fixed_grid.resized(cfg.ground_truth_spacing_mm)
    ground_truth = model.sample(gt_grid)
    det_min = check_invertible(ground_truth)

    monitor.report(0.15, "synthetic case: calcifications (landmarks)")
    count = cfg.num_calcifications if cfg.num_calcifications is not None else int(rng_count.integers(4, 7))
    anatomy, moving_landmarks, fixed_landmarks = place_calcifications(
        anatomy, frames, ground_truth, probe, fixed_grid, moving_grid, rng_calc, int(count)
    )

    monitor.report(0.2, "synthetic case: MR anatomy")
    tissue_m, texture_m = _evaluate(anatomy, frames, moving_grid.world_points(), moving_grid.shape)
    moving_seg = Image(LABEL_OF_TISSUE[tissue_m], moving_grid)
    monitor.report(0.35, "synthetic case: MR appearance")
    moving = Image(render_mr(tissue_m, texture_m, moving_grid, rng_mr, cfg.mr_noise, cfg.mr_bias, cfg.mr_blur_mm),
                   moving_grid)
    del tissue_m, texture_m

    monitor.report(0.45, "synthetic case: TRUS anatomy (through the ground truth)")
    mapped = ground_truth.map_points_np(fixed_grid.world_points())  # T(x) for every TRUS voxel: exact by design
    tissue_f, texture_f = _evaluate(anatomy, frames, mapped, fixed_grid.shape)
    del mapped
    fixed_seg = Image(LABEL_OF_TISSUE[tissue_f], fixed_grid)
    monitor.report(0.65, "synthetic case: TRUS appearance")
    fixed = Image(
        render_trus(tissue_f, texture_f, fixed_grid, probe, rng_trus, cfg.trus_speckle, cfg.trus_noise,
                    cfg.trus_dynamic_range_db),
        fixed_grid,
    )
    monitor.report(1.0, "synthetic case: done")
    return SyntheticCase(
        config=cfg,
        fixed=fixed,
        moving=moving,
        fixed_seg=fixed_seg,
        moving_seg=moving_seg,
        fixed_landmarks=fixed_landmarks,
        moving_landmarks=moving_landmarks,
        ground_truth=ground_truth,
        probe=probe,
        info=_info(frames, ground_truth, det_min, model.probe_y_local),
    )
