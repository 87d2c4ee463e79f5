"""The ``mmreg register`` contract: files, directions (checked with SimpleITK), result.json, atomic writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from analytic_case import TRUE, write_case, write_seg_nrrd
from MMRegistrationLib.cli.main import main
from MMRegistrationLib.core.errors import Cancelled
from MMRegistrationLib.registration.pipeline import load_inputs, register_files, run_registration


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return write_case(tmp_path_factory.mktemp("case"))


def args_for(case: dict, out: Path, method: str = "rigid-mask", landmarks: bool = True, extra=()) -> list:
    args = ["register", "--method", method, "--fixed", case["fixed"], "--moving", case["moving"],
            "--fixed-seg", case["fixed_seg"], "--moving-seg", case["moving_seg"], "--out", str(out), "--quiet"]
    if landmarks:
        args += ["--fixed-landmarks", case["fixed_landmarks"], "--moving-landmarks", case["moving_landmarks"]]
    return args + list(extra)


def sitk_dice(fixed_seg: sitk.Image, warped: sitk.Image, label: int = 1) -> float:
    a = sitk.GetArrayFromImage(fixed_seg) == label
    b = sitk.GetArrayFromImage(warped) == label
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def rigid_run(case, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "rigid"
    assert main(args_for(case, out)) == 0
    return out


def test_outputs_are_all_written(rigid_run):
    names = sorted(p.name for p in rigid_run.iterdir() if p.name != ".mmreg-output")
    assert names == ["inverse_transform.h5", "result.json", "transform.h5", "warped_moving.nrrd", "warped_moving_seg.nrrd"]
    assert not [p for p in rigid_run.parent.iterdir() if "partial" in p.name]


def test_transform_is_fixed_to_moving_for_simpleitk(case, rigid_run):
    """SimpleITK applies transform.h5 to the moving labels: Dice rises above the unregistered Dice."""
    fixed_seg = sitk.ReadImage(case["fixed_seg"])
    moving_seg = sitk.ReadImage(case["moving_seg"])
    tx = sitk.ReadTransform(str(rigid_run / "transform.h5"))
    registered = sitk.Resample(moving_seg, fixed_seg, tx, sitk.sitkNearestNeighbor, 0)
    unregistered = sitk.Resample(moving_seg, fixed_seg, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    d_reg, d_unreg = sitk_dice(fixed_seg, registered), sitk_dice(fixed_seg, unregistered)
    assert d_reg > 0.93 and d_reg > d_unreg + 0.2, (d_reg, d_unreg)
    # and it is the known truth, point by point, in the prostate region
    pts = np.array([[5.0, -2.0, 10.0], [15.0, 5.0, 12.0], [-5.0, -8.0, 5.0]])
    mapped = np.array([tx.TransformPoint(tuple(p)) for p in pts])
    assert np.linalg.norm(mapped - TRUE.map_points_np(pts), axis=1).max() < 1.0


def test_inverse_transform_undoes_the_transform(rigid_run, rng):
    fwd = sitk.ReadTransform(str(rigid_run / "transform.h5"))
    inv = sitk.ReadTransform(str(rigid_run / "inverse_transform.h5"))
    for p in rng.normal(size=(5, 3)) * 20:
        np.testing.assert_allclose(inv.TransformPoint(fwd.TransformPoint(tuple(p))), p, atol=1e-8)


def test_warped_moving_lies_on_the_fixed_grid(case, rigid_run):
    fixed = sitk.ReadImage(case["fixed"])
    for name in ("warped_moving.nrrd", "warped_moving_seg.nrrd"):
        warped = sitk.ReadImage(str(rigid_run / name))
        assert warped.GetSize() == fixed.GetSize()
        np.testing.assert_allclose(warped.GetOrigin(), fixed.GetOrigin(), atol=1e-6)
        np.testing.assert_allclose(warped.GetDirection(), fixed.GetDirection(), atol=1e-6)
        np.testing.assert_allclose(warped.GetSpacing(), fixed.GetSpacing(), atol=1e-6)


def test_result_json_describes_the_run(rigid_run):
    record = json.loads((rigid_run / "result.json").read_text(encoding="utf-8"))
    assert record["method"] == "rigid-mask" and record["init"] == "com" and record["seed"] == 0
    assert record["device"] in ("cpu", "cuda", "mps")
    assert record["transform_direction"].startswith("fixed->moving")
    times = record["wall_seconds"]
    assert {"load", "init", "register", "metrics", "write", "total"} <= set(times)
    assert times["total"] >= times["register"] > 0
    before, after = record["metrics"]["before"], record["metrics"]["after"]
    assert after["dice"]["1"] > before["dice"]["1"]
    assert after["tre_mean_mm"] < 1.0 < before["tre_mean_mm"]
    assert len(after["tre_mm"]) == 4


def test_method_none_with_com_init_equals_method_com(case, tmp_path):
    assert main(args_for(case, tmp_path / "a", "none", extra=["--init", "com"])) == 0
    assert main(args_for(case, tmp_path / "b", "com")) == 0
    a = sitk.ReadTransform(str(tmp_path / "a" / "transform.h5"))
    b = sitk.ReadTransform(str(tmp_path / "b" / "transform.h5"))
    np.testing.assert_allclose(a.TransformPoint((1.0, 2.0, 3.0)), b.TransformPoint((1.0, 2.0, 3.0)), atol=1e-9)


def test_same_seed_same_result(case, rigid_run, tmp_path):
    assert main(args_for(case, tmp_path / "again")) == 0
    a = sitk.ReadTransform(str(rigid_run / "transform.h5")).GetParameters()
    b = sitk.ReadTransform(str(tmp_path / "again" / "transform.h5")).GetParameters()
    assert a == b


def test_failed_run_leaves_existing_output_untouched(case, rigid_run, tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "precious.txt").write_text("x", encoding="utf-8")
    bad = args_for(case, out)
    bad[bad.index("--moving") + 1] = str(tmp_path / "missing.nrrd")
    assert main(bad) == 2
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_cancelled_run_writes_nothing(case, tmp_path):
    with pytest.raises(Cancelled):
        register_files("rigid-mask", case["fixed"], case["moving"], tmp_path / "out",
                       case["fixed_seg"], case["moving_seg"], cancel=lambda: True)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_progress_is_reported(case):
    seen = []
    inputs = load_inputs(case["fixed"], case["moving"], case["fixed_seg"], case["moving_seg"])
    run_registration("rigid-mask", inputs, progress=lambda f, m: seen.append(f), options={"start_angles_deg": 0})
    assert seen and seen == sorted(seen) and seen[-1] == pytest.approx(1.0)


def test_a_given_initial_transform_is_the_start(case):
    """``initial`` (e.g. a Slicer transform node): used as is with init 'none' (its default), refined by
    'rigid-mask'; 'com' would discard it and non-linear starts are refused."""
    from MMRegistrationLib.core.errors import InputError
    from MMRegistrationLib.spatial import AffineTransform, DisplacementField

    inputs = load_inputs(case["fixed"], case["moving"], case["fixed_seg"], case["moving_seg"])
    start = AffineTransform.from_translation([1.5, -2.0, 0.5])
    result, record = run_registration("none", inputs, initial=start)
    assert record["init"] == "none" and np.allclose(record["initial_matrix"], start.matrix)
    np.testing.assert_allclose(result.transform.matrix, start.matrix)
    refined, record = run_registration("none", inputs, init="rigid-mask", initial=start,
                                       options=None, progress=None)
    assert record["init"] == "rigid-mask" and not np.allclose(refined.transform.matrix, start.matrix)
    with pytest.raises(InputError, match="'com' replaces the given initial transform"):
        run_registration("none", inputs, init="com", initial=start)
    field = DisplacementField.from_transform(start, inputs.fixed.grid.resized(8.0))
    with pytest.raises(InputError, match="initial: the initial transform must be linear"):
        run_registration("none", inputs, initial=field)


def test_initial_transform_file_from_the_command_line(case, tmp_path, capsys):
    """``--initial-transform``: a linear ITK file (fixed -> moving) is the start of ``--method none`` exactly;
    a displacement-field file is refused naming the option."""
    start = sitk.Euler3DTransform((1.0, -2.0, 3.0), 0.05, -0.02, 0.1, (2.0, -1.5, 4.0))
    sitk.WriteTransform(start, str(tmp_path / "start.tfm"))
    out = tmp_path / "out"
    assert main(args_for(case, out, method="none", extra=["--initial-transform", str(tmp_path / "start.tfm")])) == 0
    written = sitk.ReadTransform(str(out / "transform.h5"))
    point = (3.0, -7.0, 12.0)
    np.testing.assert_allclose(written.TransformPoint(point), start.TransformPoint(point), atol=1e-6)
    record = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert record["init"] == "none" and record["inputs"]["initial_transform"].endswith("start.tfm")

    field = sitk.DisplacementFieldTransform(sitk.Image([4, 4, 4], sitk.sitkVectorFloat64, 3))
    sitk.WriteTransform(field, str(tmp_path / "field.h5"))
    code = main(args_for(case, tmp_path / "out2", method="none", extra=["--initial-transform", str(tmp_path / "field.h5")]))
    assert code == 2 and "--initial-transform" in capsys.readouterr().err and not (tmp_path / "out2").exists()


def test_module_entry_point_and_console_script():
    out = subprocess.run([sys.executable, "-m", "MMRegistrationLib", "methods"], capture_output=True, text=True)
    assert out.returncode == 0 and "rigid-mask" in out.stdout
    script = Path(sys.executable).with_name("mmreg")
    if script.exists():
        out = subprocess.run([str(script), "--version"], capture_output=True, text=True)
        assert out.returncode == 0 and "mmreg" in out.stdout


def test_slicer_seg_nrrd_segments_are_matched_by_name(case, tmp_path):
    """Segment values differ between the two files; names decide the correspondence."""
    from MMRegistrationLib.io.images import read_image

    names = {1: "Prostate", 2: "Bladder", 3: "Rectum"}
    fixed = write_seg_nrrd(read_image(case["fixed_seg"]), names, tmp_path / "f.seg.nrrd")
    moving = write_seg_nrrd(read_image(case["moving_seg"]), {1: "prostate ", 2: "BLADDER", 3: "Rectum"},
                            tmp_path / "m.seg.nrrd", relabel={1: 3, 3: 1})
    args = args_for(case, tmp_path / "out", landmarks=False)
    args[args.index("--fixed-seg") + 1] = fixed
    args[args.index("--moving-seg") + 1] = moving
    assert main(args) == 0
    dice = json.loads((tmp_path / "out" / "result.json").read_text(encoding="utf-8"))["metrics"]["after"]["dice"]
    assert set(dice) == {"Prostate", "Bladder", "Rectum"} and min(dice.values()) > 0.9
