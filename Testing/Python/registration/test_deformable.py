"""The deformable core: boxes, velocity sources, the Adam loop and the finishing step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MMRegistrationLib.core.box import OrientedBox
from MMRegistrationLib.core.errors import Cancelled, MMRegError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.networks.implicit import FourierFeatureMLP
from MMRegistrationLib.registration.deformable import (
    MLPVelocity,
    TensorVelocity,
    finish_velocity,
    fit_adam,
    mask_box,
    region_box,
)
from MMRegistrationLib.spatial.affine import rotation_matrix


def oblique_grid(shape=(10, 12, 14), spacing=(2.0, 1.5, 3.0)) -> Grid:
    direction = rotation_matrix(torch.tensor([0.2, -0.3, 0.4], dtype=torch.float64)).numpy()
    return Grid.from_geometry(shape, spacing, (10.0, -20.0, 5.0), direction)


def test_mask_box_grows_by_whole_voxels_around_the_mask():
    grid = oblique_grid()
    mask = np.zeros(grid.shape, bool)
    mask[3:5, 4:7, 5:9] = True
    box = mask_box(grid, mask, 3.0)  # ceil(3 / (2, 1.5, 3)) = (2, 2, 1) voxels along i, j, k
    assert box.shape == (2 + 2, 3 + 4, 4 + 4)
    np.testing.assert_allclose(box.index_to_world(np.zeros(3)), grid.index_to_world(np.array([3.0, 2.0, 2.0])))
    with pytest.raises(ValueError, match="no true voxel"):
        mask_box(grid, np.zeros(grid.shape, bool), 1.0)


def test_region_box_has_the_region_corners():
    axes = rotation_matrix(torch.tensor([0.1, 0.5, -0.2], dtype=torch.float64)).numpy()
    region = OrientedBox([5.0, -3.0, 12.0], axes, [20.0, 10.0, 7.0])
    grid = region_box(region, 2.0)
    assert grid.size_ijk == (20, 10, 7)
    corners = grid.corners_world()
    np.testing.assert_allclose(np.sort(corners, axis=0), np.sort(region.corners(), axis=0), atol=1e-9)
    assert region.contains(grid.world_points().reshape(-1, 3)).all()


def test_window_vanishes_on_the_border_and_tensor_velocity_resamples():
    grid = oblique_grid()
    source = TensorVelocity(grid, ramp_mm=4.0)
    with torch.no_grad():
        source.values.fill_(1.0)
    v = source.on()
    assert torch.all(v[0] == 0) and torch.all(v[:, :, -1] == 0)
    assert float(v.detach().max()) == pytest.approx(1.0)
    finer = grid.resized(grid.spacing / 2)
    resampled = source.on(finer)
    assert resampled.shape == (*finer.shape, 3)
    assert float(resampled.max()) <= 1.0 + 1e-6 and float(resampled[0].abs().max()) < 0.3


def test_mlp_velocity_starts_at_zero_and_is_continuous_across_grids():
    grid = oblique_grid()
    mlp = FourierFeatureMLP(3, 3, 8, 1.0, 16, 1, generator=torch.Generator().manual_seed(0))
    source = MLPVelocity(grid, 3.0, mlp, 1.0)
    assert float(source.on().detach().abs().max()) == 0.0  # zero-initialised output layer: the identity
    with torch.no_grad():
        mlp.net[-1].weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    coarse, fine = source.on(), source.on(grid.resized(grid.spacing / 3))
    assert coarse.shape == (*grid.shape, 3) and float(fine.abs().max()) > 0


def test_fit_adam_keeps_the_best_state_and_stops_on_a_plateau():
    source = TensorVelocity(oblique_grid((4, 4, 4), (1.0, 1.0, 1.0)), ramp_mm=0.1)
    target = torch.full((4, 4, 4, 3), 2.0)
    calls = []

    def terms():
        calls.append(1)
        return {"data": ((source.values - target) ** 2).mean()}

    fit = fit_adam(source, terms, iterations=500, learning_rate=0.5, patience=5, min_improvement=1e-3,
                   monitor=Monitor(), label="test")
    assert fit.iterations < 500 and len(calls) == fit.iterations  # stopped early
    assert fit.best == pytest.approx(min(fit.history))
    final = float(((source.values - target) ** 2).mean())
    assert final == pytest.approx(fit.best, rel=1e-6)  # the module holds the best state, not the last


def test_fit_adam_names_the_non_finite_term_and_cancels():
    source = TensorVelocity(oblique_grid((4, 4, 4), (1.0, 1.0, 1.0)), ramp_mm=1.0)

    def terms():
        return {"fine": source.values.sum() * 0, "broken": source.values.sum() * float("nan")}

    with pytest.raises(MMRegError, match="the broken loss term became nan at iteration 0"):
        fit_adam(source, terms, 10, 0.1, 5, 0.0, Monitor(), "test")
    with pytest.raises(Cancelled):
        fit_adam(source, terms, 10, 0.1, 5, 0.0, Monitor(cancel=lambda: True), "test")


def test_finish_velocity_composes_forward_and_inverse():
    grid = oblique_grid((12, 12, 12), (3.0, 3.0, 3.0))
    source = TensorVelocity(grid, ramp_mm=9.0, dtype=torch.float64)
    with torch.no_grad():
        source.values[..., 0] = 2.0
    affine = np.eye(4)
    affine[:3, 3] = [1.0, -2.0, 0.5]
    forward, inverse, info = finish_velocity(source, grid.resized(1.5), affine, steps=7)
    assert forward.direction_label == "fixed->moving" and inverse.direction_label == "moving->fixed"
    points = grid.world_points().reshape(-1, 3)[::7]
    back = inverse.map_points_np(forward.map_points_np(points))
    assert np.abs(back - points).max() < 0.05
    assert info["folding_fraction_output_grid"] == 0.0 and 0 < info["max_displacement_mm"] <= 2.0 + 1e-6
    far = np.array([[500.0, 500.0, 500.0]])  # outside the box: the affine alone
    np.testing.assert_allclose(forward.map_points_np(far), far + affine[:3, 3], atol=1e-9)
