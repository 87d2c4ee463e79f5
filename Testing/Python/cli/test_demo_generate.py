"""``mmreg demo`` on the bundled sample case and ``mmreg generate``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from MMRegistrationLib.cli.main import main
from MMRegistrationLib.io.transforms import read_transform
from MMRegistrationLib.resources import sample_case_dir


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    return out


def test_bundled_sample_case_is_complete_and_small():
    case = sample_case_dir()
    names = {p.name for p in case.iterdir()}
    assert {"fixed.nrrd", "moving.nrrd", "fixed_seg.nrrd", "moving_seg.nrrd", "fixed_landmarks.csv",
            "moving_landmarks.csv", "ground_truth.h5", "case.json"} <= names
    assert sum(p.stat().st_size for p in case.iterdir()) < 5 * 2**20
    fixed = sitk.ReadImage(str(case / "fixed.nrrd"))
    moving = sitk.ReadImage(str(case / "moving.nrrd"))
    assert not np.allclose(np.array(fixed.GetDirection()).reshape(3, 3), np.eye(3), atol=0.01)  # oblique
    assert len(set(np.round(moving.GetSpacing(), 3))) > 1  # anisotropic MR
    assert np.linalg.norm(fixed.GetOrigin()) > 1 and np.linalg.norm(moving.GetOrigin()) > 1


def test_demo_writes_outputs_and_improves_alignment(demo_run, capsys):
    names = {p.name for p in demo_run.iterdir()}
    assert {"transform.h5", "warped_moving.nrrd", "warped_moving_seg.nrrd", "result.json", "demo.png"} <= names
    record = json.loads((demo_run / "result.json").read_text(encoding="utf-8"))
    assert record["method"] == "sinr"  # the best method available
    before, after = record["metrics"]["before"], record["metrics"]["after"]
    assert after["dice"]["prostate"] > before["dice"]["prostate"] + 0.05
    assert after["tre_mean_mm"] < before["tre_mean_mm"]
    gt = record["ground_truth_error_mm"]
    assert gt["after"] < 0.3 * gt["before"]  # SINR: error vs the known truth in the gland
    assert (demo_run / "demo.png").stat().st_size > 10_000


def test_demo_transform_agrees_with_truth_where_truth_is_rigid(demo_run):
    """The rigid result approximates the known deformation: SimpleITK maps the fixed landmarks closer to the
    moving landmarks than the identity does."""
    case = sample_case_dir()
    tx = sitk.ReadTransform(str(demo_run / "transform.h5"))
    fixed_lm = np.loadtxt(case / "fixed_landmarks.csv", delimiter=",", skiprows=1)
    moving_lm = np.loadtxt(case / "moving_landmarks.csv", delimiter=",", skiprows=1)
    mapped = np.array([tx.TransformPoint(tuple(p)) for p in fixed_lm])
    assert np.linalg.norm(mapped - moving_lm, axis=1).mean() < np.linalg.norm(fixed_lm - moving_lm, axis=1).mean()
    truth = read_transform(case / "ground_truth.h5")
    np.testing.assert_allclose(truth.map_points_np(fixed_lm), moving_lm, atol=1e-3)


def test_simpleitk_applies_the_demo_transform_to_the_moving_labels(demo_run):
    """The acceptance check of the foundation: SimpleITK resamples the sample case's moving labels through
    transform.h5 onto the fixed grid with a prostate Dice above the unregistered one."""
    case = sample_case_dir()
    fixed_seg = sitk.ReadImage(str(case / "fixed_seg.nrrd"))
    moving_seg = sitk.ReadImage(str(case / "moving_seg.nrrd"))
    tx = sitk.ReadTransform(str(demo_run / "transform.h5"))
    fixed = sitk.GetArrayFromImage(fixed_seg) == 1

    def dice(transform) -> float:
        warped = sitk.GetArrayFromImage(sitk.Resample(moving_seg, fixed_seg, transform, sitk.sitkNearestNeighbor, 0)) == 1
        return 2 * np.logical_and(fixed, warped).sum() / (fixed.sum() + warped.sum())

    registered, unregistered = dice(tx), dice(sitk.Transform())
    assert registered > unregistered + 0.1 and registered > 0.85, (registered, unregistered)


def test_generate_writes_a_case_that_registers(tmp_path):
    out = tmp_path / "case"
    assert main(["generate", "--out", str(out), "--seed", "3", "--scale", "0.6", "--quiet"]) == 0
    assert main(["register", "--method", "com", "--fixed", str(out / "fixed.nrrd"), "--moving", str(out / "moving.nrrd"),
                 "--fixed-seg", str(out / "fixed_seg.nrrd"), "--moving-seg", str(out / "moving_seg.nrrd"),
                 "--out", str(tmp_path / "reg"), "--quiet"]) == 0
    record = json.loads((tmp_path / "reg" / "result.json").read_text(encoding="utf-8"))
    assert record["metrics"]["after"]["dice"]["1"] > 0.5
