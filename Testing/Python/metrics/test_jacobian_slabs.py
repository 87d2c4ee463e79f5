"""The Jacobian determinant and its gradient are computed in slabs: bit-identical to the whole-grid computation, with
a peak memory of a few times the displacement field rather than ~20 times (a 400x400x300 evaluation used to need
15.6 GB)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from conftest import oblique_grid
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.metrics.deformation import (
    _gradient_magnitude,
    gradient_magnitude_per_mm,
    jacobian_determinant_on_grid,
    slabs,
)
from MMRegistrationLib.spatial import DisplacementField
from MMRegistrationLib.spatial.jacobian import jacobian_determinant


def rough_field(grid: Grid, seed: int = 0, sd_mm: float = 1.5) -> DisplacementField:
    """Random displacements (folding in places): every finite difference matters."""
    rng = np.random.default_rng(seed)
    return DisplacementField(grid, torch.from_numpy(rng.normal(0.0, sd_mm, (*grid.shape, 3))))


def test_slabs_cover_every_slice_once_with_one_slice_of_overlap():
    parts = list(slabs(10, 7, slab_voxels=21))  # 3 slices a slab
    assert [(k0, k1) for k0, k1, _, _ in parts] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert [(lo, hi) for _, _, lo, hi in parts] == [(0, 4), (2, 7), (5, 10), (8, 10)]
    assert list(slabs(4, 100, slab_voxels=1)) == [(0, 1, 0, 2), (1, 2, 0, 3), (2, 3, 1, 4), (3, 4, 2, 4)]


@pytest.mark.parametrize("slab_slices", [1, 2, 5, 1000])
def test_slabs_give_exactly_the_whole_grid_result(slab_slices):
    grid = oblique_grid(shape=(13, 17, 19))
    field = rough_field(grid)
    whole = jacobian_determinant(DisplacementField.from_transform(field, grid))
    assert np.mean(whole <= 0) > 0.05  # the field folds: a wrong neighbour would show
    slab_voxels = slab_slices * 17 * 19
    det = jacobian_determinant_on_grid(field, grid, slab_voxels=slab_voxels)
    np.testing.assert_array_equal(det, whole)
    np.testing.assert_array_equal(gradient_magnitude_per_mm(det, grid, slab_voxels=slab_voxels),
                                  _gradient_magnitude(whole, grid))


def test_a_grid_one_slice_thick_is_handled():
    grid = Grid.from_geometry((1, 6, 5), (1.0, 1.0, 2.0))
    field = rough_field(grid, seed=1, sd_mm=0.1)
    whole = jacobian_determinant(DisplacementField.from_transform(field, grid))
    np.testing.assert_array_equal(jacobian_determinant_on_grid(field, grid, slab_voxels=1), whole)


def _peak_bytes(call) -> int:
    """Peak of the memory numpy (and Python) allocate during ``call()`` (numpy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_is_a_few_times_the_field_not_twenty():
    """The whole-grid computation holds the field's gradients, their stack, the 3x3 products and more (~20 field
    sizes); slabs of 1/16 of the grid need the two maps (2/3 of a field size) plus one slab's temporaries."""
    grid = Grid.from_geometry((64, 96, 96), (1.0, 1.0, 1.2))
    coarse = Grid.from_geometry((9, 13, 13), (8.0, 8.0, 9.6), (-1.0, -1.0, -1.0))
    transform = rough_field(coarse, seed=2, sd_mm=2.0)  # smooth when sampled on the fine grid
    field_bytes = grid.num_voxels * 3 * 8
    slab_voxels = grid.num_voxels // 16
    peak = _peak_bytes(lambda: gradient_magnitude_per_mm(
        jacobian_determinant_on_grid(transform, grid, slab_voxels=slab_voxels), grid, slab_voxels=slab_voxels))
    assert peak < 2.5 * field_bytes, peak / field_bytes
    whole_peak = _peak_bytes(lambda: jacobian_determinant(DisplacementField.from_transform(transform, grid)))
    assert whole_peak > 10.0 * field_bytes, whole_peak / field_bytes  # the measurement sees the difference
