"""The segmentation network's world-mm grid: whatever the image's geometry (oblique, anisotropic, RAS-stored, any
origin), the prediction comes back on the image's own grid where the anatomy is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.segmentation.network import SegNetConfig, build_network, segmentation_grid
from MMRegistrationLib.segmentation.predict import predict_gland

CENTER = np.array([30.0, -40.0, 55.0])
GLAND_CENTER = CENTER + np.array([6.0, -4.0, -5.0])
RADIUS_MM = 20.0


class Threshold(torch.nn.Module):
    """A stand-in network whose logit is positive exactly where the scaled intensity exceeds 1/2."""

    def forward(self, x):
        return (x - 0.5) * 20.0


def gland_image(spacing, direction) -> tuple:
    """An image of a bright ball (the gland) on ``spacing`` / ``direction`` centred near CENTER; (image, truth)."""
    spacing = np.asarray(spacing, dtype=float)
    size = np.round(100.0 / spacing).astype(int)
    origin = CENTER - direction @ (spacing * (size - 1) / 2)
    grid = Grid.from_geometry(tuple(size[::-1]), spacing, origin, direction)
    inside = np.linalg.norm(grid.world_points() - GLAND_CENTER, axis=-1) <= RADIUS_MM
    return Image(np.where(inside, 120.0, 10.0).astype(np.float32), grid), inside


@pytest.mark.parametrize("spacing, direction", [
    ((0.55, 0.6, 1.1), Rotation.from_euler("xyz", (12, -7, 25), degrees=True).as_matrix()),
    ((1.0, 1.0, 2.5), np.diag([-1.0, -1.0, 1.0])),  # stored RAS
    ((0.8, 0.8, 0.8), np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])),  # axes permuted
])
def test_the_prediction_lands_on_the_anatomy_of_any_image_grid(spacing, direction):
    image, truth = gland_image(spacing, direction)
    result = predict_gland(Threshold(), SegNetConfig(), image)
    assert result.mask.grid.same_as(image.grid) and result.mask.array.dtype == np.uint8
    mask = result.mask.array.astype(bool)
    dice = 2 * np.count_nonzero(mask & truth) / (np.count_nonzero(mask) + np.count_nonzero(truth))
    assert dice > 0.95, dice
    assert result.warnings == []  # a 33.5 ml ball inside the field of view is a plausible gland


def test_the_network_grid_is_cubic_centred_and_closest_to_lps():
    config = SegNetConfig(grid_size=32, grid_spacing_mm=2.0)
    image, _ = gland_image((1.0, 1.0, 2.5), np.diag([-1.0, -1.0, 1.0]))
    grid = segmentation_grid(config, image.grid)
    assert grid.shape == (32, 32, 32) and np.allclose(grid.spacing, 2.0)
    assert np.allclose(grid.center, image.grid.center)
    assert np.allclose(grid.direction, np.eye(3))


def test_a_real_network_runs_on_its_grid_and_bad_configs_are_refused():
    torch.manual_seed(0)
    config = SegNetConfig(channels=(4, 8), strides=(2,), grid_size=16, grid_spacing_mm=6.0)
    image, _ = gland_image((2.0, 2.0, 2.0), np.eye(3))
    result = predict_gland(build_network(config), config, image)
    assert result.probability.grid.same_as(image.grid)
    assert 0.0 <= result.probability.array.min() and result.probability.array.max() <= 1.0
    with pytest.raises(InputError, match="--modality"):
        SegNetConfig(modality="ct")
    with pytest.raises(ValueError, match="multiple"):
        SegNetConfig(grid_size=60)
