"""Global search over rigid poses: seeded random starts, evaluated in batches, the best kept for local refinement.

A pose is 6 numbers ``(r, t)``: ``r`` a rotation vector (radians, LPS axes) about a centre ``c`` and ``t`` a
translation (mm), acting in the fixed space before an initial affine ``A0``: ``T(x) = A0(R(r)(x - c) + c + t)``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from MMRegistrationLib.core.device import move


def rotation_matrices(vectors: torch.Tensor) -> torch.Tensor:
    """Rodrigues for a batch: rotation vectors ``(B, 3)`` (radians) -> ``(B, 3, 3)``; differentiable, also at 0."""
    theta2 = (vectors * vectors).sum(-1)
    small = theta2 < 1e-8
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / (theta * theta))
    x, y, z = vectors.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*vectors.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=vectors.dtype, device=vectors.device).expand_as(skew)
    return eye + a[..., None, None] * skew + b[..., None, None] * (skew @ skew)


def translation_bounds(centre: np.ndarray, initial: np.ndarray, moving_points: np.ndarray, range_mm: float) -> tuple:
    """Per-axis ``(lo, hi)`` translations (mm) for the random starts: within ``+-range_mm`` and such that the centre
    ``c + t`` stays inside the bounding box of the moving field of view seen from the fixed space (through
    ``A0^-1``), so that every start overlaps the moving image. When ``c`` itself lies outside that box the box
    alone bounds ``t``.

    Args:
        centre: ``(3,)`` rotation centre ``c`` (fixed space, mm).
        initial: ``(4, 4)`` ``A0`` (fixed -> moving).
        moving_points: ``(N, 3)`` world points of the moving field of view (moving space).
    """
    inv = np.linalg.inv(initial)
    seen = moving_points @ inv[:3, :3].T + inv[:3, 3]
    box_lo, box_hi = seen.min(axis=0) - centre, seen.max(axis=0) - centre
    lo = np.maximum(-float(range_mm), box_lo)
    hi = np.minimum(float(range_mm), box_hi)
    empty = lo > hi
    lo[empty], hi[empty] = box_lo[empty], box_hi[empty]
    return lo, hi


def sample_poses(count: int, rotation_range_deg: float, translation_lo: np.ndarray, translation_hi: np.ndarray,
                 seed: int, dtype=torch.float64) -> torch.Tensor:
    """``(count, 6)`` poses: row 0 is the identity (the given start), the others have rotation-vector components
    in ``+-rotation_range_deg`` and translations in ``[lo, hi]`` per axis, from a scrambled Sobol sequence (covers
    the 6-D box more evenly than independent uniform draws; seeded, deterministic)."""
    engine = torch.quasirandom.SobolEngine(6, scramble=True, seed=int(seed))
    u = engine.draw(max(int(count), 1), dtype=torch.float64)
    rot = (2.0 * u[:, :3] - 1.0) * np.deg2rad(float(rotation_range_deg))
    lo = torch.as_tensor(translation_lo, dtype=torch.float64)
    hi = torch.as_tensor(translation_hi, dtype=torch.float64)
    trans = lo + u[:, 3:] * (hi - lo)
    poses = torch.cat([rot, trans], dim=1)
    poses[0] = 0.0
    return poses.to(dtype)


def pose_distance_mm(a: torch.Tensor, b: torch.Tensor, radius_mm: float) -> torch.Tensor:
    """Rough distance (mm) between poses ``(..., 6)``: translation difference plus the rotation-vector difference
    times ``radius_mm`` (what a point that far from the centre moves, to first order)."""
    return torch.linalg.vector_norm(a[..., 3:] - b[..., 3:], dim=-1) + radius_mm * torch.linalg.vector_norm(
        a[..., :3] - b[..., :3], dim=-1)


def evaluate_in_batches(evaluate: Callable, poses: torch.Tensor, batch: int, check=None) -> tuple:
    """Run ``evaluate(poses[b0:b1]) -> (loss (B,), overlap (B,))`` over batches without gradients; returns the
    concatenated ``(losses, overlaps)`` as float64 CPU tensors. ``check()`` is called between batches (cancel)."""
    losses, overlaps = [], []
    with torch.no_grad():
        for b0 in range(0, len(poses), max(1, int(batch))):
            if check is not None:
                check()
            loss, overlap = evaluate(poses[b0:b0 + batch])
            losses.append(move(loss.detach(), "cpu", torch.float64))
            overlaps.append(move(overlap.detach(), "cpu", torch.float64))
    return torch.cat(losses), torch.cat(overlaps)


def best_poses(losses: torch.Tensor, overlaps: torch.Tensor, keep: int, min_overlap: float,
               poses: torch.Tensor | None = None, separation_mm: float = 0.0, radius_mm: float = 50.0) -> torch.Tensor:
    """Indices of the ``keep`` lowest finite losses among poses overlapping by at least ``min_overlap`` (best first);
    empty when none qualifies. With ``poses`` and ``separation_mm > 0``, a pose closer than ``separation_mm``
    (:func:`pose_distance_mm`) to a better kept one is skipped, so the kept starts explore different basins."""
    ok = torch.isfinite(losses) & (overlaps >= float(min_overlap))
    candidates = torch.nonzero(ok).flatten()
    if candidates.numel() == 0:
        return candidates
    # stable ordering (ties keep the sampling order) keeps the result deterministic
    order = candidates[torch.argsort(losses[candidates], stable=True)]
    if poses is None or separation_mm <= 0:
        return order[: max(1, int(keep))]
    kept: list = []
    for index in order.tolist():
        if all(float(pose_distance_mm(poses[index], poses[k], radius_mm)) >= separation_mm for k in kept):
            kept.append(index)
            if len(kept) >= max(1, int(keep)):
                break
    return torch.as_tensor(kept, dtype=torch.long)
