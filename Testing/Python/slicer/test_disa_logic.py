"""The DISA Similarity logic on a real slicer-core scene: the shared scenarios (also run by the module's Slicer
self-test), transform node kinds, the heatmap's place in the scene, the descriptor cache, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from MMRegistrationLib.spatial import AffineTransform
from MMRegistrationSlicerLib import bridge, scenarios
from MMRegistrationSlicerLib.disa_logic import HEATMAP_COLORS, DISALogic, heatmap_summary, registration_summary

slicer = pytest.importorskip("slicer")


def test_scenario_disa_registers_sample_case_from_images(scene):
    outcome = scenarios.disa_registers_sample_case_from_images(scene)["outcome"]
    assert "TRE" in registration_summary(outcome) and "rotation" in registration_summary(outcome)


def test_scenario_heatmap_peaks_at_the_point_of_the_same_image(app_scene):
    out = scenarios.heatmap_peaks_at_the_point_of_the_same_image(app_scene)
    display = out["result"].volume.GetDisplayNode()
    available = [name for name in HEATMAP_COLORS
                 if app_scene.GetNodesByClassByName("vtkMRMLColorNode", name).GetNumberOfItems()]
    if available:  # the scene's first preferred colour table is used
        assert app_scene.GetNodeByID(display.GetColorNodeID()).GetName() == available[0], available
    assert display.GetWindowLevelMax() == pytest.approx(out["moved"].peak_value, rel=1e-6)
    assert "mm from the point" in heatmap_summary(out["result"])


def test_scenario_disa_heatmap_ranks_the_corresponding_point_high(scene):
    scenarios.disa_heatmap_ranks_the_corresponding_point_high(scene)


def test_scenario_disa_cancel_leaves_the_scene_unchanged(scene):
    scenarios.disa_cancel_leaves_the_scene_unchanged(scene)


@pytest.fixture
def case(scene):
    return scenarios.load_sample_case(scene)


def test_heatmap_goes_under_the_moving_parent_and_follows_it(scene, case):
    """The heatmap lies in the moving volume's local coordinates under its parent transform: moving the volume moves
    the heatmap and its peak (world RAS) with it; the descriptors are reused (the local image did not change)."""
    fixed = case["fixed"]
    point = bridge.markups_from_landmarks(bridge.landmarks_from_markups(case["fixed_landmarks"])[:1], scene, "p")
    logic = DISALogic(scene)
    still = logic.heatmap(fixed, case["moving"], point, device="cpu")
    shift = bridge.transform_node_from_engine(AffineTransform.from_translation([4.0, -3.0, 2.0]), scene, "shift")
    case["moving"].SetAndObserveTransformNodeID(shift.GetID())
    moved = logic.heatmap(fixed, case["moving"], point, output_volume=still.volume, device="cpu")
    assert moved.volume.GetTransformNodeID() == shift.GetID()
    # FromParent maps fixed -> moving by +t (LPS), so the moving volume, hence its heatmap, is shown shifted by -t
    np.testing.assert_allclose(moved.peak_ras - still.peak_ras, bridge.ras_from_lps([-4.0, 3.0, -2.0]), atol=1e-6)
    assert (logic.cache.misses, logic.cache.hits) == (2, 2)


def test_heatmap_through_a_transform_lies_on_the_fixed_grid(scene, case):
    """Given a fixed -> moving transform node (here the ground truth), the heatmap is pulled back onto the fixed grid,
    under no transform: at fixed points y it equals the moving-grid heatmap at T(y) (within 0.01 of interpolation;
    measured <= 0.006, whereas T^-1(y) differs by 0.02-0.12)."""
    from MMRegistrationLib.io.transforms import read_transform
    from MMRegistrationSlicerLib.disa_logic import value_at

    truth = read_transform(case["paths"]["ground_truth"])
    point_lps = bridge.landmarks_from_markups(case["fixed_landmarks"])[0]
    point = bridge.markups_from_landmarks(point_lps[None], scene, "p")
    logic = DISALogic(scene)
    on_fixed = logic.heatmap(case["fixed"], case["moving"], point, transform=case["ground_truth"], device="cpu")
    on_moving = logic.heatmap(case["fixed"], case["moving"], point, device="cpu")
    assert bridge.image_from_volume(on_fixed.volume).grid.same_as(bridge.image_from_volume(case["fixed"]).grid)
    assert on_fixed.volume.GetTransformNodeID() is None and on_fixed.volume.GetID() != on_moving.volume.GetID()
    fixed_points = point_lps + np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, -5.0, 3.0], [-4.0, 4.0, 0.0]])
    pulled_back = [value_at(on_fixed.image, y) for y in fixed_points]
    np.testing.assert_allclose(pulled_back, [value_at(on_moving.image, m) for m in truth.map_points_np(fixed_points)],
                               atol=0.01)
    assert on_fixed.point_value == pytest.approx(pulled_back[0])


def test_deformable_and_masked_runs_give_a_grid_transform_and_segment_metrics(scene, case):
    """A deformable result is a grid transform node; a mask needs the segmentations, which add segment rows."""
    outcome = DISALogic(scene).register(
        case["fixed"], case["moving"], case["fixed_seg"], case["moving_seg"], mode="deformable", mask="fixed",
        options={"iterations": 2, "levels": 1, "deformable_iterations": 2}, device="cpu", make_table=True)
    assert outcome.transform.IsA("vtkMRMLGridTransformNode") and not outcome.transform.IsLinear()
    assert outcome.record["init"] == "com" and outcome.record["parameters"]["mask"] == "fixed"
    assert [r["name"] for r in outcome.after.rows][0] == "prostate" and outcome.table is not None
    assert case["moving"].GetTransformNodeID() == outcome.transform.GetID()
    assert case["moving_seg"].GetTransformNodeID() == outcome.transform.GetID()


def test_an_roi_reaches_the_engine_and_a_bad_one_is_refused(scene, case):
    """``register(..., roi=...)`` passes a markups ROI to the engine's DISA (recorded with its use); an ROI outside
    the fixed volume is a ValueError naming it, before any work, adding no node."""
    from MMRegistrationLib.registration.methods import get_method

    bounds = np.zeros(6)
    case["fixed"].GetRASBounds(bounds)
    centre = (bounds[0::2] + bounds[1::2]) / 2
    logic, count = DISALogic(scene), scene.GetNumberOfNodes()
    far = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "far box")
    far.SetCenter(*(centre + [500.0, 0.0, 0.0]))
    far.SetSize(10.0, 10.0, 10.0)
    with pytest.raises(ValueError, match="ROI 'far box'") as err:
        logic.register(case["fixed"], case["moving"], roi=far, device="cpu")
    assert "--" not in str(err.value) and scene.GetNumberOfNodes() == count + 1, err.value
    box = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    box.SetCenter(*centre)
    box.SetSize(60.0, 50.0, 40.0)
    outcome = logic.register(case["fixed"], case["moving"], roi=box, options={"iterations": 2, "levels": 1},
                             device="cpu", apply_to_moving=False, make_table=False)
    assert outcome.record["region"]["use"] == get_method("disa").region_use, outcome.record.get("region")
    np.testing.assert_allclose(outcome.record["region"]["size"], [60.0, 50.0, 40.0], atol=1e-9)


def test_bad_input_is_a_clear_value_error_and_adds_no_node(scene, case):
    logic = DISALogic(scene)
    fixed, moving = case["fixed"], case["moving"]
    fixed_image = bridge.image_from_volume(fixed)
    corner = fixed_image.grid.index_to_world(np.array([1.0, 1.0, 1.0]))  # inside the image, outside the sector
    assert fixed_image.array[1, 1, 1] == 0
    outside = fixed_image.grid.index_to_world(np.array([-20.0, 0.0, 0.0]))
    points = {name: bridge.markups_from_landmarks(p[None], scene, name) for name, p in
              (("corner", corner), ("outside", outside), ("inside", bridge.landmarks_from_markups(case["fixed_landmarks"])[0]))}
    empty = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "empty")
    count = scene.GetNumberOfNodes()

    def fails(match, call, *args, **kwargs):
        with pytest.raises(ValueError, match=match) as err:
            call(*args, **{"device": "cpu", **kwargs})
        assert "--" not in str(err.value), err.value  # no CLI argument names in the module's messages
        assert scene.GetNumberOfNodes() == count, (str(err.value), count, scene.GetNumberOfNodes())
        assert moving.GetTransformNodeID() is None
        return str(err.value)

    fails("fixed volume: no volume", logic.register, None, moving)
    fails("moving volume: no volume", logic.register, fixed, None)
    fails("mask: 'both'.*segmentation", logic.register, fixed, moving, mask="both")
    fails("mask: 'fixed'", logic.register, fixed, moving, case["fixed_seg"], None, mask="fixed")
    fails("options:.*'mode'", logic.register, fixed, moving, options={"mode": "affine"})
    fails("DISA registration: mode: unknown value 'elastic'", logic.register, fixed, moving, mode="elastic")
    fails("DISA registration: iterations: must be a positive integer", logic.register, fixed, moving,
          options={"iterations": 0})
    fails("fixed volume: no volume", logic.heatmap, None, moving, points["inside"])
    fails("heatmap point: no point list", logic.heatmap, fixed, moving, None)
    fails("heatmap point: the point list 'empty' has no control point", logic.heatmap, fixed, moving, empty)
    fails("index 3 does not exist", logic.heatmap, fixed, moving, points["inside"], point_index=3)
    message = fails("heatmap point: .* lies outside the fixed volume 'TRUS'", logic.heatmap, fixed, moving,
                    points["outside"])
    assert "RAS (" in message, message
    fails("heatmap point: .* lies outside the field of view of 'TRUS'", logic.heatmap, fixed, moving, points["corner"])
    fails("heatmap similarity: 'lc2'", logic.heatmap, fixed, moving, points["inside"], similarity="lc2")
    fails("heatmap volume: 'MR' is an input", logic.heatmap, fixed, moving, points["inside"], output_volume=moving)
    fails("DISA heatmap: weights", logic.heatmap, fixed, moving, points["inside"], weights="/no/such/weights.pt")


def test_scenario_disa_descriptor_pictures_share_one_colour_space(scene):
    scenarios.disa_descriptor_pictures_share_one_colour_space(scene)


def test_descriptor_bad_input_is_a_clear_value_error_and_adds_no_node(scene, case):
    fixed, moving = case["fixed"], case["moving"]
    logic = DISALogic(scene)
    count = scene.GetNumberOfNodes()
    for call, words in (
        (lambda: logic.describe(None, moving), "fixed volume"),
        (lambda: logic.describe(fixed, moving, similarity="lc2"), "no descriptors"),
        (lambda: logic.describe(fixed, moving, fixed_output=moving), "is an input"),
    ):
        with pytest.raises(ValueError, match=words):
            call()
        assert scene.GetNumberOfNodes() == count

