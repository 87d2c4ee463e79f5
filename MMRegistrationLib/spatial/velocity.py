"""Stationary velocity fields and their exponential by scaling and squaring."""

from __future__ import annotations

import numpy as np
import torch

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.spatial.base import SpatialTransform
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.spatial.sampling import sample_normalized, world_to_normalized_matrix


def border_window(grid: Grid, ramp_mm: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(K, J, I, 1)`` weight for a velocity field on ``grid``: 0 on the grid's border, rising as ``sin^2`` to 1 over
    ``ramp_mm`` from it. A velocity multiplied by it vanishes on the border, so its exponential is the identity
    outside the grid and continuous across its border."""
    factors = []
    for axis, n in enumerate(grid.shape):  # k, j, i
        pos = np.arange(n) * grid.spacing[2 - axis]
        dist = np.minimum(pos - pos[0], pos[-1] - pos)
        ramp = np.clip(dist / max(float(ramp_mm), 1e-6), 0.0, 1.0)
        factors.append(torch.as_tensor(np.sin(0.5 * np.pi * ramp) ** 2, dtype=dtype, device=device))
    return (factors[0][:, None, None] * factors[1][None, :, None] * factors[2][None, None, :])[..., None]


def exponentiate(velocity: torch.Tensor, grid: Grid, steps: int = 7) -> torch.Tensor:
    """Scaling and squaring: displacement ``u = exp(v) - id`` on ``grid``.

    Args:
        velocity: ``(K, J, I, 3)`` LPS mm vectors at the voxel centres of ``grid`` (differentiable).
        grid: geometry of ``velocity``.
        steps: number of squarings ``N``; ``v / 2^N`` must be small compared with the spacing.

    Returns:
        ``(K, J, I, 3)`` displacement, same dtype/device. ``phi_{n+1}(x) = phi_n(phi_n(x))``, i.e.
        ``u <- u + u(x + u)``. Where ``x + u`` leaves the grid the border value is extended (not 0), so the
        flow stays smooth up to the border; the resulting field, like any field, is 0 outside its grid.
    """
    to_normalized = torch.as_tensor(world_to_normalized_matrix(grid), dtype=velocity.dtype, device=velocity.device)
    linear = to_normalized[:3, :3]
    # normalized(x + u) = normalized(x) + linear @ u: the voxel centres' coordinates are computed once
    base = grid.world_points_torch(device=velocity.device, dtype=velocity.dtype) @ linear.T + to_normalized[:3, 3]
    disp = velocity / (2**steps)
    for _ in range(steps):
        disp = disp + sample_normalized(disp.permute(3, 0, 1, 2), base + disp @ linear.T, padding_mode="border")
    return disp


class VelocityField(SpatialTransform):
    """Stationary velocity field ``v`` on ``grid``; the transform is ``exp(v)`` (diffeomorphic), its inverse
    is ``exp(-v)`` — both come from the same field."""

    def __init__(self, grid: Grid, velocity, source: str = "fixed", target: str = "moving", steps: int = 7):
        vel = torch.as_tensor(velocity)
        if tuple(vel.shape) != (*grid.shape, 3):
            raise ValueError(f"VelocityField: 'velocity' must have shape {(*grid.shape, 3)}, got {tuple(vel.shape)}")
        self.grid = grid
        self.velocity = vel
        self.source = source
        self.target = target
        self.steps = steps
        self._forward: DisplacementField | None = None

    def to_displacement(self) -> DisplacementField:
        """``exp(v)`` as a displacement field on the same grid (``source -> target``)."""
        if self._forward is None:
            disp = exponentiate(self.velocity.detach(), self.grid, self.steps)
            self._forward = DisplacementField(self.grid, disp, self.source, self.target)
        return self._forward

    def map_points(self, points: torch.Tensor) -> torch.Tensor:
        return self.to_displacement().map_points(points)

    def inverse(self) -> "VelocityField":
        return VelocityField(self.grid, -self.velocity, self.target, self.source, self.steps)

    def __repr__(self) -> str:
        return f"VelocityField({self.direction_label}, {self.grid!r}, steps={self.steps})"
