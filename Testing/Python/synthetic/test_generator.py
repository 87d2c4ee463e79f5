"""Synthetic MR (moving) / TRUS (fixed) case generator: determinism, geometry, exact ground truth, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from MMRegistrationLib.core.errors import Cancelled, InputError, MMRegError
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.synthetic import CASE_FILES, SyntheticCase, SyntheticCaseConfig, generate_case, write_case
from MMRegistrationLib.synthetic.deformation import jacobian_determinant

# Half the voxels per axis (fast), but 2 mm MR slices instead of 4 mm so nearest-neighbour label look-ups
# stay accurate enough for the Dice check.
SMALL = dict(scale=0.5, moving_size=(128, 128, 80), moving_spacing=(0.7, 0.7, 1.0))


@pytest.fixture(scope="module")
def small_case() -> SyntheticCase:
    return generate_case(SyntheticCaseConfig(seed=0, **SMALL))


@pytest.fixture(scope="module")
def default_case() -> SyntheticCase:
    return generate_case(SyntheticCaseConfig(seed=0))


def _lookup_nearest(seg: Image, points: np.ndarray) -> np.ndarray:
    """Label of ``seg`` at the nearest voxel of each world point ``(..., 3)`` (0 outside the grid)."""
    idx = np.rint(seg.grid.world_to_index(points)).astype(int)
    size = np.asarray(seg.grid.size_ijk)
    ok = np.all((idx >= 0) & (idx < size), axis=-1)
    out = np.zeros(points.shape[:-1], dtype=seg.array.dtype)
    good = idx[ok]
    out[ok] = seg.array[good[:, 2], good[:, 1], good[:, 0]]
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


def _warped_and_identity(case: SyntheticCase) -> tuple:
    pts = case.fixed.grid.world_points()
    warped = _lookup_nearest(case.moving_seg, case.ground_truth.map_points_np(pts))
    identity = _lookup_nearest(case.moving_seg, pts)
    return warped, identity


# ---- determinism ----------------------------------------------------------------------------------
def test_same_seed_gives_identical_case(small_case):
    again = generate_case(SyntheticCaseConfig(seed=0, **SMALL))
    for name in ("fixed", "moving", "fixed_seg", "moving_seg"):
        a, b = getattr(small_case, name), getattr(again, name)
        assert np.array_equal(a.array, b.array), name
        assert np.array_equal(a.grid.affine, b.grid.affine), name
    assert np.array_equal(small_case.fixed_landmarks, again.fixed_landmarks)
    assert np.array_equal(small_case.moving_landmarks, again.moving_landmarks)
    assert np.array_equal(small_case.ground_truth.numpy(), again.ground_truth.numpy())


def test_different_seed_gives_different_case(small_case):
    other = generate_case(SyntheticCaseConfig(seed=1, **SMALL))
    assert not np.array_equal(small_case.moving.array, other.moving.array)
    assert not np.array_equal(small_case.moving_seg.array, other.moving_seg.array)
    assert not np.array_equal(small_case.fixed.array, other.fixed.array)
    assert not np.allclose(small_case.ground_truth.numpy(), other.ground_truth.numpy())
    assert not np.allclose(small_case.moving_landmarks[:1], other.moving_landmarks[:1])


# ---- geometry -----------------------------------------------------------------------------------
def test_oblique_geometry(small_case):
    fixed, moving = small_case.fixed.grid, small_case.moving.grid
    for grid in (fixed, moving):
        d = grid.direction
        assert np.allclose(d.T @ d, np.eye(3), atol=1e-9)
        assert np.linalg.det(d) > 0
        assert not np.allclose(d, np.eye(3), atol=1e-3)
        assert np.linalg.norm(grid.origin) > 1.0
    assert not np.allclose(fixed.direction, moving.direction, atol=1e-3)
    sp = moving.spacing
    assert sp[2] > 1.3 * sp[0] and np.isclose(sp[0], sp[1])
    assert small_case.fixed.array.dtype == np.uint8
    assert small_case.moving.array.dtype in (np.uint16, np.int16)
    assert small_case.fixed_seg.array.dtype == np.uint8 and small_case.moving_seg.array.dtype == np.uint8
    assert small_case.fixed_seg.grid.same_as(fixed) and small_case.moving_seg.grid.same_as(moving)
    assert small_case.moving_seg.labels() == [1, 2, 3, 4]
    assert small_case.fixed_seg.labels() == [1, 2, 3, 4]


def test_straight_geometry_has_identity_directions():
    case = generate_case(SyntheticCaseConfig(seed=3, oblique=False, **SMALL))
    assert np.allclose(case.fixed.grid.direction, np.eye(3))
    assert np.allclose(case.moving.grid.direction, np.eye(3))
    assert np.linalg.norm(case.fixed.grid.origin) > 1.0 and np.linalg.norm(case.moving.grid.origin) > 1.0


def test_ground_truth_grid_covers_fixed_field_of_view(small_case):
    gt = small_case.ground_truth
    assert (gt.source, gt.target) == ("fixed", "moving")
    assert np.allclose(gt.grid.spacing, 2.0, atol=0.3)
    idx = gt.grid.world_to_index(small_case.fixed.grid.corners_world())
    size = np.asarray(gt.grid.size_ijk)
    assert np.all(idx >= -0.5 - 1e-6) and np.all(idx <= size - 0.5 + 1e-6)


# ---- exact ground truth -------------------------------------------------------------------------
def test_ground_truth_maps_moving_seg_onto_fixed_seg(small_case):
    warped, identity = _warped_and_identity(small_case)
    fixed_seg = small_case.fixed_seg.array
    dice = _dice(warped == 1, fixed_seg == 1)
    dice_identity = _dice(identity == 1, fixed_seg == 1)
    assert dice > 0.95, dice
    assert dice_identity < 0.9 and dice_identity < dice - 0.1, (dice, dice_identity)
    for label in (2, 3, 4):
        assert _dice(warped == label, fixed_seg == label) > 0.9, label


def test_default_case_dice(default_case):
    warped, identity = _warped_and_identity(default_case)
    fixed_seg = default_case.fixed_seg.array
    assert _dice(warped == 1, fixed_seg == 1) > 0.95
    assert _dice(identity == 1, fixed_seg == 1) < 0.9


def test_landmarks_correspond_and_lie_in_prostate(small_case):
    fixed_lm, moving_lm = small_case.fixed_landmarks, small_case.moving_landmarks
    assert fixed_lm.shape == moving_lm.shape and 4 <= len(fixed_lm) <= 6 and fixed_lm.shape[1] == 3
    mapped = small_case.ground_truth.map_points_np(fixed_lm)
    assert np.abs(mapped - moving_lm).max() < 0.01
    assert np.all(_lookup_nearest(small_case.fixed_seg, fixed_lm) == 1)
    assert np.all(_lookup_nearest(small_case.moving_seg, moving_lm) == 1)
    assert np.all(small_case.probe.inside(fixed_lm))
    gaps = np.linalg.norm(moving_lm[:, None] - moving_lm[None], axis=-1) + 1e3 * np.eye(len(moving_lm))
    assert gaps.min() > 5.0


def test_trus_is_zero_outside_the_sector(small_case):
    mask = small_case.sector_mask()
    fixed = small_case.fixed.array
    assert 0.2 < mask.mean() < 0.9
    assert np.all(fixed[~mask] == 0)
    assert np.all(fixed[mask] > 0)
    assert 40 < fixed[mask].mean() < 200


def test_jacobian_positive_everywhere(small_case):
    det = jacobian_determinant(small_case.ground_truth)
    assert det.shape == small_case.ground_truth.grid.shape
    assert det.min() > 0.0
    # the deformation is not trivially rigid: compression / smooth noise change local volume
    assert det.max() - det.min() > 0.1


def test_folding_configuration_is_refused():
    with pytest.raises(MMRegError, match="folds"):
        generate_case(SyntheticCaseConfig(seed=0, deformation_mm=60.0, deformation_smoothness_mm=8.0, **SMALL))


# ---- files --------------------------------------------------------------------------------------
def test_write_case_files_round_trip(small_case, tmp_path):
    out = tmp_path / "case"
    paths = write_case(small_case, out)
    assert set(paths) == set(CASE_FILES)
    assert sorted(p.name for p in out.iterdir() if p.name != ".mmreg-output") == sorted(CASE_FILES.values())
    assert not [p for p in tmp_path.iterdir() if p.name != "case"]  # no temporary folders left behind

    for name in ("fixed", "moving", "fixed_seg", "moving_seg"):
        img = sitk.ReadImage(str(paths[name]))
        ref = getattr(small_case, name)
        assert np.array_equal(sitk.GetArrayFromImage(img), ref.array), name
        assert np.allclose(img.GetSpacing(), ref.grid.spacing) and np.allclose(img.GetOrigin(), ref.grid.origin)
        assert np.allclose(np.reshape(img.GetDirection(), (3, 3)), ref.grid.direction)

    for name in ("fixed_landmarks", "moving_landmarks"):
        lines = paths[name].read_text(encoding="utf-8").strip().splitlines()
        assert lines[0] == "x,y,z"
        values = np.loadtxt(paths[name], delimiter=",", skiprows=1, ndmin=2)
        assert np.allclose(values, getattr(small_case, name), atol=1e-6)

    tx = sitk.ReadTransform(str(paths["ground_truth"]))
    mapped = np.array([tx.TransformPoint(tuple(float(v) for v in p)) for p in small_case.fixed_landmarks])
    assert np.abs(mapped - small_case.moving_landmarks).max() < 0.01

    meta = json.loads(paths["case"].read_text(encoding="utf-8"))
    assert meta["labels"] == {"1": "prostate", "2": "bladder", "3": "rectum", "4": "pubic_bone"}
    assert SyntheticCaseConfig.from_dict(meta["config"]) == small_case.config
    assert meta["num_landmarks"] == len(small_case.fixed_landmarks)


def test_write_case_replaces_a_previous_case_but_not_foreign_folders(small_case, tmp_path):
    out = tmp_path / "case"
    write_case(small_case, out)
    write_case(small_case, out)  # a previous case is replaced
    assert sorted(p.name for p in out.iterdir() if p.name != ".mmreg-output") == sorted(CASE_FILES.values())
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(InputError, match="out_dir"):
        write_case(small_case, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_default_case_is_small_on_disk(default_case, tmp_path):
    paths = write_case(default_case, tmp_path / "case")
    total = sum(p.stat().st_size for p in paths.values())
    assert total < 5 * 2**20, total


# ---- config, progress, cancel -------------------------------------------------------------------
def test_config_round_trip_and_validation():
    cfg = SyntheticCaseConfig(seed=7, oblique=False, deformation_mm=2.5, fixed_size=(100, 90, 80))
    assert SyntheticCaseConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(InputError, match="deformation_mm"):
        SyntheticCaseConfig(deformation_mm=-1.0)
    with pytest.raises(InputError, match="moving_spacing"):
        SyntheticCaseConfig(moving_spacing=(0.7, 0.0, 2.0))
    with pytest.raises(InputError, match="unknown"):
        SyntheticCaseConfig.from_dict({"sed": 1})


def test_progress_and_cancel():
    calls = []
    generate_case(SyntheticCaseConfig(seed=2, scale=0.35), progress=lambda f, m: calls.append((f, m)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(isinstance(m, str) and m for _, m in calls)
    with pytest.raises(Cancelled):
        generate_case(SyntheticCaseConfig(seed=2, scale=0.35), cancel=lambda: len(calls) > 0)
