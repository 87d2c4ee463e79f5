"""Affine transforms, directions and composition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MMRegistrationLib.spatial import AffineTransform, ComposedTransform, DisplacementField, compose, rotation_matrix


def test_rotation_matrix_is_a_rotation_by_the_angle():
    vec = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    r = rotation_matrix(vec).numpy()
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(r @ vec.numpy(), vec.numpy(), atol=1e-12)  # axis is fixed
    angle = np.arccos((np.trace(r) - 1) / 2)
    assert angle == pytest.approx(np.linalg.norm(vec.numpy()))


def test_rigid_about_center_keeps_center_plus_translation():
    c = np.array([10.0, -4.0, 7.0])
    t = AffineTransform.from_rigid([0.1, 0.2, -0.3], [1.0, 2.0, 3.0], center=c)
    np.testing.assert_allclose(t.map_points_np(c[None])[0], c + [1, 2, 3], atol=1e-12)


def test_inverse_swaps_direction_and_undoes(rng):
    t = AffineTransform.from_rigid([0.1, 0.2, -0.3], [5.0, -2.0, 1.0])
    inv = t.inverse()
    assert (t.source, t.target) == ("fixed", "moving") and (inv.source, inv.target) == ("moving", "fixed")
    p = rng.normal(size=(10, 3)) * 30
    np.testing.assert_allclose(inv.map_points_np(t.map_points_np(p)), p, atol=1e-10)


def test_composition_order_is_first_then_second(rng):
    a = AffineTransform.from_translation([10.0, 0, 0], "fixed", "mid")
    b = AffineTransform(np.diag([2.0, 1.0, 1.0, 1.0]), "mid", "moving")
    p = np.array([[1.0, 2.0, 3.0]])
    # a first: (1+10)*2 = 22 ; the other order would give 1*2+10 = 12
    np.testing.assert_allclose(compose(a, b).map_points_np(p), [[22.0, 2.0, 3.0]])
    np.testing.assert_allclose(a.then(b).map_points_np(p), [[22.0, 2.0, 3.0]])
    assert isinstance(compose(a, b), AffineTransform) and compose(a, b).direction_label == "fixed->moving"


def test_composition_checks_that_spaces_chain():
    a = AffineTransform.identity("fixed", "moving")
    with pytest.raises(ValueError, match="cannot compose"):
        ComposedTransform([a, a])


def test_nonlinear_composition_inverse(grid_oblique, rng):
    u = np.zeros((*grid_oblique.shape, 3))
    u[..., 0] = 1.5
    field = DisplacementField(grid_oblique, u, "fixed", "mid")
    aff = AffineTransform.from_translation([0.0, 2.0, 0.0], "mid", "moving")
    chain = compose(field, aff)
    assert isinstance(chain, ComposedTransform) and not chain.is_linear
    centre = grid_oblique.world_points()[12, 15, 14]
    np.testing.assert_allclose(chain.map_points_np(centre[None])[0], centre + [1.5, 2.0, 0.0], atol=1e-9)
    inv = chain.inverse()  # affine inverse exactly, field inverse numerically
    assert inv.direction_label == "moving->fixed"
    np.testing.assert_allclose(inv.map_points_np(chain.map_points_np(centre[None])), centre[None], atol=1e-6)


def test_invalid_matrix():
    with pytest.raises(ValueError, match="singular"):
        AffineTransform(np.zeros((4, 4)))
