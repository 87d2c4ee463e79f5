"""No silent wrong answer: inputs that used to give exit 0 and plausible-looking numbers are refused (exit 2, naming
the arguments) or warned about (stderr and ``result.json``'s ``warnings``).

Swapped segmentations, a prostate labelled 255 beside a bladder labelled 2, images whose fields of view do not
overlap, 4-D label images given to ``evaluate``, ``--label-channel`` on a 3-D label map, and running out of memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from analytic_case import write_case, write_seg_nrrd
from MMRegistrationLib.cli.main import main
from MMRegistrationLib.evaluation import evaluate_case
from MMRegistrationLib.io import read_image, read_segmentation, read_transform
from MMRegistrationLib.resources import sample_case_paths


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return write_case(tmp_path_factory.mktemp("silent_case"))


def _run(args: list, capsys) -> tuple:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _register(fixed, moving, out, *extra, method: str = "com") -> list:
    return ["register", "--method", method, "--fixed", fixed, "--moving", moving, "--quiet", "--out", out, *extra]


def _segs(fixed_seg, moving_seg) -> list:
    return ["--fixed-seg", fixed_seg, "--moving-seg", moving_seg]


def _result(out: Path) -> dict:
    return json.loads((Path(out) / "result.json").read_text(encoding="utf-8"))


def _shifted(path: str, offset_mm, out: Path) -> str:
    """A copy of an image file with its origin moved by ``offset_mm`` (LPS)."""
    image = sitk.ReadImage(path)
    image.SetOrigin(tuple(np.asarray(image.GetOrigin()) + np.asarray(offset_mm, dtype=float)))
    sitk.WriteImage(image, str(out))
    return str(out)


def _relabelled(path: str, mapping: dict, out: Path) -> str:
    """A copy of a label map with its values replaced by ``mapping`` (old -> new, all at once)."""
    image = sitk.ReadImage(path)
    arr = sitk.GetArrayFromImage(image)
    new = arr.copy()
    for old, value in mapping.items():
        new[arr == old] = value
    copy = sitk.GetImageFromArray(new)
    copy.CopyInformation(image)
    sitk.WriteImage(copy, str(out))
    return str(out)


def _matrix(path: Path) -> np.ndarray:
    return read_transform(path).matrix


# ---- 1. a segmentation that is not its image's ----------------------------------------------------------------
def test_swapped_segmentations_are_refused_on_the_sample_case(tmp_path, capsys):
    """Each segmentation on the other image's grid: was exit 0 with Dice 0.98 and TRE 9 mm."""
    paths = sample_case_paths()
    out = tmp_path / "out"
    code, _, err = _run(_register(paths["fixed"], paths["moving"], out, *_segs(paths["moving_seg"], paths["fixed_seg"])),
                        capsys)
    assert code == 2, err
    assert "--fixed-seg: is on --moving's grid, not on --fixed's" in err and "swapped" in err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("side", ["fixed", "moving"])
def test_a_segmentation_outside_its_image_is_refused(side, case, tmp_path, capsys):
    far = _shifted(case[f"{side}_seg"], [0.0, 250.0, 0.0], tmp_path / "far.nrrd")
    segs = _segs(far, case["moving_seg"]) if side == "fixed" else _segs(case["fixed_seg"], far)
    out = tmp_path / "out"
    code, _, err = _run(_register(case["fixed"], case["moving"], out, *segs), capsys)
    assert code == 2, err
    assert f"--{side}-seg: lies outside --{side}'s field of view" in err
    assert "Traceback" not in err and not out.exists()


def test_a_segmentation_cropped_to_its_structures_is_accepted(case, tmp_path, capsys):
    """A different grid is fine when it lies inside the image (Slicer crops .seg.nrrd files to their segments)."""
    image = sitk.ReadImage(case["fixed_seg"])
    arr = sitk.GetArrayFromImage(image)
    k, j, i = np.nonzero(arr)
    lo = [int(i.min()) - 2, int(j.min()) - 2, int(k.min()) - 2]
    size = [int(i.max()) + 3 - lo[0], int(j.max()) + 3 - lo[1], int(k.max()) + 3 - lo[2]]
    cropped = tmp_path / "cropped.nrrd"
    sitk.WriteImage(sitk.RegionOfInterest(image, size, lo), str(cropped))
    out = tmp_path / "out"
    code, _, err = _run(_register(case["fixed"], case["moving"], out, *_segs(cropped, case["moving_seg"])), capsys)
    assert code == 0, err
    assert _result(out)["metrics"]["after"]["dice"]["1"] > 0.9


def test_evaluate_refuses_a_fixed_segmentation_outside_the_fixed_image(case, tmp_path, capsys):
    far = _shifted(case["fixed_seg"], [0.0, 0.0, -300.0], tmp_path / "far.nrrd")
    report = tmp_path / "report.json"
    code, _, err = _run(["evaluate", "--quiet", "--fixed-seg", far, "--moving-seg", case["moving_seg"],
                         "--fixed-image", case["fixed"], "--out", report], capsys)
    assert code == 2, err
    assert "--fixed-seg: lies outside --fixed-image's field of view" in err and not report.exists()


# ---- 2. the target structure -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prostate_255(case, tmp_path_factory):
    """The analytic case with the prostate labelled 255 (bladder 2, rectum 3) in both segmentations."""
    folder = tmp_path_factory.mktemp("prostate_255")
    return {side: _relabelled(case[f"{side}_seg"], {1: 255}, folder / f"{side}_seg.nrrd") for side in ("fixed", "moving")}


def test_a_guessed_target_is_warned_about_and_recorded(case, prostate_255, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(_register(case["fixed"], case["moving"], out, *_segs(prostate_255["fixed"],
                                                                           prostate_255["moving"])), capsys)
    assert code == 0, err
    record = _result(out)
    assert len(record["warnings"]) == 1
    warning = record["warnings"][0]
    assert "label 2 is used as the target structure" in warning and "--target-label" in warning
    assert f"mmreg register: warning: {warning}" in err
    assert record["target_label"]["label"] == 2 and record["target_label"]["rule"].startswith("guessed")


def test_target_label_by_value_registers_the_chosen_structure(case, prostate_255, tmp_path, capsys):
    """``--target-label 255`` gives exactly the registration of the original map (prostate = 1), and the outputs keep
    the files' values."""
    original, chosen = tmp_path / "original", tmp_path / "chosen"
    assert _run(_register(case["fixed"], case["moving"], original, *_segs(case["fixed_seg"], case["moving_seg"])),
                capsys)[0] == 0
    code, _, err = _run(_register(case["fixed"], case["moving"], chosen, *_segs(prostate_255["fixed"],
                                                                              prostate_255["moving"]),
                                  "--target-label", "255"), capsys)
    assert code == 0, err
    assert "warning" not in err
    record = _result(chosen)
    assert record["warnings"] == [] and record["target_label"]["label"] == 255
    assert record["inputs"]["target_label"] == "255"
    np.testing.assert_allclose(_matrix(chosen / "transform.h5"), _matrix(original / "transform.h5"), atol=1e-9)
    warped = read_image(chosen / "warped_moving_seg.nrrd").array
    warped_original = read_image(original / "warped_moving_seg.nrrd").array
    np.testing.assert_array_equal(warped, np.where(warped_original == 1, 255, warped_original))
    assert record["metrics"]["after"]["dice"]["255"] == _result(original)["metrics"]["after"]["dice"]["1"]


def test_target_label_by_segment_name(case, tmp_path, capsys):
    """``.seg.nrrd`` files whose first segment is the bladder: the segment named Prostate is the target without a
    warning; ``--target-label bladder`` chooses the bladder."""
    names = {1: "Prostate", 2: "Bladder", 3: "Rectum"}
    swap = {1: 2, 2: 1}  # the prostate gets value 2, the bladder value 1
    segs = {side: write_seg_nrrd(read_segmentation(case[f"{side}_seg"]).labelmap, names,
                                 tmp_path / f"{side}.seg.nrrd", swap) for side in ("fixed", "moving")}
    original, by_name, bladder = tmp_path / "original", tmp_path / "by_name", tmp_path / "bladder"
    assert _run(_register(case["fixed"], case["moving"], original, *_segs(case["fixed_seg"], case["moving_seg"])),
                capsys)[0] == 0
    code, _, err = _run(_register(case["fixed"], case["moving"], by_name, *_segs(segs["fixed"], segs["moving"])),
                        capsys)
    assert code == 0, err
    record = _result(by_name)
    assert record["warnings"] == [] and record["target_label"] == {"label": 2, "name": "Prostate",
                                                                   "rule": "the segment named prostate/gland"}
    assert record["label_names"] == {"1": "Bladder", "2": "Prostate", "3": "Rectum"}
    np.testing.assert_allclose(_matrix(by_name / "transform.h5"), _matrix(original / "transform.h5"), atol=1e-9)
    code, _, err = _run(_register(case["fixed"], case["moving"], bladder, *_segs(segs["fixed"], segs["moving"]),
                                  "--target-label", "bladder"), capsys)
    assert code == 0, err
    assert _result(bladder)["target_label"]["name"] == "Bladder"
    assert not np.allclose(_matrix(bladder / "transform.h5"), _matrix(by_name / "transform.h5"), atol=0.1)


@pytest.mark.parametrize("value, words", [("7", ["label 7 is not in the segmentations"]),
                                          ("urethra", ["no segment is named 'urethra'", "give a value"])])
def test_a_target_label_not_in_the_segmentations_is_refused(value, words, case, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(_register(case["fixed"], case["moving"], out, *_segs(case["fixed_seg"], case["moving_seg"]),
                                  "--target-label", value), capsys)
    assert code == 2, err
    assert "--target-label:" in err and all(w in err for w in words), err
    assert not out.exists()


def test_a_target_label_without_segmentations_is_refused(case, tmp_path, capsys):
    code, _, err = _run(_register(case["fixed"], case["moving"], tmp_path / "out", "--target-label", "1",
                                  method="none"), capsys)
    assert code == 2 and "--target-label: needs a segmentation" in err


def test_the_sample_case_gives_no_warning(tmp_path, capsys):
    """Plain labels 1..4 (1 = prostate) and overlapping images: nothing to warn about."""
    paths = sample_case_paths()
    out = tmp_path / "out"
    code, _, err = _run(_register(paths["fixed"], paths["moving"], out, *_segs(paths["fixed_seg"], paths["moving_seg"])),
                        capsys)
    assert code == 0, err
    record = _result(out)
    assert record["warnings"] == [] and "warning" not in err
    assert record["target_label"]["label"] == 1
    assert record["field_of_view_overlap"]["after_registration"] > 0.5


# ---- 3. fields of view that do not overlap ---------------------------------------------------------------------
def test_images_that_do_not_overlap_are_warned_about(case, tmp_path, capsys):
    """``--method none`` with the moving image 500 mm away: was an all-zero warped image, Dice 0 and no note."""
    far = _shifted(case["moving"], [500.0, 0.0, 0.0], tmp_path / "far_moving.nrrd")
    out = tmp_path / "out"
    code, _, err = _run(_register(case["fixed"], far, out, method="none"), capsys)
    assert code == 0, err
    record = _result(out)
    assert record["field_of_view_overlap"] == {"after_init": 0.0, "after_registration": 0.0}
    assert len(record["warnings"]) == 1
    warning = record["warnings"][0]
    assert "covers 0.0% of the fixed image's field of view after registration" in warning
    assert "0.0% after the initial transform (--init none)" in warning
    assert f"mmreg register: warning: {warning}" in err


# ---- 4. and 5. --label-channel ---------------------------------------------------------------------------------
def _four_d(path: str, out: Path) -> str:
    """The label map as a 4-D image, one binary channel per label (DeepReg/MONAI style)."""
    image = sitk.ReadImage(path)
    arr = sitk.GetArrayFromImage(image)
    channels = []
    for label in (1, 2, 3):
        channel = sitk.GetImageFromArray((arr == label).astype(np.float32))
        channel.CopyInformation(image)
        channels.append(channel)
    sitk.WriteImage(sitk.JoinSeries(channels), str(out))
    return str(out)


@pytest.fixture(scope="module")
def four_d(case, tmp_path_factory):
    folder = tmp_path_factory.mktemp("four_d")
    return {side: _four_d(case[f"{side}_seg"], folder / f"{side}_seg.nii.gz") for side in ("fixed", "moving")}


def test_evaluate_takes_a_label_channel(case, four_d, tmp_path, capsys):
    """The hint evaluate gave for 4-D labels ("choose one with --label-channel N") now names an option it has."""
    args = ["evaluate", "--quiet", "--fixed-seg", four_d["fixed"], "--moving-seg", four_d["moving"]]
    code, _, err = _run(args, capsys)
    assert code == 2 and "--label-channel N" in err
    code, out, err = _run(args + ["--label-channel", "1"], capsys)
    assert code == 0, err
    rows = json.loads(out)["labels"]
    fixed, moving = (read_segmentation(case[f"{side}_seg"]).labelmap for side in ("fixed", "moving"))
    bladder = evaluate_case(fixed.with_array((fixed.array == 2).astype(np.uint8)),
                            moving.with_array((moving.array == 2).astype(np.uint8)), jacobian=False)
    assert [row["label"] for row in rows] == [1]
    assert rows[0]["dice"] == pytest.approx(bladder.rows[0]["dice"], abs=1e-12)


def test_evaluate_cohort_takes_a_label_channel(four_d, tmp_path, capsys):
    case0 = tmp_path / "cohort" / "case0"
    case0.mkdir(parents=True)
    for side in ("fixed", "moving"):
        (case0 / f"{side}_seg.nii.gz").write_bytes(Path(four_d[side]).read_bytes())
    base = ["evaluate", "--quiet", "--cohort", tmp_path / "cohort", "--no-figures"]
    code, _, err = _run(base + ["--out", tmp_path / "without"], capsys)
    assert code == 2 and "--label-channel" in err
    code, out, err = _run(base + ["--label-channel", "0", "--out", tmp_path / "res"], capsys)
    assert code == 0, err
    assert json.loads(out)["cases"] == 1 and (tmp_path / "res" / "cases.csv").is_file()


def test_label_channel_on_a_3d_label_map_is_refused(case, tmp_path, capsys):
    """Was silently ignored."""
    out = tmp_path / "out"
    code, _, err = _run(_register(case["fixed"], case["moving"], out, *_segs(case["fixed_seg"], case["moving_seg"]),
                                  "--label-channel", "0"), capsys)
    assert code == 2, err
    assert "--label-channel: --fixed-seg" in err and "3-D label map" in err and not out.exists()
    code, _, err = _run(["evaluate", "--quiet", "--fixed-seg", case["fixed_seg"], "--moving-seg", case["moving_seg"],
                         "--label-channel", "0"], capsys)
    assert code == 2 and "--label-channel: --fixed-seg" in err


def test_label_channel_on_a_seg_nrrd_is_refused(case, tmp_path, capsys):
    seg = write_seg_nrrd(read_segmentation(case["fixed_seg"]).labelmap, {1: "Prostate"}, tmp_path / "f.seg.nrrd")
    code, _, err = _run(["evaluate", "--quiet", "--fixed-seg", seg, "--moving-seg", case["moving_seg"],
                         "--label-channel", "0"], capsys)
    assert code == 2 and "--label-channel: --fixed-seg" in err and ".seg.nrrd" in err


# ---- 6. running out of memory ----------------------------------------------------------------------------------
def test_evaluate_out_of_memory_is_a_message_not_a_traceback(case, monkeypatch, capsys):
    import MMRegistrationLib.evaluation.case as case_module

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 15.6 GiB for an array")

    monkeypatch.setattr(case_module, "jacobian_determinant_on_grid", exhausted)
    code, out, err = _run(["evaluate", "--quiet", "--fixed-seg", case["fixed_seg"], "--moving-seg", case["moving_seg"]],
                          capsys)
    assert code == 1
    assert "mmreg evaluate: error: not enough memory to compute the Jacobian determinant" in err
    assert "--no-jacobian" in err and "Traceback" not in err and out == ""


def test_refine_takes_the_earlier_label_options_only_with_its_segmentations():
    """``--from``'s channel and target describe --from's segmentations, not ones given anew."""
    from argparse import Namespace

    from MMRegistrationLib.cli.refine import INPUT_KEYS, _inputs_from

    earlier = {"inputs": {"fixed": "f.nrrd", "moving": "m.nrrd", "fixed_seg": "fs.nrrd", "moving_seg": "ms.nrrd",
                          "label_channel": 0, "target_label": "255"}}
    reused = Namespace(**{key: None for key in INPUT_KEYS}, label_channel=None, target_label=None)
    assert _inputs_from(reused, earlier)["fixed_seg"] == "fs.nrrd"
    assert (reused.label_channel, reused.target_label) == (0, "255")
    new = Namespace(**{key: None for key in INPUT_KEYS}, label_channel=None, target_label=None)
    new.fixed_seg, new.moving_seg = "other_f.nrrd", "other_m.nrrd"
    _inputs_from(new, earlier)
    assert (new.label_channel, new.target_label) == (None, None)
