"""Image I/O: geometry survives every supported format, and bad inputs raise InputError naming the argument."""

from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import oblique_grid

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io.images import read_image, read_sitk_image, write_image

SHAPE = (9, 11, 13)  # (K, J, I)
SPACING = (1.3, 0.9, 2.1)
ORIGIN = (-31.5, 17.25, 42.0)
ANGLES = (17.0, -11.0, 28.0)


def _volume(rng, dtype=np.float32) -> Image:
    grid = oblique_grid(shape=SHAPE, spacing=SPACING, origin=ORIGIN, angles_deg=ANGLES)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(max(info.min, -1000), min(info.max, 3000), size=grid.shape, endpoint=True).astype(dtype)
    else:
        array = rng.normal(100.0, 40.0, size=grid.shape).astype(dtype)
    return Image(array, grid)


def _expected_direction() -> np.ndarray:
    return oblique_grid(shape=SHAPE, spacing=SPACING, origin=ORIGIN, angles_deg=ANGLES).direction


# ---- round trips ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, tol",
    [("vol.nrrd", 1e-5), ("vol.nii.gz", 1e-4), ("vol.mha", 1e-5)],  # NIfTI stores the geometry as float32
)
def test_round_trip_keeps_voxels_and_oblique_geometry(tmp_path, rng, name, tol):
    image = _volume(rng)
    path = write_image(image, tmp_path / name)
    assert path == tmp_path / name
    assert sorted(os.listdir(tmp_path)) == [name]  # no leftover temporary file

    back = read_image(path, "--fixed")
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, image.array)
    assert back.grid.shape == SHAPE
    np.testing.assert_allclose(back.grid.spacing, SPACING, atol=tol)
    np.testing.assert_allclose(back.grid.origin, ORIGIN, atol=tol)
    np.testing.assert_allclose(back.grid.direction, _expected_direction(), atol=tol)
    assert not np.allclose(back.grid.direction, np.eye(3), atol=0.1)  # really oblique

    # the file as SimpleITK sees it: same geometry, same voxel at (i, j, k) = array[k, j, i]
    ref = sitk.ReadImage(str(path))
    assert ref.GetSize() == SHAPE[::-1]
    np.testing.assert_allclose(back.grid.spacing, ref.GetSpacing(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.grid.origin, ref.GetOrigin(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.grid.direction.ravel(), ref.GetDirection(), rtol=0, atol=1e-12)
    for i, j, k in [(0, 0, 0), (12, 0, 0), (0, 10, 0), (0, 0, 8), (5, 7, 3), (12, 10, 8)]:
        assert back.array[k, j, i] == ref.GetPixel(i, j, k)

    # index -> world agrees with ITK at random continuous indices (also outside the grid)
    idx = rng.uniform(-2.0, np.array(SHAPE[::-1]) + 1.0, size=(50, 3))
    itk_world = np.array([ref.TransformContinuousIndexToPhysicalPoint(tuple(map(float, c))) for c in idx])
    np.testing.assert_allclose(back.grid.index_to_world(idx), itk_world, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back.grid.world_to_index(itk_world), idx, rtol=0, atol=1e-9)
    # and agrees with the geometry that was written, within the format's precision
    np.testing.assert_allclose(back.grid.index_to_world(idx), image.grid.index_to_world(idx), atol=50 * tol)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float64])
def test_nrrd_round_trip_keeps_dtype(tmp_path, rng, dtype):
    image = _volume(rng, dtype)
    back = read_image(write_image(image, tmp_path / "v.nrrd"), "--moving")
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, image.array)
    assert back.grid.same_as(image.grid, tol=1e-9)


def test_gipl_keeps_voxels_spacing_and_origin_but_not_direction(tmp_path, rng):
    image = _volume(rng)
    write_image(image, tmp_path / "v.gipl")
    back = read_image(tmp_path / "v.gipl", "--fixed")
    ref = sitk.ReadImage(str(tmp_path / "v.gipl"))
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_allclose(back.grid.spacing, SPACING, atol=1e-6)  # float32 in the header
    # what SimpleITK's GIPL IO keeps: the origin; the direction is dropped (identity on reading)
    np.testing.assert_allclose(back.grid.origin, ORIGIN, atol=1e-5)
    np.testing.assert_allclose(back.grid.direction, np.eye(3), atol=0)
    np.testing.assert_allclose(back.grid.direction.ravel(), ref.GetDirection(), atol=0)
    np.testing.assert_allclose(back.grid.spacing, ref.GetSpacing(), atol=1e-12)


def test_4d_image_with_single_volume_is_read_as_3d(tmp_path, rng):
    image = _volume(rng)
    four = sitk.JoinSeries([image.to_sitk()])
    assert four.GetDimension() == 4
    sitk.WriteImage(four, str(tmp_path / "v4.nrrd"))
    back = read_image(tmp_path / "v4.nrrd", "--fixed")
    np.testing.assert_array_equal(back.array, image.array)
    assert back.grid.same_as(image.grid, tol=1e-9)


def test_write_failure_leaves_no_partial_file(tmp_path, rng):
    image = _volume(rng)
    with pytest.raises(RuntimeError):
        write_image(image, tmp_path / "v.unknownformat")
    assert os.listdir(tmp_path) == []


# ---- DICOM series -------------------------------------------------------------------------------------
def _write_dicom_series(image: sitk.Image, folder, series_uid: str, study_uid: str, first_file: int = 0) -> None:
    folder.mkdir(exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    orientation = (d[0], d[3], d[6], d[1], d[4], d[7])  # row (i) and column (j) direction cosines
    for k in range(image.GetDepth()):
        s = image[:, :, k]
        s.SetMetaData("0008|0060", "MR")
        s.SetMetaData("0020|000d", study_uid)
        s.SetMetaData("0020|000e", series_uid)
        s.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        s.SetMetaData("0020|0032", "\\".join(repr(float(v)) for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        s.SetMetaData("0020|0037", "\\".join(repr(float(v)) for v in orientation))
        s.SetMetaData("0028|0030", f"{image.GetSpacing()[1]!r}\\{image.GetSpacing()[0]!r}")  # row spacing \ column spacing
        s.SetMetaData("0018|0050", repr(float(image.GetSpacing()[2])))
        s.SetMetaData("0020|0013", str(k + 1))
        writer.SetFileName(str(folder / f"IM{first_file + k:04d}.dcm"))
        writer.Execute(s)


def test_dicom_series_folder_round_trip(tmp_path, rng):
    grid = oblique_grid(shape=(6, 12, 10), spacing=(0.8, 0.7, 2.5), origin=(-31.5, 17.25, 42.0))
    array = rng.integers(-1000, 2000, size=grid.shape).astype(np.int16)
    source = Image(array, grid)
    _write_dicom_series(source.to_sitk(), tmp_path / "series", "1.2.826.0.1.3680043.2.1125.9.1", "1.2.826.0.1.3680043.2.1125.9.2")
    # files are named so that name order is not slice order: the reader must sort by position
    files = sorted(os.listdir(tmp_path / "series"))
    for n, f in enumerate(files):
        os.rename(tmp_path / "series" / f, tmp_path / "series" / f"{(n * 7) % len(files):02d}_{f}")

    back = read_image(tmp_path / "series", "--fixed")
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, array)
    assert back.grid.shape == grid.shape
    np.testing.assert_allclose(back.grid.spacing, (0.8, 0.7, 2.5), atol=1e-5)
    np.testing.assert_allclose(back.grid.origin, grid.origin, atol=1e-5)
    np.testing.assert_allclose(back.grid.direction, grid.direction, atol=1e-5)


def test_folder_with_two_dicom_series_is_rejected(tmp_path, rng):
    grid = oblique_grid(shape=(3, 5, 4))
    img = Image(rng.integers(0, 100, size=grid.shape).astype(np.int16), grid).to_sitk()
    _write_dicom_series(img, tmp_path / "mixed", "1.2.3.4.5.1", "1.2.3.4.5.9", first_file=0)
    _write_dicom_series(img, tmp_path / "mixed", "1.2.3.4.5.2", "1.2.3.4.5.9", first_file=100)
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "mixed", "--moving")
    assert str(err.value).startswith("--moving:")
    assert "2 DICOM series" in str(err.value)


def test_folder_without_dicom_is_rejected(tmp_path):
    folder = tmp_path / "notdicom"
    folder.mkdir()
    (folder / "readme.txt").write_text("not an image", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_image(folder, "--fixed")
    assert str(err.value).startswith("--fixed:")
    assert "no DICOM" in str(err.value)


# ---- bad input ------------------------------------------------------------------------------------
def _random_bytes(tmp_path, rng):
    p = tmp_path / "x.nrrd"
    p.write_bytes(rng.bytes(700))
    return p


def _two_d(tmp_path, rng):
    p = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(rng.normal(size=(7, 8)).astype(np.float32)), str(p))
    return p


def _four_d(tmp_path, rng):
    p = tmp_path / "series4d.nrrd"
    vol = [sitk.GetImageFromArray(rng.normal(size=(4, 5, 6)).astype(np.float32)) for _ in range(3)]
    sitk.WriteImage(sitk.JoinSeries(vol), str(p))
    return p


def _rgb(tmp_path, rng):
    p = tmp_path / "rgb.mha"
    arr = rng.integers(0, 255, size=(4, 5, 6, 3)).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(arr, isVector=True), str(p))
    return p


def _with_value(value, ext="nrrd", dtype=np.float32):
    def make(tmp_path, rng):
        p = tmp_path / f"bad_values.{ext}"
        arr = rng.normal(size=(4, 5, 6)).astype(dtype)
        arr[2, 3, 1] = value
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(p))
        return p

    return make


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda tmp_path, rng: tmp_path / "does_not_exist.nrrd", ["not found", "does_not_exist.nrrd"]),
        (_random_bytes, ["cannot read", "x.nrrd"]),
        (_two_d, ["2-D", "3-D image is needed"]),
        (_four_d, ["4-D"]),
        (_rgb, ["3 components"]),
        (_with_value(np.nan), ["NaN", "1 "]),
        (_with_value(np.inf), ["Inf", "1 "]),
        (_with_value(-np.inf, "mha", np.float64), ["Inf", "1 "]),
        # ITK's NIfTI reader silently turns NaN/Inf into 0: the engine must still notice them
        (_with_value(np.nan, "nii.gz"), ["NaN"]),
        (_with_value(np.inf, "nii", np.float64), ["Inf"]),
    ],
    ids=["missing", "garbage", "2d", "4d", "rgb", "nan", "inf", "minus-inf", "nan-nifti", "inf-nifti"],
)
def test_bad_image_raises_input_error_naming_argument(tmp_path, rng, make, words):
    path = make(tmp_path, rng)
    with pytest.raises(InputError) as err:
        read_image(path, "--fixed")
    message = str(err.value)
    assert message.startswith("--fixed: ")
    assert err.value.argument == "--fixed"
    for word in words:
        assert word in message


def test_nan_voxels_are_kept_when_finiteness_is_not_required(tmp_path, rng):
    path = _with_value(np.nan, "nrrd")(tmp_path, rng)
    image = read_image(path, "--fixed", require_finite=False)
    assert np.isnan(image.array[2, 3, 1])
    assert np.count_nonzero(np.isnan(image.array)) == 1


def _hand_written_nrrd(path, directions: str, data: np.ndarray) -> None:
    """Raw little-endian float NRRD with the given ``space directions`` (one vector per index axis i, j, k)."""
    k, j, i = data.shape
    header = (
        "NRRD0004\n"
        "type: float\n"
        "dimension: 3\n"
        "space: left-posterior-superior\n"
        f"sizes: {i} {j} {k}\n"
        f"space directions: {directions}\n"
        "kinds: domain domain domain\n"
        "endian: little\n"
        "encoding: raw\n"
        "space origin: (10,-20,30)\n\n"
    )
    path.write_bytes(header.encode("ascii") + data.astype("<f4").tobytes())


def test_hand_written_nrrd_control_is_read_with_its_geometry(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    _hand_written_nrrd(tmp_path / "ok.nrrd", "(0,2,0) (-1.5,0,0) (0,0,3)", data)
    image = read_image(tmp_path / "ok.nrrd", "--fixed")
    np.testing.assert_array_equal(image.array, data)
    np.testing.assert_allclose(image.grid.spacing, [2.0, 1.5, 3.0])
    np.testing.assert_allclose(image.grid.direction, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(image.grid.index_to_world([1, 2, 1]), [10 - 3.0, -20 + 2.0, 33.0])


@pytest.mark.parametrize(
    "directions",
    ["(1,0,0) (1,0,0) (0,0,1)", "(1,0,0) (0,1,0) (1,1,0)", "(1,0,0) (0,0,0) (0,0,1)"],
    ids=["identical-vectors", "coplanar-vectors", "zero-vector"],
)
def test_non_invertible_direction_raises_input_error(tmp_path, directions):
    path = tmp_path / "singular.nrrd"
    _hand_written_nrrd(path, directions, np.zeros((2, 3, 4), np.float32))
    with pytest.raises(InputError) as err:
        read_image(path, "--moving")
    message = str(err.value)
    assert message.startswith("--moving: ")
    assert "singular.nrrd" in message
    assert "non-invertible" in message or "not invertible" in message
    assert "\n" not in message  # one readable line, not ITK's matrix dump


def test_read_sitk_image_errors_name_argument(tmp_path):
    with pytest.raises(InputError) as err:
        read_sitk_image(tmp_path / "nothing.seg.nrrd", "--fixed-seg")
    assert str(err.value).startswith("--fixed-seg: file not found")
