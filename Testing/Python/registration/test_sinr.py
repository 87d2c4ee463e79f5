"""SINR: recovery of a known transform, inverse consistency, no folding, determinism, bad input, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import covering_grid, phantom_labels
from MMRegistrationLib.core.errors import Cancelled, InputError, MMRegError
from MMRegistrationLib.registration.sinr import sinr_config, sinr_register
from MMRegistrationLib.spatial import AffineTransform

SHIFT = np.array([3.0, -2.0, 2.5])


@pytest.fixture(scope="module")
def pair():
    """Phantom on coarse oblique grids; moving = fixed shifted by SHIFT (fixed->moving is +SHIFT)."""
    truth = AffineTransform.from_translation(SHIFT)
    fixed = phantom_labels(covering_grid([5, 0, 15], 100, (2.0, 2.0, 2.0), (10, -5, 20)))
    moving = phantom_labels(covering_grid([5, 0, 15], 110, (1.5, 1.5, 2.5), (-12, 8, -25)), truth.inverse().map_points_np)
    return fixed, moving


@pytest.fixture(scope="module")
def result(pair):
    fixed, moving = pair
    return sinr_register(fixed, moving, AffineTransform.identity(), sinr_config("fast", iterations=150), seed=0)


def gland_points(fixed):
    return fixed.grid.world_points()[fixed.array == 1]


def test_recovers_a_known_translation_from_identity(pair, result):
    """Stated accuracy: mean displacement in the gland within 0.5 mm of the truth, spread below 0.6 mm."""
    fixed, _ = pair
    pts = gland_points(fixed)
    moved = result.transform.map_points_np(pts) - pts
    assert np.linalg.norm(moved.mean(0) - SHIFT) < 0.5, moved.mean(0)
    assert moved.std(0).max() < 0.6, moved.std(0)
    assert result.transform.direction_label == "fixed->moving"


def test_forward_then_inverse_is_identity(pair, result):
    fixed, _ = pair
    pts = gland_points(fixed)
    back = result.inverse.map_points_np(result.transform.map_points_np(pts))
    assert result.inverse.direction_label == "moving->fixed"
    err = np.linalg.norm(back - pts, axis=1)  # exp(-v) after exp(v) on the 2 mm output grid: discretisation error only
    assert err.max() < 0.15 and err.mean() < 0.03, (err.max(), err.mean())


def test_no_folding(result):
    assert result.info["folding_fraction_output_grid"] == 0.0
    assert result.info["jacobian_min_output_grid"] > 0.2


def test_same_seed_same_field(pair):
    fixed, moving = pair
    cfg = sinr_config("fast", iterations=8)
    a = sinr_register(fixed, moving, AffineTransform.identity(), cfg, seed=3)
    b = sinr_register(fixed, moving, AffineTransform.identity(), cfg, seed=3)
    np.testing.assert_array_equal(a.transform.transforms[0].numpy(), b.transform.transforms[0].numpy())


def test_masks_that_do_not_overlap_are_refused(pair):
    fixed, moving = pair
    far = AffineTransform.from_translation([200.0, 0.0, 0.0])
    with pytest.raises(InputError, match="do not overlap"):
        sinr_register(fixed, moving, far, sinr_config("fast", iterations=5))


def test_non_finite_loss_stops_with_a_clear_message(pair, monkeypatch):
    import MMRegistrationLib.registration.sinr as sinr

    monkeypatch.setattr(sinr, "soft_dice_loss", lambda *a, **k: torch.full((1,), float("nan"), requires_grad=True))
    fixed, moving = pair
    with pytest.raises(MMRegError, match="the dice loss term became nan"):
        sinr_register(fixed, moving, AffineTransform.identity(), sinr_config("fast", iterations=5))


def test_cancel_stops_the_fit(pair):
    fixed, moving = pair
    with pytest.raises(Cancelled):
        sinr_register(fixed, moving, AffineTransform.identity(), sinr_config("fast"), cancel=lambda: True)


def test_unknown_preset_and_option():
    with pytest.raises(InputError, match="--preset"):
        sinr_config("turbo")
    with pytest.raises(InputError, match="--warp-speed: method .sinr. has no such option"):
        sinr_config("fast", warp_speed=9)


def test_cli_writes_grid_transform_that_simpleitk_applies(tmp_path):
    from analytic_case import LANDMARKS_FIXED, TRUE, write_case
    from MMRegistrationLib.cli.main import main

    case = write_case(tmp_path / "case")
    out = tmp_path / "out"
    assert main(["register", "--method", "sinr", "--fixed", case["fixed"], "--moving", case["moving"],
                 "--fixed-seg", case["fixed_seg"], "--moving-seg", case["moving_seg"], "--out", str(out), "--quiet"]) == 0
    tx = sitk.ReadTransform(str(out / "transform.h5"))
    assert "DisplacementField" in tx.Downcast().GetName()
    mapped = np.array([tx.TransformPoint(tuple(p)) for p in LANDMARKS_FIXED[:3]])
    assert np.linalg.norm(mapped - TRUE.map_points_np(LANDMARKS_FIXED[:3]), axis=1).max() < 1.5
    inv = sitk.ReadTransform(str(out / "inverse_transform.h5"))
    back = np.array([inv.TransformPoint(tuple(p)) for p in mapped])
    np.testing.assert_allclose(back, LANDMARKS_FIXED[:3], atol=0.1)


def test_bad_preset_is_refused_before_any_work(tmp_path, capsys):
    from analytic_case import write_case
    from MMRegistrationLib.cli.main import main

    case = write_case(tmp_path / "case")
    code = main(["register", "--method", "sinr", "--preset", "turbo", "--init", "rigid-mask", "--fixed", case["fixed"], "--moving", case["moving"],
                 "--fixed-seg", case["fixed_seg"], "--moving-seg", case["moving_seg"], "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "--preset: unknown preset 'turbo'" in err
    assert "rigid-mask level" not in err  # the initialiser did not start
    assert not (tmp_path / "out").exists()


def test_a_region_confines_the_field_to_the_box(pair):
    """``region`` (``--roi``): the field is 0 outside the box and the fit still moves the gland inside it."""
    from MMRegistrationLib.core.box import OrientedBox

    fixed, moving = pair
    pts = gland_points(fixed)
    centre = pts.mean(0)
    axes = np.linalg.qr(np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.3], [0.1, 0.0, 1.0]]))[0]
    region = OrientedBox(centre, axes, np.full(3, 40.0))
    result = sinr_register(fixed, moving, AffineTransform.identity(), sinr_config("fast", iterations=60), seed=0,
                           region=region)
    grid_points = fixed.grid.world_points().reshape(-1, 3)
    outside = grid_points[~region.contains(grid_points)]
    np.testing.assert_allclose(result.transform.map_points_np(outside), outside, atol=1e-9)
    moved = result.transform.map_points_np(pts) - pts
    assert np.linalg.norm(moved.mean(0) - SHIFT) < 1.0, moved.mean(0)
    assert result.info["region"]["size_mm"] == pytest.approx([80.0, 80.0, 80.0])
    with pytest.raises(InputError, match="--roi"):
        sinr_register(fixed, moving, AffineTransform.identity(), sinr_config("fast"), region=OrientedBox(
            centre + 300.0, np.eye(3), np.full(3, 40.0)))


def test_coarse_to_fine_fit_recovers_the_translation_and_reports_its_levels(pair):
    fixed, moving = pair
    config = sinr_config("fast", iterations=150, coarse_iterations=60)
    res = sinr_register(fixed, moving, AffineTransform.identity(), config, seed=0)
    assert 0 < res.info["coarse_iterations"] <= 60 < res.info["iterations"] <= 150
    pts = gland_points(fixed)
    moved = res.transform.map_points_np(pts) - pts
    assert np.linalg.norm(moved.mean(0) - SHIFT) < 0.5, moved.mean(0)


def test_fit_levels_split_the_iterations():
    from MMRegistrationLib.registration.sinr import fit_levels

    grid = covering_grid([0, 0, 0], 80, (4.0, 4.0, 4.0), (0, 0, 0))
    assert fit_levels(grid, sinr_config("fast", coarse_iterations=0)) == [(grid, 80, False)]
    (coarse, n_coarse, is_coarse), (fine, n_fine, is_fine) = fit_levels(grid, sinr_config("fast", coarse_iterations=30))
    assert (n_coarse, n_fine, is_coarse, is_fine) == (30, 50, True, False) and fine is grid
    assert np.allclose(coarse.spacing, 8.0) and np.allclose(coarse.corners_world(), grid.corners_world())
    assert len(fit_levels(grid, sinr_config("fast", iterations=5, coarse_iterations=50))[-1]) == 3
    assert fit_levels(grid, sinr_config("fast", iterations=5, coarse_iterations=50))[-1][1] == 1


def test_soft_masks_on_the_labels_crop_equal_the_whole_grid(pair):
    """The masks are smoothed on a crop around the labels only: sampled anywhere, the values are the whole grid's."""
    from scipy import ndimage

    from MMRegistrationLib.registration.sinr import _soft_masks
    from MMRegistrationLib.spatial.sampling import sample_at_world

    _, moving = pair
    volume, grid = _soft_masks(moving, [1, 2, 3], 2.0)
    assert volume.shape[1:] != moving.array.shape  # a real crop
    sigma = 2.0 / moving.grid.spacing[::-1]
    whole = np.stack([ndimage.gaussian_filter((moving.array == lab).astype(np.float32), sigma) for lab in (1, 2, 3)])
    points = moving.grid.world_points_torch(dtype=torch.float32)
    sampled = sample_at_world(torch.as_tensor(volume), grid, points, outside_value=0.0).permute(3, 0, 1, 2)
    assert float((sampled - torch.as_tensor(whole)).abs().max()) < 1e-4
