"""Dense displacement fields on a grid: ``T(x) = x + u(x)`` with ``u`` in LPS mm."""

from __future__ import annotations

import numpy as np
import torch

from MMRegistrationLib.core.device import float_dtype_for, move
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.spatial.base import SpatialTransform
from MMRegistrationLib.spatial.sampling import sample_at_world


class DisplacementField(SpatialTransform):
    """A displacement field defined on ``grid`` (the ``source`` space's sampling).

    ``u`` has shape ``(K, J, I, 3)``: the LPS mm vector added to each voxel-centre point. Between voxels it is
    interpolated trilinearly; outside ``[-0.5, n - 0.5]`` it is 0 — the rule ITK's
    ``DisplacementFieldTransform`` uses, so a field written to ``.h5`` maps points identically.
    """

    def __init__(self, grid: Grid, displacement, source: str = "fixed", target: str = "moving"):
        disp = torch.as_tensor(displacement)
        if tuple(disp.shape) != (*grid.shape, 3):
            raise ValueError(
                f"DisplacementField: 'displacement' must have shape {(*grid.shape, 3)} (K, J, I, 3), got {tuple(disp.shape)}"
            )
        if not torch.is_floating_point(disp):
            disp = disp.to(float_dtype_for(disp.device))
        if not bool(torch.isfinite(disp).all()):
            raise ValueError("DisplacementField: 'displacement' contains NaN/Inf")
        self.grid = grid
        self.displacement = disp
        self.source = source
        self.target = target

    @classmethod
    def from_transform(cls, transform: SpatialTransform, grid: Grid, chunk_voxels: int = 2**21) -> "DisplacementField":
        """Sample any transform on ``grid``: ``u(x) = T(x) - x`` (float64)."""
        k_chunk = max(1, chunk_voxels // (grid.shape[1] * grid.shape[2]))
        parts = []
        for k0 in range(0, grid.shape[0], k_chunk):
            pts = grid.world_points_torch(dtype=torch.float64, k_range=(k0, min(grid.shape[0], k0 + k_chunk)))
            parts.append(transform.map_points(pts) - pts)
        return cls(grid, torch.cat(parts, dim=0), transform.source, transform.target)

    def displacement_at(self, points: torch.Tensor) -> torch.Tensor:
        """``u`` at world points ``(..., 3)`` (0 outside the field's grid)."""
        field = move(self.displacement, points.device, points.dtype).permute(3, 0, 1, 2)
        return sample_at_world(field, self.grid, points, mode="bilinear", outside_value=0.0)

    def map_points(self, points: torch.Tensor) -> torch.Tensor:
        return points + self.displacement_at(points)

    def inverse(self, iterations: int = 30) -> "DisplacementField":
        """Numerical inverse on the same grid by fixed-point iteration ``v(y) = -u(y + v(y))``.

        Accurate for smooth, invertible fields whose displacement gradient is well below 1.
        """
        pts = self.grid.world_points_torch(dtype=torch.float64)
        v = -move(self.displacement, "cpu", torch.float64).clone()
        for _ in range(iterations):
            v = -self.displacement_at(pts + v)
        return DisplacementField(self.grid, v, self.target, self.source)

    def numpy(self) -> np.ndarray:
        """Displacement as a ``(K, J, I, 3)`` float64 numpy array."""
        return self.displacement.detach().cpu().to(torch.float64).numpy()

    def __repr__(self) -> str:
        return f"DisplacementField({self.direction_label}, {self.grid!r})"
