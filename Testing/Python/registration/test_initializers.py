"""Initialisers recover known offsets; masks that cannot be aligned give clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import covering_grid, phantom_labels
from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.registration.initializers import (
    RigidMaskConfig,
    center_of_mass_init,
    center_of_mass_mm,
    rigid_mask_init,
    signed_distance_mm,
)
from MMRegistrationLib.spatial import AffineTransform


def make_pair(true: AffineTransform):
    fixed_grid = covering_grid([5, 0, 15], 100, (1.0, 1.0, 1.5), (10, -5, 20))
    moving_grid = covering_grid([12, -6, 22], 115, (0.8, 0.8, 2.5), (-12, 8, -25), origin_shift=(3, -2, 1))
    return phantom_labels(fixed_grid), phantom_labels(moving_grid, true.inverse().map_points_np)


def mean_error_mm(estimate, true, seg) -> float:
    pts = seg.grid.world_points()[seg.array == 1]
    return float(np.linalg.norm(estimate.map_points_np(pts) - true.map_points_np(pts), axis=1).mean())


def test_center_of_mass_recovers_a_translation():
    true = AffineTransform.from_translation([9.0, -6.0, 7.5])
    fixed, moving = make_pair(true)
    est = center_of_mass_init(fixed, moving)
    assert est.direction_label == "fixed->moving"
    np.testing.assert_allclose(est.matrix[:3, 3], [9.0, -6.0, 7.5], atol=0.3)


def test_center_of_mass_world_position_on_oblique_grid():
    fixed, _ = make_pair(AffineTransform.identity())
    np.testing.assert_allclose(center_of_mass_mm(fixed, 1), [5.0, -2.0, 10.0], atol=0.1)


def test_rigid_mask_recovers_rotation_and_translation():
    true = AffineTransform.from_rigid(np.deg2rad([7.0, -5.0, 9.0]), [8.0, -5.0, 6.0], center=[5.0, -2.0, 10.0])
    fixed, moving = make_pair(true)
    com = center_of_mass_init(fixed, moving)
    rigid = rigid_mask_init(fixed, moving)
    com_err, rigid_err = mean_error_mm(com, true, fixed), mean_error_mm(rigid, true, fixed)
    assert com_err > 1.5  # the rotation is real
    assert rigid_err < 0.6, rigid_err
    rot = rigid.matrix[:3, :3]
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)  # rigid: no scaling or shear


def test_rigid_mask_is_deterministic():
    true = AffineTransform.from_rigid(np.deg2rad([3.0, 2.0, -4.0]), [4.0, 2.0, -3.0], center=[5.0, -2.0, 10.0])
    fixed, moving = make_pair(true)
    config = RigidMaskConfig(start_angles_deg=0)
    a = rigid_mask_init(fixed, moving, levels_mm=(4.0,), config=config)
    b = rigid_mask_init(fixed, moving, levels_mm=(4.0,), config=config)
    np.testing.assert_array_equal(a.matrix, b.matrix)


def test_rigid_mask_needs_overlap_after_initialisation():
    true = AffineTransform.from_translation([60.0, 0.0, 0.0])
    fixed, moving = make_pair(true)
    with pytest.raises(InputError, match="do not overlap.*--init com"):
        rigid_mask_init(fixed, moving, initial=AffineTransform.identity())


def test_empty_mask_is_a_clear_error():
    fixed, _ = make_pair(AffineTransform.identity())
    with pytest.raises(InputError, match="empty"):
        center_of_mass_mm(fixed.with_array(np.zeros_like(fixed.array)), 1)


def test_signed_distance_is_in_mm_on_anisotropic_grids():
    from MMRegistrationLib.core.grid import Grid

    g = Grid.from_geometry((20, 40, 80), (0.5, 1.0, 2.0), (0, 0, 0))  # 40 mm along every axis
    pts = g.world_points()
    centre = pts[10, 20, 40]
    r = np.linalg.norm(pts - centre, axis=-1)
    sdm = signed_distance_mm(r <= 12.0, g)
    near = np.abs(r - 12.0) < 6
    err = np.abs(sdm[near] - (r - 12.0)[near])
    assert err.max() <= 2.0  # discretised surface: within the coarsest spacing
    assert err.mean() < 0.6
    assert np.all(sdm[r < 11] < 0) and np.all(sdm[r > 13] > 0)


def test_pose_model_single_vector_map_equals_the_batched_one():
    """rigid-mask evaluates one pose at a time with ``PoseModel.linear_one``: the same map as the batched ``linear``."""
    import torch

    from MMRegistrationLib.registration.pose_models import PoseModel

    initial = AffineTransform.from_rigid(np.deg2rad([3.0, -2.0, 5.0]), [4.0, 1.0, -2.0]).matrix
    model = PoseModel("rigid", np.array([5.0, -2.0, 10.0]), initial)
    for params in (torch.zeros(6, dtype=torch.float64), torch.tensor([4.0, -7.0, 11.0, 3.0, -1.0, 2.0],
                                                                     dtype=torch.float64)):
        one, one_offset = model.linear_one(params)
        batch, batch_offset = model.linear(params[None])
        np.testing.assert_allclose(one.numpy(), batch[0].numpy(), atol=1e-12)
        np.testing.assert_allclose(one_offset.numpy(), batch_offset[0].numpy(), atol=1e-12)


def test_center_init_takes_the_fixed_image_centre_to_the_moving_gland_or_image_centre():
    from MMRegistrationLib.registration.initializers import center_init

    fixed = Grid.from_geometry((10, 12, 14), (1.0, 1.5, 2.0), (-5.0, 3.0, 40.0))
    moving = Grid.from_geometry((20, 20, 20), (1.0, 1.0, 1.0), (10.0, 0.0, 0.0))
    seg = np.zeros(moving.shape, dtype=np.uint8)
    seg[4:6, 2:4, 8:10] = 3  # the lowest label is the gland when there is no label 1
    seg[15, 15, 15] = 5
    gland = moving.index_to_world(np.argwhere(seg == 3)[:, ::-1].mean(axis=0))
    shift = center_init(fixed, moving, Image(seg, moving)).matrix[:3, 3]
    assert np.allclose(fixed.center + shift, gland)
    assert np.allclose(center_init(fixed, moving).matrix[:3, 3], moving.center - fixed.center)
    empty = Image(np.zeros(moving.shape, dtype=np.uint8), moving)
    assert np.allclose(center_init(fixed, moving, empty).matrix[:3, 3], moving.center - fixed.center)


def test_masks_overlap_agrees_with_resampling_the_moving_labels():
    """The fast overlap check (moving labels looked up at the fixed foreground voxels) gives the answer of resampling
    the whole moving label map onto the fixed grid, near and beyond the edge of contact."""
    from MMRegistrationLib.registration.initializers import masks_overlap
    from MMRegistrationLib.spatial.resample import resample

    fixed = phantom_labels(covering_grid([5, 0, 15], 100, (2.0, 2.0, 2.0), (10, -5, 20)))
    moving = phantom_labels(covering_grid([5, 0, 15], 110, (1.5, 1.5, 2.5), (-12, 8, -25)))
    answers = []
    for shift in (0.0, 30.0, 40.0, 42.0, 44.0, 46.0, 60.0, 200.0):
        transform = AffineTransform.from_translation(np.array([shift, 0.0, 0.0]))
        warped = resample(moving, fixed.grid, transform, interpolation="label-nearest")
        expected = bool(np.any((fixed.array == 1) & (warped.array == 1)))
        assert masks_overlap(fixed, moving, transform, [1]) == expected, shift
        answers.append(expected)
    assert answers[0] and not answers[-1]
