"""Reports (JSON/CSV) and the cohort evaluation, checked against independent re-computation."""

from __future__ import annotations

import csv
import json
import math
import statistics

import numpy as np
import pytest

from conftest import covering_grid, expect_input_error, phantom_labels
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.evaluation import evaluate_case, evaluate_cohort, write_report
from MMRegistrationLib.io import read_segmentation, write_image, write_landmarks_csv, write_transform
from MMRegistrationLib.spatial import AffineTransform

SHIFT = np.array([5.0, -3.0, 4.0])
LANDMARKS = np.array([[5.0, -2.0, 10.0], [14.0, 3.0, 12.0], [-4.0, -6.0, 6.0]])


def shifted(grid: Grid, shift) -> Grid:
    affine = np.array(grid.affine)
    affine[:3, 3] += shift
    return Grid(grid.shape, affine)


def write_cohort(root, n_cases: int = 3) -> dict:
    """Cases whose moving anatomy is the fixed one moved by SHIFT; transforms: exact, none (identity), a bit off."""
    fixed = phantom_labels(covering_grid([5, 0, 15], 76, (2.0, 1.8, 2.2), (8, -6, 15)))
    moving = Image(fixed.array, shifted(fixed.grid, SHIFT))
    transforms = [AffineTransform.from_translation(SHIFT), None, AffineTransform.from_translation(SHIFT + [1.5, 0, -1])]
    cases = {}
    for n in range(n_cases):
        folder = root / f"case{n}"
        folder.mkdir(parents=True)
        write_image(fixed, folder / "fixed_seg.nrrd")
        write_image(moving, folder / "moving_seg.nii.gz")
        write_landmarks_csv(LANDMARKS, folder / "fixed_landmarks.csv")
        write_landmarks_csv(LANDMARKS + SHIFT, folder / "moving_landmarks.csv")
        if transforms[n % 3] is not None:
            write_transform(transforms[n % 3], folder / "transform.h5")
        cases[folder.name] = (folder, transforms[n % 3])
    (root / "case0" / "case.json").write_text(json.dumps({"labels": {"1": "prostate", "2": "bladder"}}), encoding="utf-8")
    write_image(fixed.with_array(fixed.array.astype(np.float32) * 50), root / "case1" / "fixed.nrrd")
    return cases


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    return root, write_cohort(root)


def test_reports_json_and_csv(tmp_path):
    fixed = phantom_labels(covering_grid([5, 0, 15], 72, (1.5, 1.5, 1.5), (0, 0, 0)))
    moving_grid = covering_grid([5, 0, 15], 120, (1.5, 1.5, 1.5), (0, 0, 0))
    moving = phantom_labels(moving_grid).array.copy()
    moving[moving == 3] = 0
    moving[np.linalg.norm(moving_grid.world_points() - [5, 0, 70], axis=-1) < 5] = 3  # out of the fixed view
    ev = evaluate_case(fixed, Image(moving, moving_grid), None, {1: "prostate"}, LANDMARKS, LANDMARKS + 1.0)
    doc = json.loads(write_report(ev, tmp_path / "r.json").read_text(encoding="utf-8"))
    assert doc["labels"][2]["msd_mm"] is None and doc["labels"][2]["hd95_mm"] is None and "empty" in doc["labels"][2]["note"]
    assert doc["labels"][0]["name"] == "prostate" and doc["labels"][0]["dice"] == ev.rows[0]["dice"]
    assert doc["tre"]["tre_mm"] == ev.tre["tre_mm"] and doc["jacobian"] == ev.jacobian
    with open(write_report(ev, tmp_path / "r.csv"), newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == ["1", "2", "3", "landmark_1", "landmark_2", "landmark_3", "jacobian",
                                          "jacobian_fixed_mask"]
    assert float(rows[0]["msd_mm"]) == ev.rows[0]["msd_mm"] and float(rows[1]["hd95_mm"]) == ev.rows[1]["hd95_mm"]
    assert rows[2]["msd_mm"] == "" and rows[2]["dice"] == "0.0" and "empty" in rows[2]["note"]
    assert float(rows[3]["tre_mm"]) == pytest.approx(math.sqrt(3.0))
    assert float(rows[6]["jacobian_min"]) == 1.0 and float(rows[6]["folding_fraction"]) == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.json"]  # no temporary file left
    expect_input_error(lambda: write_report(ev, tmp_path / "r.txt"), "path", ".json or .csv")


def test_cohort_rows_summary_and_files(cohort, tmp_path):
    root, cases = cohort
    out = tmp_path / "out"
    rows, summary = evaluate_cohort(root, out_dir=out)
    assert [r["case"] for r in rows] == ["case0", "case1", "case2"]
    assert [r["transform"] for r in rows] == ["transform.h5", "identity", "transform.h5"]
    assert rows[0]["dice_prostate"] == 1.0 and rows[0]["hd_mm_bladder"] == 0.0 and rows[0]["tre_max_mm"] < 1e-9
    assert rows[1]["dice_1"] < 0.9 and rows[1]["tre_mean_mm"] == pytest.approx(np.linalg.norm(SHIFT))
    # each row holds exactly what evaluate_case gives for that case
    folder, transform = cases["case2"]
    ev = evaluate_case(read_segmentation(folder / "fixed_seg.nrrd").labelmap,
                       read_segmentation(folder / "moving_seg.nii.gz").labelmap, transform, None,
                       LANDMARKS, LANDMARKS + SHIFT)
    for r in ev.rows:
        assert rows[2][f"msd_mm_{r['label']}"] == pytest.approx(r["msd_mm"], abs=1e-12)
    assert rows[2]["folding_fraction"] == 0.0 and rows[2]["tre_mean_mm"] == pytest.approx(ev.tre["tre_mean_mm"])

    assert sorted(p.name for p in out.iterdir() if p.name != ".mmreg-output") == ["boxplots.png", "case0.png", "case1.png", "case2.png",
                                                    "cases.csv", "summary.csv", "summary.json"]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "cases.csv", newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    with open(out / "summary.csv", newline="", encoding="utf-8") as fh:
        summary_csv = {r["metric"]: r for r in csv.DictReader(fh)}
    # independent summary from the CSV text with the statistics module
    for metric in ("dice_2", "msd_mm_3", "hd95_mm_3", "hd_mm_3", "tre_mean_mm", "jacobian_max"):
        values = [float(r[metric]) for r in table if r[metric] != ""]
        assert summary[metric]["n"] == len(values) == int(summary_csv[metric]["n"])
        assert summary[metric]["mean"] == pytest.approx(statistics.mean(values), abs=1e-12)
        assert summary[metric]["sd"] == pytest.approx(statistics.stdev(values), abs=1e-12)
        assert summary[metric]["median"] == pytest.approx(statistics.median(values), abs=1e-12)
        assert float(summary_csv[metric]["mean"]) == summary[metric]["mean"]
        assert " ± " in summary_csv[metric]["mean_sd"]
    doc = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert doc["cases"] == 3 and doc["metrics"]["dice_prostate"]["n"] == 1 and doc["metrics"]["dice_1"]["n"] == 2
    assert doc["metrics"]["dice_prostate"]["sd"] is None  # one case: sample sd undefined, never 0


def test_cohort_from_a_list_without_outputs(cohort):
    root, _ = cohort
    rows, summary = evaluate_cohort([root / "case1", root / "case2"], figures=False)
    assert [r["case"] for r in rows] == ["case1", "case2"] and summary["dice_1"]["n"] == 2


def test_bad_case_fails_the_cohort_and_writes_nothing(tmp_path):
    root = tmp_path / "cohort"
    write_cohort(root, 2)
    (root / "case1" / "moving_seg.nii.gz").unlink()
    out = tmp_path / "out"
    expect_input_error(lambda: evaluate_cohort(root, out_dir=out), "--cohort", "case1", "moving_seg")
    write_landmarks_csv(LANDMARKS[:2], root / "case0" / "moving_landmarks.csv")
    write_image(read_segmentation(root / "case0" / "fixed_seg.nrrd").labelmap, root / "case1" / "moving_seg.nrrd")
    expect_input_error(lambda: evaluate_cohort(root, out_dir=out), "--cohort", "case0", "moving_landmarks.csv", "2")
    out.mkdir()
    (out / "keep.txt").write_text("previous results", encoding="utf-8")
    expect_input_error(lambda: evaluate_cohort(root, out_dir=out), "--out", "not an earlier mmreg result")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort", "out"]  # no partial folder left
    expect_input_error(lambda: evaluate_cohort(tmp_path / "nope"), "--cohort", "not found")
