"""The grid a dense transform is written on: coarser than a fine image grid only as far as the transform's own fields
allow, so the file reproduces the transform (read back by SimpleITK, as ITK and Slicer apply it)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from conftest import covering_grid
from MMRegistrationLib.io.transforms import write_transform
from MMRegistrationLib.registration.pipeline import FLATTEN_SPACING_MM, finest_field_spacing, output_grid
from MMRegistrationLib.spatial import AffineTransform
from MMRegistrationLib.spatial.composite import ComposedTransform
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.spatial.velocity import border_window


def smooth_field(grid, amplitude_mm: float, seed: int = 0) -> DisplacementField:
    """A smooth random displacement (sigma 8 mm) of about ``amplitude_mm`` on ``grid``, vanishing on its border over
    10 mm (as SINR's windowed fields: continuous where the field ends)."""
    rng = np.random.default_rng(seed)
    sigma = 8.0 / grid.spacing[::-1]
    u = np.stack([ndimage.gaussian_filter(rng.standard_normal(grid.shape), sigma) for _ in range(3)], axis=-1)
    u *= border_window(grid, 10.0, dtype=torch.float64).numpy()
    u *= amplitude_mm / np.abs(u).max()
    return DisplacementField(grid, torch.as_tensor(u), "fixed", "svf")


def sinr_like_transform(fixed_grid):
    """``A o (id + u)`` with ``u`` on a 2 mm box inside the fixed field of view (as SINR's result) and ``A`` a 4 deg
    rotation plus a translation."""
    box = covering_grid([0, 0, 0], 60, (2.0, 2.0, 2.0), (10, -5, 20))
    angle = np.deg2rad(4.0)
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix[:3, 3] = [3.0, -2.0, 1.0]
    return ComposedTransform([smooth_field(box, 5.0), AffineTransform(matrix, "svf", "moving")])


def test_linear_transforms_and_coarse_images_keep_the_image_grid():
    grid = covering_grid([0, 0, 0], 100, (2.5, 2.5, 2.5), (0, 0, 0))
    assert output_grid(grid) is grid
    assert output_grid(grid, AffineTransform.identity()) is grid
    assert finest_field_spacing(AffineTransform.identity()) == float("inf")
    assert output_grid(grid, sinr_like_transform(grid)) is grid  # 2.5 mm is already coarser than 1 mm


def test_a_fine_grid_is_coarsened_to_half_the_fields_spacing_over_the_same_field_of_view():
    fixed = covering_grid([0, 0, 0], 100, (0.55, 0.6, 1.1), (-12, 8, -25))
    transform = sinr_like_transform(fixed)
    assert np.isclose(finest_field_spacing(transform), 2.0)
    out = output_grid(fixed, transform)
    assert np.allclose(out.spacing, [1.0, 1.0, 1.1], atol=0.05)
    assert np.allclose(out.corners_world(), fixed.corners_world())
    assert np.allclose(out.direction, fixed.direction)
    coarse_field = DisplacementField(covering_grid([0, 0, 0], 60, (8.0, 8.0, 8.0), (0, 0, 0)),
                                     torch.zeros((8, 8, 8, 3)))
    assert np.all(output_grid(fixed, coarse_field).spacing <= FLATTEN_SPACING_MM * 1.01)  # whole voxels per axis


def test_the_written_file_reproduces_the_transform_at_the_fixed_voxels(tmp_path):
    fixed = covering_grid([0, 0, 0], 90, (0.55, 0.6, 1.1), (-12, 8, -25))
    transform = sinr_like_transform(fixed)
    path = write_transform(transform, tmp_path / "t.h5", flatten_on=output_grid(fixed, transform))
    itk = sitk.ReadTransform(str(path))
    rng = np.random.default_rng(1)
    index = rng.uniform(0, 1, (2000, 3)) * (np.array(fixed.size_ijk) - 1)  # inside, up to the border voxels
    points = fixed.index_to_world(index)
    ours = transform.map_points_np(points)
    theirs = np.array([itk.TransformPoint(tuple(p)) for p in points])
    error = np.linalg.norm(ours - theirs, axis=1)
    # the image grid itself gives 0.042 / 0.0015 mm here (a 2 mm field on a grid not aligned with it); 2 mm: 0.14 / 0.009
    assert error.max() < 0.08 and error.mean() < 0.005, (error.max(), error.mean())
