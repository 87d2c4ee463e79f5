"""Landmarks: CSV (LPS), Slicer .mrk.json and .fcsv (RAS or LPS), writing, and pair checks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import expect_input_error
from MMRegistrationLib.io.landmarks import check_landmark_pair, read_landmarks, write_landmarks_csv

POINTS = np.array([[1.5, -2.25, 30.0], [-10.125, 4.0, 0.5], [0.0, 0.0, -7.75]])
FLIP = np.array([-1.0, -1.0, 1.0])


# ---- CSV -----------------------------------------------------------------------------------------
def test_csv_with_header(tmp_path):
    p = tmp_path / "lm.csv"
    p.write_text("x,y,z\n1.5,-2.25,30\n-10.125,4,0.5\n0,0,-7.75\n", encoding="utf-8")
    np.testing.assert_array_equal(read_landmarks(p, "--fixed-landmarks"), POINTS)


def test_csv_without_header(tmp_path):
    p = tmp_path / "lm.txt"
    p.write_text("1.5, -2.25, 30\n-10.125, 4, 0.5\n\n0,0,-7.75\n", encoding="utf-8")
    pts = read_landmarks(p, "--fixed-landmarks")
    assert pts.shape == (3, 3) and pts.dtype == np.float64
    np.testing.assert_array_equal(pts, POINTS)


def test_csv_with_extra_columns_uses_named_columns(tmp_path):
    p = tmp_path / "lm.csv"
    p.write_text("label,z,x,y,comment\nA,30,1.5,-2.25,apex\nB,0.5,-10.125,4,base\nC,-7.75,0,0,\n", encoding="utf-8")
    np.testing.assert_array_equal(read_landmarks(p, "--fixed-landmarks"), POINTS)


def test_csv_header_case_comment_lines_and_bom(tmp_path):
    p = tmp_path / "lm.csv"
    p.write_bytes("\ufeff# exported by hand\nX,Y,Z\n1.5,-2.25,30\n# skipped\n-10.125,4,0.5\n0,0,-7.75\n".encode("utf-8"))
    np.testing.assert_array_equal(read_landmarks(p, "--fixed-landmarks"), POINTS)


@pytest.mark.parametrize(
    "text, words",
    [
        ("", ["no landmark"]),
        ("x,y,z\n", ["no landmark"]),
        ("x,y,z\n1,2,3\n4,five,6\n", ["numeric"]),
        ("x,y,z\n1,2\n", ["numeric"]),
        ("x,y,z\n1,2,3\nnan,1,2\n", ["NaN"]),
        ("x,y,z\n1,2,inf\n", ["Inf"]),
    ],
    ids=["empty", "header-only", "non-numeric", "short-row", "nan", "inf"],
)
def test_bad_csv(tmp_path, text, words):
    p = tmp_path / "bad.csv"
    p.write_text(text, encoding="utf-8")
    expect_input_error(lambda: read_landmarks(p, "--moving-landmarks"), "--moving-landmarks", "bad.csv", *words)


def test_missing_and_binary_landmark_files(tmp_path):
    expect_input_error(lambda: read_landmarks(tmp_path / "none.csv", "--fixed-landmarks"), "--fixed-landmarks", "not found")
    p = tmp_path / "binary.csv"
    p.write_bytes(bytes(range(128, 256)) * 4)
    expect_input_error(lambda: read_landmarks(p, "--fixed-landmarks"), "--fixed-landmarks", "binary.csv")


# ---- Slicer markups ------------------------------------------------------------------------------
def _mrk_json(path, points, system="RAS", extra_markup=None):
    doc = {
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#",
        "markups": [
            {
                "type": "Fiducial",
                "coordinateSystem": system,
                "coordinateUnits": "mm",
                "locked": False,
                "labelFormat": "%N-%d",
                "controlPoints": [
                    {
                        "id": str(n + 1),
                        "label": f"F-{n + 1}",
                        "description": "",
                        "associatedNodeID": "",
                        "position": [float(v) for v in p],
                        "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
                        "selected": True,
                        "locked": False,
                        "visibility": True,
                        "positionStatus": "defined",
                    }
                    for n, p in enumerate(points)
                ],
                "measurements": [],
                "display": {"visibility": True, "opacity": 1.0},
            }
        ]
        + ([extra_markup] if extra_markup else []),
    }
    path.write_text(json.dumps(doc, indent=4), encoding="utf-8")
    return path


def test_mrk_json_ras_is_converted_to_lps(tmp_path):
    p = _mrk_json(tmp_path / "F.mrk.json", POINTS * FLIP, "RAS")  # the same physical points, written in RAS
    np.testing.assert_array_equal(read_landmarks(p, "--fixed-landmarks"), POINTS)


def test_mrk_json_lps_is_kept(tmp_path):
    p = _mrk_json(tmp_path / "F.mrk.json", POINTS, "LPS")
    np.testing.assert_array_equal(read_landmarks(p, "--fixed-landmarks"), POINTS)


def test_mrk_json_several_markups_each_with_its_own_system(tmp_path):
    second = {"type": "Fiducial", "coordinateSystem": "LPS", "controlPoints": [{"id": "9", "label": "G-1", "position": [5.0, 6.0, 7.0]}]}
    p = _mrk_json(tmp_path / "F.mrk.json", POINTS * FLIP, "RAS", extra_markup=second)
    np.testing.assert_array_equal(read_landmarks(p, "lm"), np.vstack([POINTS, [[5.0, 6.0, 7.0]]]))


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", ["markups"]),
        (json.dumps({"@schema": "x"}), ["markups"]),
        (json.dumps({"markups": [{"type": "Fiducial", "coordinateSystem": "RAS", "controlPoints": []}]}), ["no landmark"]),
        (json.dumps({"markups": [{"coordinateSystem": "RAS", "controlPoints": [{"label": "F-1", "positionStatus": "undefined"}]}]}), ["F-1", "no position"]),
        (json.dumps({"markups": [{"coordinateSystem": "RAS", "controlPoints": [{"label": "F-1", "position": [1, "a", 2]}]}]}), ["F-1"]),
        (json.dumps({"markups": [{"coordinateSystem": "IJK", "controlPoints": [{"label": "F-1", "position": [1, 2, 3]}]}]}), ["IJK"]),
        (json.dumps({"markups": [{"coordinateSystem": "LPS", "controlPoints": [{"position": [1, float("nan"), 3]}]}]}), ["NaN"]),
    ],
    ids=["not-json", "no-markups", "no-points", "undefined-point", "non-numeric", "unknown-system", "nan"],
)
def test_bad_mrk_json(tmp_path, content, words):
    p = tmp_path / "bad.mrk.json"
    p.write_text(content, encoding="utf-8")
    expect_input_error(lambda: read_landmarks(p, "--fixed-landmarks"), "--fixed-landmarks", *words)


FCSV_HEADER = "# Markups fiducial file version = {version}\n# CoordinateSystem = {system}\n# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"


def _fcsv(path, points, system, version="5.6"):
    rows = [
        f"vtkMRMLMarkupsFiducialNode_{n},{float(p[0])!r},{float(p[1])!r},{float(p[2])!r},0,0,0,1,1,1,0,F-{n + 1},\"a, quoted description\",vtkMRMLScalarVolumeNode1"
        for n, p in enumerate(points)
    ]
    path.write_text(FCSV_HEADER.format(version=version, system=system) + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "system, stored_as",
    [("RAS", "ras"), ("LPS", "lps"), ("0", "ras"), ("1", "lps")],  # legacy files: 0 = RAS, 1 = LPS
)
def test_fcsv_coordinate_systems(tmp_path, system, stored_as):
    stored = POINTS * FLIP if stored_as == "ras" else POINTS
    p = _fcsv(tmp_path / "F.fcsv", stored, system, version="4.10" if system in "01" else "5.6")
    np.testing.assert_array_equal(read_landmarks(p, "--fixed-landmarks"), POINTS)


def test_fcsv_without_coordinate_system_line_is_ras(tmp_path):
    p = tmp_path / "old.fcsv"
    rows = [f"{n},{q[0]},{q[1]},{q[2]},0,0,0,1,1,1,0,F-{n},," for n, q in enumerate(POINTS * FLIP)]
    p.write_text("# Markups fiducial file version = 4.4\n" + "\n".join(rows) + "\n", encoding="utf-8")
    np.testing.assert_array_equal(read_landmarks(p, "lm"), POINTS)


@pytest.mark.parametrize(
    "body, words",
    [("1,2,x,3,0,0,0,1,1,1,0,F-1,,\n", ["line 4", "numbers"]), ("", ["no landmark"])],
    ids=["non-numeric", "empty"],
)
def test_bad_fcsv(tmp_path, body, words):
    p = tmp_path / "bad.fcsv"
    p.write_text(FCSV_HEADER.format(version="5.6", system="LPS") + body, encoding="utf-8")
    expect_input_error(lambda: read_landmarks(p, "--moving-landmarks"), "--moving-landmarks", *words)


def test_fcsv_unknown_coordinate_system_is_rejected(tmp_path):
    p = _fcsv(tmp_path / "ijk.fcsv", POINTS, "IJK")
    expect_input_error(lambda: read_landmarks(p, "--moving-landmarks"), "--moving-landmarks", "IJK")


# ---- writing and pairs -------------------------------------------------------------------------------
def test_write_then_read_is_exact(tmp_path, rng):
    points = rng.normal(0, 50, size=(17, 3))
    points[0] = [0.1, 1 / 3, -2e-17]
    points[1] = [1e300, -5e-324, 123456789.123456789]
    path = write_landmarks_csv(points, tmp_path / "out.csv")
    assert path == tmp_path / "out.csv"
    assert os.listdir(tmp_path) == ["out.csv"]
    assert path.read_text(encoding="utf-8").splitlines()[0] == "x,y,z"
    back = read_landmarks(path, "lm")
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, points)  # bit-exact


def test_check_landmark_pair(rng):
    check_landmark_pair(rng.normal(size=(4, 3)), rng.normal(size=(4, 3)))  # same count: no error
    message = expect_input_error(
        lambda: check_landmark_pair(rng.normal(size=(5, 3)), rng.normal(size=(3, 3))), "--moving-landmarks", "3", "5"
    )
    assert message.index("3") < message.index("5")  # "has 3 ... fixed list has 5"
