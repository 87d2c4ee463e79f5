"""Similarity heatmaps (paper 001, Fig. 1): geometry, peak location, the transform option, errors and the CLI.

The moving image is the fixed content on a grid moved by 8 mm steps (two descriptor voxels of a stride-4 network at
2 mm), so both descriptor volumes are identical arrays and the heatmap of a fixed point must peak, with value 1
(normalised descriptors), exactly on the corresponding moving point.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import expect_input_error
from disa_phantom import cube_grid, phantom_image, sector_mask
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.networks.disa import DISANet, save_disa
from MMRegistrationLib.similarity.descriptors import MINDDescriptors, NetworkDescriptors
from MMRegistrationLib.similarity.heatmap import heatmap_peak, similarity_heatmap
from MMRegistrationLib.spatial import AffineTransform

SHIFT = np.array([8.0, -16.0, 8.0])


@pytest.fixture(scope="module")
def pair():
    grid = cube_grid(40)
    affine = np.array(grid.affine)
    affine[:3, 3] += SHIFT
    fixed = phantom_image(grid)
    moving = phantom_image(Grid(grid.shape, affine), lambda p: p - SHIFT)
    point = grid.index_to_world(np.array([20.0, 16.0, 24.0]))  # a descriptor node (indices multiple of 4)
    return fixed, moving, point


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return DISANet().eval()


def test_heatmap_peaks_on_the_corresponding_point(pair, network):
    fixed, moving, point = pair
    heat = similarity_heatmap(fixed, moving, point, descriptors=NetworkDescriptors(network, normalize=True),
                              fixed_fov_threshold=None)
    assert heat.array.shape == (10, 10, 10) and heat.array.dtype == np.float32  # the moving descriptor grid
    np.testing.assert_allclose(heat.grid.spacing, 8.0)
    peak, value = heatmap_peak(heat)
    np.testing.assert_allclose(peak, point + SHIFT, atol=1e-6)
    assert value == pytest.approx(1.0, abs=1e-5)
    # an untrained network's descriptors are not discriminative (far points reach 0.99): only the exact peak and a
    # non-uniform map are claimed here; the sharpness of the trained network's heatmaps is an evaluation matter
    assert heat.array.mean() < 0.8


def test_heatmap_with_mind_descriptors(pair):
    fixed, moving, point = pair
    heat = similarity_heatmap(fixed, moving, point, descriptors=MINDDescriptors(), fixed_fov_threshold=None)
    peak, value = heatmap_peak(heat)
    np.testing.assert_allclose(peak, point + SHIFT, atol=1e-6)
    assert value == pytest.approx(1.0, abs=1e-5) and heat.array.max() <= 1.0 + 1e-6


def test_transform_brings_the_heatmap_onto_the_fixed_grid(pair, network):
    fixed, moving, point = pair
    backend = NetworkDescriptors(network, normalize=True)
    truth = AffineTransform.from_translation(SHIFT)  # fixed -> moving
    heat = similarity_heatmap(fixed, moving, point, truth, descriptors=backend, fixed_fov_threshold=None)
    assert heat.grid.same_as(fixed.grid)
    peak, value = heatmap_peak(heat)
    assert np.linalg.norm(peak - point) < 1e-6 and value == pytest.approx(1.0, abs=1e-5)
    wrong = similarity_heatmap(fixed, moving, point, truth.inverse(), descriptors=backend, fixed_fov_threshold=None)
    assert np.linalg.norm(heatmap_peak(wrong)[0] - point) > 10.0  # the opposite direction misplaces the peak
    up = similarity_heatmap(fixed, moving, point, descriptors=backend, fixed_fov_threshold=None, upsample=True)
    assert up.grid.same_as(moving.grid)


def test_points_outside_the_fixed_field_of_view_are_refused(pair, network):
    fixed, moving, _ = pair
    sector = sector_mask(fixed.grid, apex=(0.0, -45.0, 0.0), half_angle_deg=40.0)
    us = fixed.with_array(np.where(sector, fixed.array - fixed.array.min() + 0.1, 0.0).astype(np.float32))
    backend = NetworkDescriptors(network)
    outside = fixed.grid.index_to_world(np.array([1.0, 1.0, 1.0]))  # a corner, outside the sector
    expect_input_error(lambda: similarity_heatmap(us, moving, outside, descriptors=backend), "point_lps", "outside")
    expect_input_error(lambda: similarity_heatmap(us, moving, [1.0, 2.0], descriptors=backend), "point_lps", "three")
    expect_input_error(lambda: similarity_heatmap(us, moving, [500.0, 0.0, 0.0], descriptors=backend,
                                                  point_argument="--point"), "--point", "outside")


def test_cli_writes_the_heatmap(pair, network, tmp_path, capsys):
    from MMRegistrationLib.cli.main import main
    from MMRegistrationLib.io import write_image

    fixed, moving, point = pair
    f = str(write_image(fixed, tmp_path / "fixed.nrrd"))
    m = str(write_image(moving, tmp_path / "moving.nrrd"))
    weights = tmp_path / "disa.pt"
    save_disa(network, weights)
    xyz = ",".join(f"{v:.6f}" for v in point)
    base = ["disa-heatmap", "--fixed", f, "--moving", m, "--point", xyz, "--fixed-fov-threshold", "none"]
    assert main(base + ["--out", str(tmp_path / "heat.nrrd"), "--weights", str(weights)]) == 0
    summary = json.loads(capsys.readouterr().out)
    heat = sitk.ReadImage(str(tmp_path / "heat.nrrd"))
    assert heat.GetSize() == (10, 10, 10) and summary["grid"] == "moving descriptors"
    np.testing.assert_allclose(heat.GetSpacing(), 8.0)
    spaced = ["--point", *(f"{v:.6f}" for v in point)]  # x y z, negative values included
    assert point.min() < 0
    assert main(base[:5] + spaced + base[7:] + ["--out", str(tmp_path / "mind.nrrd"), "--descriptors", "mind"]) == 0
    summary = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(summary["peak_lps_mm"], point + SHIFT, atol=1e-3)
    assert main(base[:-2] + ["--out", str(tmp_path / "x.nrrd"), "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "--weights" in capsys.readouterr().err
    bad = ["disa-heatmap", "--fixed", f, "--moving", m, "--point", "1,2", "--out", str(tmp_path / "y.nrrd")]
    assert main(bad) == 2
    assert "--point: expected three" in capsys.readouterr().err
    assert not (tmp_path / "x.nrrd").exists() and not (tmp_path / "y.nrrd").exists()
