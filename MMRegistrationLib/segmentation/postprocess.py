"""What follows a segmentation network's prediction: one gland, no holes, and the warnings a user must see.

Post-processing: the largest connected component (26-connectivity), then its holes filled (3-D). Quality check of
a gland mask on its grid: a volume outside ``[MIN_GLAND_ML, MAX_GLAND_ML]`` ml, several large components in the raw
prediction (each at least ``LARGE_COMPONENT_FRACTION`` of the largest), a mask touching the field-of-view border, or
an irregular shape (solidity, the volume over its convex hull's, below ``MIN_SOLIDITY``: drawn glands are nearly
convex, 0.90-1.0 on the DeepReg training labels of both modalities, whereas failed predictions on real TRUS scored
0.45-0.57).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from MMRegistrationLib.core.grid import Grid

MIN_GLAND_ML = 10.0
MAX_GLAND_ML = 250.0
LARGE_COMPONENT_FRACTION = 0.1
MIN_SOLIDITY = 0.8
HULL_POINTS = 20000
"""At most this many voxel centres (a seeded random subset) span the convex hull."""
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity: diagonal neighbours belong to the same component


def component_sizes(mask: np.ndarray) -> tuple:
    """``(labels (K, J, I) int, sizes (n,) voxels of components 1..n)`` of a boolean mask."""
    labels, count = ndimage.label(mask, structure=_CONNECTIVITY)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return labels, sizes


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of ``mask`` with its holes filled (boolean, same shape); empty stays empty."""
    labels, sizes = component_sizes(np.asarray(mask, dtype=bool))
    if sizes.size == 0:
        return np.zeros(np.shape(mask), dtype=bool)
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


def volume_ml(mask: np.ndarray, grid: Grid) -> float:
    """Volume of a boolean mask on ``grid`` in millilitres (cm^3)."""
    return float(np.count_nonzero(mask) * np.prod(grid.spacing) / 1000.0)


def touches_border(mask: np.ndarray) -> bool:
    """True if the mask has a voxel on any outer face of its grid."""
    return any(np.any(np.take(mask, index, axis=axis)) for axis in range(3) for index in (0, -1))


def solidity(mask: np.ndarray, grid: Grid) -> float:
    """The mask's volume over the volume of the convex hull of its voxel centres (1 for a convex shape; it can
    exceed 1 a little, as voxels reach half a voxel beyond their centres); NaN when there is no hull (flat or tiny)."""
    from scipy.spatial import ConvexHull, QhullError

    points = grid.world_points()[np.asarray(mask, dtype=bool)]
    if len(points) > HULL_POINTS:
        points = points[np.random.default_rng(0).choice(len(points), HULL_POINTS, replace=False)]
    try:
        hull = ConvexHull(points)
    except (QhullError, ValueError):
        return float("nan")
    return float(np.count_nonzero(mask) * np.prod(grid.spacing) / hull.volume) if hull.volume > 0 else float("nan")


def quality_warnings(raw: np.ndarray, cleaned: np.ndarray, grid: Grid, what: str = "the predicted gland") -> list:
    """Warnings about a predicted gland: ``raw`` (the network's thresholded output) and ``cleaned``
    (:func:`clean_mask` of it), both ``(K, J, I)`` on ``grid``. Empty when nothing is suspicious."""
    warnings = []
    volume = volume_ml(cleaned, grid)
    if not MIN_GLAND_ML <= volume <= MAX_GLAND_ML:
        warnings.append(f"{what} has a volume of {volume:.1f} ml, outside the {MIN_GLAND_ML:g}-{MAX_GLAND_ML:g} ml of a "
                        "prostate: check the image (modality, field of view) and correct the segmentation")
    _, sizes = component_sizes(np.asarray(raw, dtype=bool))
    large = np.sort(sizes[sizes >= LARGE_COMPONENT_FRACTION * sizes.max()])[::-1] if sizes.size else sizes
    if large.size > 1:
        voxel_ml = float(np.prod(grid.spacing) / 1000.0)
        listed = ", ".join(f"{n * voxel_ml:.1f}" for n in large[:5])
        warnings.append(f"{what} had {large.size} large separate parts ({listed} ml); only the largest was kept: "
                        "check that it is the prostate")
    if touches_border(cleaned):
        warnings.append(f"{what} touches the border of the image's field of view: the gland may be cut off")
    shape = solidity(cleaned, grid) if np.count_nonzero(cleaned) >= 4 else float("nan")
    if shape < MIN_SOLIDITY:
        warnings.append(f"{what} has an irregular shape (its volume is {100 * shape:.0f} % of its convex hull's; a "
                        f"drawn prostate is nearly convex, over {100 * MIN_SOLIDITY:.0f} %): the network may have "
                        "failed on this image; check and correct the segmentation")
    return warnings
