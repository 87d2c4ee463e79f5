"""``mmreg evaluate``: files written, numbers equal to evaluate_case, cohort tables, bad input (exit 2, nothing
written)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from analytic_case import LANDMARKS_FIXED, TRUE, write_case
from conftest import covering_grid, phantom_labels
from MMRegistrationLib.cli.main import main
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.evaluation import evaluate_case
from MMRegistrationLib.io import (
    match_segmentations,
    read_image,
    read_landmarks,
    read_segmentation,
    read_transform,
    write_image,
    write_landmarks_csv,
    write_transform,
)
from MMRegistrationLib.spatial import AffineTransform


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evalcase")
    paths = write_case(folder)
    paths["transform"] = str(write_transform(TRUE, folder / "true.h5"))
    paths["wrong"] = str(write_transform(AffineTransform(TRUE.inverse().matrix), folder / "wrong.h5"))
    return paths


def single_args(case: dict, transform: str = "transform") -> list:
    return ["evaluate", "--quiet", "--fixed-seg", case["fixed_seg"], "--moving-seg", case["moving_seg"],
            "--transform", case[transform], "--fixed-landmarks", case["fixed_landmarks"],
            "--moving-landmarks", case["moving_landmarks"]]


def test_single_case_outputs_equal_evaluate_case(case, tmp_path, capsys):
    out = tmp_path / "res"
    args = single_args(case) + ["--out", str(out / "report.json"), "--figure", str(out / "fig.png"),
                                "--jacobian-out", str(out / "J.nrrd"), "--fixed-image", case["fixed"]]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    fseg, mseg, names = match_segmentations(read_segmentation(case["fixed_seg"]), read_segmentation(case["moving_seg"]))
    ev = evaluate_case(fseg, mseg, read_transform(case["transform"]), names, read_landmarks(case["fixed_landmarks"]),
                       read_landmarks(case["moving_landmarks"]))
    expected = ev.to_dict()
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    for doc in (report, printed):
        for key in ("labels", "tre", "jacobian", "jacobian_fixed_mask", "transform"):
            assert doc[key] == expected[key], key  # exact: the same computation, floats round-trip in JSON
    assert min(r["dice"] for r in report["labels"]) > 0.9 and report["tre"]["tre_max_mm"] < 1e-6
    assert report["jacobian"]["jacobian_min"] == pytest.approx(np.linalg.det(TRUE.matrix[:3, :3]), abs=1e-12)
    jac = read_image(out / "J.nrrd")
    assert jac.array.dtype == np.float32 and jac.grid.same_as(fseg.grid)
    np.testing.assert_array_equal(jac.array, ev.jacobian_image.array)
    assert (out / "fig.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.iterdir()) == ["J.nrrd", "fig.png", "report.json"]

    assert main(single_args(case) + ["--out", str(out / "report.csv"), "--no-jacobian"]) == 0
    with open(out / "report.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == ["1", "2", "3", "landmark_1", "landmark_2", "landmark_3", "landmark_4"]
    for row, r in zip(rows, ev.rows):
        assert (float(row["dice"]), float(row["msd_mm"]), float(row["hd95_mm"])) == (r["dice"], r["msd_mm"], r["hd95_mm"])


def test_wrong_direction_is_clearly_worse(case, tmp_path):
    docs = []
    for transform in ("transform", "wrong"):
        assert main(single_args(case, transform) + ["--out", str(tmp_path / f"{transform}.json")]) == 0
        docs.append(json.loads((tmp_path / f"{transform}.json").read_text(encoding="utf-8")))
    right, wrong = docs
    assert wrong["tre"]["tre_mean_mm"] > 5.0 > 0.001 > right["tre"]["tre_mean_mm"]
    assert all(w["dice"] < r["dice"] - 0.1 for r, w in zip(right["labels"], wrong["labels"]))


def write_small_cohort(root: Path) -> None:
    fixed = phantom_labels(covering_grid([5, 0, 15], 76, (2.0, 2.0, 2.4), (5, -8, 12)))
    shift = np.array([4.0, -2.0, 3.0])
    affine = np.array(fixed.grid.affine)
    affine[:3, 3] += shift
    moving = Image(fixed.array, Grid(fixed.grid.shape, affine))
    for n, transform in enumerate([AffineTransform.from_translation(shift), None, AffineTransform.identity()]):
        folder = root / f"p{n}"
        folder.mkdir(parents=True)
        write_image(fixed, folder / "fixed_seg.nrrd")
        write_image(moving, folder / "moving_seg.nrrd")
        write_landmarks_csv(LANDMARKS_FIXED, folder / "fixed_landmarks.csv")
        write_landmarks_csv(LANDMARKS_FIXED + shift, folder / "moving_landmarks.csv")
        if transform is not None:
            write_transform(transform, folder / "reg.h5")


def test_cohort_writes_tables_and_figures(tmp_path, capsys):
    write_small_cohort(tmp_path / "cohort")
    out = tmp_path / "out"
    assert main(["evaluate", "--quiet", "--cohort", str(tmp_path / "cohort"), "--transform-name", "reg.h5",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["cases"] == 3
    assert sorted(p.name for p in out.iterdir() if p.name != ".mmreg-output") == ["boxplots.png", "cases.csv", "p0.png", "p1.png", "p2.png",
                                                    "summary.csv", "summary.json"]
    with open(out / "cases.csv", newline="", encoding="utf-8") as fh:
        cases = {r["case"]: r for r in csv.DictReader(fh)}
    assert [cases[c]["transform"] for c in ("p0", "p1", "p2")] == ["reg.h5", "identity", "reg.h5"]
    assert float(cases["p0"]["dice_1"]) == 1.0 and float(cases["p1"]["dice_1"]) == float(cases["p2"]["dice_1"]) < 0.95
    with open(out / "summary.csv", newline="", encoding="utf-8") as fh:
        summary = {r["metric"]: r for r in csv.DictReader(fh)}
    dice = [float(cases[c]["dice_1"]) for c in ("p0", "p1", "p2")]
    assert float(summary["dice_1"]["mean"]) == pytest.approx(np.mean(dice), abs=1e-12)
    assert float(summary["dice_1"]["sd"]) == pytest.approx(np.std(dice, ddof=1), abs=1e-12)
    assert float(summary["dice_1"]["median"]) == pytest.approx(np.median(dice), abs=1e-12)
    assert summary["dice_1"]["mean_sd"] == f"{np.mean(dice):.4g} ± {np.std(dice, ddof=1):.4g}"
    assert printed["summary"]["dice_1"]["mean"] == pytest.approx(np.mean(dice), abs=1e-12)


def bad_inputs(case: dict, tmp: Path) -> dict:
    """name -> (command-line arguments, expected message parts)."""
    empty = sitk.Image(sitk.ReadImage(case["fixed_seg"]))
    empty *= 0
    sitk.WriteImage(empty, str(tmp / "empty.nrrd"))
    extra = sitk.ReadImage(case["fixed_seg"])
    extra[2, 2, 2] = 7
    sitk.WriteImage(extra, str(tmp / "extra.nrrd"))
    (tmp / "short.csv").write_text("x,y,z\n1,2,3\n", encoding="utf-8")
    (tmp / "garbage.h5").write_bytes(b"not a transform" * 10)
    write_small_cohort(tmp / "cohort")
    (tmp / "cohort" / "p1" / "moving_seg.nrrd").unlink()
    base = single_args(case)

    def replace(flag: str, value: str) -> list:
        args = list(base)
        args[args.index(flag) + 1] = value
        return args

    seg_only = ["evaluate", "--fixed-seg", case["fixed_seg"], "--moving-seg", case["moving_seg"]]
    return {
        "missing moving seg": (["evaluate", "--fixed-seg", case["fixed_seg"]], ["--moving-seg", "required"]),
        "report extension": (seg_only + ["--out", str(tmp / "out" / "r.txt")], ["--out", ".json or .csv"]),
        "figure extension": (seg_only + ["--figure", str(tmp / "out" / "f.jpg")], ["--figure", ".png"]),
        "landmark count": (replace("--moving-landmarks", str(tmp / "short.csv")), ["--moving-landmarks", "1 landmarks", "4"]),
        "landmarks for one side": (seg_only + ["--moving-landmarks", case["moving_landmarks"]], ["--fixed-landmarks", "both"]),
        "empty fixed seg": (replace("--fixed-seg", str(tmp / "empty.nrrd")), ["--fixed-seg", "empty"]),
        "label in one only": (replace("--fixed-seg", str(tmp / "extra.nrrd")), ["[7]", "in --fixed-seg but not in --moving-seg"]),
        "unreadable transform": (replace("--transform", str(tmp / "garbage.h5")), ["--transform", "cannot read"]),
        "transform name without cohort": (seg_only + ["--transform-name", "t.h5"], ["--transform-name", "--cohort"]),
        "cohort and one case": (["evaluate", "--cohort", str(tmp / "cohort"), "--fixed-seg", case["fixed_seg"],
                                 "--out", str(tmp / "out")], ["--cohort", "--fixed-seg"]),
        "cohort without out": (["evaluate", "--cohort", str(tmp / "cohort")], ["--out", "required"]),
        "cohort with a bad case": (["evaluate", "--cohort", str(tmp / "cohort"), "--out", str(tmp / "out")],
                                   ["--cohort", "p1", "moving_seg"]),
    }


@pytest.mark.parametrize("name", [
    "missing moving seg", "report extension", "figure extension", "landmark count", "landmarks for one side",
    "empty fixed seg", "label in one only", "unreadable transform", "transform name without cohort",
    "cohort and one case", "cohort without out", "cohort with a bad case",
])
def test_bad_input_exit_2_and_nothing_written(name, case, tmp_path, capsys):
    args, expected = bad_inputs(case, tmp_path)[name]
    outputs = ["--out", str(tmp_path / "out" / "r.json"), "--figure", str(tmp_path / "out" / "f.png"),
               "--jacobian-out", str(tmp_path / "out" / "J.nrrd")]
    if "--cohort" not in args and "--out" not in args and "--figure" not in args and "--transform-name" not in args:
        args = args + outputs
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmreg evaluate: error: ")
    for word in expected:
        assert word in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no partial file
    assert not (tmp_path / "out").exists()


def test_a_failure_while_writing_leaves_nothing(case, tmp_path, monkeypatch):
    import MMRegistrationLib.evaluation as evaluation

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(evaluation, "write_report", broken)
    args = single_args(case) + ["--out", str(tmp_path / "r.json"), "--jacobian-out", str(tmp_path / "J.nrrd")]
    with pytest.raises(RuntimeError, match="disk full"):
        main(args)
    assert list(tmp_path.iterdir()) == []
