"""Configuration of the synthetic MR (moving) / TRUS (fixed) case generator."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Tuple

import numpy as np

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.options import check_known_fields

Vec3 = Tuple[float, float, float]
Size3 = Tuple[int, int, int]


@dataclass(frozen=True)
class SyntheticCaseConfig:
    """Every knob of :func:`~MMRegistrationLib.synthetic.generate_case`; a case is a pure function of it.

    Sizes and spacings are ITK-ordered ``(i, j, k)`` (``x`` fastest); spacings in mm. ``scale`` multiplies the
    number of voxels along each axis of both images while keeping their fields of view (so ``scale=0.5``
    gives half as many voxels per axis at twice the spacing) — handy for fast tests.

    Attributes:
        seed: random seed; the same config always produces identical arrays.
        oblique: non-identity (rotated) direction matrices on both grids (different from each other).
        deformation_mm: maximum magnitude (mm) of the smooth random (Gaussian-smoothed noise) deformation.
        deformation_smoothness_mm: Gaussian sigma (mm) used to smooth that noise.
        probe_compression_mm: anterior push (mm) of tissue touching the TRUS probe; decays with distance.
        probe_compression_decay_mm: Gaussian decay length (mm) of that push, measured from the probe surface.
        rigid_rotation_deg: rotation (degrees) of the random rigid offset between the two world spaces
            (random axis; angle uniform in [0.5, 1] x this value).
        rigid_translation_mm: translation (mm) of that rigid offset (random direction; length uniform in
            [0.5, 1] x this value).
        scale: voxel-count factor applied to both image grids (field of view unchanged).
        moving_spacing / moving_size: MR grid (anisotropic: thick slices along k).
        fixed_spacing / fixed_size: TRUS grid.
        ground_truth_spacing_mm: spacing of the coarse ground-truth displacement grid (fixed field of view).
        mr_noise: Rician noise sigma relative to the signal of fat.
        mr_bias: amplitude of the smooth multiplicative MR bias field (0 = none, 0.25 = about +-25 %).
        mr_blur_mm: Gaussian sigma (mm) of the slight partial-volume blur of the MR.
        trus_speckle: speckle strength, 0 (none) .. 1 (fully developed Rayleigh speckle).
        trus_noise: additive electronic noise of the TRUS envelope, relative to tissue echo.
        trus_dynamic_range_db: log-compression dynamic range of the TRUS display (dB).
        probe_radius_mm: TRUS probe radius; the sector starts at the probe surface.
        sector_radius_mm: imaging depth, measured from the probe axis.
        sector_half_angle_deg: half opening angle of the sector around the anterior direction.
        sector_length_mm: extent of the imaged region along the probe axis.
        num_calcifications: number of calcifications (landmarks) or ``None`` for a seeded choice in 4..6.
    """

    seed: int = 0
    oblique: bool = True
    deformation_mm: float = 4.0
    deformation_smoothness_mm: float = 16.0
    probe_compression_mm: float = 5.0
    probe_compression_decay_mm: float = 14.0
    rigid_rotation_deg: float = 4.0
    rigid_translation_mm: float = 4.0
    scale: float = 1.0
    moving_spacing: Vec3 = (0.7, 0.7, 2.0)
    moving_size: Size3 = (128, 128, 40)
    fixed_spacing: Vec3 = (0.8, 0.8, 0.8)
    fixed_size: Size3 = (112, 96, 88)
    ground_truth_spacing_mm: float = 2.0
    mr_noise: float = 0.03
    mr_bias: float = 0.25
    mr_blur_mm: float = 0.35
    trus_speckle: float = 1.0
    trus_noise: float = 0.02
    trus_dynamic_range_db: float = 50.0
    probe_radius_mm: float = 10.0
    sector_radius_mm: float = 65.0
    sector_half_angle_deg: float = 60.0
    sector_length_mm: float = 64.0
    num_calcifications: int | None = None

    def __post_init__(self):
        for name in ("moving_spacing", "fixed_spacing"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3 or min(value) <= 0:
                raise InputError(name, f"must be three positive spacings in mm, got {value}")
            object.__setattr__(self, name, value)
        for name in ("moving_size", "fixed_size"):
            value = tuple(int(v) for v in getattr(self, name))
            if len(value) != 3 or min(value) < 4:
                raise InputError(name, f"must be three sizes >= 4, got {value}")
            object.__setattr__(self, name, value)
        positive = ("scale", "ground_truth_spacing_mm", "deformation_smoothness_mm", "probe_compression_decay_mm",
                    "probe_radius_mm", "sector_radius_mm", "sector_half_angle_deg", "sector_length_mm",
                    "trus_dynamic_range_db")
        for name in positive:
            if not float(getattr(self, name)) > 0:
                raise InputError(name, f"must be > 0, got {getattr(self, name)}")
        non_negative = ("deformation_mm", "probe_compression_mm", "rigid_rotation_deg", "rigid_translation_mm",
                        "mr_noise", "mr_bias", "mr_blur_mm", "trus_speckle", "trus_noise")
        for name in non_negative:
            if not float(getattr(self, name)) >= 0:
                raise InputError(name, f"must be >= 0, got {getattr(self, name)}")
        if self.sector_radius_mm <= self.probe_radius_mm + 20:
            raise InputError("sector_radius_mm", "must exceed probe_radius_mm by at least 20 mm")
        if self.sector_half_angle_deg > 85:
            raise InputError("sector_half_angle_deg", "must be <= 85 degrees")
        if self.rigid_rotation_deg > 20:
            raise InputError("rigid_rotation_deg", "must be <= 20 degrees (a small offset)")
        if self.trus_speckle > 1:
            raise InputError("trus_speckle", "must be in [0, 1]")
        if self.num_calcifications is not None and not 1 <= int(self.num_calcifications) <= 12:
            raise InputError("num_calcifications", "must be between 1 and 12 (or None)")

    # ---- derived geometry ------------------------------------------------------------------------
    @staticmethod
    def _scaled(size: Size3, spacing: Vec3, scale: float) -> tuple:
        size_in = np.asarray(size, dtype=np.float64)
        new_size = np.maximum(4, np.round(size_in * scale)).astype(int)
        new_spacing = np.asarray(spacing, dtype=np.float64) * size_in / new_size
        return tuple(int(s) for s in new_size), tuple(float(s) for s in new_spacing)

    @property
    def moving_geometry(self) -> tuple:
        """``(size_ijk, spacing_ijk)`` of the MR grid after ``scale``."""
        return self._scaled(self.moving_size, self.moving_spacing, self.scale)

    @property
    def fixed_geometry(self) -> tuple:
        """``(size_ijk, spacing_ijk)`` of the TRUS grid after ``scale``."""
        return self._scaled(self.fixed_size, self.fixed_spacing, self.scale)

    # ---- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-friendly dict (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "SyntheticCaseConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`InputError`."""
        check_known_fields(cls, data)
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})
