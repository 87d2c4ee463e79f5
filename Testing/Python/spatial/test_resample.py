"""Resampling against SimpleITK's resampler on oblique, anisotropic, non-zero-origin grids."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import covering_grid, oblique_grid, phantom_labels
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io.transforms import to_sitk_transform
from MMRegistrationLib.metrics.overlap import dice_per_label
from MMRegistrationLib.spatial import AffineTransform, DisplacementField
from MMRegistrationLib.spatial.resample import resample


def sitk_resample(image: Image, reference, transform, interpolator, default=0.0) -> np.ndarray:
    ref = Image(np.zeros(reference.shape, np.float32), reference).to_sitk()
    src = image.to_sitk()
    tx = to_sitk_transform(transform) if transform is not None else sitk.Transform()
    out = sitk.Resample(src, ref, tx, interpolator, default, src.GetPixelID())
    return sitk.GetArrayFromImage(out)


@pytest.fixture
def moving_image(rng):
    grid = oblique_grid(shape=(30, 34, 32), spacing=(1.1, 0.8, 2.0), origin=(-20.0, -15.0, -25.0), angles_deg=(-9, 14, 33))
    arr = ndimage.gaussian_filter(rng.normal(size=grid.shape), 1.5).astype(np.float32) * 100
    return Image(arr, grid)


@pytest.fixture
def reference_grid():
    return oblique_grid(shape=(26, 28, 30), spacing=(1.0, 1.2, 1.5), origin=(-18.0, -14.0, -20.0), angles_deg=(20, -5, 10))


def test_linear_resampling_through_affine_matches_simpleitk(moving_image, reference_grid):
    aff = AffineTransform.from_rigid([0.05, -0.1, 0.08], [2.0, -3.0, 1.0], center=[0, 0, 0])
    ours = resample(moving_image, reference_grid, aff, "linear", default_value=-7.0).array
    theirs = sitk_resample(moving_image, reference_grid, aff, sitk.sitkLinear, -7.0)
    assert (theirs == -7.0).mean() > 0.05  # part of the reference lies outside the moving image
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_nearest_resampling_through_displacement_field_matches_simpleitk(moving_image, reference_grid, rng):
    field_grid = reference_grid.resized(3.0)
    u = np.stack([ndimage.gaussian_filter(rng.normal(size=field_grid.shape), 2) for _ in range(3)], -1) * 20
    field = DisplacementField(field_grid, u)
    labels = moving_image.with_array((moving_image.array > 10).astype(np.uint8) + (moving_image.array > 40))
    ours = resample(labels, reference_grid, field, "label-nearest").array
    theirs = sitk_resample(labels, reference_grid, field, sitk.sitkNearestNeighbor)
    assert ours.dtype == np.uint8
    # nearest neighbour can differ only where a point falls exactly between voxels (float rounding)
    assert np.mean(ours != theirs) < 1e-3


def test_label_linear_gives_valid_labels_and_high_overlap():
    fixed_grid = covering_grid([5, 0, 15], 100, (1.0, 1.0, 1.5), (10, -5, 20))
    moving_grid = covering_grid([5, 0, 15], 100, (0.7, 0.7, 2.5), (-12, 8, -25))
    t = AffineTransform.from_translation([3.0, -2.0, 4.0])
    fixed = phantom_labels(fixed_grid)
    moving = phantom_labels(moving_grid, t.inverse().map_points_np)
    warped = resample(moving, fixed_grid, t, "label-linear")
    assert set(np.unique(warped.array)) <= {0, 1, 2, 3}
    dice = dice_per_label(fixed.array, warped.array)
    assert min(dice.values()) > 0.93
    unregistered = dice_per_label(fixed.array, resample(moving, fixed_grid, None, "label-linear").array)
    assert unregistered[1] < dice[1] - 0.05


def test_identity_resampling_onto_own_grid_is_exact(moving_image):
    out = resample(moving_image, moving_image.grid, None, "linear")
    np.testing.assert_allclose(out.array, moving_image.array, atol=1e-3)  # float32 coordinates


def test_invalid_interpolation(moving_image):
    with pytest.raises(ValueError, match="interpolation"):
        resample(moving_image, moving_image.grid, None, "cubic")
    with pytest.raises(ValueError, match="integer"):
        resample(moving_image, moving_image.grid, None, "label-nearest")
