"""Where a registration network works: its own cubic grid in world mm, the inputs sampled onto it, and its output
converted to LPS mm. Training (:mod:`MMRegistrationLib.training.net`) and registration
(:mod:`MMRegistrationLib.registration.net`) both go through here, so a network sees the same thing in both.

- The grid (:func:`network_grid`): ``N^3`` voxels of ``s`` mm, centred on the fixed image's centre (or on the fixed
  gland's centre of mass), along the fixed image's axes reordered and flipped to be closest to LPS
  (:func:`canonical_axes`): an oblique TRUS keeps its obliquity (the anatomy stays aligned with the probe), while a
  RAS-stored or axis-permuted image is seen in the orientation the network was trained in.
- Inputs: intensities scaled so that the 99th percentile is 1 and clipped to [0, 1] (paper 004); each volume is
  sampled at ``map(p)`` for the grid's voxel centres ``p``, where ``map`` is a 4x4 world -> world matrix (the
  identity for the fixed image, the initial fixed -> moving transform for the moving one; random affines are
  composed in during training).
- Fields: a network's ``(B, 3, N, N, N)`` output is in grid voxels along the tensor axes ``k, j, i``
  (:func:`voxels_to_world`). The window (:func:`grid_window`) makes it vanish on the grid's border.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.networks.registration import RegNetConfig
from MMRegistrationLib.spatial.sampling import sample_at_world
from MMRegistrationLib.spatial.velocity import border_window


def canonical_axes(direction: np.ndarray) -> np.ndarray:
    """The columns of ``direction`` (3x3, one per index axis) reordered and sign-flipped so that column ``a`` is the
    one closest to world axis ``a`` (L, P, S) and points along it. A proper rotation for a right-handed input."""
    direction = np.asarray(direction, dtype=np.float64)
    weights = np.abs(direction)  # weights[a, c]: how much column c points along world axis a
    out = np.zeros((3, 3))
    used: set = set()
    for axis in np.argsort(-weights.max(axis=1)):  # the most decided world axis chooses first
        column = max((c for c in range(3) if c not in used), key=lambda c: weights[axis, c])
        used.add(column)
        out[:, axis] = direction[:, column] * np.sign(direction[axis, column] or 1.0)
    if np.linalg.det(out) < 0:  # a left-handed input: keep the least decided axis' sign as it was
        axis = int(np.argmin(weights.max(axis=1)))
        out[:, axis] = -out[:, axis]
    return out


def network_grid(config: RegNetConfig, fixed: Grid, fixed_center: Optional[np.ndarray] = None) -> Grid:
    """The network's ``N^3`` grid of ``grid_spacing_mm`` along :func:`canonical_axes` of ``fixed``, centred on
    ``fixed_center`` (LPS mm; default: the fixed image's centre)."""
    center = fixed.center if fixed_center is None else fixed_center
    return cubic_grid(config.grid_size, config.grid_spacing_mm, center, fixed.direction)


def cubic_grid(size: int, spacing_mm: float, center, direction: np.ndarray) -> Grid:
    """``size^3`` voxels of ``spacing_mm`` centred on ``center`` (LPS mm), along :func:`canonical_axes` of
    ``direction``: where a network (registration or segmentation) works."""
    n, s = int(size), float(spacing_mm)
    axes = canonical_axes(direction)
    origin = np.asarray(center, dtype=np.float64) - axes @ np.full(3, s * (n - 1) / 2)
    return Grid.from_geometry((n, n, n), (s, s, s), origin, axes)


def normalised_intensity(array: np.ndarray) -> np.ndarray:
    """Float32 ``(array - min) / (p99 - min)`` clipped to [0, 1] (paper 004); all zeros for a constant image."""
    values = np.asarray(array, dtype=np.float32)
    low, high = float(values.min()), float(np.percentile(values, 99))
    if high <= low:
        high = float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def grid_points(grid: Grid, device=None) -> torch.Tensor:
    """``(N, N, N, 4)`` homogeneous world points of the grid's voxel centres (float32)."""
    points = grid.world_points_torch(device=device, dtype=torch.float32)
    return torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)


def sample_volume(volume: torch.Tensor, grid: Grid, points: torch.Tensor, world_map: np.ndarray,
                  outside_value: Optional[float] = 0.0) -> torch.Tensor:
    """``volume (C, K, J, I)`` on ``grid`` sampled (trilinear) at ``world_map @ points`` (``points`` from
    :func:`grid_points`); returns ``(C, N, N, N)``. ``outside_value`` None extends the border."""
    m = torch.as_tensor(np.asarray(world_map, dtype=np.float64), dtype=points.dtype, device=points.device)
    mapped = points[..., :3] @ m[:3, :3].T + m[:3, 3]
    out = sample_at_world(volume, grid, mapped, outside_value=outside_value)  # (N, N, N, C)
    return out.permute(3, 0, 1, 2)


def grid_window(grid: Grid, ramp_mm: float, device=None) -> torch.Tensor:
    """``(1, 1, N, N, N)`` border window of the network grid
    (:func:`~MMRegistrationLib.spatial.velocity.border_window`)."""
    return border_window(grid, ramp_mm, device, torch.float32)[..., 0][None, None]


def voxels_to_world(field: torch.Tensor, grid: Grid) -> torch.Tensor:
    """``(B, 3, N, N, N)`` vectors in grid voxels along ``k, j, i`` -> ``(B, N, N, N, 3)`` LPS mm."""
    linear = torch.as_tensor(np.array(grid.affine[:3, :3]), dtype=field.dtype, device=field.device)  # columns: i, j, k
    ijk = field.flip(1).permute(0, 2, 3, 4, 1)  # (B, N, N, N, 3) along i, j, k
    return ijk @ linear.T


def world_to_voxels(field: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Inverse of :func:`voxels_to_world`: ``(B, N, N, N, 3)`` LPS mm -> ``(B, 3, N, N, N)`` grid voxels."""
    inverse = torch.as_tensor(np.linalg.inv(grid.affine[:3, :3]), dtype=field.dtype, device=field.device)
    return (field @ inverse.T).permute(0, 4, 1, 2, 3).flip(1)


def _identity_normalized(shape: Sequence[int], device, dtype) -> torch.Tensor:
    """``(1, D, H, W, 3)`` grid_sample coordinates (x = W axis) of the voxel centres, ``align_corners=True``."""
    axes = [torch.linspace(-1, 1, n, device=device, dtype=dtype) if n > 1 else torch.zeros(1, device=device, dtype=dtype)
            for n in shape]
    d, h, w = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([w, h, d], dim=-1)[None]


def warp_voxels(volume: torch.Tensor, displacement: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """``volume (B, C, D, H, W)`` sampled (trilinear) at ``x + displacement(x)``; ``displacement (B, 3, D, H, W)`` in
    voxels along ``D, H, W``."""
    shape = displacement.shape[2:]
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in shape], dtype=displacement.dtype, device=displacement.device)
    offset = (displacement * scale.view(1, 3, 1, 1, 1)).permute(0, 2, 3, 4, 1).flip(-1)  # (B, D, H, W, 3) as x, y, z
    coords = _identity_normalized(shape, displacement.device, displacement.dtype) + offset
    return F.grid_sample(volume, coords.to(volume.dtype), mode="bilinear", padding_mode=padding_mode, align_corners=True)


def exponentiate_voxels(velocity: torch.Tensor, steps: int) -> torch.Tensor:
    """Scaling and squaring of a batch of stationary velocity fields ``(B, 3, D, H, W)`` in voxels: the displacement
    of ``exp(v)``, border values extended (as :func:`~MMRegistrationLib.spatial.velocity.exponentiate`)."""
    disp = velocity / (2**steps)
    for _ in range(steps):
        disp = disp + warp_voxels(disp, disp, padding_mode="border")
    return disp


@dataclass
class PairVolumes:
    """One case's volumes as tensors on their own grids (``(C, K, J, I)`` each; None where absent).

    ``fixed``/``moving``: normalised intensities (1 channel). ``fixed_labels``/``moving_labels``: the gland then
    landmark structures as float indicators. ``fixed_sdm``/``moving_sdm``: the gland's signed distance (mm,
    negative inside)."""

    fixed_grid: Grid
    moving_grid: Grid
    fixed: torch.Tensor
    moving: torch.Tensor
    fixed_labels: Optional[torch.Tensor] = None
    moving_labels: Optional[torch.Tensor] = None
    fixed_sdm: Optional[torch.Tensor] = None
    moving_sdm: Optional[torch.Tensor] = None

    def on_grid(self, grid: Grid, fixed_map: np.ndarray, moving_map: np.ndarray, parts: Sequence[str]) -> dict:
        """The named parts (``fixed``, ``moving``, ``fixed_labels``, ``moving_labels``, ``fixed_sdm``,
        ``moving_sdm``) sampled on the network grid through ``fixed_map`` / ``moving_map`` (4x4, world -> world):
        name -> ``(C, N, N, N)``."""
        points = grid_points(grid, self.fixed.device)
        out = {}
        for name in parts:
            side = name.split("_")[0]
            source = self.fixed_grid if side == "fixed" else self.moving_grid
            world_map = fixed_map if side == "fixed" else moving_map
            outside = None if name.endswith("sdm") else 0.0
            out[name] = sample_volume(getattr(self, name), source, points, world_map, outside)
        return out


def network_inputs(config: RegNetConfig, order: Sequence[str], sampled: dict) -> torch.Tensor:
    """``(C, N, N, N)`` network input from sampled volumes: ``fixed``/``moving`` intensities and the gland channel
    of ``fixed_labels``/``moving_labels`` for the masks, in ``order``."""
    source = {"fixed": lambda: sampled["fixed"], "moving": lambda: sampled["moving"],
              "moving_mask": lambda: sampled["moving_labels"][:1], "fixed_mask": lambda: sampled["fixed_labels"][:1]}
    return torch.cat([source[name]() for name in order], dim=0)
