"""Engine image <-> SimpleITK <-> torch conversions."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.image import Image


def test_sitk_round_trip_keeps_voxels_and_geometry(grid_oblique, rng):
    arr = rng.normal(size=grid_oblique.shape).astype(np.float32)
    img = Image(arr, grid_oblique)
    s = img.to_sitk()
    assert s.GetSize() == grid_oblique.size_ijk
    np.testing.assert_allclose(s.GetSpacing(), grid_oblique.spacing)
    np.testing.assert_allclose(s.GetOrigin(), grid_oblique.origin)
    np.testing.assert_allclose(np.array(s.GetDirection()).reshape(3, 3), grid_oblique.direction, atol=1e-12)
    # voxel (i, j, k) of SimpleITK is array[k, j, i]
    assert s.GetPixel(5, 7, 3) == arr[3, 7, 5]
    back = Image.from_sitk(s)
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.grid.affine, grid_oblique.affine, atol=1e-12)


def test_to_tensor_is_ncdhw(grid_oblique):
    t = Image(np.zeros(grid_oblique.shape, np.int16), grid_oblique).to_tensor()
    assert tuple(t.shape) == (1, 1, *grid_oblique.shape)


def test_check_finite_counts_bad_voxels(grid_oblique):
    arr = np.zeros(grid_oblique.shape, np.float32)
    arr[0, 0, :3] = np.nan
    arr[1, 1, 1] = np.inf
    with pytest.raises(InputError, match=r"--fixed: contains 4 NaN/Inf"):
        Image(arr, grid_oblique).check_finite("--fixed")


def test_from_sitk_rejects_2d_and_vector_images():
    with pytest.raises(InputError, match="2-D"):
        Image.from_sitk(sitk.Image(4, 4, sitk.sitkFloat32), "--moving")
    with pytest.raises(InputError, match="components"):
        Image.from_sitk(sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3), "--moving")


def test_array_must_match_grid(grid_oblique):
    with pytest.raises(InputError, match="does not match"):
        Image(np.zeros((2, 2, 2)), grid_oblique)


def test_labels_and_masks(grid_oblique):
    arr = np.zeros(grid_oblique.shape, np.uint8)
    arr[2:4, 2:4, 2:4] = 3
    arr[5, 5, 5] = 1
    img = Image(arr, grid_oblique)
    assert img.labels() == [1, 3]
    assert img.mask(3).sum() == 8 and img.mask().sum() == 9
