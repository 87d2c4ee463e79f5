"""Initialisers shared by every method: centre-of-mass and rigid alignment of segmentation masks.

Both return an :class:`AffineTransform` fixed -> moving.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from scipy import ndimage

from MMRegistrationLib.core.errors import InputError, MMRegError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.spatial.affine import AffineTransform, rotation_matrix
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
    """True if the fixed foreground and the moving foreground mapped through ``transform`` share a voxel."""
    warped = resample(moving_seg, fixed_seg.grid, transform, interpolation="label-nearest")
    fixed_fg = np.isin(fixed_seg.array, labels)
    return bool(np.any(fixed_fg & np.isin(warped.array, labels)))


def sdm_stack(seg: Image, labels: Sequence[int], spacing_mm: float, clip_mm: float) -> tuple:
    """``((C, K, J, I) float32 clipped signed distances (mm) of each label, the grid they are on)``: ``seg``'s grid
    coarsened to at least ``spacing_mm``."""
    coarse = seg.grid.resized(np.maximum(seg.grid.spacing, spacing_mm))
    labelmap = resample(seg, coarse, None, interpolation="label-linear")
    maps = [signed_distance_mm(labelmap.array == lab, coarse, clip_mm) for lab in labels]
    return np.stack(maps).astype(np.float32), coarse


def rigid_mask_init(
    fixed_seg: Image,
    moving_seg: Image,
    initial: Optional[AffineTransform] = None,
    labels: Optional[Sequence[int]] = None,
    label_weights: Optional[dict] = None,
    context_weight: float = 0.25,
    levels_mm: Sequence[float] = (4.0, 2.0),
    band_mm: float = 12.0,
    start_angles_deg: float = 15.0,
    iterations: int = 60,
    max_points: int = 20000,
    device=None,
    progress=None,
    cancel=None,
) -> AffineTransform:
    """Rigid alignment of segmentation masks by matching their signed distance maps.

    Minimises ``sum_l w_l * mean_{x in band} (sdm_fixed_l(x) - sdm_moving_l(T(x)))^2`` over rotation
    (axis-angle about the fixed centre of mass) and translation, with L-BFGS, coarse to fine
    (``levels_mm``). At the coarsest level seven starting rotations (identity and +-``start_angles_deg``
    about each axis) are tried and the best kept. Starts from ``initial`` (default: centre-of-mass).

    Args:
        fixed_seg, moving_seg: label maps whose common labels correspond.
        labels: labels to use (default: all labels present in both).
        label_weights: explicit weight per label; by default the prostate (label 1, else the first label)
            weighs 1 and every other (context) structure ``context_weight``: the gland is the target, while
            bladder, rectum and bone deform more between MR and TRUS but pin down the gland's rotation.
        band_mm: only fixed points within this distance of a fixed surface contribute.
        max_points: at most this many band points per level (a seeded random subset).

    Returns:
        :class:`AffineTransform` fixed -> moving (rigid part composed with ``initial``).
    """
    monitor = Monitor.wrap(progress, cancel)
    device = torch.device(device) if device is not None else torch.device("cpu")
    common = sorted(set(fixed_seg.labels()) & set(moving_seg.labels()))
    labels = list(labels) if labels is not None else common
    if not labels:
        raise InputError("segmentations", "fixed and moving segmentations share no label")
    initial = initial if initial is not None else center_of_mass_init(fixed_seg, moving_seg)
    if not masks_overlap(fixed_seg, moving_seg, initial, labels):
        raise InputError(
            "--init", "the fixed and moving masks do not overlap after initialisation; use --init com (centre of mass)"
        )
    primary = 1 if 1 in labels else labels[0]
    default_weight = {lab: (1.0 if lab == primary else float(context_weight)) for lab in labels}
    weights = torch.tensor([float((label_weights or default_weight).get(lab, 1.0)) for lab in labels], dtype=torch.float64)
    center = torch.tensor(center_of_mass_mm(fixed_seg, primary), dtype=torch.float64)
    # the 6 parameters and the 4x4 algebra stay float64 on the CPU (MPS has no float64); points go to `device`
    init_m = torch.tensor(initial.matrix, dtype=torch.float64)
    rot_scale = 50.0  # mm per radian: puts rotation and translation parameters on comparable scales

    def point_map(params: torch.Tensor) -> tuple:
        """(A, b) with T(x) = A x + b = initial(R (x - c) + c + t), as one matrix for a single matmul."""
        rot = rotation_matrix(params[:3] / rot_scale)
        a = init_m[:3, :3] @ rot
        b = init_m[:3, :3] @ (center - rot @ center + params[3:]) + init_m[:3, 3]
        return a, b

    params = torch.zeros(6, dtype=torch.float64)
    for level, spacing in enumerate(levels_mm):
        monitor.check("rigid-mask")
        fixed_sdm, fixed_grid = sdm_stack(fixed_seg, labels, spacing, clip_mm=2 * band_mm)
        moving_sdm, moving_grid = sdm_stack(moving_seg, labels, spacing, clip_mm=2 * band_mm)
        pts_all = torch.as_tensor(fixed_grid.world_points(), dtype=torch.float32).reshape(-1, 3)
        fixed_vals = torch.as_tensor(fixed_sdm.reshape(len(labels), -1).T, dtype=torch.float32)
        near = (fixed_vals.abs() < band_mm).any(dim=1)
        pts, fixed_vals = pts_all[near].to(device), fixed_vals[near].to(device)
        if len(pts) > max_points:  # a seeded subset keeps each evaluation cheap on large masks
            keep = torch.randperm(len(pts), generator=torch.Generator().manual_seed(level))[:max_points]
            pts, fixed_vals = pts[keep.to(device)], fixed_vals[keep.to(device)]
        moving_vol = torch.as_tensor(moving_sdm, dtype=torch.float32, device=device)
        w = weights.to(device=device, dtype=torch.float32)
        # world -> grid_sample coordinates of the moving maps, folded into the point map (one matmul per evaluation);
        # outside the moving grid the border distances are extended (smooth for the optimiser)
        to_normalized = torch.as_tensor(world_to_normalized_matrix(moving_grid), dtype=torch.float64)

        def loss_fn(p: torch.Tensor) -> torch.Tensor:
            a, b = point_map(p)
            a_n = (to_normalized[:3, :3] @ a).to(device=device, dtype=torch.float32)
            b_n = (to_normalized[:3, :3] @ b + to_normalized[:3, 3]).to(device=device, dtype=torch.float32)
            warped = sample_normalized(moving_vol, pts @ a_n.T + b_n)
            return (((warped - fixed_vals) ** 2).mean(dim=0) * w).sum()

        starts = [params.clone()]
        if level == 0 and start_angles_deg > 0:
            for axis in range(3):
                for sign in (-1.0, 1.0):
                    s = params.clone()
                    s[axis] += sign * np.deg2rad(start_angles_deg) * rot_scale
                    starts.append(s)
        best, best_loss = params, float("inf")
        # several starts: each gets a sixth of the iterations (enough to tell the basins apart), then the best one is
        # refined with the full budget
        schedule = [(start, max(1, iterations // 6)) for start in starts] if len(starts) > 1 else [(starts[0], iterations)]
        for n, (start, budget) in enumerate(schedule):
            p = start.clone().requires_grad_(True)
            opt = torch.optim.LBFGS(
                [p], lr=1.0, max_iter=budget, line_search_fn="strong_wolfe", tolerance_change=1e-6, tolerance_grad=1e-6
            )

            def closure():
                monitor.check("rigid-mask")
                opt.zero_grad()
                loss = loss_fn(p)
                loss.backward()
                return loss

            opt.step(closure)
            with torch.no_grad():
                value = float(loss_fn(p))
            if np.isfinite(value) and value < best_loss:
                best, best_loss = p.detach().cpu().clone(), value
            monitor.report((level + (n + 1) / (len(starts) + (len(starts) > 1))) / len(levels_mm), f"rigid-mask level {level + 1}")
            if n == len(starts) - 1 and len(starts) > 1:
                schedule.append((best.clone(), iterations))  # refine the best start
        if not np.isfinite(best_loss):
            raise MMRegError("rigid-mask: the distance-map loss is not finite; check the segmentations' geometry")
        params = best

    a, b = point_map(params)
    matrix = np.eye(4)
    matrix[:3, :3] = a.detach().cpu().numpy()
    matrix[:3, 3] = b.detach().cpu().numpy()
    return AffineTransform(matrix, initial.source, initial.target)
