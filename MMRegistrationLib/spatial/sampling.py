"""Sampling arrays at world points with ``grid_sample`` and ITK's inside/outside rule (see conventions)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from MMRegistrationLib.core.conventions import ALIGN_CORNERS
from MMRegistrationLib.core.grid import Grid


def sample_at_world(
    volume: torch.Tensor, grid: Grid, points: torch.Tensor, mode: str = "bilinear", outside_value: float | None = 0.0
) -> torch.Tensor:
    """Sample a channel-first volume at world points.

    Args:
        volume: ``(C, K, J, I)`` tensor on ``grid``.
        grid: geometry of ``volume``.
        points: ``(..., 3)`` LPS mm.
        mode: ``"bilinear"`` (trilinear) or ``"nearest"``.
        outside_value: value where a point lies outside ``[-0.5, n - 0.5]`` on some axis; ``None`` extends the
            border values instead (continuous extrapolation, used inside scaling and squaring).

    Returns:
        ``(..., C)`` samples, dtype of ``volume``.
    """
    lead = points.shape[:-1]
    flat = points.reshape(-1, 3)
    inv = torch.tensor(np.linalg.inv(grid.affine), dtype=flat.dtype, device=flat.device)
    index = flat @ inv[:3, :3].T + inv[:3, 3]
    norm = grid.index_to_normalized(index).to(volume.dtype)
    out = F.grid_sample(
        volume[None], norm.view(1, 1, 1, -1, 3), mode=mode, padding_mode="border", align_corners=ALIGN_CORNERS
    )[0, :, 0, 0, :]  # (C, P)
    if outside_value is not None:
        inside = grid.inside_mask(index)  # ITK's rule: within half a voxel of the border voxels
        out = torch.where(inside[None, :], out, torch.as_tensor(outside_value, dtype=out.dtype, device=out.device))
    return out.T.reshape(*lead, volume.shape[0])


def world_to_normalized_matrix(grid: Grid) -> np.ndarray:
    """``(4, 4)`` matrix taking homogeneous LPS mm points to ``grid_sample`` coordinates of ``grid``
    (``align_corners=True``; an axis of size 1 maps to 0). Lets a caller fold it into its own linear maps."""
    size = np.asarray(grid.size_ijk, dtype=np.float64)
    scale = np.where(size > 1, 2.0 / np.maximum(size - 1, 1), 0.0)
    to_normalized = np.diag([*scale, 1.0])
    to_normalized[:3, 3] = -(size > 1).astype(np.float64)
    return to_normalized @ np.linalg.inv(grid.affine)


def sample_normalized(volume: torch.Tensor, normalized: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """``grid_sample`` of a ``(C, K, J, I)`` volume at ``(..., 3)`` normalized coordinates -> ``(..., C)``.

    The fast path for loops that precompute :func:`world_to_normalized_matrix`: no half-voxel rule;
    ``padding_mode`` ``"border"`` extends the border values, ``"zeros"`` fades to 0 over the last voxel.
    """
    lead = normalized.shape[:-1]
    out = F.grid_sample(volume[None], normalized.reshape(1, 1, 1, -1, 3).to(volume.dtype), mode="bilinear",
                        padding_mode=padding_mode, align_corners=ALIGN_CORNERS)[0, :, 0, 0, :]
    return out.T.reshape(*lead, volume.shape[0])
