"""Post-processing and quality check of a predicted gland mask (paper 003's pipeline): largest component, holes
filled, warnings for an implausible volume, several large parts and a mask cut by the field of view."""

from __future__ import annotations

import numpy as np

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.segmentation.postprocess import (
    clean_mask,
    component_sizes,
    quality_warnings,
    solidity,
    touches_border,
    volume_ml,
)

GRID = Grid.from_geometry((60, 60, 60), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))


def ball(center, radius, shape=(60, 60, 60)) -> np.ndarray:
    k, j, i = np.indices(shape)
    return (k - center[0]) ** 2 + (j - center[1]) ** 2 + (i - center[2]) ** 2 <= radius ** 2


def test_clean_mask_keeps_the_largest_component_and_fills_its_holes():
    gland = ball((30, 30, 30), 15)
    hollow = gland & ~ball((30, 30, 30), 4)
    speck = ball((5, 5, 5), 2)
    diagonal = np.zeros_like(gland)
    diagonal[50, 50, 50] = diagonal[51, 51, 51] = True  # touching by a corner: one component with 26-connectivity
    cleaned = clean_mask(hollow | speck | diagonal)
    assert np.array_equal(cleaned, gland)
    assert component_sizes(diagonal)[1].tolist() == [2]
    assert not clean_mask(np.zeros((4, 4, 4), dtype=bool)).any()


def test_volume_in_millilitres_uses_the_spacing():
    grid = Grid.from_geometry((10, 10, 10), (0.5, 2.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    assert volume_ml(np.ones((10, 10, 10), dtype=bool), grid) == 1.0


def test_a_plausible_gland_gives_no_warning():
    gland = ball((30, 30, 30), 15)  # 14.1 ml
    assert quality_warnings(gland, clean_mask(gland), GRID) == []


def test_implausible_volume_several_parts_and_a_cut_gland_are_named():
    small = ball((30, 30, 30), 5)  # 0.5 ml
    warnings = quality_warnings(small, clean_mask(small), GRID, "the TRUS gland")
    assert len(warnings) == 1 and "0.5 ml" in warnings[0] and warnings[0].startswith("the TRUS gland")
    two = ball((20, 30, 30), 14) | ball((45, 30, 30), 9)
    warnings = quality_warnings(two, clean_mask(two), GRID)
    assert any("2 large separate parts" in w for w in warnings)
    cut = ball((3, 30, 30), 15)
    assert touches_border(clean_mask(cut))
    assert any("border" in w for w in quality_warnings(cut, clean_mask(cut), GRID))
    tiny_extra = ball((30, 30, 30), 15) | ball((5, 5, 55), 1)
    assert quality_warnings(tiny_extra, clean_mask(tiny_extra), GRID) == []  # a speck is not a second gland


def test_an_irregular_gland_is_named_and_convex_shapes_are_not():
    gland = ball((30, 30, 30), 15)
    assert 0.95 < solidity(gland, GRID) < 1.1
    k, j, i = np.indices(gland.shape)
    ragged = gland & ((k + j) % 12 < 6)  # slabs joined along one axis: a comb, far from convex
    ragged |= (np.abs(i - 30) <= 1) & gland
    assert solidity(ragged, GRID) < 0.7
    warnings = quality_warnings(ragged, clean_mask(ragged), GRID)
    assert any("irregular shape" in w for w in warnings), warnings
    assert quality_warnings(gland, gland, GRID) == []
    assert np.isnan(solidity(np.zeros_like(gland), GRID))
