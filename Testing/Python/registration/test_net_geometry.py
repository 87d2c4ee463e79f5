"""The network's world-mm grid and the field conversions shared by training and registration: canonical axes,
voxel <-> world vectors, warping, and the batched scaling and squaring of training against the engine's
exponentiation used at registration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.networks.registration import RegNetConfig
from MMRegistrationLib.registration.net_geometry import (
    canonical_axes,
    exponentiate_voxels,
    grid_window,
    network_grid,
    normalised_intensity,
    voxels_to_world,
    warp_voxels,
    world_to_voxels,
)
from MMRegistrationLib.spatial.velocity import exponentiate

PERMUTED = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # a rotation: axes permuted and flipped


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0]), PERMUTED,
                                       Rotation.from_euler("xyz", [12, -8, 20], degrees=True).as_matrix(),
                                       PERMUTED @ Rotation.from_euler("z", 15, degrees=True).as_matrix()])
def test_canonical_axes_are_a_rotation_closest_to_lps_built_from_the_image_axes(direction):
    axes = canonical_axes(direction)
    assert np.allclose(axes.T @ axes, np.eye(3)) and np.linalg.det(axes) > 0
    assert np.all(np.diag(axes) > 0.5)  # each column points along its world axis
    for column in axes.T:  # every column is one of the image's axes, possibly flipped
        assert np.isclose(np.abs(direction.T @ column).max(), 1.0)


def test_the_network_grid_is_centred_on_the_fixed_image_or_the_given_point_in_world_mm():
    fixed = Grid.from_geometry((30, 50, 40), (0.6, 0.8, 2.5), (-40.0, 12.0, 300.0),
                               Rotation.from_euler("xyz", [10, -5, 25], degrees=True).as_matrix())
    config = RegNetConfig(grid_size=16, grid_spacing_mm=3.0, channels=(2, 4, 4))
    grid = network_grid(config, fixed)
    assert grid.shape == (16, 16, 16) and np.allclose(grid.spacing, 3.0)
    assert np.allclose(grid.center, fixed.center)
    assert np.allclose(fixed.center, fixed.corners_world().mean(axis=0))
    assert np.allclose(grid.direction, canonical_axes(fixed.direction))
    moved = network_grid(config, fixed, fixed.center + [5.0, -3.0, 2.0])
    assert np.allclose(moved.center, fixed.center + [5.0, -3.0, 2.0])


def test_voxel_vectors_map_to_world_mm_through_the_grid_axes_and_back():
    grid = Grid.from_geometry((8, 8, 8), (2.0, 2.0, 2.0), (1.0, 2.0, 3.0),
                              Rotation.from_euler("z", 30, degrees=True).as_matrix())
    field = torch.zeros(1, 3, 8, 8, 8)
    field[:, 2] = 1.5  # 1.5 voxels along i (the last tensor axis)
    world = voxels_to_world(field, grid)
    assert torch.allclose(world[0, 0, 0, 0], torch.tensor(3.0 * grid.direction[:, 0], dtype=torch.float32), atol=1e-6)
    random = torch.randn(2, 3, 8, 8, 8)
    assert torch.allclose(world_to_voxels(voxels_to_world(random, grid), grid), random, atol=1e-5)


def test_warping_by_a_constant_displacement_shifts_the_volume_by_whole_voxels():
    volume = torch.rand(1, 2, 10, 12, 14)
    disp = torch.zeros(1, 3, 10, 12, 14)
    disp[:, 0], disp[:, 2] = 2.0, -1.0  # +2 voxels along D, -1 along W
    out = warp_voxels(volume, disp)
    assert torch.allclose(out[:, :, :-2, :, 1:], volume[:, :, 2:, :, :-1], atol=1e-5)
    assert torch.all(out[:, :, -2:] == 0)  # sampled outside: zeros


def test_training_exponentiation_equals_the_engines_on_the_network_grid():
    grid = Grid.from_geometry((16, 16, 16), (2.0, 2.0, 2.0), (-15.0, 4.0, 30.0),
                              Rotation.from_euler("xyz", [5, 10, -7], degrees=True).as_matrix())
    points = grid.world_points_torch().double()
    centre = points.mean(dim=(0, 1, 2))
    bump = torch.exp(-((points - centre) ** 2).sum(-1) / (2 * 8.0**2))[..., None]
    velocity_world = bump * torch.tensor([4.0, -3.0, 2.0], dtype=torch.float64)  # up to 5.4 mm
    velocity_world = velocity_world * grid_window(grid, 8.0).double()[0, 0, ..., None]
    engine = exponentiate(velocity_world, grid, 7)
    batched = exponentiate_voxels(world_to_voxels(velocity_world[None], grid), 7)
    assert float((voxels_to_world(batched, grid)[0] - engine).abs().max()) < 1e-6


def test_intensities_are_scaled_to_the_99th_percentile_and_clipped():
    values = np.arange(1000, dtype=np.float32).reshape(10, 10, 10) + 50
    out = normalised_intensity(values)
    assert out.min() == 0 and out.max() == 1 and np.isclose(np.percentile(out, 99), 1.0, atol=1e-3)
    assert np.all(normalised_intensity(np.full((3, 3, 3), 7.0)) == 0)
