"""Regions of interest (``--roi``): Slicer markups ROI files (written by slicer-core) and ``cx,cy,cz,sx,sy,sz``
(LPS mm) become the same :class:`OrientedBox` as the ROI node; bad values and boxes that select no fixed voxel are
refused with an InputError naming ``--roi``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from conftest import expect_input_error, markups_app_scene, oblique_grid
from MMRegistrationLib.core.box import OrientedBox
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io.regions import check_region, read_region


def _assert_same_box(a: OrientedBox, b: OrientedBox, atol=1e-6):
    np.testing.assert_allclose(a.center, b.center, atol=atol)
    np.testing.assert_allclose(a.half_size, b.half_size, atol=atol)
    np.testing.assert_allclose(a.axes, b.axes, atol=atol)
    pts = a.center + np.random.default_rng(1).uniform(-1.5, 1.5, (500, 3)) * a.half_size.max()
    np.testing.assert_array_equal(a.contains(pts), b.contains(pts))


# ---- Slicer markups ROI files, written by slicer-core ------------------------------------------------------------
@pytest.fixture
def markups_scene():
    """A scene with the application, colour and markups logics markups storage needs."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
    return markups_app_scene(slicer)


def _roi_node(scene, angles_deg, center_ras, size, name="box"):
    import slicer

    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(matrix))  # before SetCenter (notes)
    roi.SetCenter(*center_ras)
    roi.SetSize(*size)
    return roi


def _save(scene, node, path, system: str):
    import slicer

    storage = node.CreateDefaultStorageNode()
    scene.AddNode(storage)
    storage.SetCoordinateSystem(getattr(slicer.vtkMRMLStorageNode, f"CoordinateSystem{system}"))
    storage.SetFileName(str(path))
    assert storage.WriteData(node) == 1, path
    return path


@pytest.mark.parametrize("system", ["RAS", "LPS"])
@pytest.mark.parametrize("angles_deg", [(0.0, 0.0, 0.0), (20.0, -35.0, 50.0), (90.0, 0.0, 180.0)])
def test_roi_file_written_by_slicer_reads_as_the_nodes_box(markups_scene, tmp_path, system, angles_deg):
    from MMRegistrationSlicerLib import bridge

    roi = _roi_node(markups_scene, angles_deg, (10.0, -20.0, 30.0), (5.0, 12.0, 20.0))
    path = _save(markups_scene, roi, tmp_path / "box.mrk.json", system)
    markup = json.loads(path.read_text(encoding="utf-8"))["markups"][0]
    assert markup["type"] == "ROI" and markup["coordinateSystem"] == system
    box = read_region(str(path))
    _assert_same_box(box, bridge.box_from_roi(roi))
    # the layout this reader relies on: orientation row-major, one column per box axis, in the file's system
    flip = np.diag([-1.0, -1.0, 1.0]) if system == "LPS" else np.eye(3)
    expected = flip @ Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    np.testing.assert_allclose(np.reshape(markup["orientation"], (3, 3)), expected, atol=1e-9)
    # Slicer's own IsPointInROIWorld agrees with the box read from the file
    pts_ras = np.array([10.0, -20.0, 30.0]) + np.random.default_rng(0).uniform(-12, 12, size=(300, 3))
    inside = np.array([roi.IsPointInROIWorld(p) for p in pts_ras])
    assert 10 < inside.sum() < 290
    np.testing.assert_array_equal(box.contains(pts_ras * [-1, -1, 1]), inside)


def test_only_the_first_roi_of_a_file_is_used_and_point_lists_are_skipped(tmp_path):
    doc = {"@schema": "x", "markups": [
        {"type": "Fiducial", "coordinateSystem": "LPS", "controlPoints": [{"position": [1, 2, 3]}]},
        {"type": "ROI", "coordinateSystem": "RAS", "center": [1.0, 2.0, 3.0], "size": [4.0, 6.0, 8.0],
         "orientation": [1, 0, 0, 0, 1, 0, 0, 0, 1]},
        {"type": "ROI", "coordinateSystem": "LPS", "center": [100.0, 0.0, 0.0], "size": [1.0, 1.0, 1.0]},
    ]}
    path = tmp_path / "two.mrk.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    box = read_region(path)
    np.testing.assert_allclose(box.center, [-1.0, -2.0, 3.0])  # RAS -> LPS
    np.testing.assert_allclose(box.size, [4.0, 6.0, 8.0])
    np.testing.assert_allclose(box.axes, np.diag([-1.0, -1.0, 1.0]))  # the same box, axes in LPS
    doc["markups"][1].pop("coordinateSystem")  # Slicer reads a markup without coordinateSystem as LPS
    doc["markups"][1].pop("orientation")  # absent = axis-aligned
    path.write_text(json.dumps(doc), encoding="utf-8")
    box = read_region(path)
    np.testing.assert_allclose(box.center, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(box.axes, np.eye(3))


# ---- the numbers form --------------------------------------------------------------------------------------------
def test_numbers_are_an_axis_aligned_box_in_lps_mm():
    box = read_region(" -10.5, 20 ,3e1, 4,5,6 ")
    np.testing.assert_allclose(box.center, [-10.5, 20.0, 30.0])
    np.testing.assert_allclose(box.size, [4.0, 5.0, 6.0])
    np.testing.assert_allclose(box.axes, np.eye(3))
    record = box.as_record()
    assert record["center"] == [-10.5, 20.0, 30.0] and record["size"] == [4.0, 5.0, 6.0]
    assert read_region(box) is box


# ---- bad values: every one an InputError naming --roi ------------------------------------------------------------
def _roi_doc(**changes) -> dict:
    markup = {"type": "ROI", "coordinateSystem": "RAS", "center": [1.0, 2.0, 3.0], "size": [10.0, 10.0, 10.0],
              "orientation": [1, 0, 0, 0, 1, 0, 0, 0, 1]}
    markup.update(changes)
    return {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/"
                       "Schema/markups-schema-v1.0.3.json#", "markups": [markup]}


BAD_FILES = {
    "not json": (b"\x00\x01 not json", "not JSON"),
    "no markups": ({"something": 1}, "no 'markups' list"),
    "point list": ({"markups": [{"type": "Fiducial", "controlPoints": [{"position": [1, 2, 3]}]}]}, "no ROI"),
    "zero size": (_roi_doc(size=[10.0, 0.0, 10.0]), "positive"),
    "negative size": (_roi_doc(size=[10.0, -1.0, 10.0]), "positive"),
    "NaN centre": (_roi_doc(center=[1.0, float("nan"), 3.0]), "finite"),
    "short size": (_roi_doc(size=[10.0, 10.0]), "3 numbers"),
    "no size": (_roi_doc(size=None), "'size'"),
    "text orientation": (_roi_doc(orientation=["a"] * 9), "9 numbers"),
    "skewed orientation": (_roi_doc(orientation=[1, 0.3, 0, 0, 1, 0, 0, 0, 1]), "orthonormal"),
    "scaled orientation": (_roi_doc(orientation=[2, 0, 0, 0, 1, 0, 0, 0, 1]), "orthonormal"),
    "unknown system": (_roi_doc(coordinateSystem="XYZ"), "coordinateSystem"),
    "micrometres": (_roi_doc(coordinateUnits="um"), "coordinateUnits"),
    "inside out": (_roi_doc(insideOut=True), "inside-out"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_roi_files_are_refused(tmp_path, name):
    content, words = BAD_FILES[name]
    path = tmp_path / "bad.mrk.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        if name == "no size":
            content["markups"][0].pop("size")
        path.write_text(json.dumps(content), encoding="utf-8")
    message = expect_input_error(lambda: read_region(str(path)), "--roi", words)
    assert str(path) in message


@pytest.mark.parametrize("value, words", [
    ("", "empty"),
    ("1,2,3", "6 comma-separated numbers"),
    ("1,2,3,4,5,6,7", "6 comma-separated numbers"),
    ("1,2,three,4,5,6", "must be a number"),
    ("1,2,3,inf,5,6", "finite"),
    ("1,2,3,nan,5,6", "finite"),
    ("1,2,3,0,5,6", "positive"),
    ("1,2,3,4,-5,6", "positive"),
    ("missing.mrk.json", "file not found"),
    ("some_box", "file not found"),
])
def test_bad_roi_values_are_refused(value, words):
    expect_input_error(lambda: read_region(value), "--roi", words)


def test_a_folder_is_refused(tmp_path):
    expect_input_error(lambda: read_region(str(tmp_path)), "--roi", "folder")


def test_the_argument_name_is_the_callers():
    expect_input_error(lambda: read_region("1,2", argument="roi"), "roi", "6 comma-separated")


def test_oriented_box_refuses_non_orthonormal_axes_and_non_finite_values():
    with pytest.raises(ValueError, match="orthonormal"):
        OrientedBox([0, 0, 0], [[1, 0.2, 0], [0, 1, 0], [0, 0, 1]], [1, 1, 1])
    with pytest.raises(ValueError, match="orthonormal"):
        OrientedBox([0, 0, 0], np.eye(3) * 2, [1, 1, 1])
    with pytest.raises(ValueError, match="'center' must be finite"):
        OrientedBox([0, np.nan, 0], np.eye(3), [1, 1, 1])
    with pytest.raises(ValueError, match="'axes' must be finite"):
        OrientedBox([0, 0, 0], np.full((3, 3), np.inf), [1, 1, 1])
    with pytest.raises(ValueError, match="'half_size' must be finite"):
        OrientedBox([0, 0, 0], np.eye(3), [1, np.inf, 1])
    with pytest.raises(ValueError, match="positive"):
        OrientedBox([0, 0, 0], np.eye(3), [1, 0, 1])
    mirrored = OrientedBox([0, 0, 0], np.diag([-1.0, 1.0, 1.0]), [1, 2, 3])  # orthonormal, left-handed: a box
    assert mirrored.contains(np.array([0.9, 1.9, 2.9]))


# ---- checking against the fixed image ----------------------------------------------------------------------------
@pytest.fixture
def fixed():
    grid = oblique_grid(shape=(20, 24, 22), spacing=(1.3, 0.9, 2.1))
    return Image(np.zeros(grid.shape, dtype=np.float32), grid)


def _centre(image: Image) -> np.ndarray:
    return image.grid.index_to_world((np.array(image.grid.size_ijk) - 1) / 2)


def test_a_box_inside_or_overlapping_the_fixed_image_is_accepted(fixed):
    centre = _centre(fixed)
    box = read_region(",".join(str(v) for v in [*centre, 10, 10, 10]))
    assert check_region(box, fixed) is box
    corner = fixed.grid.corners_world()[0]  # a box around one outer corner overlaps a few voxels
    check_region(OrientedBox(corner, np.eye(3), [6.0, 6.0, 6.0]), fixed)


def test_a_box_outside_the_fixed_image_is_refused_and_the_message_states_both(fixed):
    message = expect_input_error(lambda: check_region(read_region("500,0,0,10,10,10"), fixed), "--roi",
                                 "entirely outside", "centre (500, 0, 0)", "size (10, 10, 10)", "LPS mm",
                                 "fixed image covers")
    lo, hi = fixed.grid.corners_world().min(0), fixed.grid.corners_world().max(0)
    assert f"x [{lo[0]:.4g}, {hi[0]:.4g}]" in message and f"z [{lo[2]:.4g}, {hi[2]:.4g}]" in message, message


def test_an_oriented_box_beyond_an_oblique_face_is_outside_although_the_bounding_boxes_overlap(fixed):
    grid = fixed.grid
    direction, size_ijk = grid.direction, np.array(grid.size_ijk)
    face_centre = grid.index_to_world(np.array([size_ijk[0] - 0.5, (size_ijk[1] - 1) / 2, (size_ijk[2] - 1) / 2]))
    half = np.array([3.0, 8.0, 8.0])
    box = OrientedBox(face_centre + direction[:, 0] * (half[0] + 1.0), direction, half)  # 1 mm beyond the +i face
    lo, hi = grid.corners_world().min(0), grid.corners_world().max(0)
    assert np.all(box.corners().max(0) > lo) and np.all(box.corners().min(0) < hi)  # axis-aligned boxes overlap
    expect_input_error(lambda: check_region(box, fixed), "--roi", "entirely outside")
    inside = OrientedBox(face_centre + direction[:, 0] * (half[0] - 2.0), direction, half)
    check_region(inside, fixed)


def test_a_box_between_voxel_centres_is_refused():
    image = Image(np.zeros((6, 6, 6), dtype=np.float32), Grid.from_geometry((6, 6, 6), (1.0, 1.0, 1.0)))
    thin = read_region("2.5,2.5,2.5,0.5,0.5,0.5")  # inside the image, no voxel centre (centres are integers)
    expect_input_error(lambda: check_region(thin, image), "--roi", "holds no voxel centre", "spacing 1, 1, 1 mm",
                       "LPS mm")
    border = read_region("-0.4,2,2,0.6,4,4")  # within the half voxel outside the first centres
    expect_input_error(lambda: check_region(border, image), "--roi", "holds no voxel centre")
    check_region(read_region("2.5,2.5,2.5,1.2,1.2,1.2"), image)  # holds the 8 centres around (2.5, 2.5, 2.5)
    check_region(read_region("3,3,3,0.1,0.1,0.1"), image)


def test_messages_can_state_ras_for_slicer(fixed):
    message = expect_input_error(lambda: check_region(read_region("500,10,0,10,10,10"), fixed, "ROI 'R'", "RAS"),
                                 "ROI 'R'", "centre (-500, -10, 0)", "RAS mm")
    assert "LPS" not in message
