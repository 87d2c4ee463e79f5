"""Surface distances between binary masks, in world millimetres.

Definitions (the evaluation's, see :mod:`MMRegistrationLib.evaluation`):

* The **surface** of a mask is the set of its voxels with at least one 6-neighbour (face neighbour) outside
  the mask; neighbours beyond the array border count as outside, so mask voxels on the border are surface.
* The distance from a surface point to the other mask's surface is the Euclidean distance in LPS mm between
  voxel centres in world space (``grid.index_to_world``), to the nearest surface point of the other mask
  (a KD-tree over world points, so anisotropic spacing and oblique or even non-orthogonal directions are
  exact).
* ``msd_mm`` (average symmetric surface distance) = (sum of distances A->B + sum B->A) / (number of surface
  points of A + of B); ``hd95_mm`` = max of the two directed 95th percentiles (``numpy.percentile``,
  ``method="linear"``); ``hd_mm`` = max of the two directed maxima (the surface Hausdorff distance).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from MMRegistrationLib.core.grid import Grid

SIX_CONNECTIVITY = ndimage.generate_binary_structure(3, 1)
"""3x3x3 structuring element of the 6 face neighbours (plus the centre)."""

PERCENTILE_METHOD = "linear"
"""``numpy.percentile`` interpolation used for HD95 (numpy's default)."""


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boolean ``(K, J, I)`` map of the surface voxels of ``mask`` (6-connectivity, outside beyond the border).

    Computed on the mask's bounding box padded with one background voxel on every side (equivalent to
    eroding the whole array with ``border_value=0``, much faster for small structures).
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"surface_voxels: a 3-D mask is needed, got shape {mask.shape}")
    if not mask.any():
        return out
    nz = np.nonzero(mask)
    box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in nz)
    crop = np.pad(mask[box], 1, mode="constant", constant_values=False)
    interior = ndimage.binary_erosion(crop, structure=SIX_CONNECTIVITY, border_value=0)
    out[box] = (crop & ~interior)[1:-1, 1:-1, 1:-1]
    return out


def surface_points_mm(mask: np.ndarray, grid: Grid) -> np.ndarray:
    """World coordinates (LPS mm) of the surface voxel centres of ``mask`` on ``grid``, shape ``(N, 3)``."""
    kji = np.argwhere(surface_voxels(mask))
    return grid.index_to_world(kji[:, ::-1].astype(np.float64))


def directed_distances_mm(points_from: np.ndarray, points_to: np.ndarray) -> np.ndarray:
    """Distance (mm) from each of ``points_from`` ``(N, 3)`` to its nearest point of ``points_to`` ``(M, 3)``."""
    points_from = np.asarray(points_from, dtype=np.float64).reshape(-1, 3)
    points_to = np.asarray(points_to, dtype=np.float64).reshape(-1, 3)
    if len(points_to) == 0:
        raise ValueError("directed_distances_mm: 'points_to' is empty")
    if len(points_from) == 0:
        return np.zeros(0)
    distances, _ = cKDTree(points_to).query(points_from, k=1, workers=-1)
    return np.asarray(distances, dtype=np.float64)


def surface_distances_mm(
    mask_a: np.ndarray, grid_a: Grid, mask_b: np.ndarray, grid_b: Optional[Grid] = None
) -> tuple:
    """Directed surface distances ``(a_to_b, b_to_a)`` in mm (1-D arrays, one value per surface voxel).

    ``grid_b`` defaults to ``grid_a``; the masks may lie on different grids since distances are measured
    between world points. Both masks must be non-empty (``ValueError`` otherwise).
    """
    grid_b = grid_a if grid_b is None else grid_b
    pa = surface_points_mm(mask_a, grid_a)
    pb = surface_points_mm(mask_b, grid_b)
    if len(pa) == 0 or len(pb) == 0:
        raise ValueError("surface_distances_mm: both masks must be non-empty")
    return directed_distances_mm(pa, pb), directed_distances_mm(pb, pa)


def summarize_surface_distances(a_to_b: np.ndarray, b_to_a: np.ndarray) -> dict:
    """``{"msd_mm", "hd95_mm", "hd_mm", "surface_points_a", "surface_points_b"}`` from directed distances.

    Empty inputs give NaN distances (never 0).
    """
    a_to_b = np.asarray(a_to_b, dtype=np.float64)
    b_to_a = np.asarray(b_to_a, dtype=np.float64)
    if a_to_b.size == 0 or b_to_a.size == 0:
        nan = math.nan
        return {"msd_mm": nan, "hd95_mm": nan, "hd_mm": nan,
                "surface_points_a": int(a_to_b.size), "surface_points_b": int(b_to_a.size)}
    msd = (a_to_b.sum() + b_to_a.sum()) / (a_to_b.size + b_to_a.size)
    hd95 = max(np.percentile(a_to_b, 95, method=PERCENTILE_METHOD), np.percentile(b_to_a, 95, method=PERCENTILE_METHOD))
    return {
        "msd_mm": float(msd),
        "hd95_mm": float(hd95),
        "hd_mm": float(max(a_to_b.max(), b_to_a.max())),
        "surface_points_a": int(a_to_b.size),
        "surface_points_b": int(b_to_a.size),
    }


def surface_distance_metrics(
    mask_a: np.ndarray, grid_a: Grid, mask_b: np.ndarray, grid_b: Optional[Grid] = None
) -> dict:
    """MSD, HD95 and HD (mm) between two non-empty masks; see the module docstring for the definitions."""
    return summarize_surface_distances(*surface_distances_mm(mask_a, grid_a, mask_b, grid_b))
