"""Every bad input gets exit code 2, a message naming the argument and the problem, and no output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from analytic_case import write_case
from MMRegistrationLib.cli.main import main


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return write_case(tmp_path_factory.mktemp("case"))


def _write(img: sitk.Image, path: Path) -> str:
    sitk.WriteImage(img, str(path))
    return str(path)


def _singular_direction_nrrd(path: Path) -> str:
    header = (
        "NRRD0004\ntype: unsigned char\ndimension: 3\nspace: left-posterior-superior\nsizes: 4 4 4\n"
        "space directions: (1,0,0) (1,0,0) (0,0,1)\nkinds: domain domain domain\nendian: little\n"
        "encoding: raw\nspace origin: (0,0,0)\n\n"
    )
    path.write_bytes(header.encode() + bytes(64))
    return str(path)


def _far_start(tmp: Path) -> str:
    """An initial transform that moves every fixed point 300 mm away: the masks do not overlap after it."""
    from MMRegistrationLib.io import write_transform
    from MMRegistrationLib.spatial import AffineTransform

    return str(write_transform(AffineTransform.from_translation([300.0, 0.0, 0.0]), tmp / "far_start.h5"))


def bad_cases(case: dict, tmp: Path) -> dict:
    """name -> (argument to replace, replacement value or None to drop, extra args, expected message parts)."""
    fixed = sitk.ReadImage(case["fixed"])
    fixed_seg = sitk.ReadImage(case["fixed_seg"])
    nan = sitk.Cast(fixed, sitk.sitkFloat32)
    nan[3, 4, 5] = float("nan")
    inf = sitk.Cast(fixed, sitk.sitkFloat32)
    inf[1, 1, 1] = float("inf")
    four_d = sitk.JoinSeries([fixed, fixed])
    two_d = fixed[:, :, 10]
    empty = sitk.Image(fixed_seg.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(fixed_seg)
    extra_label = sitk.Image(fixed_seg)
    extra_label[2, 2, 2] = 7
    far = sitk.Image(sitk.ReadImage(case["moving_seg"]))
    far.SetOrigin(tuple(np.array(far.GetOrigin()) + [300.0, 0.0, 0.0]))
    (tmp / "garbage.nrrd").write_bytes(b"this is not an image" * 10)
    (tmp / "short.csv").write_text("x,y,z\n1,2,3\n", encoding="utf-8")
    return {
        "missing file": ("--fixed", str(tmp / "nope.nrrd"), [], ["--fixed", "not found"]),
        "unreadable file": ("--moving", str(tmp / "garbage.nrrd"), [], ["--moving", "cannot read"]),
        "2-D image": ("--fixed", _write(two_d, tmp / "two_d.nrrd"), [], ["--fixed", "2-D", "3-D image is needed"]),
        "4-D image": ("--moving", _write(four_d, tmp / "four_d.nrrd"), [], ["--moving", "4-D"]),
        "NaN voxels": ("--fixed", _write(nan, tmp / "nan.nrrd"), [], ["--fixed", "NaN/Inf"]),
        "Inf voxels": ("--moving", _write(inf, tmp / "inf.nrrd"), [], ["--moving", "NaN/Inf"]),
        "empty segmentation": ("--fixed-seg", _write(empty, tmp / "empty.nrrd"), [], ["--fixed-seg", "empty"]),
        "label in one only": ("--fixed-seg", _write(extra_label, tmp / "extra.nrrd"), [], ["[7]", "in --fixed-seg but not in --moving-seg"]),
        "seg outside its image": ("--moving-seg", _write(far, tmp / "far.nrrd"), [],
                                  ["--moving-seg", "outside --moving's field of view"]),
        "no overlap": ("--method", "rigid-mask", ["--initial-transform", _far_start(tmp), "--init", "rigid-mask"],
                       ["--init", "do not overlap"]),
        "singular direction": ("--fixed", _singular_direction_nrrd(tmp / "singular.nrrd"), [], ["--fixed", "non-invertible"]),
        "landmark count": ("--moving-landmarks", str(tmp / "short.csv"), [], ["--moving-landmarks", "1 landmarks", "4"]),
        "seg for one image only": ("--moving-seg", None, [], ["--moving-seg", "both"]),
        "unknown option for method": ("--method", "com", ["--band-mm", "3"], ["--method", "--band-mm"]),
    }


CASE_NAMES = [
    "missing file", "unreadable file", "2-D image", "4-D image", "NaN voxels", "Inf voxels", "empty segmentation",
    "label in one only", "seg outside its image", "no overlap", "singular direction", "landmark count", "seg for one image only",
    "unknown option for method",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_reported_and_nothing_is_written(name, case, tmp_path, capsys):
    argument, value, extra, expected = bad_cases(case, tmp_path)[name]
    out = tmp_path / "out"
    args = ["register", "--method", "rigid-mask", "--fixed", case["fixed"], "--moving", case["moving"],
            "--fixed-seg", case["fixed_seg"], "--moving-seg", case["moving_seg"],
            "--fixed-landmarks", case["fixed_landmarks"], "--moving-landmarks", case["moving_landmarks"],
            "--out", str(out), "--quiet", *extra]
    i = args.index(argument)
    if value is None:
        del args[i : i + 2]
    else:
        args[i + 1] = value
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for part in expected:
        assert part in err, (part, err)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
