"""MIND-SSC: definition checked voxel by voxel, invariances, alignment by descriptor distance, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import expect_input_error
from MMRegistrationLib.similarity.mind import mind_loss, mind_ssc, ssc_pairs


def smooth_volume(shape=(20, 21, 22), seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.tensor(ndimage.gaussian_filter(rng.normal(size=shape), 1.5) * 10.0)


def test_twelve_pairs_of_non_opposite_six_neighbours():
    pairs = ssc_pairs()
    assert len(pairs) == 12 and len(set(pairs)) == 12
    for a, b in pairs:
        assert sum((p - q) ** 2 for p, q in zip(a, b)) == 2


def test_shape_range_and_one_voxel_against_the_definition():
    image = smooth_volume()
    radius, dilation = 1, 2
    desc = mind_ssc(image, radius=radius, dilation=dilation)
    assert desc.shape == (1, 12) + tuple(image.shape)
    assert float(desc.min()) > 0.0
    torch.testing.assert_close(desc.amax(dim=1), torch.ones_like(desc[:, 0]))
    # brute force at an interior voxel (no border effects), with V averaged as in the definition
    x = image.numpy()
    z, y, w = 10, 9, 11
    distances = []
    for a, b in ssc_pairs():
        total = 0.0
        for q in np.ndindex(3, 3, 3):
            q = np.array(q) - radius
            pa = np.array([z, y, w]) + dilation * np.array(a) + q
            pb = np.array([z, y, w]) + dilation * np.array(b) + q
            total += (x[tuple(pa)] - x[tuple(pb)]) ** 2
        distances.append(total / 27.0)
    distances = np.array(distances)
    expected = np.exp(-distances / distances.mean())
    expected /= expected.max()
    np.testing.assert_allclose(desc[0, :, z, y, w].numpy(), expected, rtol=1e-10)


def test_invariant_to_affine_intensity_changes_including_inversion():
    image = smooth_volume(seed=1)
    base = mind_ssc(image)
    torch.testing.assert_close(mind_ssc(-0.3 * image + 100.0), base, atol=1e-9, rtol=0)


def test_shift_equivariant_away_from_the_border():
    image = smooth_volume(seed=2)
    shifted = torch.roll(image, shifts=(2, -1, 3), dims=(0, 1, 2))
    a = torch.roll(mind_ssc(image), shifts=(2, -1, 3), dims=(2, 3, 4))
    b = mind_ssc(shifted)
    inner = (slice(None), slice(None), slice(7, -7), slice(7, -7), slice(7, -7))
    torch.testing.assert_close(b[inner], a[inner], atol=1e-12, rtol=0)


def test_descriptor_distance_finds_the_true_shift_across_an_intensity_inversion():
    image = smooth_volume(shape=(24, 24, 24), seed=3)
    moving = -2.0 * torch.roll(image, shifts=1, dims=2) + 5.0  # other "modality", shifted by one voxel along x
    fixed_desc = mind_ssc(image)
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6), slice(6, -6))
    losses = {}
    for s in (-2, -1, 0, 1, 2):
        warped = torch.roll(mind_ssc(moving), shifts=-s, dims=4)
        losses[s] = float(mind_loss(fixed_desc[inner], warped[inner]))
    assert losses[1] < 1e-20, losses
    assert min(v for k, v in losses.items() if k != 1) > 1e-3, losses


def test_constant_image_gives_finite_descriptors():
    desc = mind_ssc(torch.full((8, 9, 10), 3.0))
    assert torch.isfinite(desc).all() and float(desc.min()) == 1.0


def test_loss_mask_and_errors():
    a = mind_ssc(smooth_volume(seed=4))
    b = mind_ssc(smooth_volume(seed=5))
    mask = torch.zeros(a.shape[-3:], dtype=torch.bool)
    mask[5:10, 5:10, 5:10] = True
    manual = ((a - b) ** 2).mean(dim=1)[0][mask].mean()
    assert float(mind_loss(a, b, mask)) == pytest.approx(float(manual), rel=1e-12)
    assert float(mind_loss(a, a)) == 0.0
    expect_input_error(lambda: mind_loss(a, b, torch.zeros_like(mask)), "mask", "no voxel")
    expect_input_error(lambda: mind_loss(a, b[..., :-1]), "moving_descriptors", "differs")
    expect_input_error(lambda: mind_ssc(smooth_volume(), dilation=0), "mind_ssc", "dilation")
