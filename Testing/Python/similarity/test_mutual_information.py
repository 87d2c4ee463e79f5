"""Mattes MI through SimpleITK: larger for aligned images (whatever the intensity mapping), transform and mask used."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import covering_grid, expect_input_error, phantom_intensity, phantom_labels
from MMRegistrationLib.similarity.mutual_information import mattes_mutual_information
from MMRegistrationLib.spatial import AffineTransform


@pytest.fixture(scope="module")
def images():
    labels = phantom_labels(covering_grid([5.0, 0.0, 15.0], 64.0, (2.0, 2.0, 2.0), (10.0, -5.0, 20.0)))
    assert 0.1 < labels.mask().mean() < 0.9, labels.mask().mean()
    fixed = phantom_intensity(labels, seed=0)
    lut = np.array([200.0, 30.0, 90.0, 160.0])  # another "modality": a different intensity per tissue
    moving = labels.with_array((lut[labels.array] + np.random.default_rng(1).normal(0, 5, labels.array.shape)).astype(np.float32))
    return fixed, moving


def test_aligned_beats_shifted_and_noise(images):
    fixed, moving = images
    aligned = mattes_mutual_information(fixed, moving)
    shifted = mattes_mutual_information(fixed, moving, AffineTransform.from_translation([8.0, 0.0, 0.0]))
    noise = moving.with_array(np.random.default_rng(2).normal(size=moving.array.shape).astype(np.float32))
    assert aligned > shifted > 0.0
    assert aligned > 5 * mattes_mutual_information(fixed, noise)


def test_mask_restricts_the_voxels(images):
    fixed, moving = images
    mask = np.zeros(fixed.grid.shape, dtype=bool)
    mask[:, :, :16] = True
    assert mattes_mutual_information(fixed, moving, fixed_mask=mask) != pytest.approx(mattes_mutual_information(fixed, moving))
    expect_input_error(lambda: mattes_mutual_information(fixed, moving, fixed_mask=mask[:-1]), "fixed_mask", "shape")
    expect_input_error(lambda: mattes_mutual_information(fixed, moving, bins=2), "bins")
