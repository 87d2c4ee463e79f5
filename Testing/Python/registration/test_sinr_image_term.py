"""SINR's optional DISA image term (weight_image): the images move the field the right way, bad input is refused.

Phantom: a textured analytic anatomy (``disa_phantom.anatomy``) on oblique grids; the moving image is the anatomy
shifted by ``SHIFT`` (fixed -> moving is ``x + SHIFT``) with inverted, offset intensities (MR-like vs ultrasound-like),
so only a similarity that works across contrasts can see the shift. Uses the shipped DISA weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import covering_grid, expect_input_error, phantom_labels
from disa_phantom import anatomy
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.registration.sinr import sinr_config, sinr_register
from MMRegistrationLib.similarity.objectives import disa_image_term
from MMRegistrationLib.spatial import AffineTransform

SHIFT = np.array([3.0, -2.0, 2.5])


@pytest.fixture(scope="module")
def images():
    fixed_grid = covering_grid([5, 0, 15], 100, (2.0, 2.0, 2.0), (10, -5, 20))
    moving_grid = covering_grid([5, 0, 15], 110, (1.5, 1.5, 2.5), (-12, 8, -25))
    fixed = Image((anatomy(fixed_grid.world_points()) + 2.0).astype(np.float32), fixed_grid)
    moving = Image((5.0 - anatomy(moving_grid.world_points() - SHIFT)).astype(np.float32), moving_grid)
    return fixed, moving


@pytest.fixture(scope="module")
def same_segmentations(images):
    """Fixed and moving gland labels that agree without any displacement: only the images see SHIFT."""
    fixed, moving = images
    return phantom_labels(fixed.grid), phantom_labels(moving.grid)


def test_disa_term_is_lowest_in_the_true_direction(images):
    """The objective maps fixed points to where they sit in the moving image: +SHIFT scores best, -SHIFT worst."""
    fixed, moving = images
    term = disa_image_term(fixed, moving, fixed.grid)
    assert term.count > 500
    points = term.points.to(torch.float64)
    loss = {s: float(term.evaluate((points + torch.as_tensor(s * SHIFT))[None])[0][0]) for s in (-1, 0, 1)}
    assert loss[1] < loss[0] - 0.01 and loss[0] < loss[-1] - 0.01, loss


def test_image_term_pulls_the_field_toward_what_the_images_show(images, same_segmentations):
    """Surfaces alone say 'no motion'; with the image term the gland moves toward SHIFT, and its DISA loss drops."""
    fixed, moving = images
    fixed_seg, moving_seg = same_segmentations
    gland = fixed_seg.grid.world_points()[fixed_seg.array == 1]
    direction = SHIFT / np.linalg.norm(SHIFT)
    moved = {}
    for weight in (0.0, 5.0):
        config = sinr_config("fast", iterations=150, weight_image=weight)
        result = sinr_register(fixed_seg, moving_seg, AffineTransform.identity(), config, seed=0,
                               fixed_image=fixed, moving_image=moving)
        moved[weight] = float((result.transform.map_points_np(gland) - gland).mean(0) @ direction)
        if weight > 0:
            term = result.info["image_term"]
            assert term["loss_final"] < term["loss_start"] - 0.02, term
    assert abs(moved[0.0]) < 0.3, moved
    assert moved[5.0] > 1.0, moved


def test_image_term_needs_both_images_and_a_valid_weight(same_segmentations, images, tmp_path):
    fixed_seg, moving_seg = same_segmentations
    fixed, moving = images
    identity = AffineTransform.identity()
    expect_input_error(lambda: sinr_register(fixed_seg, moving_seg, identity, sinr_config("fast", weight_image=1.0)),
                       "--weight-image", "images")
    expect_input_error(lambda: sinr_register(fixed_seg, moving_seg, identity, sinr_config("fast", weight_image=-1.0),
                                             fixed_image=fixed, moving_image=moving), "--weight-image", "0 or more")
    missing = tmp_path / "nope.pt"
    expect_input_error(lambda: sinr_register(fixed_seg, moving_seg, identity,
                                             sinr_config("fast", weight_image=1.0, image_weights=str(missing)),
                                             fixed_image=fixed, moving_image=moving), "--image-weights", "nope.pt")
    empty = fixed.with_array(np.zeros_like(fixed.array))  # no field of view (ultrasound threshold 0)
    expect_input_error(lambda: sinr_register(fixed_seg, moving_seg, identity, sinr_config("fast", weight_image=1.0),
                                             fixed_image=empty, moving_image=moving), "--fixed", "empty")
