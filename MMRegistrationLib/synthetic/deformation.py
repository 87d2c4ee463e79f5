"""The ground-truth deformation ``T`` (fixed/TRUS -> moving/MR) of a synthetic case.

``T = rigid o smooth o compression`` evaluated in patient-local coordinates (see :mod:`.geometry`):

* ``compression`` (TRUS side): tissue near the probe is displaced; a fixed point at distance ``r`` from the
  probe axis corresponds to a point ``A * g(r)`` further posterior in the uncompressed anatomy, with
  ``g = 1`` inside the probe and ``exp(-(r - r_probe)^2 / (2 sigma^2))`` outside. Seen from the MR, tissue
  near the probe is pushed anteriorly in the TRUS and the gland is flattened.
* ``smooth``: Gaussian-smoothed white noise (sigma ``deformation_smoothness_mm``) on an auxiliary 3 mm grid,
  scaled so its largest vector within 50 mm of the prostate centre is ``deformation_mm``; cubic-spline
  interpolated.
* ``rigid``: ``x_m = R (x_f - centre) + centre + t``.

The composition is sampled once on a coarse grid covering the TRUS field of view; that
:class:`DisplacementField` (trilinear between its nodes) *is* the ground truth: the TRUS anatomy is built by
evaluating the MR anatomy at its ``map_points_np`` of every TRUS voxel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from MMRegistrationLib.core.errors import MMRegError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.synthetic.geometry import CaseFrames

_AUX_LO = np.array([-66.0, -84.0, -60.0])
_AUX_HI = np.array([66.0, 66.0, 72.0])
_AUX_SPACING = 3.0


@dataclass(frozen=True)
class SmoothField:
    """Smooth random displacement ``s(q)`` (mm) on an auxiliary grid in patient-local coordinates.

    Attributes:
        coefficients: ``(3, Kz, Ky, Kx)`` cubic B-spline coefficients, one volume per component (x, y, z).
        lo: ``(3,)`` local position of node ``(0, 0, 0)``; nodes are ``_AUX_SPACING`` mm apart.
    """

    coefficients: np.ndarray
    lo: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, amplitude_mm: float, smoothness_mm: float) -> "SmoothField":
        shape = tuple(int(n) for n in np.round((_AUX_HI - _AUX_LO) / _AUX_SPACING).astype(int)[::-1] + 1)
        noise = rng.normal(size=(3, *shape))
        sigma = smoothness_mm / _AUX_SPACING
        field = np.stack([ndimage.gaussian_filter(c, sigma, mode="reflect") for c in noise])  # (3, z, y, x)
        # normalise: the largest vector within 50 mm of the prostate centre has length amplitude_mm
        zz, yy, xx = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
        q = np.stack([xx, yy, zz], axis=-1) * _AUX_SPACING + _AUX_LO
        near = np.linalg.norm(q, axis=-1) <= 50.0
        peak = float(np.linalg.norm(field, axis=0)[near].max())
        field *= amplitude_mm / peak if peak > 0 else 0.0
        coeffs = np.stack([ndimage.spline_filter(c, order=3, mode="nearest") for c in field])
        return cls(coeffs, _AUX_LO.copy())

    def __call__(self, q: np.ndarray) -> np.ndarray:
        """Displacement at local points ``(N, 3)`` -> ``(N, 3)`` mm (clamped outside the auxiliary box)."""
        idx = (np.asarray(q, dtype=np.float64) - self.lo) / _AUX_SPACING  # (N, 3) x, y, z
        coords = idx[:, ::-1].T  # (3, N) z, y, x
        return np.stack(
            [ndimage.map_coordinates(c, coords, order=3, mode="nearest", prefilter=False) for c in self.coefficients],
            axis=-1,
        )


@dataclass(frozen=True)
class GroundTruthModel:
    """Analytic ``T`` before it is sampled on the coarse grid.

    Attributes:
        frames: world frames (rigid part, probe frame, patient frame).
        smooth: the smooth random field (fixed patient-local coordinates).
        probe_y_local: fixed patient-local AP position of the probe axis (which runs along local z).
        probe_radius_mm / compression_mm / compression_decay_mm: compression profile (see module doc).
    """

    frames: CaseFrames
    smooth: SmoothField
    probe_y_local: float
    probe_radius_mm: float
    compression_mm: float
    compression_decay_mm: float

    def compression(self, q: np.ndarray) -> np.ndarray:
        """``(N, 3)`` fixed-local -> ``(N, 3)`` decompressed local points."""
        r = np.hypot(q[:, 0], q[:, 1] - self.probe_y_local)
        d = np.maximum(r - self.probe_radius_mm, 0.0)
        out = np.array(q, dtype=np.float64)
        out[:, 1] += self.compression_mm * np.exp(-0.5 * (d / self.compression_decay_mm) ** 2)
        return out

    def local_map(self, q_fixed: np.ndarray) -> np.ndarray:
        """Fixed patient-local ``(N, 3)`` -> moving patient-local ``(N, 3)``."""
        q = self.compression(np.asarray(q_fixed, dtype=np.float64).reshape(-1, 3))
        q = q + self.smooth(q)
        return q + self.frames.local_offset

    def map_points(self, points_fixed: np.ndarray) -> np.ndarray:
        """Analytic ``T``: TRUS world ``(..., 3)`` -> MR world ``(..., 3)``."""
        points_fixed = np.asarray(points_fixed, dtype=np.float64)
        q = self.frames.fixed_to_local(points_fixed.reshape(-1, 3))
        return self.frames.local_to_moving(self.local_map(q)).reshape(points_fixed.shape)

    def sample(self, grid: Grid) -> DisplacementField:
        """The ground-truth :class:`DisplacementField` ``u = T(x) - x`` on ``grid`` (float64)."""
        pts = grid.world_points()
        disp = self.map_points(pts) - pts
        return DisplacementField(grid, disp, source="fixed", target="moving")


def place_probe(
    frames: CaseFrames,
    smooth: SmoothField,
    target_y_local: float,
    probe_radius_mm: float,
    compression_mm: float,
    compression_decay_mm: float,
    iterations: int = 8,
) -> GroundTruthModel:
    """Choose the probe's AP position so the anterior probe surface (at mid-gland) maps onto the MR
    patient-local ``y = target_y_local`` (the anterior inner rectal wall)."""
    probe_y = target_y_local + probe_radius_mm - compression_mm - float(frames.local_offset[1])
    model = None
    for _ in range(iterations):
        model = GroundTruthModel(frames, smooth, probe_y, probe_radius_mm, compression_mm, compression_decay_mm)
        surface = np.array([[0.0, probe_y - probe_radius_mm, 0.0]])
        error = float(model.local_map(surface)[0, 1]) - target_y_local
        if abs(error) < 1e-3:
            break
        probe_y -= error
    return GroundTruthModel(frames, smooth, probe_y, probe_radius_mm, compression_mm, compression_decay_mm)


# ---- checks and inversion ----------------------------------------------------------------------------
def jacobian_determinant(field: DisplacementField) -> np.ndarray:
    """``det(dT/dx)`` ``(K, J, I)`` of ``T(x) = x + u(x)``, derivatives in world mm (``np.gradient``)."""
    u = field.numpy()
    du_didx = np.stack([np.gradient(u, axis=a) for a in (2, 1, 0)], axis=-1)  # (K, J, I, comp, index i/j/k)
    jac = np.eye(3) + du_didx @ np.linalg.inv(field.grid.affine[:3, :3])
    return np.linalg.det(jac)


def check_invertible(field: DisplacementField) -> float:
    """Raise :class:`MMRegError` if the Jacobian determinant is not positive everywhere; return its minimum."""
    det_min = float(jacobian_determinant(field).min())
    if not det_min > 0.0:
        raise MMRegError(
            f"synthetic ground truth folds (min Jacobian determinant {det_min:.3f}); "
            "reduce deformation_mm or probe_compression_mm, or increase their smoothness/decay"
        )
    return det_min


def invert_points(
    field: DisplacementField, moving_points: np.ndarray, tol_mm: float = 1e-4, max_iterations: int = 500
) -> np.ndarray:
    """``T^{-1}`` of moving points ``(N, 3)`` by fixed-point iteration ``p_f <- p_m - u(p_f)``.

    Raises :class:`MMRegError` unless ``|T(p_f) - p_m| < tol_mm`` for every point.
    """
    p_m = np.asarray(moving_points, dtype=np.float64).reshape(-1, 3)
    p_f = p_m.copy()
    for _ in range(max_iterations):
        new = p_m - (field.map_points_np(p_f) - p_f)
        step = float(np.abs(new - p_f).max()) if len(p_f) else 0.0
        p_f = new
        if step < tol_mm * 1e-2:
            break
    residual = np.linalg.norm(field.map_points_np(p_f) - p_m, axis=-1)
    if residual.size and float(residual.max()) >= tol_mm:
        raise MMRegError(f"could not invert the ground truth at a landmark (residual {residual.max():.2e} mm)")
    return p_f
