"""``mmreg register --roi BOX``: a bad box, or a box for a method that does not use one, is exit code 2 naming
``--roi`` (before the images are read where it can be); a method that uses a region receives it and ``result.json``
records it (LPS mm). The method is a test-only one, registered for the test and removed afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analytic_case import write_case
from conftest import REGION_USE
from MMRegistrationLib.cli.main import main
from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.registration import methods
from MMRegistrationLib.registration.pipeline import load_inputs, register_files, run_registration



@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return write_case(tmp_path_factory.mktemp("case"))


def _args(case: dict, out: Path, method: str, roi: str, **replace) -> list:
    args = {"--method": method, "--fixed": case["fixed"], "--moving": case["moving"], "--fixed-seg": case["fixed_seg"],
            "--moving-seg": case["moving_seg"], "--out": str(out)}
    args.update(replace)
    return ["register", *[x for kv in args.items() for x in kv], "--quiet", f"--roi={roi}"]


def _point_list(tmp: Path) -> str:
    path = tmp / "points.mrk.json"
    path.write_text(json.dumps({"markups": [{"type": "Fiducial", "coordinateSystem": "RAS",
                                             "controlPoints": [{"position": [1.0, 2.0, 3.0]}]}]}), encoding="utf-8")
    return str(path)


BAD = {  # name -> (roi value (tmp -> str), words in the message, can be refused before the fixed image is read)
    "outside the fixed image": (lambda tmp: "500,0,0,10,10,10", ["entirely outside", "fixed image covers", "LPS mm"],
                                False),
    "no voxel centre": (lambda tmp: "5,0,15,0.01,0.01,0.01", ["holds no voxel centre"], False),
    "zero size": (lambda tmp: "5,0,15,0,20,20", ["positive"], True),
    "too few numbers": (lambda tmp: "5,0,15,20", ["6 comma-separated numbers"], True),
    "not a number": (lambda tmp: "5,0,15,twenty,20,20", ["must be a number"], True),
    "missing file": (lambda tmp: str(tmp / "nope.mrk.json"), ["file not found"], True),
    "point list": (_point_list, ["no ROI"], True),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_roi_is_exit_2_naming_roi_and_nothing_is_written(name, case, tmp_path, capsys, region_method):
    make, words, early = BAD[name]
    roi = make(tmp_path)
    out = tmp_path / "out"
    code = main(_args(case, out, "roi-test", roi))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--roi" in err and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)
    assert not out.exists() and region_method == []
    # where it can be, the box is refused before the images are read: a missing --fixed (or, for the checks that
    # need the fixed image, a missing --moving) is not what is reported
    missing = "--fixed" if early else "--moving"
    code = main(_args(case, out, "roi-test", roi, **{missing: str(tmp_path / "missing.nrrd")}))
    err = capsys.readouterr().err
    assert code == 2 and "--roi" in err and "missing.nrrd" not in err, err


def test_a_method_without_region_use_refuses_roi_before_reading_images(case, tmp_path, capsys, region_method):
    assert not methods.METHODS["com"].region_use
    out = tmp_path / "out"
    code = main(_args(case, out, "com", "5,0,15,20,20,20", **{"--fixed": str(tmp_path / "missing.nrrd")}))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--roi" in err and "method 'com' does not use a region" in err and "roi-test" in err, err
    assert not out.exists()
    with pytest.raises(InputError, match="^--roi: method 'com' does not use a region"):
        register_files("com", case["fixed"], case["moving"], out, case["fixed_seg"], case["moving_seg"],
                       roi="5,0,15,20,20,20")


def test_run_registration_refuses_a_region_for_a_method_without_region_use(case):
    inputs = load_inputs(case["fixed"], case["moving"], region="5,0,15,20,20,20")
    with pytest.raises(InputError, match="^--roi: method 'none' does not use a region"):
        run_registration("none", inputs)


def test_the_method_receives_the_region_and_result_json_records_it(case, tmp_path, capsys, region_method):
    out = tmp_path / "out"
    assert main(_args(case, out, "roi-test", "-10,-5,10,30,40,50", **{"--init": "none"})) == 0, capsys.readouterr().err
    (box,) = region_method
    np.testing.assert_allclose(box.center, [-10.0, -5.0, 10.0])
    np.testing.assert_allclose(box.size, [30.0, 40.0, 50.0])
    record = json.loads((out / "result.json").read_text(encoding="utf-8"))
    region = record["region"]
    assert region["center"] == [-10.0, -5.0, 10.0] and region["size"] == [30.0, 40.0, 50.0]
    np.testing.assert_allclose(region["axes"], np.eye(3))
    assert region["use"] == REGION_USE and "LPS" in region["space"]
    assert record["inputs"]["roi"] == "-10,-5,10,30,40,50"


def test_a_slicer_roi_file_is_read_in_ras_and_recorded_in_lps(case, tmp_path, capsys, region_method):
    c, s = np.sqrt(0.5), np.sqrt(0.5)  # 45 degrees about S: columns are the box axes (RAS)
    path = tmp_path / "R.mrk.json"
    path.write_text(json.dumps({"markups": [{
        "type": "ROI", "coordinateSystem": "RAS", "center": [-5.0, 0.0, 15.0], "size": [20.0, 30.0, 40.0],
        "orientation": [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0]}]}), encoding="utf-8")
    out = tmp_path / "out"
    assert main(_args(case, out, "roi-test", str(path))) == 0, capsys.readouterr().err
    region = json.loads((out / "result.json").read_text(encoding="utf-8"))["region"]
    np.testing.assert_allclose(region["center"], [5.0, 0.0, 15.0])
    np.testing.assert_allclose(region["axes"], [[-c, s, 0.0], [-s, -c, 0.0], [0.0, 0.0, 1.0]], atol=1e-12)  # rows L, P
    np.testing.assert_allclose(region["size"], [20.0, 30.0, 40.0])


def test_mmreg_methods_lists_the_region_use(capsys, region_method):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert REGION_USE in out
