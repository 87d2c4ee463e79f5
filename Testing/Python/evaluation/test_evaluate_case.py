"""evaluate_case: known transforms (direction), SimpleITK's overlap filter, Jacobian, undefined values, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import covering_grid, expect_input_error, oblique_grid, phantom_labels
from MMRegistrationLib.core.errors import Cancelled
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.evaluation import CaseEvaluation, evaluate_case
from MMRegistrationLib.metrics.surface import surface_distance_metrics
from MMRegistrationLib.registration.base import RegistrationInputs
from MMRegistrationLib.registration.pipeline import compute_metrics
from MMRegistrationLib.spatial import AffineTransform, DisplacementField

SHIFT = np.array([6.0, -4.0, 3.0])
LANDMARKS = np.array([[5.0, -2.0, 10.0], [14.0, 3.0, 12.0], [-4.0, -6.0, 6.0]])


def shifted(grid: Grid, shift) -> Grid:
    affine = np.array(grid.affine)
    affine[:3, 3] += shift
    return Grid(grid.shape, affine)


@pytest.fixture(scope="module")
def fixed_seg() -> Image:
    return phantom_labels(covering_grid([5, 0, 15], 80, (1.6, 1.4, 2.0), (10, -5, 20)))


@pytest.fixture(scope="module")
def moving_seg(fixed_seg) -> Image:
    """The fixed anatomy seen through T = translation by SHIFT (fixed -> moving): the same voxels on a grid
    moved by SHIFT, so resampling with T is exact."""
    return Image(fixed_seg.array, shifted(fixed_seg.grid, SHIFT))


def test_right_transform_is_perfect_and_the_inverse_is_clearly_worse(fixed_seg, moving_seg):
    t = AffineTransform.from_translation(SHIFT)
    right = evaluate_case(fixed_seg, moving_seg, t, {1: "prostate"}, LANDMARKS, LANDMARKS + SHIFT)
    assert isinstance(right, CaseEvaluation)
    assert [r["label"] for r in right.rows] == [1, 2, 3] and right.row("prostate")["label"] == 1
    for r in right.rows:
        assert r["dice"] == 1.0 and r["msd_mm"] == 0.0 and r["hd95_mm"] == 0.0 and r["hd_mm"] == 0.0, r
        assert r["note"] == "" and r["fixed_surface_points"] == r["warped_surface_points"] > 0
    assert right.tre["tre_max_mm"] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_array_equal(right.warped_moving_seg.array, fixed_seg.array)
    assert right.jacobian["jacobian_min"] == right.jacobian["jacobian_max"] == 1.0

    wrong_way = AffineTransform(t.inverse().matrix)  # labelled fixed -> moving, but maps the wrong way
    wrong = evaluate_case(fixed_seg, moving_seg, wrong_way, None, LANDMARKS, LANDMARKS + SHIFT)
    norm = float(np.linalg.norm(SHIFT))
    assert wrong.tre["tre_mean_mm"] == pytest.approx(2 * norm)
    for r in wrong.rows:
        assert r["dice"] < 0.8 and r["msd_mm"] > 2.0 and r["hd_mm"] == pytest.approx(2 * norm, abs=2.0), r
    identity = evaluate_case(fixed_seg, moving_seg)
    assert identity.tre is None and identity.transform == "identity"
    assert all(i["dice"] > w["dice"] for i, w in zip(identity.rows, wrong.rows))


def test_rotation_onto_a_different_grid(fixed_seg):
    t = AffineTransform.from_rigid(np.deg2rad([6.0, -5.0, 8.0]), [5.0, -3.0, 4.0], center=[5.0, -2.0, 10.0])
    moving_grid = covering_grid([12, -6, 22], 96, (0.9, 1.1, 1.7), (-12, 8, -25))
    moving = phantom_labels(moving_grid, t.inverse().map_points_np)
    ev = evaluate_case(fixed_seg, moving, t)
    assert min(r["dice"] for r in ev.rows) > 0.9 and max(r["msd_mm"] for r in ev.rows) < 1.0
    assert min(r["dice"] for r in evaluate_case(fixed_seg, moving, AffineTransform(t.inverse().matrix)).rows) < 0.7


def test_dice_and_distances_equal_independent_computations(fixed_seg):
    grid = oblique_grid(shape=(26, 30, 28))
    pts = grid.world_points()
    center = grid.index_to_world(np.array([14.0, 15.0, 13.0]))
    fixed = np.zeros(grid.shape, np.uint8)
    fixed[np.linalg.norm((pts - center) / [8, 6, 9], axis=-1) <= 1] = 1
    fixed[np.linalg.norm((pts - center - [0, 0, 14]) / [5, 5, 4], axis=-1) <= 1] = 2
    moving = np.zeros_like(fixed)
    moving[np.linalg.norm((pts - center - [1.5, 1, -1]) / [7, 7, 8], axis=-1) <= 1] = 1
    moving[np.linalg.norm((pts - center - [-1, 0, 13]) / [5, 6, 5], axis=-1) <= 1] = 2
    ev = evaluate_case(Image(fixed, grid), Image(moving, grid))
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(Image(fixed, grid).to_sitk(), Image(moving, grid).to_sitk())
    hausdorff = sitk.HausdorffDistanceImageFilter()
    for r in ev.rows:
        assert r["dice"] == pytest.approx(overlap.GetDiceCoefficient(r["label"]), abs=1e-12)
        hausdorff.Execute(Image((fixed == r["label"]).astype(np.uint8), grid).to_sitk(),
                          Image((moving == r["label"]).astype(np.uint8), grid).to_sitk())
        assert r["hd_mm"] == pytest.approx(hausdorff.GetHausdorffDistance(), abs=1e-6)
        ref = surface_distance_metrics(fixed == r["label"], grid, moving == r["label"])
        assert (r["msd_mm"], r["hd95_mm"]) == (ref["msd_mm"], ref["hd95_mm"])


def test_warping_and_dice_agree_with_simpleitk_resample():
    """Same grid, non-trivial rigid T: our warped labels match SimpleITK's nearest-neighbour Resample, and DSC/HD
    are those of SimpleITK's filters on the warped map."""
    from MMRegistrationLib.io import to_sitk_transform

    fixed = phantom_labels(oblique_grid(shape=(30, 34, 32), spacing=(1.5, 1.2, 2.0), origin=(-20, -25, -10)))
    t = AffineTransform.from_rigid(np.deg2rad([4.0, -3.0, 6.0]), [2.5, -1.5, 1.0], center=[5.0, -2.0, 10.0])
    ev = evaluate_case(fixed, fixed, t)
    reference = sitk.Resample(fixed.to_sitk(), fixed.to_sitk(), to_sitk_transform(t), sitk.sitkNearestNeighbor, 0)
    theirs = sitk.GetArrayFromImage(reference)
    assert np.mean(ev.warped_moving_seg.array != theirs) < 1e-4  # float32 points: rare ties may round apart
    assert np.any(ev.warped_moving_seg.array != fixed.array)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(fixed.to_sitk(), ev.warped_moving_seg.to_sitk())
    for r in ev.rows:
        assert r["dice"] == pytest.approx(overlap.GetDiceCoefficient(r["label"]), abs=1e-12)
        assert 0.5 < r["dice"] < 0.99


def test_jacobian_of_a_folding_field_and_its_image(fixed_seg):
    grid = fixed_seg.grid
    pts = grid.world_points()
    c = pts[tuple(s // 2 for s in grid.shape)]
    bump = np.exp(-(((pts - c) / 10.0) ** 2).sum(-1))
    u = np.zeros(pts.shape)
    u[..., 0] = -2.0 * (pts[..., 0] - c[0]) * bump  # du_x/dx = -2 at the centre: det = -1
    ev = evaluate_case(fixed_seg, fixed_seg, DisplacementField(grid, torch.from_numpy(u)))
    assert ev.jacobian["folding_fraction"] > 0 and ev.jacobian["jacobian_min"] < 0 < ev.jacobian["jacobian_max"]
    assert ev.jacobian["mean_abs_grad_jacobian_per_mm"] > 0
    assert ev.jacobian_image.array.dtype == np.float32 and ev.jacobian_image.grid.same_as(grid)
    assert ev.jacobian_image.array.min() == pytest.approx(ev.jacobian["jacobian_min"], rel=1e-6)
    inside = fixed_seg.array != 0
    assert ev.jacobian_fixed_mask["folding_fraction"] == pytest.approx(np.mean(ev.jacobian_image.array[inside] <= 0))
    assert evaluate_case(fixed_seg, fixed_seg, jacobian=False).jacobian is None


def test_label_mapped_out_of_view_is_nan_with_a_note_not_an_error():
    fixed = phantom_labels(covering_grid([5, 0, 15], 72, (1.5, 1.5, 1.5), (0, 0, 0)))
    moving_grid = covering_grid([5, 0, 15], 120, (1.5, 1.5, 1.5), (0, 0, 0))  # same voxel lattice, larger
    moving = phantom_labels(moving_grid).array.copy()
    # give label 3 only to a blob far outside the fixed field of view (the rectum's voxels become background)
    moving[moving == 3] = 0
    moving[np.linalg.norm(moving_grid.world_points() - [5, 0, 70], axis=-1) < 5] = 3
    ev = evaluate_case(fixed, Image(moving, moving_grid))
    row = ev.row(3)
    assert row["dice"] == 0.0 and math.isnan(row["msd_mm"]) and math.isnan(row["hd95_mm"]) and math.isnan(row["hd_mm"])
    assert row["warped_surface_points"] == 0 and "empty" in row["note"] and "field of view" in row["note"]
    assert ev.row(1)["note"] == "" and ev.row(1)["dice"] > 0.99
    assert ev.to_dict()["labels"][2]["msd_mm"] is None and ev.to_dict()["labels"][2]["note"] == row["note"]


def test_input_errors_name_the_argument(fixed_seg, moving_seg):
    empty = fixed_seg.with_array(np.zeros_like(fixed_seg.array))
    expect_input_error(lambda: evaluate_case(empty, moving_seg), "fixed_seg", "empty")
    expect_input_error(lambda: evaluate_case(fixed_seg, empty), "moving_seg", "empty")
    only_fixed = fixed_seg.array.copy()
    only_fixed[0, 0, 0] = 7
    expect_input_error(lambda: evaluate_case(fixed_seg.with_array(only_fixed), moving_seg), "moving_seg", "[7]",
                       "in fixed_seg but not in moving_seg")
    expect_input_error(lambda: evaluate_case(fixed_seg, moving_seg.with_array(only_fixed)), "fixed_seg", "[7]")
    expect_input_error(lambda: evaluate_case(fixed_seg, moving_seg, None, None, LANDMARKS, LANDMARKS[:2]),
                       "moving_landmarks", "2 landmarks", "3")
    expect_input_error(lambda: evaluate_case(fixed_seg, moving_seg, None, None, LANDMARKS), "moving_landmarks", "both")
    expect_input_error(lambda: evaluate_case(fixed_seg, moving_seg, None, None, LANDMARKS[:, :2], LANDMARKS[:, :2]),
                       "fixed_landmarks", "(N, 3)")
    floats = fixed_seg.with_array(fixed_seg.array.astype(np.float32))
    expect_input_error(lambda: evaluate_case(floats, moving_seg), "fixed_seg", "label map")
    backwards = AffineTransform.from_translation(SHIFT, source="moving", target="fixed")
    expect_input_error(lambda: evaluate_case(fixed_seg, moving_seg, backwards), "transform", "fixed -> moving")
    expect_input_error(lambda: evaluate_case(fixed_seg, moving_seg, np.eye(4)), "transform", "SpatialTransform")
    expect_input_error(lambda: evaluate_case(fixed_seg, moving_seg, None, {"prostate": 1}), "label_names", "integers")


def test_progress_and_cancel(fixed_seg, moving_seg):
    seen = []
    evaluate_case(fixed_seg, moving_seg, progress=lambda f, m: seen.append(f))
    assert seen and seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    with pytest.raises(Cancelled):
        evaluate_case(fixed_seg, moving_seg, cancel=lambda: True)


def test_registration_metrics_come_from_evaluate_case(fixed_seg, moving_seg):
    t = AffineTransform.from_rigid([0.05, 0.0, -0.04], SHIFT + [1.0, 0.0, -1.0])
    inputs = RegistrationInputs(fixed_seg, moving_seg, fixed_seg, moving_seg, {2: "bladder"}, LANDMARKS, LANDMARKS + SHIFT)
    metrics = compute_metrics(inputs, t)
    ev = evaluate_case(fixed_seg, moving_seg, t, {2: "bladder"}, LANDMARKS, LANDMARKS + SHIFT)
    assert metrics["dice"] == {r["name"]: r["dice"] for r in ev.rows} and set(metrics["dice"]) == {"1", "bladder", "3"}
    assert metrics["hd95_mm"] == {r["name"]: r["hd95_mm"] for r in ev.rows}
    assert metrics["tre_mm"] == ev.tre["tre_mm"]
    landmarks_only = RegistrationInputs(fixed_seg, moving_seg, fixed_landmarks=LANDMARKS, moving_landmarks=LANDMARKS)
    assert compute_metrics(landmarks_only, None)["tre_max_mm"] == 0.0 and "dice" not in compute_metrics(landmarks_only, None)
