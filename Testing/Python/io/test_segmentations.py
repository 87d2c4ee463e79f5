"""Segmentations: plain label maps, Slicer ``.seg.nrrd`` (single and multi-layer), matching fixed/moving."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from analytic_case import slicer_segment_metadata
from conftest import oblique_grid

from conftest import expect_input_error
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io import write_image
from MMRegistrationLib.io.segmentations import Segmentation, match_segmentations, read_segmentation

GRID = oblique_grid(shape=(10, 12, 14), spacing=(1.1, 0.8, 2.0), origin=(12.0, -40.5, 7.25))


def _masks() -> dict:
    """Three disjoint boxes (prostate, bladder, rectum) on GRID, as boolean (K, J, I) arrays."""
    shape = GRID.shape
    out = {name: np.zeros(shape, bool) for name in ("prostate", "bladder", "rectum")}
    out["prostate"][2:6, 3:8, 4:10] = True
    out["bladder"][6:9, 2:7, 1:5] = True
    out["rectum"][1:4, 8:11, 9:13] = True
    return out


def _labelmap(values: dict, dtype=np.uint8) -> np.ndarray:
    masks = _masks()
    arr = np.zeros(GRID.shape, dtype)
    for name, value in values.items():
        arr[masks[name]] = value
    return arr


def _write(array: np.ndarray, path, metadata: dict | None = None, is_vector: bool = False):
    img = sitk.GetImageFromArray(array, isVector=is_vector)
    ref = Image(np.zeros(GRID.shape, np.uint8), GRID).to_sitk()
    img.CopyInformation(ref)
    for key, value in (metadata or {}).items():
        img.SetMetaData(key, value)
    sitk.WriteImage(img, str(path), True)
    return path


def _single_layer_seg(path, order=(("Prostate", 5, "prostate"), ("Bladder", 3, "bladder"), ("Rectum", 7, "rectum"))):
    arr = _labelmap({key: value for _, value, key in order})
    return _write(arr, path, slicer_segment_metadata([(name, value, 0) for name, value, _ in order]))


def _multi_layer_seg(path, names=("Rectum", "Prostate", "Bladder")):
    """Two layers: layer 0 holds rectum (1) and prostate (2); layer 1 holds bladder (1) — overlapping-free."""
    masks = _masks()
    layer0 = np.zeros(GRID.shape, np.uint8)
    layer0[masks["rectum"]] = 1
    layer0[masks["prostate"]] = 2
    layer1 = masks["bladder"].astype(np.uint8)
    meta = slicer_segment_metadata([(names[0], 1, 0), (names[1], 2, 0), (names[2], 1, 1)])
    return _write(np.stack([layer0, layer1], axis=-1), path, meta, is_vector=True)


# ---- plain label maps --------------------------------------------------------------------------
def test_plain_label_map(tmp_path):
    arr = _labelmap({"prostate": 1, "bladder": 2, "rectum": 5})
    seg = read_segmentation(_write(arr, tmp_path / "labels.nrrd"), "--fixed-seg")
    assert seg.labels == [1, 2, 5]
    assert seg.names == {}
    np.testing.assert_array_equal(seg.labelmap.array, arr)
    assert seg.labelmap.grid.same_as(GRID, tol=1e-9)


def test_float_label_map_with_integer_values_is_accepted(tmp_path):
    arr = _labelmap({"prostate": 1, "bladder": 2, "rectum": 3}).astype(np.float32)
    seg = read_segmentation(_write(arr, tmp_path / "labels.nii.gz"), "--moving-seg")
    assert np.issubdtype(seg.labelmap.array.dtype, np.integer)
    assert seg.labels == [1, 2, 3]
    np.testing.assert_array_equal(seg.labelmap.array, arr.astype(int))
    assert seg.labelmap.grid.same_as(GRID, tol=1e-4)


def test_non_integer_float_label_map_is_rejected(tmp_path):
    arr = _labelmap({"prostate": 1, "bladder": 2}).astype(np.float32)
    arr[_masks()["bladder"]] = 2.5
    path = _write(arr, tmp_path / "prob.nrrd")
    expect_input_error(lambda: read_segmentation(path, "--moving-seg"), "--moving-seg", "non-integer", "prob.nrrd")


def test_empty_label_map_is_rejected(tmp_path):
    path = _write(np.zeros(GRID.shape, np.uint8), tmp_path / "empty.nrrd")
    expect_input_error(lambda: read_segmentation(path, "--fixed-seg"), "--fixed-seg", "empty")


def test_negative_labels_are_rejected(tmp_path):
    arr = _labelmap({"prostate": 1, "bladder": -2}, dtype=np.int16)
    path = _write(arr, tmp_path / "neg.nrrd")
    expect_input_error(lambda: read_segmentation(path, "--fixed-seg"), "--fixed-seg", "negative", "-2")


def test_two_d_label_map_is_rejected(tmp_path):
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((5, 6), np.uint8)), str(path))
    expect_input_error(lambda: read_segmentation(path, "--fixed-seg"), "--fixed-seg", "2-D")


def test_missing_segmentation_file(tmp_path):
    expect_input_error(lambda: read_segmentation(tmp_path / "nope.seg.nrrd", "--fixed-seg"), "--fixed-seg", "not found")


# ---- Slicer .seg.nrrd ----------------------------------------------------------------------------
def test_single_layer_seg_nrrd_names_and_masks(tmp_path):
    seg = read_segmentation(_single_layer_seg(tmp_path / "fixed.seg.nrrd"), "--fixed-seg")
    assert seg.names == {5: "Prostate", 3: "Bladder", 7: "Rectum"}
    assert seg.labels == [3, 5, 7]
    masks = _masks()
    np.testing.assert_array_equal(seg.labelmap.mask(5), masks["prostate"])
    np.testing.assert_array_equal(seg.labelmap.mask(3), masks["bladder"])
    np.testing.assert_array_equal(seg.labelmap.mask(7), masks["rectum"])
    assert seg.labelmap.grid.same_as(GRID, tol=1e-9)


def _check_multi_layer(seg: Segmentation):
    by_name = {name: value for value, name in seg.names.items()}
    assert sorted(by_name) == ["Bladder", "Prostate", "Rectum"]
    assert len(set(by_name.values())) == 3  # distinct values although two segments share value 1 in the file
    masks = _masks()
    for name, key in (("Prostate", "prostate"), ("Bladder", "bladder"), ("Rectum", "rectum")):
        np.testing.assert_array_equal(seg.labelmap.mask(by_name[name]), masks[key])
    assert seg.labels == sorted(by_name.values())
    assert seg.labelmap.grid.same_as(GRID, tol=1e-9)


def test_multi_layer_seg_nrrd_names_and_masks(tmp_path):
    path = _multi_layer_seg(tmp_path / "moving.seg.nrrd")
    assert sitk.ReadImage(str(path)).GetNumberOfComponentsPerPixel() == 2
    _check_multi_layer(read_segmentation(path, "--moving-seg"))


def test_multi_layer_seg_nrrd_with_list_kind_as_slicer_writes_it(tmp_path):
    path = _multi_layer_seg(tmp_path / "moving.seg.nrrd")
    header, data = path.read_bytes().split(b"\n\n", 1)
    assert b"kinds: vector domain domain domain" in header
    path.write_bytes(header.replace(b"kinds: vector", b"kinds: list") + b"\n\n" + data)
    _check_multi_layer(read_segmentation(path, "--moving-seg"))


def test_seg_nrrd_with_layers_on_a_fourth_axis(tmp_path):
    masks = _masks()
    layer0 = np.zeros(GRID.shape, np.uint8)
    layer0[masks["rectum"]] = 1
    layer0[masks["prostate"]] = 2
    layer1 = masks["bladder"].astype(np.uint8)
    ref = Image(np.zeros(GRID.shape, np.uint8), GRID).to_sitk()
    parts = []
    for layer in (layer0, layer1):
        part = sitk.GetImageFromArray(layer)
        part.CopyInformation(ref)
        parts.append(part)
    four = sitk.JoinSeries(parts)
    for key, value in slicer_segment_metadata([("Rectum", 1, 0), ("Prostate", 2, 0), ("Bladder", 1, 1)]).items():
        four.SetMetaData(key, value)
    sitk.WriteImage(four, str(tmp_path / "four.seg.nrrd"))
    assert sitk.ReadImage(str(tmp_path / "four.seg.nrrd")).GetDimension() == 4
    _check_multi_layer(read_segmentation(tmp_path / "four.seg.nrrd", "--moving-seg"))


def test_overlapping_segments_on_different_layers_are_rejected(tmp_path):
    masks = _masks()
    layer0 = masks["prostate"].astype(np.uint8)
    layer1 = (masks["prostate"] | masks["bladder"]).astype(np.uint8)  # "urethra" inside the prostate
    meta = slicer_segment_metadata([("Prostate", 1, 0), ("Urethra", 1, 1)])
    path = _write(np.stack([layer0, layer1], axis=-1), tmp_path / "overlap.seg.nrrd", meta, is_vector=True)
    expect_input_error(lambda: read_segmentation(path, "--fixed-seg"), "--fixed-seg", "overlap")


def test_empty_seg_nrrd_is_rejected(tmp_path):
    path = _write(np.zeros(GRID.shape, np.uint8), tmp_path / "e.seg.nrrd", slicer_segment_metadata([("Prostate", 1, 0)]))
    expect_input_error(lambda: read_segmentation(path, "--fixed-seg"), "--fixed-seg", "empty")


# ---- matching -----------------------------------------------------------------------------------
def test_match_by_name_relabels_moving_to_fixed_values(tmp_path):
    fixed = read_segmentation(_single_layer_seg(tmp_path / "f.seg.nrrd"), "--fixed-seg")  # P=5, B=3, R=7
    # moving: other label values, other order, other case and spacing
    moving = read_segmentation(
        _multi_layer_seg(tmp_path / "m.seg.nrrd", names=(" RECTUM", "prostate ", "bladder")), "--moving-seg"
    )
    fixed_map, moving_map, names = match_segmentations(fixed, moving)
    assert names == {5: "Prostate", 3: "Bladder", 7: "Rectum"}
    np.testing.assert_array_equal(fixed_map.array, fixed.labelmap.array)
    expected = _labelmap({"prostate": 5, "bladder": 3, "rectum": 7})
    np.testing.assert_array_equal(moving_map.array, expected)
    assert moving_map.grid is moving.labelmap.grid


def test_match_by_name_ignores_inner_whitespace_runs(tmp_path):
    order_f = (("Seminal Vesicles", 4, "prostate"), ("Bladder", 2, "bladder"), ("Rectum", 1, "rectum"))
    order_m = (("seminal   vesicles", 1, "prostate"), ("BLADDER", 9, "bladder"), ("rectum", 3, "rectum"))
    fixed = read_segmentation(_single_layer_seg(tmp_path / "f.seg.nrrd", order_f), "--fixed-seg")
    moving = read_segmentation(_single_layer_seg(tmp_path / "m.seg.nrrd", order_m), "--moving-seg")
    _, moving_map, names = match_segmentations(fixed, moving)
    np.testing.assert_array_equal(moving_map.array, _labelmap({"prostate": 4, "bladder": 2, "rectum": 1}))
    assert names == {4: "Seminal Vesicles", 2: "Bladder", 1: "Rectum"}


def test_match_by_name_missing_segment_names_it(tmp_path):
    fixed = read_segmentation(_single_layer_seg(tmp_path / "f.seg.nrrd"), "--fixed-seg")
    order = (("Prostate", 1, "prostate"), ("Bladder", 2, "bladder"), ("Urethra", 3, "rectum"))
    moving = read_segmentation(_single_layer_seg(tmp_path / "m.seg.nrrd", order), "--moving-seg")
    message = expect_input_error(lambda: match_segmentations(fixed, moving), "--moving-seg", "Rectum", "Urethra")
    assert "Prostate" not in message and "Bladder" not in message


def test_match_by_name_segment_only_in_moving_names_fixed_argument(tmp_path):
    order_f = (("Prostate", 1, "prostate"), ("Bladder", 2, "bladder"))
    fixed = read_segmentation(_single_layer_seg(tmp_path / "f.seg.nrrd", order_f), "--fixed-seg")
    moving = read_segmentation(_single_layer_seg(tmp_path / "m.seg.nrrd"), "--moving-seg")
    expect_input_error(lambda: match_segmentations(fixed, moving), "--fixed-seg", "Rectum", "moving only")


def test_match_by_value_for_plain_label_maps(tmp_path):
    arr = _labelmap({"prostate": 1, "bladder": 2, "rectum": 3})
    arr_m = np.roll(arr, 1, axis=2)
    fixed = read_segmentation(_write(arr, tmp_path / "f.nrrd"), "--fixed-seg")
    moving = read_segmentation(_write(arr_m, tmp_path / "m.nrrd"), "--moving-seg")
    fixed_map, moving_map, names = match_segmentations(fixed, moving)
    np.testing.assert_array_equal(fixed_map.array, arr)
    np.testing.assert_array_equal(moving_map.array, arr_m)
    assert names == {}


@pytest.mark.parametrize(
    "fixed_labels, moving_labels, listed, lacking",
    [((1, 2, 3), (1, 2), "[3]", "--moving-seg"), ((1, 2), (1, 2, 4), "[4]", "--fixed-seg")],
)
def test_match_by_value_label_in_one_only_is_listed(tmp_path, fixed_labels, moving_labels, listed, lacking):
    """The error names the segmentation that lacks the label, and lists the label."""
    keys = ("prostate", "bladder", "rectum")
    f = _labelmap({keys[n]: v for n, v in enumerate(fixed_labels)})
    m = _labelmap({keys[n]: v for n, v in enumerate(moving_labels)})
    fixed = read_segmentation(_write(f, tmp_path / "f.nrrd"), "--fixed-seg")
    moving = read_segmentation(_write(m, tmp_path / "m.nrrd"), "--moving-seg")
    expect_input_error(lambda: match_segmentations(fixed, moving), lacking, listed)


def test_duplicate_segment_names_are_rejected(tmp_path):
    order = (("Prostate", 1, "prostate"), ("prostate", 2, "bladder"), ("Rectum", 3, "rectum"))
    fixed = read_segmentation(_single_layer_seg(tmp_path / "f.seg.nrrd", order), "--fixed-seg")
    moving = read_segmentation(_single_layer_seg(tmp_path / "m.seg.nrrd"), "--moving-seg")
    expect_input_error(lambda: match_segmentations(fixed, moving), "--fixed-seg", "prostate", "unique")


def test_four_d_label_channels(tmp_path):
    """4-D label images (one binary channel per structure, DeepReg/MONAI style): refused with a hint, or one channel
    read as label 1 on the first three axes' geometry (spacing, origin and direction kept)."""
    channels = np.zeros((3, 6, 7, 8), dtype=np.float32)
    channels[0, 1:5, 2:6, 3:7] = 1.0
    channels[2, 2, 3, 4] = 1.0
    image = sitk.GetImageFromArray(channels, isVector=False)
    image.SetSpacing((0.8, 0.9, 2.0, 1.0))
    image.SetOrigin((10.0, -5.0, 3.0, 0.0))
    path = tmp_path / "labels.nii.gz"
    sitk.WriteImage(image, str(path))
    expect_input_error(lambda: read_segmentation(path, "--fixed-seg"), "--fixed-seg", "4-D", "--label-channel", "0..2")
    seg = read_segmentation(path, "--fixed-seg", channel=0)
    assert seg.labels == [1] and int(seg.labelmap.array.sum()) == 4 * 4 * 4
    np.testing.assert_allclose(seg.labelmap.grid.spacing, (0.8, 0.9, 2.0))
    np.testing.assert_allclose(seg.labelmap.grid.index_to_world(np.zeros(3)), (10.0, -5.0, 3.0), atol=1e-5)
    assert int(read_segmentation(path, "--fixed-seg", channel=2).labelmap.array.sum()) == 1
    expect_input_error(lambda: read_segmentation(path, "--fixed-seg", channel=1), "--fixed-seg", "empty")
    expect_input_error(lambda: read_segmentation(path, "--fixed-seg", channel=5), "--label-channel", "0..2")


def test_label_channel_is_refused_for_files_without_channels(tmp_path):
    """``--label-channel`` with a 3-D label map or a .seg.nrrd used to be ignored silently."""
    grid = Grid.from_geometry((4, 5, 6), (1.0, 1.0, 1.0))
    arr = np.zeros(grid.shape, np.uint8)
    arr[1:3, 1:3, 1:3] = 1
    path = write_image(Image(arr, grid), tmp_path / "labels.nrrd")
    expect_input_error(lambda: read_segmentation(path, "--moving-seg", channel=0), "--label-channel", "--moving-seg",
                       "3-D label map")
    seg_nrrd = _single_layer_seg(tmp_path / "f.seg.nrrd")
    expect_input_error(lambda: read_segmentation(seg_nrrd, "--fixed-seg", channel=0), "--label-channel", ".seg.nrrd")


def test_a_segmentation_must_be_of_its_own_image():
    """On its image's grid, or inside its field of view within a voxel; on the other image's grid it is refused as
    swapped, outside the field of view as another image's."""
    from MMRegistrationLib.io.segmentations import check_on_image

    image = Grid.from_geometry((10, 10, 10), (1.0, 1.0, 1.0))
    other = Grid.from_geometry((10, 10, 10), (1.0, 1.0, 1.0), (3.0, 0.0, 0.0))
    arr = np.zeros(image.shape, np.uint8)
    arr[4:6, 4:6, 4:6] = 1
    check_on_image(Image(arr, image), image, "--fixed-seg", "--fixed", other, "--moving")
    expect_input_error(lambda: check_on_image(Image(arr, other), image, "--fixed-seg", "--fixed", other, "--moving"),
                       "--fixed-seg", "on --moving's grid", "swapped")
    edge = np.zeros(image.shape, np.uint8)
    edge[4:6, 4:6, 7:10] = 1  # the structure reaches x = 9.5 + 3 mm on the shifted grid: 3 voxels beyond
    cropped = Grid.from_geometry((10, 10, 10), (1.0, 1.0, 1.0), (0.5, 0.0, 0.0))  # half a voxel off: within tolerance
    check_on_image(Image(edge, cropped), image, "--fixed-seg", "--fixed")
    expect_input_error(lambda: check_on_image(Image(edge, other), image, "--fixed-seg", "--fixed"), "--fixed-seg",
                       "outside --fixed's field of view", "3.0 mm beyond")
