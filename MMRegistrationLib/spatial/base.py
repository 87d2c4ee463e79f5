"""Base class of spatial transforms. Every transform names its direction: ``source`` -> ``target``."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch


class SpatialTransform(ABC):
    """Maps points of the ``source`` world space to the ``target`` world space (both LPS mm).

    A registration result is ``fixed -> moving`` (see :mod:`MMRegistrationLib.core.conventions`):
    resampling the moving image onto the fixed grid evaluates the moving image at ``T(x_fixed)``.
    """

    source: str
    target: str

    @property
    def direction_label(self) -> str:
        return f"{self.source}->{self.target}"

    @abstractmethod
    def map_points(self, points: torch.Tensor) -> torch.Tensor:
        """Map points ``(..., 3)`` (LPS mm, ``source`` space) to ``target`` space; same shape, dtype, device."""

    def map_points_np(self, points: np.ndarray) -> np.ndarray:
        """Numpy convenience wrapper of :meth:`map_points` (float64)."""
        pts = torch.as_tensor(np.asarray(points, dtype=np.float64))
        return self.map_points(pts).numpy()

    @property
    def is_linear(self) -> bool:
        return False

    def inverse(self) -> "SpatialTransform":
        """``target -> source``; raises ``NotImplementedError`` when there is no closed-form inverse."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form inverse")

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        return self.map_points(points)


def check_chain(first: SpatialTransform, second: SpatialTransform) -> None:
    """Raise if ``second`` cannot be applied after ``first`` (``first.target`` must equal ``second.source``)."""
    if first.target != second.source:
        raise ValueError(
            f"cannot compose {first.direction_label} then {second.direction_label}: "
            f"'{first.target}' is not '{second.source}'"
        )
