"""Frames, grids and the TRUS probe of a synthetic case.

Coordinate systems (all mm):

* MR world (moving, LPS) and TRUS world (fixed, LPS), related by the ground truth ``T`` (fixed -> moving).
* Patient-local coordinates ``q = (left, posterior, superior)`` centred on the prostate. In the MR world
  ``x_m = centre + P @ q_m``; in the TRUS world ``x_f = centre + F @ q_f`` where ``F`` is the probe frame
  (the fixed grid's direction) and ``P = R @ F`` (``R`` the rigid part of ``T``). Without the non-rigid parts,
  ``q_m = q_f + d`` with ``d = F^T R^T t``, so the probe is aligned with the patient's SI axis.
* Probe cylindrical coordinates around the probe axis (along ``F[:, 2]``): ``s`` along the axis, ``r``
  distance from it, ``theta`` angle from anterior (``-F[:, 1]``) towards left (``F[:, 0]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from MMRegistrationLib.core.grid import Grid


def rotation_from_vector(rotation_vector: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle vector ``(3,)`` in radians -> ``(3, 3)`` rotation matrix."""
    v = np.asarray(rotation_vector, dtype=np.float64)
    theta = float(np.linalg.norm(v))
    if theta < 1e-12:
        return np.eye(3)
    k = v / theta
    skew = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(theta) * skew + (1.0 - np.cos(theta)) * (skew @ skew)


def random_unit(rng: np.random.Generator) -> np.ndarray:
    """Uniformly distributed unit vector ``(3,)``."""
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def random_sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


@dataclass(frozen=True)
class CaseFrames:
    """World-space frames of one case.

    Attributes:
        centre: ``(3,)`` prostate centre, MR world mm (also the rigid rotation centre in the TRUS world).
        rigid_rotation: ``(3, 3)`` ``R`` of the rigid part ``x_m = R (x_f - centre) + centre + t``.
        rigid_translation: ``(3,)`` ``t`` (mm).
        probe_frame: ``(3, 3)`` ``F``, columns (left, posterior, probe axis) in the TRUS world; fixed grid direction.
        patient_frame: ``(3, 3)`` ``P = R F``, columns (left, posterior, superior) of the anatomy in the MR world.
        moving_direction: ``(3, 3)`` MR grid direction.
    """

    centre: np.ndarray
    rigid_rotation: np.ndarray
    rigid_translation: np.ndarray
    probe_frame: np.ndarray
    patient_frame: np.ndarray
    moving_direction: np.ndarray

    @property
    def local_offset(self) -> np.ndarray:
        """``d = F^T R^T t``: the rigid translation expressed in patient-local coordinates."""
        return self.probe_frame.T @ self.rigid_rotation.T @ self.rigid_translation

    def fixed_to_local(self, points: np.ndarray) -> np.ndarray:
        """TRUS world ``(..., 3)`` -> fixed patient-local ``q_f``."""
        return (np.asarray(points, dtype=np.float64) - self.centre) @ self.probe_frame

    def local_to_fixed(self, q: np.ndarray) -> np.ndarray:
        return np.asarray(q, dtype=np.float64) @ self.probe_frame.T + self.centre

    def moving_to_local(self, points: np.ndarray) -> np.ndarray:
        """MR world ``(..., 3)`` -> patient-local ``q_m`` (where the anatomy is defined)."""
        return (np.asarray(points, dtype=np.float64) - self.centre) @ self.patient_frame

    def local_to_moving(self, q: np.ndarray) -> np.ndarray:
        return np.asarray(q, dtype=np.float64) @ self.patient_frame.T + self.centre


def make_frames(rng: np.random.Generator, oblique: bool, rotation_deg: float, translation_mm: float) -> CaseFrames:
    """Draw the rigid offset and (when ``oblique``) the probe tilt/roll and the MR slice obliquity."""
    centre = np.array([4.2, -11.5, 26.0]) + rng.uniform(-3.0, 3.0, size=3)
    angle = np.deg2rad(rotation_deg) * rng.uniform(0.5, 1.0)
    rigid = rotation_from_vector(random_unit(rng) * angle)
    translation = random_unit(rng) * translation_mm * rng.uniform(0.5, 1.0)
    if oblique:
        tilt = random_sign(rng) * rng.uniform(9.0, 16.0)  # probe pitched in the sagittal plane
        roll = random_sign(rng) * rng.uniform(3.0, 7.0)  # probe rotated about its own axis
        yaw = rng.uniform(-4.0, 4.0)
        probe = rotation_from_vector(np.deg2rad([tilt, 0.0, 0.0])) @ rotation_from_vector(np.deg2rad([0.0, yaw, 0.0]))
        probe = probe @ rotation_from_vector(np.deg2rad([0.0, 0.0, roll]))
        patient = rigid @ probe
        # oblique-axial MR planning: slices tilted a few degrees from the prostate's axes
        plan = rotation_from_vector(np.deg2rad([random_sign(rng) * rng.uniform(5.0, 9.0), rng.uniform(-5.0, 5.0), 0.0]))
        moving_direction = patient @ plan
    else:
        probe = np.eye(3)
        patient = rigid
        moving_direction = np.eye(3)
    return CaseFrames(centre, rigid, translation, probe, patient, moving_direction)


# ---- grids ------------------------------------------------------------------------------------------
MOVING_FOV_CENTRE_LOCAL = np.array([0.0, -3.0, 5.0])
"""Patient-local point at the centre of the MR field of view (prostate, bladder base, rectum, pubis)."""

FIXED_FOV_CENTRE_Z = 4.0
"""Patient-local SI position of the centre of the TRUS field of view."""

FIXED_BEHIND_PROBE_MM = 7.0
"""Distance from the probe axis to the most posterior TRUS voxel centre."""


def make_moving_grid(frames: CaseFrames, size_ijk, spacing) -> Grid:
    """MR grid centred on :data:`MOVING_FOV_CENTRE_LOCAL` with ``frames.moving_direction``."""
    size = np.asarray(size_ijk, dtype=np.float64)
    spacing = np.asarray(spacing, dtype=np.float64)
    centre = frames.local_to_moving(MOVING_FOV_CENTRE_LOCAL)
    origin = centre - frames.moving_direction @ (spacing * (size - 1) / 2.0)
    return Grid.from_geometry(tuple(int(s) for s in size_ijk[::-1]), spacing, origin, frames.moving_direction)


def make_fixed_grid(frames: CaseFrames, probe_y_local: float, size_ijk, spacing) -> Grid:
    """TRUS grid aligned with the probe: i left, j posterior, k along the probe axis.

    The probe axis (at fixed patient-local ``(0, probe_y_local, *)``) runs through the middle of ``i``,
    :data:`FIXED_BEHIND_PROBE_MM` in front of the posterior border.
    """
    size = np.asarray(size_ijk, dtype=np.float64)
    spacing = np.asarray(spacing, dtype=np.float64)
    j_axis = (size[1] - 1) - FIXED_BEHIND_PROBE_MM / spacing[1]
    origin_local = np.array(
        [
            -spacing[0] * (size[0] - 1) / 2.0,
            probe_y_local - j_axis * spacing[1],
            FIXED_FOV_CENTRE_Z - spacing[2] * (size[2] - 1) / 2.0,
        ]
    )
    origin = frames.local_to_fixed(origin_local)
    return Grid.from_geometry(tuple(int(s) for s in size_ijk[::-1]), spacing, origin, frames.probe_frame)


# ---- probe ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeGeometry:
    """The TRUS probe and its sector field of view, in the TRUS (fixed) world.

    Attributes:
        axis_point: ``(3,)`` a point on the probe axis, LPS mm (at the prostate's mid level).
        axis: ``(3,)`` unit vector along the probe axis (towards superior).
        anterior: ``(3,)`` unit vector, centre of the sector (perpendicular to ``axis``).
        left: ``(3,)`` unit vector completing the frame (``theta > 0`` towards it).
        radius_mm: probe radius; the sector starts at the probe surface.
        depth_mm: sector radius measured from the axis.
        half_angle_deg: half opening angle around ``anterior``.
        s_range_mm: ``(s_min, s_max)`` extent along the axis, measured from ``axis_point``.
    """

    axis_point: np.ndarray
    axis: np.ndarray
    anterior: np.ndarray
    left: np.ndarray
    radius_mm: float
    depth_mm: float
    half_angle_deg: float
    s_range_mm: tuple

    def cylindrical(self, points: np.ndarray) -> tuple:
        """World points ``(..., 3)`` -> ``(s, r, theta)`` arrays (mm, mm, radians)."""
        rel = np.asarray(points, dtype=np.float64) - self.axis_point
        s = rel @ self.axis
        a = rel @ self.anterior
        l = rel @ self.left
        return s, np.hypot(a, l), np.arctan2(l, a)

    def from_cylindrical(self, s: np.ndarray, r: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`cylindrical`: broadcastable arrays -> world points ``(..., 3)``."""
        s, r, theta = np.broadcast_arrays(s, r, theta)
        a = r * np.cos(theta)
        l = r * np.sin(theta)
        return (
            self.axis_point
            + s[..., None] * self.axis
            + a[..., None] * self.anterior
            + l[..., None] * self.left
        )

    def inside_cylindrical(self, s, r, theta, margin_mm: float = 0.0, margin_deg: float = 0.0) -> np.ndarray:
        """True where cylindrical coordinates (see :meth:`cylindrical`) lie inside the imaged sector, shrunk
        by the margins."""
        return (
            (r >= self.radius_mm + margin_mm)
            & (r <= self.depth_mm - margin_mm)
            & (np.abs(theta) <= np.deg2rad(self.half_angle_deg - margin_deg))
            & (s >= self.s_range_mm[0] + margin_mm)
            & (s <= self.s_range_mm[1] - margin_mm)
        )

    def inside(self, points: np.ndarray, margin_mm: float = 0.0, margin_deg: float = 0.0) -> np.ndarray:
        """True for world points ``(..., 3)`` inside the imaged sector (shrunk by the margins)."""
        return self.inside_cylindrical(*self.cylindrical(points), margin_mm=margin_mm, margin_deg=margin_deg)

    def sector_mask(self, grid: Grid) -> np.ndarray:
        """Boolean ``(K, J, I)`` mask of the voxels of ``grid`` inside the sector (where TRUS is non-zero)."""
        return self.inside(grid.world_points())

    def to_dict(self) -> dict:
        return {
            "axis_point": [float(v) for v in self.axis_point],
            "axis": [float(v) for v in self.axis],
            "anterior": [float(v) for v in self.anterior],
            "left": [float(v) for v in self.left],
            "radius_mm": float(self.radius_mm),
            "depth_mm": float(self.depth_mm),
            "half_angle_deg": float(self.half_angle_deg),
            "s_range_mm": [float(v) for v in self.s_range_mm],
        }


def make_probe(frames: CaseFrames, probe_y_local: float, radius_mm: float, depth_mm: float,
               half_angle_deg: float, length_mm: float) -> ProbeGeometry:
    """Probe along ``F[:, 2]`` through fixed patient-local ``(0, probe_y_local, 0)``."""
    f = frames.probe_frame
    return ProbeGeometry(
        axis_point=frames.local_to_fixed(np.array([0.0, probe_y_local, 0.0])),
        axis=f[:, 2].copy(),
        anterior=-f[:, 1].copy(),
        left=f[:, 0].copy(),
        radius_mm=float(radius_mm),
        depth_mm=float(depth_mm),
        half_angle_deg=float(half_angle_deg),
        s_range_mm=(FIXED_FOV_CENTRE_Z - length_mm / 2.0, FIXED_FOV_CENTRE_Z + length_mm / 2.0),
    )
