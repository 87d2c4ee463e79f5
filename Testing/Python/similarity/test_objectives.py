"""Similarity objectives of mapped points (similarity/objectives.py): batches, overlap, self-similarity, spacing."""

from __future__ import annotations

import pytest
import torch

from disa_phantom import cube_grid, phantom_image
from MMRegistrationLib.networks.disa import DISANet
from MMRegistrationLib.similarity.descriptors import NetworkDescriptors
from MMRegistrationLib.similarity.objectives import MIN_DESCRIPTOR_POINTS, descriptor_objectives, descriptor_spacing


@pytest.fixture(scope="module")
def self_objective():
    """Fixed = moving = the phantom on an oblique grid, described by a normalised random network (a descriptor is
    most similar to itself, so the identity is the exact optimum)."""
    torch.manual_seed(0)
    image = phantom_image(cube_grid(40, 2.0, (3.0, -2.0, 1.0), (10.0, -20.0, 5.0)))
    backend = NetworkDescriptors(DISANet(), normalize=True)
    objectives, _ = descriptor_objectives(image, image, backend, 2.0, levels=1, fixed_fov_threshold=None)
    return objectives[-1]


def test_identity_is_the_best_match_of_an_image_with_itself(self_objective):
    points = self_objective.points.to(torch.float64)
    loss, overlap = self_objective.evaluate(points[None])
    assert float(loss[0]) == pytest.approx(0.0, abs=1e-5) and float(overlap[0]) == pytest.approx(1.0, abs=1e-6)
    for offset in ([4.0, 0.0, 0.0], [0.0, -4.0, 3.0]):
        shifted = self_objective.evaluate((points + torch.as_tensor(offset, dtype=torch.float64))[None])[0]
        assert float(shifted[0]) > float(loss[0]) + 0.05


def test_batched_evaluation_equals_one_at_a_time(self_objective):
    points = self_objective.points.to(torch.float64)
    offsets = torch.tensor([[0.0, 0.0, 0.0], [1.5, -2.0, 0.5], [-3.0, 1.0, 2.5]], dtype=torch.float64)
    batch = torch.stack([points + o for o in offsets])
    losses, overlaps = self_objective.evaluate(batch)
    for b in range(len(offsets)):
        one_loss, one_overlap = self_objective.evaluate(batch[b:b + 1])
        assert float(losses[b]) == pytest.approx(float(one_loss[0]), abs=1e-6)
        assert float(overlaps[b]) == pytest.approx(float(one_overlap[0]), abs=1e-6)
    assert self_objective.batch_size() >= 1


def test_points_mapped_outside_the_moving_image_cost_the_most(self_objective):
    far = self_objective.points.to(torch.float64) + torch.tensor([500.0, 0.0, 0.0], dtype=torch.float64)
    loss, overlap = self_objective.evaluate(far[None])
    assert float(overlap[0]) == 0.0 and float(loss[0]) == pytest.approx(1.0, abs=1e-9)


def test_descriptor_spacing_targets_the_point_count():
    spacings = [descriptor_spacing(v) for v in (1e3, 1e5, 3e5, 1e6, 1e7, 1e9)]
    assert spacings[0] == 1.0 and spacings[-1] == 2.0
    assert all(a <= b for a, b in zip(spacings, spacings[1:]))
    for volume in (3e5, 5e5):  # inside [1, 2] mm: at least the target number of descriptors, and the next 0.1 mm
        s = descriptor_spacing(volume)  # coarser would hold fewer
        assert 1.0 < s < 2.0
        assert volume / (4 * s) ** 3 >= MIN_DESCRIPTOR_POINTS > volume / (4 * (s + 0.1)) ** 3
    assert descriptor_spacing(2e5, stride=2) > descriptor_spacing(2e5, stride=4)
    assert descriptor_spacing(0.0) == 1.0


def test_interpolated_descriptors_keep_the_grid_points_and_average_between():
    """``interpolated``: half the spacing, the original descriptors at even indices, trilinear in between, a position
    kept only where every descriptor it comes from is inside the field of view."""
    import numpy as np

    from MMRegistrationLib.core.grid import Grid
    from MMRegistrationLib.similarity.descriptors import interpolated
    from MMRegistrationLib.similarity.disa import DescriptorVolume

    torch.manual_seed(0)
    grid = cube_grid(5, 4.0, (3.0, -2.0, 7.0), (10.0, 20.0, -5.0))
    mask = torch.ones((5, 5, 5), dtype=torch.bool)
    mask[0, 0, 0] = False
    volume = DescriptorVolume(torch.randn(1, 16, 5, 5, 5), grid, mask)
    fine = interpolated(volume)
    assert fine.grid.shape == (9, 9, 9)
    np.testing.assert_allclose(fine.grid.index_to_world(np.array([[4.0, 2.0, 6.0]])),
                               grid.index_to_world(np.array([[2.0, 1.0, 3.0]])), atol=1e-9)
    assert torch.allclose(fine.descriptors[..., ::2, ::2, ::2], volume.descriptors, atol=1e-6)
    mid = 0.5 * (volume.descriptors[..., 2, 3, 1] + volume.descriptors[..., 2, 3, 2])
    assert torch.allclose(fine.descriptors[..., 4, 6, 3], mid, atol=1e-6)
    assert not fine.mask[0, 0, 0] and not fine.mask[1, 1, 1] and fine.mask[2, 2, 2] and fine.mask[0, 0, 2]
    assert isinstance(fine.grid, Grid)


def test_interpolated_finest_level_is_appended():
    """``interpolate_finest``: one more level, the finest with 8x the fixed points (about; the mask rule drops a
    border), half the spacing, and its optimum is still the identity for an image against itself."""
    torch.manual_seed(0)
    image = phantom_image(cube_grid(40, 2.0, (3.0, -2.0, 1.0), (10.0, -20.0, 5.0)))
    backend = NetworkDescriptors(DISANet(), normalize=True)
    plain, _ = descriptor_objectives(image, image, backend, 2.0, 2, None, None)
    dense, _ = descriptor_objectives(image, image, backend, 2.0, 2, None, None, interpolate_finest=True)
    assert len(dense) == len(plain) + 1
    assert dense[-1].count > 5 * plain[-1].count and dense[-1].spacing_mm == pytest.approx(plain[-1].spacing_mm / 2)
    at_identity = float(dense[-1].evaluate(dense[-1].points[None])[0][0])
    for shift in ([2.0, 0.0, 0.0], [0.0, -2.0, 0.0], [0.0, 0.0, 3.0]):
        assert at_identity < float(dense[-1].evaluate(dense[-1].points[None] + torch.tensor(shift))[0][0])
