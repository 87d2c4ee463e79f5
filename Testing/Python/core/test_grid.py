"""Grid geometry against SimpleITK and analytic values, on oblique anisotropic non-zero-origin grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import oblique_grid
from MMRegistrationLib.core.conventions import ALIGN_CORNERS
from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image


def test_index_to_world_matches_simpleitk(grid_oblique, rng):
    ref = Image(np.zeros(grid_oblique.shape, np.uint8), grid_oblique).to_sitk()
    idx = rng.uniform(-0.5, np.array(grid_oblique.size_ijk) - 0.5, size=(40, 3))
    ours = grid_oblique.index_to_world(idx)
    theirs = np.array([ref.TransformContinuousIndexToPhysicalPoint(tuple(p)) for p in idx])
    np.testing.assert_allclose(ours, theirs, atol=1e-9)
    np.testing.assert_allclose(grid_oblique.world_to_index(ours), idx, atol=1e-9)


def test_geometry_properties(grid_oblique):
    np.testing.assert_allclose(grid_oblique.spacing, [1.3, 0.9, 2.1])
    np.testing.assert_allclose(grid_oblique.origin, [-31.5, 17.25, 42.0])
    d = grid_oblique.direction
    np.testing.assert_allclose(d.T @ d, np.eye(3), atol=1e-12)
    assert not np.allclose(d, np.eye(3))
    assert grid_oblique.size_ijk == (28, 30, 24)
    assert grid_oblique.voxel_volume == pytest.approx(1.3 * 0.9 * 2.1)


def test_world_points_torch_matches_numpy(grid_oblique):
    np.testing.assert_allclose(
        grid_oblique.world_points_torch(dtype=torch.float64).numpy(), grid_oblique.world_points(), atol=1e-9
    )
    part = grid_oblique.world_points_torch(dtype=torch.float64, k_range=(3, 7)).numpy()
    np.testing.assert_allclose(part, grid_oblique.world_points()[3:7], atol=1e-9)


def test_normalized_coordinates_sample_the_right_voxel(grid_oblique, rng):
    """grid_sample at index_to_normalized(index) returns the voxel value there (align_corners stated once)."""
    assert ALIGN_CORNERS is True
    vol = torch.as_tensor(rng.normal(size=grid_oblique.shape))[None, None]
    idx = np.stack([rng.integers(0, n, 30) for n in grid_oblique.size_ijk], axis=-1)
    norm = grid_oblique.index_to_normalized(torch.as_tensor(idx, dtype=torch.float64))
    out = F.grid_sample(vol, norm.view(1, 1, 1, -1, 3), align_corners=ALIGN_CORNERS)[0, 0, 0, 0]
    expected = vol[0, 0, idx[:, 2], idx[:, 1], idx[:, 0]]
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-10)


def test_inside_mask_follows_itk_half_voxel_rule():
    g = Grid.from_geometry((3, 4, 5))
    idx = torch.tensor([[-0.49, 0, 0], [-0.51, 0, 0], [4.49, 3.49, 2.49], [4.51, 0, 0], [0, 0, 2.6]])
    assert g.inside_mask(idx).tolist() == [True, False, True, False, False]


def test_resized_keeps_field_of_view(grid_oblique):
    coarse = grid_oblique.resized(4.0)
    np.testing.assert_allclose(coarse.corners_world(), grid_oblique.corners_world(), atol=1e-9)
    np.testing.assert_allclose(coarse.direction, grid_oblique.direction, atol=1e-12)
    assert np.all(coarse.spacing > 3.0)


def test_cropped_grid_points_are_a_subset(grid_oblique):
    sub = grid_oblique.cropped((2, 3, 4), (10, 9, 8))
    assert sub.shape == (4, 6, 8)
    np.testing.assert_allclose(sub.world_points(), grid_oblique.world_points()[4:8, 3:9, 2:10], atol=1e-9)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(shape=(2, 2), affine=np.eye(4)),
        dict(shape=(2, 2, 0), affine=np.eye(4)),
        dict(shape=(2, 2, 2), affine=np.diag([1.0, 1.0, 0.0, 1.0])),
        dict(shape=(2, 2, 2), affine=np.full((4, 4), np.nan)),
    ],
)
def test_invalid_grids_are_rejected(kwargs):
    with pytest.raises(InputError):
        Grid(**kwargs)


def test_singular_direction_is_rejected():
    direction = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(InputError, match="not invertible"):
        Grid.from_geometry((2, 2, 2), (1, 1, 1), (0, 0, 0), direction)


def test_oblique_grid_fixture_is_really_oblique():
    g = oblique_grid()
    assert not np.allclose(g.direction, np.eye(3), atol=0.05)
