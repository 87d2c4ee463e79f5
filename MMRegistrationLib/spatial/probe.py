"""Ultrasound probe-pressure model: a compression along the beam direction that decays with depth.

Geometry (fixed = ultrasound world, LPS mm): the probe touches the tissue at the point ``p0`` and images along the
unit direction ``n`` (from the probe into the tissue: the central beam direction of the sector). The depth of a
point is ``d(x) = max(0, (x - p0) . n)`` (mm).

The probe pushes the tissue it touches away from itself: a structure imaged at depth ``d`` lay
``a exp(-d / b)`` mm closer to the probe before the probe pressed. The model's fixed -> moving (ultrasound ->
uncompressed anatomy) mapping is therefore

    ``P(x) = x - a exp(-d(x) / b) n``

with ``a`` (mm) the displacement at the probe surface (positive = the ultrasound image is compressed) and ``b``
(mm) the decay length. Only the coordinate along ``n`` changes, monotonically when ``a > -b`` (its derivative
along ``n`` is ``1 + (a / b) exp(-d / b)``), so ``P`` is invertible; the inverse solves the 1-D equation by
Newton's method. Behind the probe surface (``d < 0``) the displacement is constant (``-a n``).
"""

from __future__ import annotations

import numpy as np
import torch

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.spatial.base import SpatialTransform


def compress(points: torch.Tensor, point: torch.Tensor, direction: torch.Tensor, amplitude, decay) -> torch.Tensor:
    """``P(x)`` for points ``(..., 3)``; ``amplitude``/``decay`` may be tensors broadcasting against ``(...)``
    (e.g. ``(B, 1)`` for a batch of models over ``(B, P, 3)`` points). Differentiable in every argument."""
    depth = torch.clamp(((points - point) * direction).sum(-1), min=0.0)
    return points - (amplitude * torch.exp(-depth / decay))[..., None] * direction


class ProbeCompression(SpatialTransform):
    """The probe-pressure mapping ``P`` (module docstring), ``source -> target``; ``inverted=True`` is ``P^-1``.

    Args:
        point: ``p0`` (LPS mm), where the probe touches the tissue (depth 0).
        direction: ``n``, the beam direction into the tissue (normalised here).
        amplitude_mm: ``a``; decay_mm: ``b`` (> 0, and ``a > -b`` so that ``P`` is invertible).
    """

    def __init__(self, point, direction, amplitude_mm: float, decay_mm: float, source: str = "fixed",
                 target: str = "fixed:probe", inverted: bool = False):
        point = np.asarray(point, dtype=np.float64).reshape(3)
        direction = np.asarray(direction, dtype=np.float64).reshape(3)
        norm = float(np.linalg.norm(direction))
        if not np.all(np.isfinite(point)) or not np.isfinite(norm) or norm < 1e-9:
            raise InputError("probe", f"needs a finite point and a non-zero direction, got {point}, {direction}")
        if not decay_mm > 0 or not amplitude_mm > -decay_mm:
            raise InputError("probe", f"needs decay_mm > 0 and amplitude_mm > -decay_mm (invertible), got "
                             f"amplitude {amplitude_mm} mm, decay {decay_mm} mm")
        self.point = point
        self.direction = direction / norm
        self.amplitude_mm = float(amplitude_mm)
        self.decay_mm = float(decay_mm)
        self.source = source
        self.target = target
        self.inverted = bool(inverted)

    def _tensors(self, like: torch.Tensor) -> tuple:
        return (torch.as_tensor(self.point, dtype=like.dtype, device=like.device),
                torch.as_tensor(self.direction, dtype=like.dtype, device=like.device))

    def map_points(self, points: torch.Tensor) -> torch.Tensor:
        p0, n = self._tensors(points)
        if not self.inverted:
            return compress(points, p0, n, self.amplitude_mm, self.decay_mm)
        a, b = self.amplitude_mm, self.decay_mm
        target = ((points - p0) * n).sum(-1)  # signed depth of the image point, y = f(s)
        # f(s) = s - a exp(-max(s, 0) / b) is increasing; behind the probe (f(0) = -a) it is s - a
        behind = target <= -a
        s = torch.clamp(target, min=0.0)
        for _ in range(50):
            e = torch.exp(-s / b)
            step = (s - a * e - target) / (1.0 + a / b * e)
            s = torch.clamp(s - step, min=0.0)
            if step.numel() == 0 or float(step.abs().max()) < 1e-10:
                break
        s = torch.where(behind, target + a, s)
        return points + (s - target)[..., None] * n

    def inverse(self) -> "ProbeCompression":
        return ProbeCompression(self.point, self.direction, self.amplitude_mm, self.decay_mm, self.target,
                                self.source, not self.inverted)

    def __repr__(self) -> str:
        kind = "inverse of " if self.inverted else ""
        return (f"ProbeCompression({self.direction_label}, {kind}a={self.amplitude_mm:.3f} mm, "
                f"b={self.decay_mm:.3f} mm, point={np.round(self.point, 2).tolist()}, "
                f"direction={np.round(self.direction, 3).tolist()})")


def infer_probe_geometry(mask: np.ndarray, grid: Grid, point=None, direction=None,
                         argument: str = "--probe-point") -> tuple:
    """``(p0, n)`` of an ultrasound field of view ``mask`` (``(K, J, I)`` bool on ``grid``), filling what is not given.

    Heuristic for a sector (fan) image: ``n`` is the principal axis (with its sign) along which the field of view
    is narrowest at one end (the apex) compared with the other: the voxel count in the first 15 % of the extent
    divided by that in the last 15 % is smallest. ``p0`` lies on the line through the centroid along ``n``, at the
    apex end of the field of view. With ``point`` given only ``n`` is inferred (from ``point`` to the centroid);
    with ``direction`` given, ``p0`` is the apex end along it.

    Raises:
        InputError: an empty mask, or no end clearly narrower than the other (e.g. a box-shaped field of view):
            then the probe point and direction must be given.
    """
    k, j, i = np.nonzero(mask)
    if k.size < 10:
        raise InputError(argument, "the fixed field of view is empty; cannot place the probe")
    every = max(1, int(np.ceil(k.size / 200000)))  # a subset is plenty for moments and extents
    pts = grid.index_to_world(np.stack([i[::every], j[::every], k[::every]], axis=-1).astype(np.float64))
    centroid = pts.mean(axis=0)
    if direction is not None:
        n = np.asarray(direction, dtype=np.float64).reshape(3)
        n = n / max(np.linalg.norm(n), 1e-12)
    elif point is not None:
        n = centroid - np.asarray(point, dtype=np.float64).reshape(3)
        if np.linalg.norm(n) < 1e-6:
            raise InputError("--probe-direction", "the probe point is the field of view's centroid; give a direction")
        n = n / np.linalg.norm(n)
    else:
        _, _, axes = np.linalg.svd(pts - centroid, full_matrices=False)
        best, best_ratio = None, np.inf
        for axis in axes:
            for sign in (1.0, -1.0):
                proj = (pts - centroid) @ (sign * axis)
                lo, hi = proj.min(), proj.max()
                band = 0.15 * (hi - lo)
                near = np.count_nonzero(proj < lo + band)
                far = max(np.count_nonzero(proj > hi - band), 1)
                if near / far < best_ratio:
                    best, best_ratio = sign * axis, near / far
        if best_ratio > 0.7:
            raise InputError(
                argument,
                "cannot infer the ultrasound probe from the fixed field of view (no end of it is clearly narrower, as "
                "a sector's apex is); give --probe-point and --probe-direction (LPS mm)",
            )
        n = best
    if point is None:
        point = centroid + n * float(((pts - centroid) @ n).min())
    return np.asarray(point, dtype=np.float64).reshape(3), n
