"""Test-time optimisation (paper 002): the step grid and window, a step that starts from the previous transform
exactly, RSO that reduces a local error inside its box without moving the outside, the refinement session's history
(undo/redo exact, cancel leaves nothing) and every bad input named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import covering_grid, expect_input_error, phantom_intensity, phantom_labels
from MMRegistrationLib.core.box import OrientedBox
from MMRegistrationLib.core.errors import Cancelled
from MMRegistrationLib.networks.registration import load_registration_net
from MMRegistrationLib.registration.base import RegistrationInputs
from MMRegistrationLib.registration.refinement import RefinementSession, box_at
from MMRegistrationLib.registration.rso import box_grid, box_window
from MMRegistrationLib.registration.rso_config import RefineConfig
from MMRegistrationLib.spatial.affine import AffineTransform

TRUE = AffineTransform.from_rigid(np.deg2rad([4.0, -3.0, 6.0]), [5.0, -3.0, 4.0], center=[5.0, -2.0, 10.0])
BUMP_CENTER = np.array([5.0, -2.0, 26.0])  # on the superior surface of the phantom's prostate (fixed space)
BUMP = np.array([0.0, 2.0, 5.0])  # mm, mostly along the surface normal
BUMP_SIGMA = 9.0


def _bump_offset(points: np.ndarray, center: np.ndarray) -> np.ndarray:
    d2 = np.sum((points - center) ** 2, axis=-1, keepdims=True)
    return BUMP * np.exp(-0.5 * d2 / BUMP_SIGMA**2)


def _bump_inverse(points: np.ndarray, center: np.ndarray) -> np.ndarray:
    out = np.array(points, dtype=float)
    for _ in range(60):
        out = points - _bump_offset(out, center)
    return out


def true_transform(points: np.ndarray) -> np.ndarray:
    """The case's fixed -> moving transform: the rigid TRUE, then the inverse of the local bump in moving space."""
    return _bump_inverse(TRUE.map_points_np(points), TRUE.map_points_np(BUMP_CENTER[None])[0])


@pytest.fixture(scope="module")
def bumped():
    """An oblique, anisotropic phantom pair whose MR carries a 5 mm local bump the rigid start does not explain."""
    fixed_grid = covering_grid([5, 0, 15], 96, (1.2, 1.2, 1.5), (10, -5, 20))
    moving_grid = covering_grid([12, -6, 22], 110, (0.9, 0.9, 2.5), (-12, 8, -25), origin_shift=(3, -2, 1))
    fseg = phantom_labels(fixed_grid)
    bump_center = TRUE.map_points_np(BUMP_CENTER[None])[0]
    # the moving anatomy at y' is the rigidly moved anatomy at B(y') = y' + bump(y')
    to_anatomy = lambda p: TRUE.inverse().map_points_np(p + _bump_offset(p, bump_center))  # noqa: E731
    mseg = phantom_labels(moving_grid, to_anatomy)
    inputs = RegistrationInputs(phantom_intensity(fseg, 1), phantom_intensity(mseg, 2), fseg, mseg,
                                {1: "prostate", 2: "bladder", 3: "rectum"})
    return inputs


def _box_errors(transform, box: OrientedBox, fixed_grid) -> tuple:
    """Mean error (mm) within 12 mm of the bump (inside the box), and fixed points beyond the box's border."""
    points = fixed_grid.resized(3.0).world_points().reshape(-1, 3)
    near = np.linalg.norm(points - BUMP_CENTER, axis=-1) < 12.0
    error = np.linalg.norm(transform.map_points_np(points[near]) - true_transform(points[near]), axis=-1)
    return float(error.mean()), points[~box.contains(points, margin_mm=2.1)]


def test_the_box_grid_covers_the_box_and_margin_in_multiples_of_the_network_factor():
    axes = np.linalg.qr(np.array([[0.1, 1.0, 0.2], [-1.0, 0.1, 0.3], [0.2, -0.3, 1.0]]))[0]
    axes *= np.sign(np.linalg.det(axes))
    box = OrientedBox([-30.0, 12.0, 80.0], axes, [20.0, 15.0, 25.0])
    grid = box_grid(box, 2.0, 12.0, 16)
    assert all(n % 16 == 0 for n in grid.shape)
    assert np.allclose(grid.center, box.center)
    assert np.allclose(grid.spacing, 2.0)
    index = grid.world_to_index(box.corners())
    assert np.all(index >= 12.0 / 2.0 - 0.5 - 1e-6) and np.all(index <= np.array(grid.size_ijk) - 12.0 / 2.0 - 0.5 + 1e-6)
    window = box_window(box, grid, 6.0)[..., 0].numpy()
    outside = ~box.contains(grid.world_points())
    assert window[outside].max() == 0.0
    assert window[box.contains(grid.world_points(), margin_mm=-6.0)].min() == pytest.approx(1.0)


def test_an_rso_step_starts_from_the_previous_transform_and_reduces_the_local_error_inside_its_box(bumped):
    session = RefinementSession(bumped, device="cpu", metrics=False)
    session.start_from(TRUE)
    box = box_at(BUMP_CENTER, 40.0)
    before, outside_points = _box_errors(TRUE, box, bumped.fixed.grid)
    assert before > 2.0  # the rigid start leaves the bump

    unchanged = session.refine(box, {"iterations": 1, "image_similarity": "none"})  # best state = the start
    points = bumped.fixed.grid.resized(4.0).world_points().reshape(-1, 3)
    assert np.allclose(unchanged.transform.map_points_np(points), TRUE.map_points_np(points), atol=1e-5)
    session.undo()

    step = session.refine(box, {"iterations": 100, "image_similarity": "none"})
    after, _ = _box_errors(step.transform, box, bumped.fixed.grid)
    assert after < 0.75 * before, (before, after)
    drift = np.linalg.norm(step.transform.map_points_np(outside_points) - TRUE.map_points_np(outside_points), axis=-1)
    assert drift.max() < 1e-6  # the window holds the field outside the box (beyond one step-grid voxel)
    forward = step.transform.map_points_np(points)
    back = np.linalg.norm(step.inverse.map_points_np(forward) - points, axis=-1)  # exp(-c) undoes exp(c) ...
    assert back.mean() < 0.05 and back.max() < 0.5  # ... up to the discretisation of a 5 mm, 9 mm-wide correction
    assert step.info["box"]["size"] == [40.0, 40.0, 40.0]
    assert len(step.loss_curve) == step.iterations and step.loss_curve[-1] < step.loss_curve[0]


def test_undo_and_redo_restore_transforms_and_weights_exactly_and_cancel_leaves_no_step(bumped):
    session = RefinementSession(bumped, device="cpu", metrics=False)
    session.start_from(TRUE)
    first = session.refine(box_at(BUMP_CENTER, 40.0), {"iterations": 4, "image_similarity": "none"})
    second = session.refine(box_at(BUMP_CENTER + [0, 0, -20.0], 40.0), {"iterations": 4, "image_similarity": "none"})
    points = bumped.fixed.grid.resized(5.0).world_points().reshape(-1, 3)
    mapped = second.transform.map_points_np(points)
    assert [s.name for s in session.steps] == ["initial", "RSO box 1", "RSO box 2"]
    assert session.undo() is first and session.can_redo
    assert np.array_equal(session.current.transform.map_points_np(points), first.transform.map_points_np(points))
    assert session.redo() is second
    assert np.array_equal(session.current.transform.map_points_np(points), mapped)

    calls = {"n": 0}

    def cancel_after_three():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        session.refine(None, {"iterations": 50, "image_similarity": "none"}, cancel=cancel_after_three)
    assert session.current is second and not session.can_redo
    assert [s.name for s in session.steps] == ["initial", "RSO box 1", "RSO box 2"]

    # the next step continues from the current step's fine-tuned weights; undo then redo keeps them
    state = {k: v.clone() for k, v in second.network_state.items()}
    session.undo()
    session.redo()
    assert all(torch.equal(state[k], v) for k, v in session.current.network_state.items())


def test_every_bad_input_is_named_and_leaves_the_history_unchanged(bumped, tmp_path):
    session = RefinementSession(bumped, device="cpu", metrics=False)
    expect_input_error(lambda: session.refine(box_at(BUMP_CENTER)), "--from", "no registration to refine")
    session.start_from(TRUE)
    expect_input_error(lambda: session.refine(box_at([500.0, 0.0, 0.0])), "--roi", "outside the fixed image")
    far_from_gland = box_at([5.0, 35.0, -25.0], 12.0)  # inside the image, away from every structure
    expect_input_error(lambda: session.refine(far_from_gland, {"image_similarity": "none"}), "--roi",
                       "no segmentation")
    expect_input_error(lambda: RefineConfig(iterations=0), "--iterations")
    expect_input_error(lambda: RefineConfig(label_weight=0.0, image_similarity="none"), "--label-weight")
    expect_input_error(lambda: session.refine(box_at(BUMP_CENTER), {"weights": str(tmp_path / "none.pt")}),
                       "--weights")
    images_only = RefinementSession(RegistrationInputs(bumped.fixed, bumped.moving), device="cpu", metrics=False)
    images_only.start_from(TRUE)
    expect_input_error(lambda: images_only.refine(box_at(BUMP_CENTER), {"weights": "mix_plus"}), "--moving-seg")
    assert [s.name for s in session.steps] == ["initial"]


@pytest.mark.parametrize("options", [
    {"hold": "penalty", "image_similarity": "none"},
    {"label_weight": 0.0, "image_similarity": "mi", "image_weight": 1.0},
    {"label_weight": 0.0, "image_similarity": "mind", "image_weight": 1.0},
    {"image_similarity": "disa", "trainable": "decoder"},
])
def test_every_hold_and_image_term_runs_a_finite_step(bumped, options):
    session = RefinementSession(bumped, device="cpu", metrics=False)
    session.start_from(TRUE)
    step = session.refine(box_at(BUMP_CENTER, 40.0), {"iterations": 3, **options})
    assert step.iterations == 3 and np.all(np.isfinite(step.loss_curve))
    assert np.isfinite(step.info["max_correction_mm"])


def test_images_alone_refine_with_the_image_only_network(bumped):
    session = RefinementSession(RegistrationInputs(bumped.fixed, bumped.moving), device="cpu", metrics=False)
    session.start_from(TRUE)
    step = session.refine(box_at(BUMP_CENTER, 40.0), {"iterations": 2, "image_similarity": "mind"})
    network, _ = load_registration_net("srml")
    assert step.info["weights"].endswith("srml.pt") and "moving_mask" not in network.config.inputs


def test_a_step_is_deterministic_on_the_cpu(bumped):
    points = bumped.fixed.grid.resized(6.0).world_points().reshape(-1, 3)
    mapped = []
    for _ in range(2):
        session = RefinementSession(bumped, device="cpu", seed=3, metrics=False)
        session.start_from(TRUE)
        step = session.refine(box_at(BUMP_CENTER, 40.0), {"iterations": 6})
        mapped.append(step.transform.map_points_np(points))
    assert np.array_equal(mapped[0], mapped[1])
