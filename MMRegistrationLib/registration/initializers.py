"""Initialisers shared by every method: centre-of-mass and rigid alignment of segmentation masks.

Both return an :class:`AffineTransform` fixed -> moving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from scipy import ndimage

from MMRegistrationLib.core.device import move
from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.options import MethodConfig, option
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.registration.lbfgs import minimize_lbfgs
from MMRegistrationLib.registration.pose_models import PARAMETER_SCALE_MM, PoseModel
from MMRegistrationLib.spatial.affine import AffineTransform
from MMRegistrationLib.spatial.resample import resample
from MMRegistrationLib.spatial.sampling import sample_normalized, world_to_normalized_matrix


def _mask_for(seg: Image, label: Optional[int]) -> np.ndarray:
    if label is not None and label in seg.labels():
        return seg.array == label
    return seg.array != 0


def center_of_mass_mm(seg: Image, label: Optional[int] = 1) -> np.ndarray:
    """World (LPS mm) centre of mass of ``label`` (all foreground if ``label`` is absent or None)."""
    mask = _mask_for(seg, label)
    if not mask.any():
        raise InputError("segmentation", "is empty: no voxel to compute a centre of mass from")
    k, j, i = np.nonzero(mask)
    return seg.grid.index_to_world(np.stack([i, j, k], axis=-1).mean(axis=0))


def center_of_mass_init(fixed_seg: Image, moving_seg: Image, label: Optional[int] = 1) -> AffineTransform:
    """Translation fixed -> moving that maps the fixed mask's centre of mass onto the moving one's."""
    return AffineTransform.from_translation(center_of_mass_mm(moving_seg, label) - center_of_mass_mm(fixed_seg, label))


def gland_label(seg: Image) -> Optional[int]:
    """The label taken as the gland (the target structure): 1 when present, else the lowest label; None when empty."""
    labels = [int(v) for v in np.unique(seg.array) if v > 0]
    if not labels:
        return None
    return 1 if 1 in labels else labels[0]


def center_init(fixed_grid: Grid, moving_grid: Grid, moving_seg: Optional[Image] = None) -> AffineTransform:
    """``--init center`` (paper 004): the translation fixed -> moving taking the fixed image's centre to the moving
    gland's centre of mass (to the moving image's centre without a moving segmentation or with an empty one): a TRUS
    is acquired with the prostate near its centre."""
    label = gland_label(moving_seg) if moving_seg is not None else None
    target = center_of_mass_mm(moving_seg, label) if label is not None else moving_grid.center
    return AffineTransform.from_translation(target - fixed_grid.center)


def signed_distance_mm(mask: np.ndarray, grid: Grid, clip_mm: float | None = None) -> np.ndarray:
    """Signed Euclidean distance (mm, negative inside) to the boundary of ``mask`` on ``grid``.

    Uses the grid's spacing; exact in world units for orthonormal directions (oblique included).
    """
    spacing_kji = grid.spacing[::-1]
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing_kji)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing_kji)
    sdm = np.where(mask, -inside, outside)
    return np.clip(sdm, -clip_mm, clip_mm) if clip_mm else sdm


def masks_overlap(fixed_seg: Image, moving_seg: Image, transform: AffineTransform, labels: Sequence[int]) -> bool:
    """True if the fixed foreground and the moving foreground mapped through ``transform`` share a voxel (the moving
    labels looked up, nearest neighbour, at the fixed foreground voxels only)."""
    fixed_voxels = np.argwhere(np.isin(fixed_seg.array, labels))[:, ::-1]  # (N, 3) i, j, k
    mapped = fixed_seg.grid.index_to_world(fixed_voxels) @ transform.matrix[:3, :3].T + transform.matrix[:3, 3]
    index = np.rint(moving_seg.grid.world_to_index(mapped)).astype(np.int64)  # (N, 3) i, j, k
    inside = np.all((index >= 0) & (index < np.array(moving_seg.grid.size_ijk)), axis=1)
    i, j, k = index[inside].T
    return bool(np.any(np.isin(moving_seg.array[k, j, i], labels)))


def sdm_stack(seg: Image, labels: Sequence[int], spacing_mm: float, clip_mm: float) -> tuple:
    """``((C, K, J, I) float32 clipped signed distances (mm) of each label, the grid they are on)``: ``seg``'s grid
    coarsened to at least ``spacing_mm``."""
    coarse = seg.grid.resized(np.maximum(seg.grid.spacing, spacing_mm))
    labelmap = resample(seg, coarse, None, interpolation="label-linear")
    maps = [signed_distance_mm(labelmap.array == lab, coarse, clip_mm) for lab in labels]
    return np.stack(maps).astype(np.float32), coarse


@dataclass(frozen=True)
class RigidMaskConfig(MethodConfig):
    """Options of :func:`rigid_mask_init` (``mmreg register --method rigid-mask``, ``--init rigid-mask``)."""

    band_mm: float = option(12.0, "only fixed points within this distance of a surface count", unit="mm",
                            minimum=0.0, exclusive_minimum=True, maximum=100.0)
    context_weight: float = option(0.25, "weight of structures other than the prostate (label 1, weight 1)",
                                   minimum=0.0, maximum=100.0)
    start_angles_deg: float = option(15.0, "extra starting rotations (+- this angle about each axis); 0 = one start",
                                     unit="deg", minimum=0.0, maximum=90.0)
    iterations: int = option(60, "L-BFGS iterations per start and level", minimum=1, maximum=10000)


def rigid_mask_init(
    fixed_seg: Image,
    moving_seg: Image,
    initial: Optional[AffineTransform] = None,
    config: RigidMaskConfig = RigidMaskConfig(),
    labels: Optional[Sequence[int]] = None,
    label_weights: Optional[dict] = None,
    levels_mm: Sequence[float] = (4.0, 2.0),
    max_points: int = 20000,
    seed: int = 0,
    device=None,
    progress=None,
    cancel=None,
) -> AffineTransform:
    """Rigid alignment of segmentation masks by matching their signed distance maps.

    Minimises ``sum_l w_l * mean_{x in band} (sdm_fixed_l(x) - sdm_moving_l(T(x)))^2`` over rotation
    (rotation vector about the fixed centre of mass) and translation (the shared ``rigid``
    :class:`~MMRegistrationLib.registration.pose_models.PoseModel`), with L-BFGS
    (:func:`~MMRegistrationLib.registration.lbfgs.minimize_lbfgs`), coarse to fine (``levels_mm``). At the coarsest
    level seven starting rotations (identity and +-``config.start_angles_deg`` about each axis) each get a sixth of the
    iterations, and the best is refined with all of them. Starts from ``initial`` (default: centre of mass).

    Args:
        fixed_seg, moving_seg: label maps whose common labels correspond.
        config: :class:`RigidMaskConfig` (band, context weight, starting angles, iterations).
        labels: labels to use (default: all labels present in both).
        label_weights: explicit weight per label; by default the prostate (label 1, else the first label)
            weighs 1 and every other (context) structure ``config.context_weight``: the gland is the target, while
            bladder, rectum and bone deform more between MR and TRUS but pin down the gland's rotation.
        max_points: at most this many band points per level (a random subset drawn with ``seed``).

    Returns:
        :class:`AffineTransform` fixed -> moving (rigid part composed with ``initial``).
    """
    monitor = Monitor.wrap(progress, cancel)
    device = torch.device(device) if device is not None else torch.device("cpu")
    labels = shared_labels(fixed_seg, moving_seg, labels)
    initial = initial if initial is not None else center_of_mass_init(fixed_seg, moving_seg)
    if not masks_overlap(fixed_seg, moving_seg, initial, labels):
        raise InputError(
            "--init", "the fixed and moving masks do not overlap after initialisation; use --init com (centre of mass)"
        )
    primary = 1 if 1 in labels else labels[0]
    default_weight = {lab: (1.0 if lab == primary else float(config.context_weight)) for lab in labels}
    weights = [float((label_weights or default_weight).get(lab, 1.0)) for lab in labels]
    model = PoseModel("rigid", center_of_mass_mm(fixed_seg, primary), initial.matrix)
    params = torch.zeros(6, dtype=torch.float64)
    for level, spacing in enumerate(levels_mm):
        monitor.check("rigid-mask")
        loss_fn = _distance_map_loss(fixed_seg, moving_seg, labels, weights, spacing, config.band_mm, model,
                                     max_points, seed + level, device)
        starts = _starting_rotations(params, config.start_angles_deg if level == 0 else 0.0)
        params = _best_of_starts(starts, loss_fn, config.iterations, monitor.stage(level / len(levels_mm),
                                                                                     (level + 1) / len(levels_mm)))
    return AffineTransform(model.matrix(params), initial.source, initial.target)


def shared_labels(fixed_seg: Image, moving_seg: Image, labels: Optional[Sequence[int]] = None) -> list:
    """``labels``, or every label both segmentations hold; an error when there is none."""
    common = sorted(set(fixed_seg.labels()) & set(moving_seg.labels()))
    labels = list(labels) if labels is not None else common
    if not labels:
        raise InputError("segmentations", "fixed and moving segmentations share no label")
    return labels


def _distance_map_loss(fixed_seg: Image, moving_seg: Image, labels: list, weights: list, spacing_mm: float,
                       band_mm: float, model: PoseModel, max_points: int, seed: int, device):
    """``loss(params (6,)) -> scalar``: the weighted mean squared difference of the fixed signed distances at the band
    points and the moving ones at ``T(x)`` (both maps on grids of ``spacing_mm``; outside the moving grid the border
    distances are extended, which keeps the loss smooth for the optimiser)."""
    fixed_sdm, fixed_grid = sdm_stack(fixed_seg, labels, spacing_mm, clip_mm=2 * band_mm)
    moving_sdm, moving_grid = sdm_stack(moving_seg, labels, spacing_mm, clip_mm=2 * band_mm)
    points = torch.as_tensor(fixed_grid.world_points(), dtype=torch.float32).reshape(-1, 3)
    fixed_values = torch.as_tensor(fixed_sdm.reshape(len(labels), -1).T, dtype=torch.float32)
    near = (fixed_values.abs() < band_mm).any(dim=1)
    points, fixed_values = points[near], fixed_values[near]
    if len(points) > max_points:  # a seeded subset keeps each evaluation cheap on large masks
        keep = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))[:max_points]
        points, fixed_values = points[keep], fixed_values[keep]
    points, fixed_values = points.to(device), fixed_values.to(device)
    to_normalized = torch.as_tensor(world_to_normalized_matrix(moving_grid), dtype=torch.float64)
    moving_volume = torch.as_tensor(moving_sdm, dtype=torch.float32, device=device)
    w = torch.tensor(weights, dtype=torch.float32, device=device)

    def loss_fn(params: torch.Tensor) -> torch.Tensor:
        linear, offset = model.linear_one(params)  # T(x) = linear x + offset (float64), folded into grid_sample
        a = move(to_normalized[:3, :3] @ linear, device, torch.float32)  # coordinates: one matmul
        b = move(to_normalized[:3, :3] @ offset + to_normalized[:3, 3], device, torch.float32)
        warped = sample_normalized(moving_volume, points @ a.T + b)
        return (((warped - fixed_values) ** 2).mean(dim=0) * w).sum()

    return loss_fn


def _starting_rotations(params: torch.Tensor, angle_deg: float) -> list:
    """``params`` and, when ``angle_deg`` > 0, six copies turned by +-``angle_deg`` about each axis."""
    starts = [params.clone()]
    if angle_deg > 0:
        for axis in range(3):
            for sign in (-1.0, 1.0):
                start = params.clone()
                start[axis] += sign * np.deg2rad(angle_deg) * PARAMETER_SCALE_MM
                starts.append(start)
    return starts


def _best_of_starts(starts: list, loss_fn, iterations: int, monitor: Monitor) -> torch.Tensor:
    """Each start gets a sixth of ``iterations`` (enough to tell the basins apart) when there are several; the best is
    then refined with all of them. Returns the best parameters."""
    best = starts[0]
    if len(starts) > 1:
        results = []
        for n, start in enumerate(starts):
            results.append(minimize_lbfgs(start, loss_fn, max(1, iterations // 6), monitor, "rigid-mask",
                                          **_TOLERANCES))
            monitor.report((n + 1) / (len(starts) + 1), "rigid-mask: starting rotations")
        best = min(results, key=lambda r: r[1])[0]
    best, loss, _ = minimize_lbfgs(best, loss_fn, iterations, monitor, "rigid-mask", **_TOLERANCES)
    monitor.report(1.0, f"rigid-mask: distance-map loss {loss:.3f} mm^2")
    return best


_TOLERANCES = dict(tolerance_grad=1e-6, tolerance_change=1e-6, history_size=100)
"""rigid-mask's L-BFGS settings (6 parameters: a long history is cheap and saves ~10 % of the evaluations)."""
