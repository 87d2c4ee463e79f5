"""The working resolution of DISA registration chosen from the images (``registration/disa_resolution.py``): the
rule on small and large grids, anisotropic voxels, the smaller field of view, given values kept, warnings for huge
grids, and that a registration reaches the stated number of finest-level descriptors."""

from __future__ import annotations

import numpy as np
import pytest

from scipy import ndimage

from disa_phantom import cube_grid
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.networks.disa import DISANet
from MMRegistrationLib.registration.disa import disa_config, disa_register, working_spacing
from MMRegistrationLib.registration.disa_resolution import (
    MAX_SPACING_MM,
    MIN_COARSE_DESCRIPTORS,
    SLOW_WORKING_VOXELS,
    TARGET_DESCRIPTORS,
    automatic_levels,
    plan_resolution,
)
from MMRegistrationLib.similarity.descriptors import NetworkDescriptors


def box(size_mm, spacing, origin=(0.0, 0.0, 0.0), value=1.0, direction=None) -> Image:
    """A constant image covering ``size_mm`` (x, y, z) with voxels ``spacing`` (x, y, z); only the geometry matters."""
    spacing = np.broadcast_to(np.asarray(spacing, dtype=float), (3,))
    size = np.maximum(1, np.round(np.broadcast_to(np.asarray(size_mm, float), (3,)) / spacing)).astype(int)
    grid = Grid.from_geometry(tuple(int(v) for v in size[::-1]), tuple(spacing), origin,
                              np.eye(3) if direction is None else direction)
    return Image(np.full(tuple(size[::-1]), value, np.float32), grid)


def test_fine_small_images_go_down_to_their_own_voxels():
    """0.3 mm voxels, 20 mm: 8000 descriptors would need 0.25 mm, finer than the image -> 0.3 mm."""
    image = box(20.0, 0.3)
    plan = plan_resolution(image, image)
    assert plan.spacing_mm == pytest.approx(0.3) and plan.limited_by == "image resolution"
    assert plan.points_spacing_mm == pytest.approx((20.0**3 / TARGET_DESCRIPTORS) ** (1 / 3) / 4, rel=0.02)
    assert plan.expected_points[-1] == pytest.approx(20.0**3 / (4 * 0.3) ** 3, rel=0.02)


def test_mid_sized_fields_of_view_get_the_stated_descriptor_count():
    """0.5 mm voxels, 100 mm: the coarsest spacing that still holds 8000 descriptors, 1.25 mm, not the voxel size."""
    image = box(100.0, 0.5, origin=(-120.0, 35.0, 410.0))
    plan = plan_resolution(image, image)
    assert plan.limited_by == "descriptor count"
    assert plan.spacing_mm == pytest.approx(1.25, abs=0.011)
    assert plan.expected_points[-1] >= TARGET_DESCRIPTORS
    assert plan.levels == automatic_levels(plan.expected_points[-1]) == 2
    assert working_spacing(image, image, disa_config()) == plan.spacing_mm


def test_large_coarse_images_stay_at_2mm():
    image = box(200.0, 2.0)
    plan = plan_resolution(image, box(300.0, 1.0))
    assert plan.spacing_mm == MAX_SPACING_MM and plan.limited_by == "coarsest spacing"


def test_the_smaller_field_of_view_and_the_finer_image_decide():
    """A 60 mm fixed sector inside a 200 mm MR: the overlap is the sector's; an anisotropic 0.2 x 0.2 x 2 mm
    ultrasound counts as its voxel volume's cube root (0.43 mm)."""
    mr = box(200.0, 1.0)
    us = box((60.0, 60.0, 60.0), (0.2, 0.2, 2.0))
    us.array[:, :, : us.array.shape[2] // 2] = 0.0  # half the box is outside the ultrasound field of view
    plan = plan_resolution(us, mr)
    assert plan.overlap_ml == pytest.approx(60.0**3 / 2 / 1000.0, rel=0.02)
    assert plan.image_spacing_mm == pytest.approx(0.08 ** (1 / 3), rel=1e-6)
    assert plan.spacing_mm == pytest.approx((60.0**3 / 2 / TARGET_DESCRIPTORS) ** (1 / 3) / 4, abs=0.011)
    swapped = plan_resolution(mr, us, fixed_fov_threshold=None, moving_fov_threshold=0.0)
    assert swapped.overlap_ml == pytest.approx(plan.overlap_ml)


def test_given_values_are_kept_and_lc2_mi_default_to_2mm():
    image = box(100.0, 0.5)
    assert plan_resolution(image, image, spacing_mm=0.7, levels=3).spacing_mm == 0.7
    assert plan_resolution(image, image, spacing_mm=0.7, levels=3).levels == 3
    assert plan_resolution(image, image, spacing_mm=0.7).limited_by == "given"
    for similarity in ("lc2", "mi"):
        plan = plan_resolution(image, image, similarity)
        assert (plan.spacing_mm, plan.levels) == (2.0, 2)
    small = box(50.0, 0.5)
    mind, disa = plan_resolution(small, small, "mind"), plan_resolution(small, small, "disa")
    assert mind.spacing_mm == pytest.approx(2 * disa.spacing_mm, abs=0.011)  # stride 2: the same positions
    assert mind.expected_points[-1] == pytest.approx(disa.expected_points[-1], rel=0.05)


def test_levels_keep_enough_descriptors_at_the_coarsest():
    assert automatic_levels(100) == 1
    assert automatic_levels(8 * MIN_COARSE_DESCRIPTORS) == 2
    assert automatic_levels(8 * MIN_COARSE_DESCRIPTORS - 1) == 1
    assert automatic_levels(1e9) == 4


def test_huge_working_grids_are_told_not_coarsened():
    """A whole-body MR at 0.3 mm would be billions of voxels: the plan keeps the spacing and says so."""
    us = box(20.0, 0.3)
    mr = box(400.0, 1.0)
    plan = plan_resolution(us, mr)
    assert plan.spacing_mm == pytest.approx(0.3)
    assert plan.working_voxels[1] > SLOW_WORKING_VOXELS
    assert len(plan.warnings) == 1 and "moving" in plan.warnings[0] and "--spacing-mm" in plan.warnings[0]
    assert plan_resolution(us, us).warnings == ()


def test_a_registration_reaches_the_stated_finest_descriptor_count():
    """On a 0.5 mm, 48 mm box (limited by the descriptor count: 0.6 mm) the finest level of a real DISA run holds at least
    half the target after the field-of-view margin, and the plan is recorded with the result."""
    rng = np.random.default_rng(0)
    fixed, moving = (Image(ndimage.gaussian_filter(rng.standard_normal(grid.shape), 3.0).astype(np.float32), grid)
                     for grid in (cube_grid(96, 0.5, (10.0, -20.0, 30.0), (20.0, -10.0, 5.0)),
                                  cube_grid(96, 0.5, (11.0, -19.0, 30.0), (10.0, 5.0, -5.0))))
    backend = NetworkDescriptors(DISANet().eval(), normalize=True)
    config = disa_config(fixed_fov_threshold="none", iterations=2)
    result = disa_register(fixed, moving, None, config, descriptors=backend)
    plan = result.info["resolution"]
    assert plan["limited_by"] == "descriptor count" and plan["automatic"] == {"spacing": True, "levels": True}
    assert result.info["working_spacing_mm"] == plan["spacing_mm"] and 0.5 < plan["spacing_mm"] < 1.0
    finest = result.info["levels"][-1]["points"]
    assert finest >= TARGET_DESCRIPTORS / 2, finest
    assert len(result.info["levels"]) == plan["levels"] == 2


def test_a_slow_working_grid_is_said_in_the_progress_and_the_record(monkeypatch):
    """Above the voxel threshold the run goes on at the chosen spacing and says so: in the progress messages and in
    the record's warnings (printed by the CLI, written to result.json)."""
    from MMRegistrationLib.registration import disa_resolution
    from MMRegistrationLib.registration.base import RegistrationInputs
    from MMRegistrationLib.registration.pipeline import run_registration

    monkeypatch.setattr(disa_resolution, "SLOW_WORKING_VOXELS", 1000)
    rng = np.random.default_rng(1)
    fixed, moving = (Image(ndimage.gaussian_filter(rng.standard_normal(grid.shape), 2.0).astype(np.float32), grid)
                     for grid in (cube_grid(40, 1.0), cube_grid(40, 1.0, (1.0, 0.0, 0.0))))
    messages = []
    result, record = run_registration("disa", RegistrationInputs(fixed, moving), init="none",
                                      options=dict(similarity="mind", fixed_fov_threshold="none", iterations=2),
                                      progress=lambda f, m: messages.append(m), device="cpu")
    plan = result.info["resolution"]
    assert plan["spacing_mm"] == result.info["working_spacing_mm"] and plan["working_voxels"][0] > 1000
    assert any("M voxels at the working spacing" in m for m in messages), messages
    assert any("fixed image" in w and "--spacing-mm" in w for w in record["warnings"]), record.get("warnings")
