"""An oriented box in world space (LPS mm): what a Slicer markups ROI becomes in the engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


AXES_TOLERANCE = 1e-4
"""Largest ``|axes^T axes - I|`` entry accepted as orthonormal (files store the axes to ~16 digits)."""


@dataclass(frozen=True)
class OrientedBox:
    """Box with centre ``center`` (3,), orthonormal ``axes`` (3, 3; one column per box axis) and
    ``half_size`` (3,) in mm along those axes. All in LPS mm."""

    center: np.ndarray
    axes: np.ndarray
    half_size: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "center", np.asarray(self.center, dtype=np.float64).reshape(3))
        object.__setattr__(self, "axes", np.asarray(self.axes, dtype=np.float64).reshape(3, 3))
        object.__setattr__(self, "half_size", np.asarray(self.half_size, dtype=np.float64).reshape(3))
        for name in ("center", "axes", "half_size"):
            value = getattr(self, name)
            if not np.all(np.isfinite(value)):
                raise ValueError(f"OrientedBox: '{name}' must be finite, got {value.tolist()}")
        if np.any(self.half_size <= 0):
            raise ValueError(f"OrientedBox: 'half_size' must be positive, got {self.half_size.tolist()}")
        deviation = float(np.abs(self.axes.T @ self.axes - np.eye(3)).max())
        if deviation > AXES_TOLERANCE:
            raise ValueError(
                "OrientedBox: 'axes' must be orthonormal (one unit column per box axis, at right angles); got "
                f"{np.round(self.axes, 6).tolist()} (|axes^T axes - I| = {deviation:.2g}; skewed or scaled?)"
            )

    def contains(self, points: np.ndarray, margin_mm: float = 0.0) -> np.ndarray:
        """Boolean ``(...)`` for points ``(..., 3)``: inside the box grown by ``margin_mm``."""
        local = (np.asarray(points, dtype=np.float64) - self.center) @ self.axes
        return np.all(np.abs(local) <= self.half_size + margin_mm, axis=-1)

    def corners(self) -> np.ndarray:
        """The 8 corners ``(8, 3)``."""
        signs = np.array(list(np.ndindex(2, 2, 2)), dtype=np.float64) * 2 - 1
        return self.center + (signs * self.half_size) @ self.axes.T

    @property
    def size(self) -> np.ndarray:
        """Edge lengths ``(3,)`` in mm along the axes."""
        return 2.0 * self.half_size

    def as_record(self) -> dict:
        """``{"center", "axes", "size", "space"}`` (LPS mm; ``axes`` row-major, one column per box axis) for JSON."""
        return {"center": self.center.tolist(), "axes": self.axes.tolist(), "size": self.size.tolist(),
                "space": "LPS mm; axes: one column per box axis"}
