"""Affine (and rigid) transforms in world coordinates."""

from __future__ import annotations

import numpy as np
import torch

from MMRegistrationLib.spatial.base import SpatialTransform


def rotation_matrix(rotation_vector: torch.Tensor) -> torch.Tensor:
    """Rodrigues: axis-angle vector ``(3,)`` (radians, LPS axes) -> rotation matrix ``(3, 3)``; differentiable."""
    theta = torch.linalg.norm(rotation_vector)
    eye = torch.eye(3, dtype=rotation_vector.dtype, device=rotation_vector.device)
    kx, ky, kz = rotation_vector
    zero = torch.zeros((), dtype=rotation_vector.dtype, device=rotation_vector.device)
    skew = torch.stack([torch.stack([zero, -kz, ky]), torch.stack([kz, zero, -kx]), torch.stack([-ky, kx, zero])])
    if float(theta.detach()) < 1e-8:
        return eye + skew  # first order, keeps the gradient
    return eye + torch.sin(theta) / theta * skew + (1 - torch.cos(theta)) / theta**2 * (skew @ skew)


class AffineTransform(SpatialTransform):
    """``y = A x + t`` in LPS mm, stored as a 4x4 float64 matrix mapping ``source`` to ``target``."""

    def __init__(self, matrix: np.ndarray, source: str = "fixed", target: str = "moving"):
        matrix = np.array(matrix, dtype=np.float64)
        if matrix.shape == (3, 4):
            matrix = np.vstack([matrix, [0, 0, 0, 1]])
        if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
            raise ValueError("AffineTransform: 'matrix' must be a finite 4x4 (or 3x4) matrix")
        if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
            raise ValueError("AffineTransform: linear part is singular")
        self.matrix = matrix
        self.source = source
        self.target = target

    @classmethod
    def identity(cls, source: str = "fixed", target: str = "moving") -> "AffineTransform":
        return cls(np.eye(4), source, target)

    @classmethod
    def from_translation(cls, translation, source: str = "fixed", target: str = "moving") -> "AffineTransform":
        matrix = np.eye(4)
        matrix[:3, 3] = np.asarray(translation, dtype=np.float64)
        return cls(matrix, source, target)

    @classmethod
    def from_rigid(
        cls, rotation_vector, translation, center=(0.0, 0.0, 0.0), source: str = "fixed", target: str = "moving"
    ) -> "AffineTransform":
        """``y = R (x - c) + c + t`` with ``R`` from an axis-angle vector (radians)."""
        rot = rotation_matrix(torch.as_tensor(np.asarray(rotation_vector, dtype=np.float64))).numpy()
        center = np.asarray(center, dtype=np.float64)
        matrix = np.eye(4)
        matrix[:3, :3] = rot
        matrix[:3, 3] = center - rot @ center + np.asarray(translation, dtype=np.float64)
        return cls(matrix, source, target)

    @property
    def is_linear(self) -> bool:
        return True

    def map_points(self, points: torch.Tensor) -> torch.Tensor:
        m = torch.as_tensor(self.matrix, dtype=points.dtype, device=points.device)
        return points @ m[:3, :3].T + m[:3, 3]

    def inverse(self) -> "AffineTransform":
        return AffineTransform(np.linalg.inv(self.matrix), self.target, self.source)

    def then(self, other: "AffineTransform") -> "AffineTransform":
        """Apply ``self`` first, then ``other`` (``other.source`` must be ``self.target``)."""
        from MMRegistrationLib.spatial.base import check_chain

        check_chain(self, other)
        return AffineTransform(other.matrix @ self.matrix, self.source, other.target)

    def __repr__(self) -> str:
        return f"AffineTransform({self.direction_label}, matrix={np.round(self.matrix, 4).tolist()})"
