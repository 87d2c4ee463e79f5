"""Analytic pelvic anatomy in patient-local coordinates ``q = (left, posterior, superior)`` mm, origin at the
prostate centre (see :mod:`.geometry`).

:meth:`Anatomy.evaluate` classifies points into :class:`Tissue` classes (appearance) which reduce to the label
map values of :data:`LABEL_NAMES` through :data:`LABEL_OF_TISSUE`. Everything is vectorised over point arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum

import numpy as np

LABEL_NAMES = {1: "prostate", 2: "bladder", 3: "rectum", 4: "pubic_bone"}
"""Label values of both segmentations."""


class Tissue(IntEnum):
    """Appearance classes (uint8 codes)."""

    FAT = 0
    MUSCLE = 1
    PERIPHERAL_ZONE = 2
    TRANSITION_ZONE = 3
    NODULE_DARK = 4
    NODULE_BRIGHT = 5
    FIBROMUSCULAR_STROMA = 6
    CAPSULE = 7
    URETHRA = 8
    CALCIFICATION = 9
    URINE = 10
    BLADDER_WALL = 11
    RECTAL_WALL = 12
    RECTAL_LUMEN = 13
    CORTICAL_BONE = 14
    BONE_MARROW = 15
    SYMPHYSIS = 16
    SEMINAL_VESICLE = 17
    RECTAL_SUBMUCOSA = 18
    VESSEL_DARK = 19
    VESSEL_BRIGHT = 20


NUM_TISSUES = len(Tissue)

LABEL_OF_TISSUE = np.zeros(NUM_TISSUES, dtype=np.uint8)
"""Segmentation label of each tissue class."""
for _t in (Tissue.PERIPHERAL_ZONE, Tissue.TRANSITION_ZONE, Tissue.NODULE_DARK, Tissue.NODULE_BRIGHT,
           Tissue.FIBROMUSCULAR_STROMA, Tissue.CAPSULE, Tissue.URETHRA, Tissue.CALCIFICATION):
    LABEL_OF_TISSUE[_t] = 1
LABEL_OF_TISSUE[[Tissue.URINE, Tissue.BLADDER_WALL]] = 2
LABEL_OF_TISSUE[[Tissue.RECTAL_WALL, Tissue.RECTAL_SUBMUCOSA, Tissue.RECTAL_LUMEN]] = 3
LABEL_OF_TISSUE[[Tissue.CORTICAL_BONE, Tissue.BONE_MARROW, Tissue.SYMPHYSIS]] = 4


@dataclass(frozen=True)
class Harmonics:
    """Low-frequency radial perturbation ``delta(n) = sum_k amp_k cos(omega_k . n + phase_k)`` of a unit
    direction ``n``. Shapes: ``omega (K, 3)``, ``amp (K,)``, ``phase (K,)``."""

    omega: np.ndarray
    amp: np.ndarray
    phase: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, terms: int, amplitude: float) -> "Harmonics":
        directions = rng.normal(size=(terms, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        omega = directions * rng.uniform(1.2, 2.8, size=(terms, 1))
        return cls(omega, rng.normal(0.0, amplitude, size=terms), rng.uniform(0, 2 * np.pi, size=terms))

    def __call__(self, q: np.ndarray) -> np.ndarray:
        n = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-9)
        return np.clip(np.cos(n @ self.omega.T + self.phase) @ self.amp, -0.14, 0.14)


@dataclass(frozen=True)
class Anatomy:
    """Random-but-plausible sizes (mm, patient-local) of one case. Build with :meth:`random`."""

    gland_axes: np.ndarray  # (3,) semi-axes LR, AP, SI (~22.5, 15, 17.5)
    gland_shape: Harmonics
    tz_centre: np.ndarray
    tz_axes: np.ndarray
    tz_shape: Harmonics
    nodule_centres: np.ndarray  # (N, 3)
    nodule_radii: np.ndarray  # (N, 3)
    nodule_dark: np.ndarray  # (N,) bool
    bladder_centre: np.ndarray
    bladder_axes: np.ndarray
    bladder_shape: Harmonics
    rectum_y: float
    vessels: np.ndarray  # (V, 7): x0, y0, tilt_x, tilt_y, wiggle_amp, wiggle_phase, radius
    vessel_bright: np.ndarray  # (V,) bool
    texture_omega: np.ndarray  # (M, 3) rad/mm
    texture_phase: np.ndarray  # (M,)
    calcification_centres: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    calcification_radii: np.ndarray = field(default_factory=lambda: np.zeros(0))

    # fixed (not random) dimensions
    posterior_flattening = 0.86
    base_widening = 0.14
    capsule_mm = 1.1
    urethra_radius = 1.8
    bladder_wall_mm = 3.0
    rectal_lumen = (9.0, 3.5)  # LR, AP semi-axes of the (collapsed) lumen
    rectal_wall_mm = 3.5
    pubic_arc_y = 5.0
    pubic_arc_radius = 38.0
    pubic_half_thickness = 5.5
    pubic_z = (-14.0, 20.0)
    pubic_max_angle_deg = 68.0
    cortex_mm = 1.6

    @classmethod
    def random(cls, rng: np.random.Generator) -> "Anatomy":
        gland = np.array([22.5, 15.0, 17.5]) * rng.uniform(0.9, 1.1, size=3)
        tz_axes = gland * np.array([0.58, 0.5, 0.6]) * rng.uniform(0.9, 1.1, size=3)
        tz_centre = np.array([0.0, -0.2 * gland[1], 0.12 * gland[2]]) + rng.uniform(-1.0, 1.0, size=3)
        n_nod = int(rng.integers(3, 6))
        nod_dir = rng.normal(size=(n_nod, 3))
        nod_dir /= np.linalg.norm(nod_dir, axis=1, keepdims=True)
        nod_centres = tz_centre + nod_dir * tz_axes * rng.uniform(0.2, 0.7, size=(n_nod, 1))
        nod_radii = rng.uniform(2.5, 5.5, size=(n_nod, 1)) * rng.uniform(0.8, 1.2, size=(n_nod, 3))
        bladder_axes = np.array([30.0, 24.0, 21.0]) * rng.uniform(0.9, 1.1, size=3)
        bladder_centre = np.array([0.0, -9.0, gland[2] + bladder_axes[2] - 1.5])
        rectum_y = gland[1] * cls.posterior_flattening + 2.0 + cls.rectal_wall_mm + cls.rectal_lumen[1]
        vessels = []
        for side in (-1.0, 1.0):  # neurovascular bundles, postero-lateral
            vessels.append([side * 0.78 * gland[0], 0.62 * gland[1], side * 0.03, 0.02, 1.0, rng.uniform(0, 6.3), 2.0])
        for _ in range(int(rng.integers(7, 12))):  # periprostatic / pelvic vessels in the fat
            phi = rng.uniform(0, 2 * np.pi)
            rad = rng.uniform(1.15, 1.6)
            x0, y0 = rad * gland[0] * np.sin(phi), -rad * gland[1] * 1.3 * np.cos(phi)
            tilt = rng.uniform(-0.15, 0.15, size=2)
            vessels.append([x0, y0, tilt[0], tilt[1], rng.uniform(0.5, 2.5), rng.uniform(0, 6.3), rng.uniform(0.8, 1.7)])
        vessels = np.array(vessels)
        m = 18
        tdir = rng.normal(size=(m, 3))
        tdir /= np.linalg.norm(tdir, axis=1, keepdims=True)
        omega = tdir * (2 * np.pi / rng.uniform(3.0, 12.0, size=(m, 1)))
        return cls(
            gland_axes=gland,
            gland_shape=Harmonics.random(rng, 6, 0.03),
            tz_centre=tz_centre,
            tz_axes=tz_axes,
            tz_shape=Harmonics.random(rng, 5, 0.04),
            nodule_centres=nod_centres,
            nodule_radii=nod_radii,
            nodule_dark=rng.random(n_nod) < 0.6,
            bladder_centre=bladder_centre,
            bladder_axes=bladder_axes,
            bladder_shape=Harmonics.random(rng, 5, 0.03),
            rectum_y=float(rectum_y),
            vessels=vessels,
            vessel_bright=np.arange(len(vessels)) >= 2,
            texture_omega=omega,
            texture_phase=rng.uniform(0, 2 * np.pi, size=m),
        )

    def with_calcifications(self, centres: np.ndarray, radii: np.ndarray) -> "Anatomy":
        return replace(self, calcification_centres=np.asarray(centres, float).reshape(-1, 3),
                       calcification_radii=np.asarray(radii, float).reshape(-1))

    @property
    def rectal_inner_wall_y(self) -> float:
        """Local AP position of the anterior inner rectal wall (where the probe surface should sit)."""
        return self.rectum_y - self.rectal_lumen[1]

    # ---- shapes ---------------------------------------------------------------------------------
    def gland_radius(self, q: np.ndarray) -> np.ndarray:
        """Normalised radius ``(N,)`` of the gland: < 1 inside; 1 on the (perturbed) capsule surface."""
        a, b, c = self.gland_axes
        x, y, z = q[:, 0], q[:, 1], q[:, 2]
        a_z = a * (1.0 + self.base_widening * np.clip(z / c, -1.0, 1.0))
        b_y = np.where(y > 0, b * self.posterior_flattening, b)
        rho = np.sqrt((x / a_z) ** 2 + (y / b_y) ** 2 + (z / c) ** 2)
        return rho / (1.0 + self.gland_shape(q))

    def _ellipsoid_radius(self, q, centre, axes, shape: Harmonics | None = None) -> np.ndarray:
        d = q - centre
        rho = np.sqrt(((d / axes) ** 2).sum(axis=1))
        return rho if shape is None else rho / (1.0 + shape(d))

    def texture(self, q: np.ndarray) -> np.ndarray:
        """Smooth anatomical texture ``(N,)`` with zero mean and unit variance (float32)."""
        out = np.zeros(len(q), dtype=np.float64)
        for w, p in zip(self.texture_omega, self.texture_phase):
            out += np.cos(q @ w + p)
        return (out * np.sqrt(2.0 / len(self.texture_phase))).astype(np.float32)

    # ---- classification ---------------------------------------------------------------------------
    def evaluate(self, q: np.ndarray) -> np.ndarray:
        """Tissue class ``(N,)`` uint8 of local points ``q`` ``(N, 3)`` (later assignments take priority)."""
        q = np.asarray(q, dtype=np.float64).reshape(-1, 3)
        x, y, z = q[:, 0], q[:, 1], q[:, 2]
        t = np.full(len(q), Tissue.FAT, dtype=np.uint8)

        # muscles: obturator internus (lateral walls) and levator ani (sling around gland and rectum)
        t[np.abs(x) > 37.0 + 0.006 * (y + 4.0) ** 2 + 2.0 * np.sin(z / 9.0)] = Tissue.MUSCLE
        e = np.sqrt((x / 31.0) ** 2 + ((y - 9.0) / 23.0) ** 2)
        t[(e > 1.0) & (e < 1.0 + 3.0 / 27.0) & (y > 0.0) & (z < 8.0)] = Tissue.MUSCLE
        self._vessels(q, t)

        self._pubic_bone(q, t)

        # seminal vesicles: two lobulated tubes postero-superior to the gland, pointing laterally
        a, b, c = self.gland_axes
        for side in (-1.0, 1.0):
            ang = np.deg2rad(28.0) * side
            dx, dy, dz = x - side * 13.0, y - (0.55 * b + 1.0), z - (c + 4.0)
            u = np.cos(ang) * dx + np.sin(ang) * dz
            w = -np.sin(ang) * dx + np.cos(ang) * dz
            wob = 1.0 + 0.18 * np.cos(u * 0.9)
            inside = (u / 12.0) ** 2 + (dy / (4.0 * wob)) ** 2 + (w / 5.5) ** 2 < 1.0
            t[inside] = Tissue.SEMINAL_VESICLE

        # bladder (urine inside a 3 mm wall)
        rb = self._ellipsoid_radius(q, self.bladder_centre, self.bladder_axes, self.bladder_shape)
        inside = rb < 1.0
        depth = np.linalg.norm(q - self.bladder_centre, axis=1) * (1.0 / np.maximum(rb, 1e-6) - 1.0)
        t[inside] = Tissue.BLADDER_WALL
        t[inside & (depth > self.bladder_wall_mm)] = Tissue.URINE

        # rectum: elliptic tube along SI, wall around a collapsed lumen
        la, lb = self.rectal_lumen
        w = self.rectal_wall_mm
        dy = y - self.rectum_y
        t[(x / (la + w)) ** 2 + (dy / (lb + w)) ** 2 < 1.0] = Tissue.RECTAL_WALL
        t[(x / (la + 1.3)) ** 2 + (dy / (lb + 1.3)) ** 2 < 1.0] = Tissue.RECTAL_SUBMUCOSA
        t[(x / la) ** 2 + (dy / lb) ** 2 < 1.0] = Tissue.RECTAL_LUMEN

        self._gland(q, t)
        return t

    def _vessels(self, q: np.ndarray, t: np.ndarray) -> None:
        fat = np.flatnonzero(t == Tissue.FAT)
        x, y, z = q[fat, 0], q[fat, 1], q[fat, 2]
        for (x0, y0, tx, ty, amp, phase, radius), bright in zip(self.vessels, self.vessel_bright):
            dx = x - (x0 + tx * z + amp * np.sin(z / 7.0 + phase))
            dy = y - (y0 + ty * z + amp * np.cos(z / 9.0 + phase))
            t[fat[dx * dx + dy * dy < radius * radius]] = Tissue.VESSEL_BRIGHT if bright else Tissue.VESSEL_DARK

    def _pubic_bone(self, q: np.ndarray, t: np.ndarray) -> None:
        x, y, z = q[:, 0], q[:, 1], q[:, 2]
        dy = y - self.pubic_arc_y
        rho = np.hypot(x, dy)
        phi = np.degrees(np.arctan2(np.abs(x), -dy))  # angle from anterior
        z0, z1 = self.pubic_z
        zc, hz = 0.5 * (z0 + z1), 0.5 * (z1 - z0)
        h = self.pubic_half_thickness
        ends = np.clip((phi - self.pubic_max_angle_deg + 8.0) / 8.0, 0.0, None)  # rounded lateral ends
        f_out = ((rho - self.pubic_arc_radius) / h) ** 2 + ((z - zc) / hz) ** 4 + ends**2
        cm = self.cortex_mm
        f_in = ((rho - self.pubic_arc_radius) / (h - cm)) ** 2 + ((z - zc) / (hz - cm)) ** 4 + (ends * 1.3) ** 2
        bone = f_out < 1.0
        t[bone] = Tissue.CORTICAL_BONE
        t[bone & (f_in < 1.0)] = Tissue.BONE_MARROW
        t[bone & (np.abs(x) < 1.4)] = Tissue.SYMPHYSIS

    def _gland(self, q: np.ndarray, t: np.ndarray) -> None:
        x, y, z = q[:, 0], q[:, 1], q[:, 2]
        a, b, c = self.gland_axes
        # work on the gland's bounding box only (cheaper)
        box = (np.abs(x) < 1.6 * a) & (np.abs(y) < 1.6 * b) & (np.abs(z) < 1.4 * c)
        sub = np.flatnonzero(box)
        qs = q[sub]
        xs, ys, zs = qs[:, 0], qs[:, 1], qs[:, 2]
        rho = self.gland_radius(qs)
        gland = rho < 1.0
        ts = t[sub]
        ts[gland] = Tissue.PERIPHERAL_ZONE
        tz = gland & (self._ellipsoid_radius(qs, self.tz_centre, self.tz_axes, self.tz_shape) < 1.0)
        afms = gland & ~tz & (ys < -0.5 * b + 0.3 * b * (xs / (0.7 * a)) ** 2)
        ts[afms] = Tissue.FIBROMUSCULAR_STROMA
        ts[tz] = Tissue.TRANSITION_ZONE
        for centre, radii, dark in zip(self.nodule_centres, self.nodule_radii, self.nodule_dark):
            inside = tz & (self._ellipsoid_radius(qs, centre, radii) < 1.0)
            ts[inside] = Tissue.NODULE_DARK if dark else Tissue.NODULE_BRIGHT
        uy = -0.22 * b + 0.12 * b * zs / c
        ts[gland & (xs**2 + (ys - uy) ** 2 < self.urethra_radius**2)] = Tissue.URETHRA
        depth = np.linalg.norm(qs, axis=1) * (1.0 / np.maximum(rho, 1e-6) - 1.0)
        ts[gland & (depth < self.capsule_mm)] = Tissue.CAPSULE
        for centre, radius in zip(self.calcification_centres, self.calcification_radii):
            ts[((qs - centre) ** 2).sum(axis=1) < radius**2] = Tissue.CALCIFICATION
        t[sub] = ts

    def labels(self, tissue: np.ndarray) -> np.ndarray:
        """Segmentation labels (uint8) of tissue codes."""
        return LABEL_OF_TISSUE[tissue]

    def urethra_distance(self, q: np.ndarray) -> np.ndarray:
        b, c = self.gland_axes[1], self.gland_axes[2]
        uy = -0.22 * b + 0.12 * b * q[:, 2] / c
        return np.hypot(q[:, 0], q[:, 1] - uy)
