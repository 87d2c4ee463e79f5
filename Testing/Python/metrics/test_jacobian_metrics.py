"""Jacobian statistics against analytic values: affine (constant det A), a quadratic field (det J linear in
world x, |grad det J| known exactly), and a field that folds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import oblique_grid
from MMRegistrationLib.metrics.deformation import (
    gradient_magnitude_per_mm,
    jacobian_determinant_on_grid,
    jacobian_summary,
)
from MMRegistrationLib.spatial import AffineTransform, ComposedTransform, DisplacementField
from MMRegistrationLib.spatial.jacobian import jacobian_determinant


def quadratic_field(grid, a: float, x0: float) -> DisplacementField:
    """``u = (a (x - x0)^2 / 2, 0, 0)`` with ``x`` the world L coordinate: ``det J = 1 + a (x - x0)``,
    ``grad det J = (a, 0, 0)``."""
    pts = grid.world_points()
    u = np.zeros(pts.shape)
    u[..., 0] = a * (pts[..., 0] - x0) ** 2 / 2.0
    return DisplacementField(grid, torch.from_numpy(u))


def interior(shape, margin: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[margin:-margin, margin:-margin, margin:-margin] = True
    return mask


def test_affine_has_the_constant_determinant_of_its_matrix():
    grid = oblique_grid(shape=(10, 12, 11))
    rot = AffineTransform.from_rigid([0.2, -0.3, 0.1], [3.0, -2.0, 1.0]).matrix
    matrix = rot @ np.diag([1.2, 0.9, 1.1, 1.0])
    matrix[:3, 3] = [4.0, 5.0, -6.0]
    affine = AffineTransform(matrix)
    expected = 1.2 * 0.9 * 1.1
    for transform in (affine, ComposedTransform([affine, AffineTransform.from_translation([1, 2, 3], "moving", "x")])):
        det = jacobian_determinant_on_grid(transform, grid)
        np.testing.assert_allclose(det, expected, rtol=1e-12)
        stats = jacobian_summary(det, grid)
        assert stats["jacobian_min"] == pytest.approx(expected) and stats["jacobian_max"] == pytest.approx(expected)
        assert stats["folding_fraction"] == 0.0 and stats["mean_abs_grad_jacobian_per_mm"] == 0.0
    # the shortcut agrees with sampling the affine as a displacement field and differentiating it
    sampled = jacobian_determinant(DisplacementField.from_transform(affine, grid))
    np.testing.assert_allclose(sampled, expected, rtol=1e-9)
    assert np.all(jacobian_determinant_on_grid(None, grid) == 1.0)


def test_gradient_of_det_matches_the_analytic_value_on_an_oblique_grid():
    grid = oblique_grid(shape=(16, 18, 17))
    a, x0 = 0.03, float(grid.world_points()[..., 0].mean())
    det = jacobian_determinant_on_grid(quadratic_field(grid, a, x0), grid)
    x = grid.world_points()[..., 0]
    inner1, inner2 = interior(grid.shape, 1), interior(grid.shape, 2)
    np.testing.assert_allclose(det[inner1], 1.0 + a * (x[inner1] - x0), atol=1e-9)  # central differences: exact
    grad = gradient_magnitude_per_mm(det, grid)
    np.testing.assert_allclose(grad[inner2], a, atol=1e-9)
    stats = jacobian_summary(det, grid, inner2)
    assert stats["mean_abs_grad_jacobian_per_mm"] == pytest.approx(a, abs=1e-9)
    assert stats["jacobian_min"] == pytest.approx((1.0 + a * (x[inner2] - x0)).min(), abs=1e-9)


def test_gradient_magnitude_uses_world_units():
    """A map linear in world coordinates, f = g . x, has |grad f| = |g| (1/mm) whatever the grid's geometry."""
    grid = oblique_grid(shape=(7, 9, 8), spacing=(0.5, 2.0, 3.5))
    g = np.array([0.3, -0.4, 1.2])
    f = grid.world_points() @ g
    np.testing.assert_allclose(gradient_magnitude_per_mm(f, grid), np.linalg.norm(g), rtol=1e-10)


def test_folding_field_is_detected():
    grid = oblique_grid(shape=(16, 18, 17))
    a, x0 = 0.25, float(grid.world_points()[..., 0].mean())  # det = 1 + a (x - x0) <= 0 where x <= x0 - 4 mm
    det = jacobian_determinant_on_grid(quadratic_field(grid, a, x0), grid)
    stats = jacobian_summary(det, grid)
    x = grid.world_points()[..., 0]
    inner = interior(grid.shape, 1)
    analytic = 1.0 + a * (x - x0)
    clear = inner & (np.abs(analytic) > 1e-6)
    np.testing.assert_array_equal(det[clear] <= 0, analytic[clear] <= 0)
    assert stats["folding_fraction"] == pytest.approx(np.mean(det <= 0))
    border = 1.0 - inner.mean()
    assert abs(stats["folding_fraction"] - np.mean(analytic <= 0)) <= border
    assert stats["folding_fraction"] > 0.05 and stats["jacobian_min"] < 0


def test_summary_rejects_a_bad_mask():
    grid = oblique_grid(shape=(4, 5, 6))
    with pytest.raises(ValueError, match="mask"):
        jacobian_summary(np.ones(grid.shape), grid, np.zeros(grid.shape, bool))
