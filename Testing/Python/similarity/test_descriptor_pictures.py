"""descriptor_colours: RGB pictures of descriptor volumes in one shared principal-component colour space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import expect_input_error
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.similarity.descriptors import descriptor_colours
from MMRegistrationLib.similarity.disa import DescriptorVolume


def volume(desc: np.ndarray, mask: np.ndarray) -> DescriptorVolume:
    return DescriptorVolume(torch.as_tensor(desc[None], dtype=torch.float32), Grid.from_geometry(mask.shape, (4, 4, 4)),
                            torch.as_tensor(mask))


def test_one_colour_space_for_all_volumes():
    rng = np.random.default_rng(0)
    shape = (6, 7, 8)
    # descriptors varying mostly along one direction of the 16-D space: the first colour follows it
    direction = rng.normal(size=16)
    direction /= np.linalg.norm(direction)
    ramp = np.linspace(-1.0, 1.0, shape[2])[None, None, :] * np.ones(shape)
    desc = direction[:, None, None, None] * ramp + 0.01 * rng.normal(size=(16, *shape))
    mask = np.ones(shape, dtype=bool)
    mask[:, :, 0] = False
    other_mask = np.ones(shape, dtype=bool)
    a, b = descriptor_colours([volume(desc, mask), volume(desc, other_mask)])
    assert a.dtype == np.uint8 and a.shape == (*shape, 3)
    assert np.all(a[:, :, 0] == 0)  # outside the field of view
    np.testing.assert_array_equal(a[:, :, 1:], b[:, :, 1:])  # same descriptors, same colours
    first = b[..., 0].astype(float).mean(axis=(0, 1))
    assert abs(np.corrcoef(first, np.arange(shape[2]))[0, 1]) > 0.99
    assert first.max() - first.min() > 200  # the percentiles stretch it over the range


def test_no_descriptor_in_the_field_of_view_is_an_error():
    empty = volume(np.zeros((16, 3, 3, 3)), np.zeros((3, 3, 3), dtype=bool))
    expect_input_error(lambda: descriptor_colours([empty]), "descriptors", "field of view")


@pytest.mark.parametrize("components", [1, 3])
def test_component_count(components):
    rng = np.random.default_rng(1)
    out = descriptor_colours([volume(rng.normal(size=(16, 4, 4, 4)), np.ones((4, 4, 4), dtype=bool))], components)
    assert out[0].shape == (4, 4, 4, components)
