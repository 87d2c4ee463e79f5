"""Displacement fields, stationary velocity fields (scaling and squaring) and Jacobians."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.linalg import expm

from conftest import oblique_grid
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.spatial import AffineTransform, DisplacementField, VelocityField
from MMRegistrationLib.spatial.jacobian import jacobian_determinant, jacobian_statistics


def smooth_random_field(grid: Grid, amplitude_mm: float, sigma_vox: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = np.stack([ndimage.gaussian_filter(rng.normal(size=grid.shape), sigma_vox) for _ in range(3)], -1)
    return u * (amplitude_mm / np.abs(u).max())


def interior_points(grid: Grid, margin: int = 4) -> np.ndarray:
    return grid.world_points()[margin:-margin, margin:-margin, margin:-margin].reshape(-1, 3)


def test_field_from_affine_reproduces_it(grid_oblique):
    aff = AffineTransform.from_rigid([0.05, -0.03, 0.08], [2.0, -1.0, 3.0], center=grid_oblique.world_points()[12, 15, 14])
    field = DisplacementField.from_transform(aff, grid_oblique)
    rng = np.random.default_rng(0)
    idx = rng.uniform(0, np.array(grid_oblique.size_ijk) - 1, size=(100, 3))
    pts = grid_oblique.index_to_world(idx)
    np.testing.assert_allclose(field.map_points_np(pts), aff.map_points_np(pts), atol=1e-9)  # linear is exact
    outside = grid_oblique.index_to_world(np.array([[-3.0, 2.0, 2.0]]))
    np.testing.assert_allclose(field.map_points_np(outside), outside)  # zero displacement outside (ITK rule)


def test_field_shape_is_checked(grid_oblique):
    with pytest.raises(ValueError, match=r"\(K, J, I, 3\)"):
        DisplacementField(grid_oblique, np.zeros((*grid_oblique.shape, 2)))
    bad = np.zeros((*grid_oblique.shape, 3))
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        DisplacementField(grid_oblique, bad)


def test_constant_velocity_exponentiates_to_translation():
    g = oblique_grid(shape=(20, 20, 20), spacing=(2.0, 2.0, 2.0))
    v = np.zeros((*g.shape, 3))
    v[...] = [1.0, -2.0, 0.5]
    disp = VelocityField(g, torch.as_tensor(v)).to_displacement().numpy()
    np.testing.assert_allclose(disp[5:-5, 5:-5, 5:-5], v[5:-5, 5:-5, 5:-5], atol=1e-9)


def test_linear_velocity_exponentiates_to_matrix_exponential():
    """v(x) = L (x - c) has flow exp(L)(x - c) + c; check at interior points of an oblique grid."""
    g = oblique_grid(shape=(40, 40, 40), spacing=(1.5, 1.5, 1.5), origin=(-30.0, -30.0, -30.0))
    c = g.world_points()[20, 20, 20]
    lin = np.array([[0.0, -0.08, 0.02], [0.08, 0.0, 0.01], [-0.02, -0.01, 0.03]])
    pts = g.world_points()
    vel = (pts - c) @ lin.T
    svf = VelocityField(g, torch.as_tensor(vel), steps=8)
    inner = pts[12:-12, 12:-12, 12:-12].reshape(-1, 3)
    expected = (inner - c) @ expm(lin).T + c
    err = np.linalg.norm(svf.map_points_np(inner) - expected, axis=1)
    assert err.max() < 0.05, err.max()


def test_svf_forward_then_inverse_is_identity():
    g = oblique_grid(shape=(32, 36, 34), spacing=(1.2, 1.0, 1.6))
    v = smooth_random_field(g, amplitude_mm=4.0, sigma_vox=4.0, seed=3)
    svf = VelocityField(g, torch.as_tensor(v), "fixed", "moving")
    inv = svf.inverse()
    assert inv.direction_label == "moving->fixed"
    pts = interior_points(g, margin=6)
    round_trip = inv.map_points_np(svf.map_points_np(pts))
    err = np.linalg.norm(round_trip - pts, axis=1)
    moved = np.linalg.norm(svf.map_points_np(pts) - pts, axis=1)
    assert moved.mean() > 1.0  # the field really moves points
    assert err.max() < 0.1 and err.mean() < 0.02, (err.max(), err.mean())
    det = jacobian_determinant(svf.to_displacement())
    assert det.min() > 0


def test_displacement_field_numerical_inverse():
    g = oblique_grid(shape=(30, 30, 30), spacing=(1.5, 1.5, 1.5))
    field = DisplacementField(g, smooth_random_field(g, 3.0, 4.0, seed=5))
    inv = field.inverse()
    pts = interior_points(g, margin=6)
    err = np.linalg.norm(field.map_points_np(inv.map_points_np(pts)) - pts, axis=1)
    assert err.max() < 0.05


def test_jacobian_of_affine_field_is_its_determinant(grid_oblique):
    matrix = np.eye(4)
    matrix[:3, :3] = np.array([[1.1, 0.05, 0.0], [0.02, 0.9, 0.1], [0.0, -0.04, 1.2]])
    field = DisplacementField.from_transform(AffineTransform(matrix), grid_oblique)
    det = jacobian_determinant(field)
    np.testing.assert_allclose(det, np.linalg.det(matrix[:3, :3]), atol=1e-9)


def test_jacobian_of_analytic_field_on_oblique_anisotropic_grid():
    """u(x) = (a sin(b x_L), 0, 0) in world axes: det J = 1 + a b cos(b x_L)."""
    g = oblique_grid(shape=(40, 50, 45), spacing=(0.5, 0.7, 0.9))
    pts = g.world_points()
    a, b = 2.0, 0.3
    u = np.zeros_like(pts)
    u[..., 0] = a * np.sin(b * pts[..., 0])
    det = jacobian_determinant(DisplacementField(g, u))
    expected = 1 + a * b * np.cos(b * pts[..., 0])
    inner = (slice(2, -2),) * 3
    np.testing.assert_allclose(det[inner], expected[inner], atol=0.02)
    assert not (det <= 0).any()  # a*b = 0.6 < 1: no folding
    stats = jacobian_statistics(det)
    assert stats["folding_fraction"] == pytest.approx(np.mean(det <= 0))


def test_folding_is_detected():
    g = Grid.from_geometry((20, 20, 40), (1.0, 1.0, 1.0))
    pts = g.world_points()
    u = np.zeros_like(pts)
    u[..., 0] = 3.0 * np.sin(0.5 * pts[..., 0])  # a*b = 1.5 > 1 folds where cos < -2/3
    stats = jacobian_statistics(jacobian_determinant(DisplacementField(g, u)))
    assert 0.1 < stats["folding_fraction"] < 0.5
    assert stats["jacobian_min"] < 0


def test_border_window_vanishes_on_the_border_and_ramps_over_its_length():
    """0 on every face, 1 farther than the ramp from all faces, sin^2 in between (anisotropic oblique grid: the ramp
    is in mm along each axis)."""
    from MMRegistrationLib.spatial.velocity import border_window

    grid = oblique_grid(shape=(12, 16, 20), spacing=(1.0, 2.0, 3.0))
    window = border_window(grid, 6.0)[..., 0].numpy()
    assert window.shape == grid.shape
    for face in (window[0], window[-1], window[:, 0], window[:, -1], window[:, :, 0], window[:, :, -1]):
        assert np.abs(face).max() == 0.0
    # along i (spacing 1 mm, index 2 of (k, j, i)) in the middle of the other axes: 3 mm from the border -> sin^2(pi/4)
    k, j = grid.shape[0] // 2, grid.shape[1] // 2
    assert window[k, j, 3] == pytest.approx(0.5, abs=1e-6)
    assert window[k, j, 6] == pytest.approx(1.0, abs=1e-6)
    assert window[k, j, grid.shape[2] // 2] == pytest.approx(1.0, abs=1e-6)
