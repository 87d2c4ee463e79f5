"""Voxel grid geometry: array shape plus the voxel-index -> world (LPS mm) affine.

See :mod:`MMRegistrationLib.core.conventions` for the conventions used here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from MMRegistrationLib.core.errors import InputError


@dataclass(frozen=True, eq=False)
class Grid:
    """Geometry of a 3-D voxel array.

    Attributes:
        shape: array shape ``(K, J, I)`` (slowest to fastest; ``I`` runs along the first world column).
        affine: ``(4, 4)`` float64 matrix mapping homogeneous index ``(i, j, k, 1)`` to LPS mm.
    """

    shape: tuple
    affine: np.ndarray

    def __post_init__(self):
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise InputError("grid", f"shape must be three positive sizes (K, J, I), got {self.shape}")
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise InputError("grid", "affine must be a finite 4x4 matrix")
        linear = affine[:3, :3]
        if abs(np.linalg.det(linear)) < 1e-12:
            raise InputError("grid", "direction/spacing matrix is not invertible (singular direction or zero spacing)")
        affine.setflags(write=False)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "affine", affine)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_geometry(
        cls,
        shape: Sequence[int],
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        origin: Sequence[float] = (0.0, 0.0, 0.0),
        direction: np.ndarray | Sequence[float] = np.eye(3),
    ) -> "Grid":
        """Build from ITK-style geometry: ``spacing``/``origin`` ordered (x, y, z), ``direction`` 3x3 with
        one column per index axis (i, j, k), ``shape`` ordered (K, J, I)."""
        spacing = np.asarray(spacing, dtype=np.float64).reshape(3)
        if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
            raise InputError("spacing", f"must be three positive numbers, got {spacing.tolist()}")
        direction = np.asarray(direction, dtype=np.float64).reshape(3, 3)
        affine = np.eye(4)
        affine[:3, :3] = direction @ np.diag(spacing)
        affine[:3, 3] = np.asarray(origin, dtype=np.float64).reshape(3)
        return cls(tuple(shape), affine)

    # ---- geometry ----------------------------------------------------------------------------
    @property
    def size_ijk(self) -> tuple:
        """Number of voxels along (i, j, k) — ITK's ``GetSize()`` order."""
        return self.shape[::-1]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along (i, j, k)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        """3x3 direction cosines, one column per index axis (ITK convention)."""
        return self.affine[:3, :3] / self.spacing

    @property
    def origin(self) -> np.ndarray:
        """World position (LPS mm) of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def center(self) -> np.ndarray:
        """World position (LPS mm) of the centre of the voxel box (continuous index ``(n - 1) / 2`` per axis)."""
        return self.index_to_world((np.array(self.size_ijk, dtype=np.float64) - 1) / 2)

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.shape))

    @property
    def voxel_volume(self) -> float:
        """Volume of one voxel in mm^3."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def is_orthonormal(self, tol: float = 1e-4) -> bool:
        d = self.direction
        return bool(np.allclose(d.T @ d, np.eye(3), atol=tol))

    def same_as(self, other: "Grid", tol: float = 1e-5) -> bool:
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=tol))

    def __repr__(self) -> str:
        return (
            f"Grid(shape={self.shape}, spacing={np.round(self.spacing, 4).tolist()}, "
            f"origin={np.round(self.origin, 3).tolist()})"
        )

    # ---- coordinate maps (numpy, float64) ---------------------------------------------------------
    def index_to_world(self, index_ijk: np.ndarray) -> np.ndarray:
        """Continuous indices ``(..., 3)`` ordered (i, j, k) -> LPS mm ``(..., 3)``."""
        index_ijk = np.asarray(index_ijk, dtype=np.float64)
        return index_ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        """LPS mm ``(..., 3)`` -> continuous indices ``(..., 3)`` ordered (i, j, k)."""
        points = np.asarray(points, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        return points @ inv[:3, :3].T + inv[:3, 3]

    def world_points(self) -> np.ndarray:
        """World coordinates of every voxel centre, shape ``(K, J, I, 3)``, LPS mm."""
        k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in self.shape), indexing="ij")
        return self.index_to_world(np.stack([i, j, k], axis=-1))

    def world_points_torch(self, device=None, dtype=torch.float32, k_range: tuple | None = None) -> torch.Tensor:
        """Voxel-centre world coordinates as a tensor ``(K', J, I, 3)`` (optionally slices ``k_range``)."""
        k0, k1 = k_range if k_range is not None else (0, self.shape[0])
        aff = torch.tensor(np.array(self.affine), dtype=dtype, device=device)
        k = torch.arange(k0, k1, dtype=dtype, device=device)
        j = torch.arange(self.shape[1], dtype=dtype, device=device)
        i = torch.arange(self.shape[2], dtype=dtype, device=device)
        # x = i * a0 + j * a1 + k * a2 + origin, built by broadcasting (no (N, 3) x (3, 3) matmul needed)
        return (
            k[:, None, None, None] * aff[:3, 2]
            + j[None, :, None, None] * aff[:3, 1]
            + i[None, None, :, None] * aff[:3, 0]
            + aff[:3, 3]
        )

    def world_to_index_torch(self, points: torch.Tensor) -> torch.Tensor:
        """Torch version of :meth:`world_to_index` (keeps dtype and device of ``points``)."""
        inv = torch.tensor(np.linalg.inv(self.affine), dtype=points.dtype, device=points.device)
        return points @ inv[:3, :3].T + inv[:3, 3]

    def index_to_normalized(self, index_ijk: torch.Tensor) -> torch.Tensor:
        """Continuous (i, j, k) -> ``grid_sample`` coordinates for ``align_corners=True`` (see conventions)."""
        size = torch.tensor(self.size_ijk, dtype=index_ijk.dtype, device=index_ijk.device)
        scale = torch.where(size > 1, 2.0 / torch.clamp(size - 1, min=1), torch.zeros_like(size))
        return index_ijk * scale - (size > 1).to(index_ijk.dtype)

    def inside_mask(self, index_ijk: torch.Tensor) -> torch.Tensor:
        """True where a continuous index lies within ``[-0.5, n - 0.5]`` on every axis (ITK's 'inside')."""
        size = torch.as_tensor(self.size_ijk, dtype=index_ijk.dtype, device=index_ijk.device)
        return ((index_ijk >= -0.5) & (index_ijk <= size - 0.5)).all(dim=-1)

    # ---- derived grids ----------------------------------------------------------------------
    def resized(self, spacing: float | Sequence[float]) -> "Grid":
        """Same field of view (same outer corners, same direction) at a new spacing (mm, per axis)."""
        new_spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,)).copy()
        extent = self.spacing * np.array(self.size_ijk, dtype=np.float64)
        size_ijk = np.maximum(1, np.round(extent / new_spacing)).astype(int)
        new_spacing = extent / size_ijk
        # keep the outer corner (index -0.5) in place
        corner = self.index_to_world(np.full(3, -0.5))
        origin = corner + self.direction @ (0.5 * new_spacing)
        return Grid.from_geometry(tuple(size_ijk[::-1]), new_spacing, origin, self.direction)

    def cropped(self, start_ijk: Sequence[int], stop_ijk: Sequence[int]) -> "Grid":
        """Sub-grid covering indices ``start <= idx < stop`` (i, j, k order)."""
        start = np.asarray(start_ijk, dtype=int)
        stop = np.asarray(stop_ijk, dtype=int)
        affine = np.array(self.affine)
        affine[:3, 3] = self.index_to_world(start.astype(np.float64))
        return Grid(tuple((stop - start)[::-1]), affine)

    def corners_world(self) -> np.ndarray:
        """World coordinates of the 8 outer corners of the voxel box (indices -0.5 and n - 0.5), ``(8, 3)``."""
        lo = np.full(3, -0.5)
        hi = np.array(self.size_ijk, dtype=np.float64) - 0.5
        corners = np.array([[(lo, hi)[b][a] for a, b in enumerate(bits)] for bits in np.ndindex(2, 2, 2)])
        return self.index_to_world(corners)
