"""``mmreg segment`` and ``mmreg register --fixed-seg auto / --moving-seg auto`` from the command line, with a tiny
trained network standing in for the shipped ones (``MMREG_SEGMENTATION_DIR``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from MMRegistrationLib.cli.main import main
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io.images import read_image, write_image
from MMRegistrationLib.io.segmentations import read_segmentation
from seg_fixtures import ball_image


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict:
    """A TRUS-like fixed and an MR-like moving ball image on different oblique anisotropic grids, the moving ball
    shifted by 6 mm; the true glands as label maps (the moving one with two more structures)."""
    folder = tmp_path_factory.mktemp("pair")
    fixed, fixed_gland = ball_image(11, (0.9, 1.1, 1.8), (8, -6, 20), center=(12.0, -25.0, 35.0))
    moving, moving_gland = ball_image(11, (1.3, 1.3, 1.0), (-5, 10, -15), center=(18.0, -25.0, 35.0))
    paths = {"fixed": folder / "fixed.nrrd", "moving": folder / "moving.nii.gz",
             "fixed_truth": folder / "fixed_truth.nrrd", "moving_seg": folder / "moving_seg.nrrd"}
    write_image(fixed, paths["fixed"])
    write_image(moving, paths["moving"])
    write_image(Image(fixed_gland.astype(np.uint8), fixed.grid), paths["fixed_truth"])
    labels = moving_gland.astype(np.uint8) * 3  # the gland is label 3 here
    labels[:4] = 1
    labels[-4:] = 2
    write_image(Image(labels, moving.grid), paths["moving_seg"])
    return {k: str(v) for k, v in paths.items()} | {"fixed_gland": fixed_gland}


def test_segment_writes_a_slicer_segmentation_named_prostate(pair, tiny_seg_networks, tmp_path, capsys):
    out = tmp_path / "sub" / "fixed.seg.nrrd"
    assert main(["segment", "--image", pair["fixed"], "--modality", "trus", "--out", str(out), "--quiet"]) == 0
    seg = read_segmentation(out)
    assert seg.names == {1: "prostate"} and seg.labelmap.grid.same_as(read_image(pair["fixed"]).grid)
    assert _dice(seg.labelmap.array == 1, pair["fixed_gland"]) > 0.85
    printed = json.loads(capsys.readouterr().out)
    assert printed["modality"] == "trus" and printed["volume_ml"] > 10


def test_segment_writes_a_label_map_and_the_probability(pair, tiny_seg_networks, tmp_path):
    out, probability = tmp_path / "gland.nii.gz", tmp_path / "probability.nrrd"
    assert main(["segment", "--image", pair["moving"], "--modality", "mr", "--out", str(out), "--probability",
                 str(probability), "--quiet"]) == 0
    labels = read_image(out).array
    assert set(np.unique(labels)) == {0, 1}
    p = read_image(probability).array
    assert p.dtype == np.float32 and 0.0 <= p.min() and p.max() <= 1.0 and np.all((p >= 0.5) >= (labels == 1))


@pytest.mark.parametrize("change, argument", [
    ({"--image": "absent.nrrd"}, "--image"),
    ({"--out": "seg.txt"}, "--out"),
    ({"--weights": "absent.pt"}, "--weights"),
    ({"--threads": "0"}, "--threads"),
])
def test_segment_bad_input_exits_2_naming_the_argument(pair, tiny_seg_networks, tmp_path, capsys, change, argument):
    args = {"--image": pair["fixed"], "--modality": "trus", "--out": str(tmp_path / "seg.nrrd")}
    args.update({k: (str(tmp_path / v) if k in ("--out", "--weights") else v) for k, v in change.items()})
    code = main(["segment", *[w for item in args.items() for w in item], "--quiet"])
    assert code == 2 and argument in capsys.readouterr().err
    assert not any(p.name.startswith("seg") for p in tmp_path.iterdir())


def test_segment_never_replaces_a_file_without_overwrite(pair, tiny_seg_networks, tmp_path, capsys):
    out = tmp_path / "seg.nrrd"
    out.write_bytes(b"keep me")
    assert main(["segment", "--image", pair["fixed"], "--modality", "trus", "--out", str(out), "--quiet"]) == 2
    assert out.read_bytes() == b"keep me" and "--overwrite" in capsys.readouterr().err
    assert main(["segment", "--image", pair["fixed"], "--modality", "trus", "--out", str(out), "--quiet",
                 "--overwrite"]) == 0
    assert read_image(out).array.max() == 1


def test_segment_refuses_to_write_over_its_input(pair, tiny_seg_networks, capsys):
    assert main(["segment", "--image", pair["fixed"], "--modality", "trus", "--out", pair["fixed"], "--overwrite",
                 "--quiet"]) == 2
    assert "input" in capsys.readouterr().err and read_image(pair["fixed"]).array.max() > 100


def test_register_with_both_segmentations_predicted(pair, tiny_seg_networks, tmp_path):
    out = tmp_path / "run"
    assert main(["register", "--method", "rigid-mask", "--fixed", pair["fixed"], "--moving", pair["moving"],
                 "--fixed-seg", "auto", "--moving-seg", "auto", "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "result.json").read_text())
    assert set(record["predicted_segmentations"]) == {"fixed", "moving"}
    assert record["predicted_segmentations"]["fixed"]["modality"] == "trus"
    assert record["predicted_segmentations"]["moving"]["modality"] == "mr"
    assert record["inputs"]["fixed_seg"] == "auto" and record["target_label"]["name"] == "prostate"
    predicted = read_segmentation(out / record["files"]["predicted_fixed_seg"])
    assert predicted.names == {1: "prostate"} and _dice(predicted.labelmap.array == 1, pair["fixed_gland"]) > 0.85
    warped = read_image(out / "warped_moving_seg.nrrd").array == 1
    assert _dice(warped, pair["fixed_gland"]) > 0.8  # the moving ball moved onto the fixed one


def test_register_pairs_a_predicted_gland_with_the_target_of_a_file(pair, tiny_seg_networks, tmp_path):
    out = tmp_path / "run"
    assert main(["register", "--method", "rigid-mask", "--fixed", pair["fixed"], "--moving", pair["moving"],
                 "--fixed-seg", "auto:trus", "--moving-seg", pair["moving_seg"], "--target-label", "3",
                 "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "result.json").read_text())
    assert set(record["predicted_segmentations"]) == {"fixed"} and "predicted_moving_seg" not in record["files"]
    assert list(record["metrics"]["after"]["dice"]) == ["prostate"]
    assert record["metrics"]["after"]["dice"]["prostate"] > 0.8


@pytest.mark.parametrize("value, argument", [("auto:ct", "--fixed-seg")])
def test_register_refuses_a_bad_auto_value(pair, tiny_seg_networks, tmp_path, capsys, value, argument):
    code = main(["register", "--method", "rigid-mask", "--fixed", pair["fixed"], "--moving", pair["moving"],
                 "--fixed-seg", value, "--moving-seg", "auto", "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2 and argument in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_register_auto_without_networks_exits_2_before_reading_images(pair, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MMREG_SEGMENTATION_DIR", str(tmp_path / "none"))
    code = main(["register", "--method", "rigid-mask", "--fixed", pair["fixed"], "--moving", pair["moving"],
                 "--fixed-seg", "auto", "--moving-seg", "auto", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--fixed-seg" in err and "not found" in err


def test_target_label_with_two_predicted_segmentations_is_refused(pair, tiny_seg_networks, tmp_path, capsys):
    code = main(["register", "--method", "rigid-mask", "--fixed", pair["fixed"], "--moving", pair["moving"],
                 "--fixed-seg", "auto", "--moving-seg", "auto", "--target-label", "2", "--out",
                 str(tmp_path / "run"), "--quiet"])
    assert code == 2 and "--target-label" in capsys.readouterr().err


def _cohort(pair: dict, folder) -> str:
    import shutil

    for name in ("case_a", "case_b"):
        case = folder / name
        case.mkdir(parents=True)
        shutil.copy(pair["fixed"], case / "fixed.nrrd")
        shutil.copy(pair["moving"], case / "moving.nii.gz")
        shutil.copy(pair["fixed_truth"], case / "fixed_seg.nrrd")
        gland = read_image(pair["moving_seg"])
        write_image(gland.with_array((gland.array == 3).astype(np.uint8)), case / "moving_seg.nrrd")
    return str(folder)


def test_a_cohort_registers_on_predicted_glands_and_is_evaluated_on_its_own(pair, tiny_seg_networks, tmp_path):
    cohort = _cohort(pair, tmp_path / "cohort")
    out = tmp_path / "results"
    assert main(["register", "--cohort", cohort, "--method", "rigid-mask", "--fixed-seg", "auto", "--moving-seg",
                 "auto", "--out", str(out), "--quiet"]) == 0
    for name in ("case_a", "case_b"):
        record = json.loads((out / name / "result.json").read_text())
        assert set(record["predicted_segmentations"]) == {"fixed", "moving"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["registration"]["fixed_seg"] == "auto" and summary["registration"]["moving_seg"] == "auto"
    assert summary["metrics"]["dice_1"]["mean"] > 0.8  # judged on the case folders' own segmentations
    rows = (out / "cases.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",registered," in row for row in rows[1:])


def test_a_cohort_refuses_a_segmentation_file_for_all_cases(pair, tiny_seg_networks, tmp_path, capsys):
    cohort = _cohort(pair, tmp_path / "cohort")
    code = main(["register", "--cohort", cohort, "--method", "rigid-mask", "--fixed-seg", pair["fixed_truth"],
                 "--out", str(tmp_path / "results"), "--quiet"])
    assert code == 2 and "--fixed-seg" in capsys.readouterr().err and not (tmp_path / "results").exists()
