"""Surface distances against independent computations: brute force over all point pairs, SimpleITK's
Hausdorff filter, and analytic shapes (concentric and shifted spheres)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import oblique_grid
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.metrics.surface import surface_distance_metrics, surface_voxels


# ---- independent reference: written differently on purpose -----------------------------------------------
def brute_surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels by looking at the six face neighbours explicitly (zero-padded array)."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1, 1:-1]
    outside_neighbour = np.zeros_like(mask)
    for axis in range(3):
        for step in (-1, 1):
            outside_neighbour |= ~np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
    return inner & outside_neighbour


def brute_world(mask: np.ndarray, grid: Grid) -> np.ndarray:
    """World points of ``mask``'s surface: affine applied column by column (x = A[:, 0] i + A[:, 1] j + ...)."""
    k, j, i = np.nonzero(brute_surface(mask))
    a = grid.affine
    return np.outer(i, a[:3, 0]) + np.outer(j, a[:3, 1]) + np.outer(k, a[:3, 2]) + a[:3, 3]


def linear_percentile(values: np.ndarray, q: float) -> float:
    """The 'linear' percentile by hand: interpolate between the order statistics around (n - 1) q / 100."""
    x = np.sort(values)
    h = (len(x) - 1) * q / 100.0
    lo = int(math.floor(h))
    hi = min(lo + 1, len(x) - 1)
    return float(x[lo] + (h - lo) * (x[hi] - x[lo]))


def brute_metrics(mask_a: np.ndarray, mask_b: np.ndarray, grid: Grid) -> dict:
    pa, pb = brute_world(mask_a, grid), brute_world(mask_b, grid)
    pair = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))  # every pair of surface points
    ab, ba = pair.min(axis=1), pair.min(axis=0)
    return {
        "msd_mm": (ab.sum() + ba.sum()) / (len(ab) + len(ba)),
        "hd95_mm": max(linear_percentile(ab, 95), linear_percentile(ba, 95)),
        "hd_mm": max(ab.max(), ba.max()),
        "surface_points_a": len(pa),
        "surface_points_b": len(pb),
    }


def ellipsoid(grid: Grid, center, radii) -> np.ndarray:
    pts = grid.world_points()
    return (((pts - np.asarray(center)) / np.asarray(radii)) ** 2).sum(-1) <= 1.0


def blob(shape, seed: int, level: float = 0.2) -> np.ndarray:
    """Irregular random mask (smoothed noise above a level), touching the array border."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 2.0)
    return noise > level * noise.std()


def sheared_grid() -> Grid:
    """A grid whose index axes are not orthogonal in world space (anisotropic too)."""
    affine = np.eye(4)
    affine[:3, :3] = np.array([[1.2, 0.5, 0.0], [0.0, 0.8, 0.3], [0.2, 0.0, 2.0]])
    affine[:3, 3] = [-10.0, 4.0, 7.5]
    return Grid((12, 16, 15), affine)


# ---- tests --------------------------------------------------------------------------------------------
def test_surface_definition_six_neighbours_and_border():
    mask = np.zeros((5, 6, 7), bool)
    mask[1:4, 1:5, 1:6] = True  # a 3 x 4 x 5 box: interior is 1 x 2 x 3
    assert surface_voxels(mask).sum() == 3 * 4 * 5 - 1 * 2 * 3
    full = np.ones((4, 4, 4), bool)  # every voxel on the array border is surface, the 2x2x2 core is not
    assert surface_voxels(full).sum() == 64 - 8
    diagonal_only = np.zeros((3, 3, 3), bool)
    diagonal_only[1, 1, 1] = True
    assert surface_voxels(diagonal_only).sum() == 1
    for seed in range(3):
        m = blob((14, 17, 19), seed)
        np.testing.assert_array_equal(surface_voxels(m), brute_surface(m))


@pytest.mark.parametrize("grid", [oblique_grid(shape=(14, 18, 16)), sheared_grid()], ids=["oblique", "sheared"])
def test_metrics_equal_brute_force_over_all_pairs(grid):
    cases = [
        (blob(grid.shape, 1), blob(grid.shape, 2)),
        (blob(grid.shape, 3, 0.5), blob(grid.shape, 3, 0.0)),  # nested: one inside the other
    ]
    c = grid.index_to_world(np.array(grid.size_ijk) / 2.0)
    cases.append((ellipsoid(grid, c, [7, 5, 8]), ellipsoid(grid, c + [2.0, -1.5, 1.0], [6, 6, 5])))
    for a, b in cases:
        ours = surface_distance_metrics(a, grid, b)
        ref = brute_metrics(a, b, grid)
        assert ours["surface_points_a"] == ref["surface_points_a"] and ours["surface_points_b"] == ref["surface_points_b"]
        for key in ("msd_mm", "hd95_mm", "hd_mm"):
            assert ours[key] == pytest.approx(ref[key], abs=1e-9), key


def test_masks_on_different_grids_use_world_distances():
    ga = oblique_grid(shape=(14, 18, 16))
    gb = oblique_grid(shape=(20, 16, 18), spacing=(0.7, 1.1, 1.6), angles_deg=(-20, 5, 40), origin=(-25, 20, 40))
    c = ga.index_to_world(np.array(ga.size_ijk) / 2.0)
    a, b = ellipsoid(ga, c, [7, 5, 8]), ellipsoid(gb, c + [1.0, 0.0, -1.0], [6, 6, 5])
    ours = surface_distance_metrics(a, ga, b, gb)
    pa, pb = brute_world(a, ga), brute_world(b, gb)
    pair = np.linalg.norm(pa[:, None] - pb[None], axis=-1)
    assert ours["hd_mm"] == pytest.approx(max(pair.min(1).max(), pair.min(0).max()), abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hausdorff_equals_simpleitk_on_oblique_anisotropic_masks(seed):
    """SimpleITK's HausdorffDistanceImageFilter takes the max over all voxels; for these solid shapes the
    maximum is attained at surface voxels, so it equals our surface HD."""
    rng = np.random.default_rng(seed)
    grid = oblique_grid(shape=(22, 26, 24), angles_deg=tuple(rng.uniform(-40, 40, 3)))
    c = grid.index_to_world(np.array(grid.size_ijk) / 2.0)
    a = ellipsoid(grid, c + rng.uniform(-2, 2, 3), rng.uniform(5, 9, 3))
    b = ellipsoid(grid, c + rng.uniform(-3, 3, 3), rng.uniform(5, 9, 3))
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(Image(a.astype(np.uint8), grid).to_sitk(), Image(b.astype(np.uint8), grid).to_sitk())
    assert surface_distance_metrics(a, grid, b)["hd_mm"] == pytest.approx(f.GetHausdorffDistance(), abs=1e-6)


def test_surface_hausdorff_differs_from_simpleitk_for_a_hidden_cavity():
    """Documented difference: ITK's set Hausdorff distance ignores an internal cavity of one mask (its
    voxels are covered by the other mask), while the cavity's wall is part of that mask's surface."""
    grid = oblique_grid(shape=(24, 24, 24), spacing=(1.0, 1.0, 1.0))
    c = grid.index_to_world(np.array([12.0, 12.0, 12.0]))
    full = ellipsoid(grid, c, [10, 10, 10])
    hollow = full & ~ellipsoid(grid, c, [3, 3, 3])
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(Image(full.astype(np.uint8), grid).to_sitk(), Image(hollow.astype(np.uint8), grid).to_sitk())
    ours = surface_distance_metrics(full, grid, hollow)["hd_mm"]
    assert f.GetHausdorffDistance() == pytest.approx(3.0)  # the cavity's radius: its centre is 3 mm from 'hollow'
    assert ours > 5.5  # the cavity wall (radius ~3 mm) is ~7 mm from the outer surface of 'full'


def sphere_grid(spacing: float = 0.5, half_extent: float = 20.0) -> Grid:
    n = int(round(2 * half_extent / spacing)) + 1
    return Grid.from_geometry((n, n, n), (spacing,) * 3, (-half_extent,) * 3)


def test_concentric_spheres_give_the_radius_difference():
    grid = sphere_grid()
    r1, r2 = 9.0, 12.5
    m = surface_distance_metrics(ellipsoid(grid, [0, 0, 0], [r1] * 3), grid, ellipsoid(grid, [0, 0, 0], [r2] * 3))
    for key in ("msd_mm", "hd95_mm", "hd_mm"):
        assert m[key] == pytest.approx(r2 - r1, abs=0.5), (key, m)  # within one voxel (0.5 mm)


def test_shifted_sphere_hausdorff_is_the_shift():
    grid = sphere_grid()
    d = 4.0
    direction = np.array([1.0, 2.0, -2.0]) / 3.0
    m = surface_distance_metrics(ellipsoid(grid, [0, 0, 0], [10] * 3), grid, ellipsoid(grid, d * direction, [10] * 3))
    assert m["hd_mm"] == pytest.approx(d, abs=0.5)
    assert 0 < m["msd_mm"] < m["hd95_mm"] <= m["hd_mm"]


def test_identical_masks_are_at_zero_distance():
    grid = oblique_grid(shape=(10, 12, 11))
    m = blob(grid.shape, 7)
    assert surface_distance_metrics(m, grid, m.copy()) == {
        "msd_mm": 0.0, "hd95_mm": 0.0, "hd_mm": 0.0,
        "surface_points_a": int(brute_surface(m).sum()), "surface_points_b": int(brute_surface(m).sum()),
    }
    with pytest.raises(ValueError, match="non-empty"):
        surface_distance_metrics(m, grid, np.zeros_like(m))
