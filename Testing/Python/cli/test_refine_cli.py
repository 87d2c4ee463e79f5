"""``mmreg refine`` end to end (refine an earlier result inside a box, or any transform file) and
``mmreg register --method net --iso-iterations N``; bad input is exit code 2 naming the argument, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analytic_case import TRUE, write_case
from MMRegistrationLib.cli.main import main
from MMRegistrationLib.io.transforms import read_transform, write_transform

BOX = "--roi=5,-2,26,40,40,40"  # on the superior surface of the phantom's prostate (LPS mm)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("refine_case")
    paths = write_case(folder)
    general = folder / "general"
    code = main(["register", "--method", "net", "--fixed", paths["fixed"], "--moving", paths["moving"],
                 "--fixed-seg", paths["fixed_seg"], "--moving-seg", paths["moving_seg"], "--fixed-landmarks",
                 paths["fixed_landmarks"], "--moving-landmarks", paths["moving_landmarks"], "--quiet",
                 "--out", str(general)])
    assert code == 0
    return paths, general, folder


def test_refine_from_a_result_writes_a_whole_result_with_the_box_and_the_loss_curve(case, tmp_path):
    paths, general, _ = case
    out = tmp_path / "refined"
    assert main(["refine", "--from", str(general), BOX, "--iterations", "5", "--image-similarity", "none",
                 "--quiet", "--out", str(out)]) == 0
    record = json.loads((out / "result.json").read_text())
    assert {"transform.h5", "inverse_transform.h5", "warped_moving.nrrd", "warped_moving_seg.nrrd"} <= \
        {p.name for p in out.iterdir()}
    assert record["method"] == "rso" and record["step"] == "RSO box 1"
    assert record["region"]["center"] == [5.0, -2.0, 26.0] and record["region"]["size"] == [40.0, 40.0, 40.0]
    assert len(record["loss_curve"]) == record["method_info"]["iterations"] <= 5
    assert record["inputs"]["fixed"] == paths["fixed"] and record["inputs"]["from"] == str(general)
    assert record["method_info"]["weights"].endswith("mix_plus.pt")  # the general result's network
    assert [row["step"] for row in record["history"]] == ["initial", "RSO box 1"]
    assert "tre_mean_mm" in record["metrics"]["after"]  # the landmarks came from the earlier result
    # outside the box (beyond one correction voxel) the earlier result is kept
    before, after = read_transform(general / "transform.h5"), read_transform(out / "transform.h5")
    far = np.array([[5.0, -2.0, -40.0], [40.0, 20.0, 0.0], [-30.0, -40.0, 10.0]])
    assert np.allclose(before.map_points_np(far), after.map_points_np(far), atol=1e-4)


def test_refine_any_transform_file_over_the_whole_image(case, tmp_path):
    paths, _, folder = case
    start = write_transform(TRUE, folder / "rigid.h5")
    out = tmp_path / "iso"
    assert main(["refine", "--initial-transform", str(start), "--fixed", paths["fixed"], "--moving", paths["moving"],
                 "--fixed-seg", paths["fixed_seg"], "--moving-seg", paths["moving_seg"], "--iterations", "2",
                 "--image-similarity", "none", "--quiet", "--out", str(out)]) == 0
    record = json.loads((out / "result.json").read_text())
    assert record["step"] == "ISO" and "region" not in record and record["method_info"]["box"] is None


def test_register_net_with_iso_iterations_records_the_step(case, tmp_path):
    paths, _, _ = case
    out = tmp_path / "net_iso"
    assert main(["register", "--method", "net", "--fixed", paths["fixed"], "--moving", paths["moving"],
                 "--fixed-seg", paths["fixed_seg"], "--moving-seg", paths["moving_seg"], "--iso-iterations", "3",
                 "--image-similarity", "none", "--quiet", "--out", str(out)]) == 0
    iso = json.loads((out / "result.json").read_text())["method_info"]["iso"]
    assert iso["iterations"] <= 3 and len(iso["loss_curve"]) == iso["iterations"] and iso["box"] is None


@pytest.mark.parametrize("name, args, argument", [
    ("no result folder", lambda g, p, t: ["--from", str(t / "missing"), BOX], "--from"),
    ("not a result", lambda g, p, t: ["--from", str(t), BOX], "--from"),
    ("box outside", lambda g, p, t: ["--from", str(g), "--roi=500,0,0,40,40,40"], "--roi"),
    ("zero-size box", lambda g, p, t: ["--from", str(g), "--roi=5,-2,26,0,40,40"], "--roi"),
    ("box without fixed voxel", lambda g, p, t: ["--from", str(g), "--roi=5,-2,26,0.01,0.01,0.01"], "--roi"),
    ("box away from the gland", lambda g, p, t: ["--from", str(g), "--roi=30,40,-20,10,10,10",
                                                 "--image-similarity", "none"], "--roi"),
    ("bad iterations", lambda g, p, t: ["--from", str(g), BOX, "--iterations", "-3"], "--iterations"),
    ("missing weights", lambda g, p, t: ["--from", str(g), BOX, "--weights", str(t / "no.pt")], "--weights"),
    ("transform without images", lambda g, p, t: ["--initial-transform", str(g / "transform.h5"), BOX], "--fixed"),
])
def test_bad_input_is_exit_code_2_naming_the_argument_and_writes_nothing(case, tmp_path, capsys, name, args,
                                                                         argument):
    paths, general, _ = case
    out = tmp_path / "out"
    code = main(["refine", *args(general, paths, tmp_path), "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"error: {argument}:" in err, err
    assert not out.exists()


def test_from_and_initial_transform_are_exclusive(case, tmp_path, capsys):
    _, general, _ = case
    with pytest.raises(SystemExit) as exit_info:
        main(["refine", "--from", str(general), "--initial-transform", str(general / "transform.h5"),
              "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert Path(general, "result.json").is_file()  # the earlier result is untouched
