"""The working resolution of DISA registration, chosen from the two images (:func:`plan_resolution`).

Descriptors are computed on an isotropic working grid of spacing ``s`` and come out every ``stride x s`` mm (stride 4
for the DISA network, 2 for MIND-SSC); the similarity is evaluated at those positions inside the fixed field of view.
Too coarse a working grid leaves too few positions: on a 50 mm brain ultrasound at 1 mm only 393 remained and every
start ended at the same pose 5 mm off; too fine a grid costs time and memory for nothing. The rule:

1. ``overlap`` = the smaller of the two fields of view (mm^3; voxels above each image's field-of-view threshold):
   the images can share at most that much.
2. ``image spacing`` ``h`` = the finer of the two images' own voxel sizes (cube root of the voxel volume, so a 0.2 x
   0.2 x 2 mm ultrasound counts as 0.43 mm): finer working grids add no information.
3. ``s = clip(cbrt(overlap / TARGET_DESCRIPTORS) / stride, h, MAX_SPACING_MM)`` (0.01 mm steps, rounded down):
   the coarsest spacing at which the overlap holds :data:`TARGET_DESCRIPTORS` descriptor positions of the finest
   level, but never finer than the images and never coarser than 2 mm.
4. ``levels``: the finest level, plus one coarser level (descriptors blurred and halved, 8x fewer positions) for as
   long as that level still holds :data:`MIN_COARSE_DESCRIPTORS` positions (at most :data:`MAX_LEVELS`).

Each descriptor similarity uses its own stride (DISA 4, MIND-SSC 2), so both get the same number of positions: MIND
at twice DISA's spacing. Measured on the sample case and two generated cases (local rigid search): MIND-SSC at DISA's
0.8 mm was worse than at 2 mm (3.5 / 2.7 / 3.3 mm vs 2.1 / 1.6 / 2.8 mm landmark error) and 10x slower, as its
radius-1, dilation-2 patches then see mostly speckle. LC2 and Mattes MI recompute the images at every evaluation;
their default stays 2 mm (LC2 at 0.5 mm takes minutes).

Nothing is coarsened silently: when a working grid would exceed :data:`SLOW_WORKING_VOXELS` the plan carries a
warning (shown in the progress output and recorded in ``result.json``) with the size and a finer/coarser choice.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from MMRegistrationLib.core.image import Image

TARGET_DESCRIPTORS = 8000
"""Finest-level descriptor positions the automatic spacing aims for inside the overlap (before the field-of-view
margin removes the border ones)."""

MIN_COARSE_DESCRIPTORS = 150
"""A coarser pyramid level is added only while it keeps at least this many positions: a coarse level only has to
bring the pose near (every start is refined through every level and judged at the finest), so it may be sparse
(on DeepReg's 1.5 mm TRUS the second level keeps ~190)."""

MAX_LEVELS = 4
MAX_SPACING_MM = 2.0
"""The coarsest automatic working spacing (the DISA network's coarsest training spacing)."""

DISA_STRIDE = 4
STRIDES = {"disa": DISA_STRIDE, "mind": 2}
"""Descriptor stride (working voxels between descriptor positions) of each descriptor similarity."""
FIXED_SPACING_DEFAULT_MM = 2.0
FIXED_LEVELS_DEFAULT = 2
"""Automatic working spacing and levels of ``lc2`` and ``mi`` (recomputed at every evaluation: fine grids are slow)."""

SLOW_WORKING_VOXELS = 24_000_000
"""A working grid above this many voxels (e.g. 290^3) takes several seconds and gigabytes to describe: the plan warns."""


@dataclass(frozen=True)
class ResolutionPlan:
    """The working resolution of one registration (all lengths mm, volumes ml).

    Attributes:
        spacing_mm: isotropic working spacing of both images.
        levels: pyramid levels (finest = descriptors at ``stride x spacing_mm``).
        automatic: which of spacing/levels the rule chose (``{"spacing": bool, "levels": bool}``).
        overlap_ml: the smaller field of view (upper bound of the overlap).
        image_spacing_mm: the finer image's own voxel size (cube root of its voxel volume).
        points_spacing_mm: the spacing at which the overlap holds :data:`TARGET_DESCRIPTORS` positions.
        stride: working voxels between descriptor positions (4 DISA, 2 MIND-SSC).
        limited_by: ``"descriptor count"``, ``"image resolution"``, ``"coarsest spacing"`` or ``"given"``.
        expected_points: estimated positions per level, coarsest first (``overlap / (stride s 2^k)^3``).
        working_voxels: ``(fixed, moving)`` voxel counts of the two working grids.
        warnings: messages about slow or memory-hungry working grids.
    """

    spacing_mm: float
    levels: int
    automatic: dict
    overlap_ml: float
    image_spacing_mm: float
    points_spacing_mm: float
    stride: int
    limited_by: str
    expected_points: tuple
    working_voxels: tuple
    warnings: tuple = ()

    def as_dict(self) -> dict:
        out = asdict(self)
        out["expected_points"] = [int(v) for v in self.expected_points]
        out["working_voxels"] = [int(v) for v in self.working_voxels]
        out["warnings"] = list(self.warnings)
        out["rule"] = (f"spacing = clip(cbrt(overlap / {TARGET_DESCRIPTORS}) / stride, finer image spacing, "
                       f"{MAX_SPACING_MM:g} mm); a coarser level while it keeps >= {MIN_COARSE_DESCRIPTORS} positions")
        return out


def field_of_view_volume_mm3(image: Image, threshold: Optional[float]) -> float:
    """Volume (mm^3) of the voxels above ``threshold`` (every voxel when None)."""
    count = image.array.size if threshold is None else int(np.count_nonzero(image.array > threshold))
    return float(count) * float(image.grid.voxel_volume)


def voxel_size_mm(image: Image) -> float:
    """The cube root of the voxel volume: one number for an anisotropic voxel."""
    return float(image.grid.voxel_volume) ** (1.0 / 3.0)


def working_voxels(image: Image, spacing_mm: float) -> int:
    """Voxels of ``image``'s isotropic working grid at ``spacing_mm`` (same extent)."""
    extent = np.asarray(image.grid.size_ijk, dtype=np.float64) * image.grid.spacing
    return int(np.prod(np.maximum(1, np.round(extent / spacing_mm))))


def automatic_spacing(overlap_mm3: float, image_spacing_mm: float, stride: int = DISA_STRIDE,
                      target: int = TARGET_DESCRIPTORS) -> tuple:
    """``(spacing mm, unclipped spacing mm, limited_by)`` of rule step 3 (module docstring)."""
    points_spacing = (max(float(overlap_mm3), 0.0) / target) ** (1.0 / 3.0) / stride
    floor = math.floor(image_spacing_mm * 100.0 + 1e-6) / 100.0
    spacing = math.floor(points_spacing * 100.0 + 1e-6) / 100.0
    if spacing >= MAX_SPACING_MM:
        return MAX_SPACING_MM, points_spacing, "coarsest spacing"
    if spacing <= floor:
        return max(floor, 0.1), points_spacing, "image resolution"
    return spacing, points_spacing, "descriptor count"


def automatic_levels(finest_points: float) -> int:
    """Rule step 4: 1 + the coarser levels that keep :data:`MIN_COARSE_DESCRIPTORS` positions."""
    levels = 1
    while levels < MAX_LEVELS and finest_points / 8.0 ** levels >= MIN_COARSE_DESCRIPTORS:
        levels += 1
    return levels


def plan_resolution(fixed: Image, moving: Image, similarity: str = "disa", spacing_mm: Optional[float] = None,
                    levels: Optional[int] = None, fixed_fov_threshold: Optional[float] = 0.0,
                    moving_fov_threshold: Optional[float] = None) -> ResolutionPlan:
    """The working spacing and pyramid levels of a registration of ``moving`` onto ``fixed`` (module docstring);
    a given ``spacing_mm`` / ``levels`` is kept as it is."""
    overlap = min(field_of_view_volume_mm3(fixed, fixed_fov_threshold),
                  field_of_view_volume_mm3(moving, moving_fov_threshold))
    image_spacing = min(voxel_size_mm(fixed), voxel_size_mm(moving))
    stride = STRIDES.get(similarity, DISA_STRIDE)
    spacing, points_spacing, limited_by = automatic_spacing(overlap, image_spacing, stride)
    if similarity in ("lc2", "mi"):
        spacing, limited_by = FIXED_SPACING_DEFAULT_MM, f"{similarity} default"
    if spacing_mm is not None:
        spacing, limited_by = float(spacing_mm), "given"
    finest = overlap / (stride * spacing) ** 3
    n_levels = int(levels) if levels is not None else (
        FIXED_LEVELS_DEFAULT if similarity in ("lc2", "mi") else automatic_levels(finest))
    expected = tuple(finest / 8.0 ** k for k in reversed(range(n_levels)))
    voxels = (working_voxels(fixed, spacing), working_voxels(moving, spacing))
    warnings = tuple(
        f"the {name} image is {count / 1e6:.1f} M voxels at the working spacing {spacing:g} mm: describing it takes "
        f"several seconds and about {count * 16 * 4 * 3 / 1e9:.1f} GB; --spacing-mm {2 * spacing:g} would need 8x "
        "less" for name, count in (("fixed", voxels[0]), ("moving", voxels[1])) if count > SLOW_WORKING_VOXELS)
    return ResolutionPlan(spacing, n_levels, {"spacing": spacing_mm is None, "levels": levels is None},
                          overlap / 1000.0, image_spacing, points_spacing, stride, limited_by, expected, voxels,
                          warnings)
