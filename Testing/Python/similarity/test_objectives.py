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
