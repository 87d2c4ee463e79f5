"""The RSO Refine module's GUI-free logic on a real slicer-core scene: the shared scenarios (also run by the module's
Slicer self-test), the history table's texts, export, when a new session starts, a grid starting transform, and bad
input as readable messages that change nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from MMRegistrationLib.spatial import AffineTransform
from MMRegistrationSlicerLib import bridge, scenarios
from MMRegistrationSlicerLib.rso_logic import HISTORY_COLUMNS, RSORefineLogic, history_cells, step_summary

slicer = pytest.importorskip("slicer")


def test_scenario_rso_refines_sample_case(scene, tmp_path):
    out = scenarios.rso_refines_sample_case(scene)
    logic, steps = out["logic"], out["steps"]
    cells = history_cells(logic.history_rows())
    assert [len(row) for row in cells] == [len(HISTORY_COLUMNS)] * 3
    columns = [key for key, _ in HISTORY_COLUMNS]
    general, iso, rso = (dict(zip(columns, row)) for row in cells)
    assert (general["step"], general["box"], general["iterations"], general["loss"]) == ("general", "", "0", "")
    assert rso["box"].endswith("40 x 40 x 40") and float(rso["dice"]) > 0.5 and float(rso["tre_mean_mm"]) >= 0
    assert step_summary(steps[2]).startswith("RSO box 1: 5 iterations in ") and "DSC" in step_summary(steps[2])

    logic.show_step(1)  # export writes the shown step
    record = logic.export(tmp_path / "iso")
    written = json.loads((tmp_path / "iso" / "result.json").read_text(encoding="utf-8"))
    assert record["step"] == written["step"] == "ISO" and [r["step"] for r in written["history"]] == ["general", "ISO"]
    assert (tmp_path / "iso" / "transform.h5").is_file()
    assert logic.history_rows()[1]["shown"] and len(logic.history_rows()) == 3  # export changes nothing
    chosen = tmp_path / "my_folder"  # what the Export button does: a sub-folder, never the chosen folder itself
    chosen.mkdir()
    (chosen / "notes.txt").write_text("mine", encoding="utf-8")
    exported = logic.export_into(chosen)
    assert exported == {"step": "ISO", "folder": str(chosen / "ISO")}
    assert (chosen / "notes.txt").read_text(encoding="utf-8") == "mine" and (chosen / "ISO" / "result.json").is_file()
    assert logic.export_into(chosen)["folder"] == str(chosen / "ISO")  # an earlier export of the step is replaced
    with pytest.raises(ValueError, match="not an earlier mmreg result"):
        logic.export(chosen)  # the chosen folder itself is never replaced


def test_scenario_rso_cancel_leaves_history_and_output_unchanged(scene):
    scenarios.rso_cancel_leaves_history_and_output_unchanged(scene)


def test_scenario_rso_starts_from_a_transform_node(scene):
    scenarios.rso_starts_from_a_transform_node(scene)


@pytest.fixture
def case(scene):
    return scenarios.load_sample_case(scene)


def _set(logic, case, **kwargs):
    arguments = dict(fixed_segmentation=case["fixed_seg"], moving_segmentation=case["moving_seg"],
                     fixed_landmarks=case["fixed_landmarks"], moving_landmarks=case["moving_landmarks"], device="cpu")
    return logic.set_inputs(case["fixed"], case["moving"], **{**arguments, **kwargs})


def test_a_grid_starting_transform_is_sampled_on_the_fixed_grid(scene, case):
    """The ground truth (a grid transform node) as the starting transform: the first step aligns the case (DSC close
    to 1, TRE close to 0) and the output node maps as the ground truth does inside the fixed image."""
    logic = RSORefineLogic(scene)
    assert _set(logic, case, starting_transform=case["ground_truth"])
    (row,) = logic.history_rows()
    assert row["step"] == "initial (ground truth)" and row["dice"] > 0.95 and row["tre_mean_mm"] < 0.1, row
    points = scenarios._gland_points(scene, case["fixed_seg"])
    error = np.abs(scenarios._map_through_node(logic.output_transform, points)
                   - scenarios._map_through_node(case["ground_truth"], points)).max()
    assert error < 0.05, error


def test_changed_inputs_start_a_new_session_and_another_output_node_gets_the_step(scene, case):
    logic = RSORefineLogic(scene)
    assert _set(logic, case)
    general = logic.register_general()
    field = scenarios.grid_field(logic.output_transform)
    assert not _set(logic, case) and logic.session.current is general  # the same inputs: the same session

    other = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "my output")
    assert not _set(logic, case, output_transform=other)  # another output node shows the same step
    assert logic.output_transform is other and case["moving"].GetTransformNodeID() == other.GetID()
    np.testing.assert_array_equal(scenarios.grid_field(other), field)

    assert _set(logic, case, seed=1) and logic.history_rows() == []  # seed, device and inputs define a session
    assert _set(logic, case, seed=1, fixed_landmarks=None, moving_landmarks=None)
    logic.register_general()
    (row,) = logic.history_rows()
    assert row["tre_mean_mm"] is None and row["dice"] > 0.8, row
    fixed_ids = {name: sid for sid, name in bridge.segment_names(case["fixed_seg"]).items()}
    moving_ids = {name: sid for sid, name in bridge.segment_names(case["moving_seg"]).items()}
    mapping = {fixed_ids[n]: moving_ids[n] for n in ("rectum", "prostate")}  # the prostate comes first anyway
    assert _set(logic, case, seed=1, fixed_landmarks=None, moving_landmarks=None, segment_mapping=mapping)
    assert logic.session.inputs.label_names == {1: "prostate", 2: "rectum"} and logic.history_rows() == []


def test_bad_input_is_a_readable_value_error_and_changes_nothing(scene, case):
    logic = RSORefineLogic(scene)
    fixed, moving = case["fixed"], case["moving"]

    def fails(match, call, *words):
        rows = logic.history_rows()
        field = scenarios.grid_field(logic.output_transform) if logic.output_transform is not None else None
        count = scene.GetNumberOfNodes()
        with pytest.raises(ValueError, match=match) as err:
            call()
        message = str(err.value)
        for word in words:
            assert word in message, (word, message)
        assert "--" not in message, message  # no CLI argument names in the module's messages
        assert logic.history_rows() == rows and scene.GetNumberOfNodes() == count, message
        if field is not None:
            np.testing.assert_array_equal(scenarios.grid_field(logic.output_transform), field)
        return message

    fails("^General model registration: select the fixed and the moving volume", logic.register_general)
    fails("^Undo: select the fixed", logic.undo)
    fails("^fixed volume: no volume", lambda: logic.set_inputs(None, moving))
    fails("must not be the same", lambda: logic.set_inputs(fixed, fixed))
    fails("^moving segmentation: none was selected", lambda: logic.set_inputs(fixed, moving, case["fixed_seg"]))
    start = bridge.transform_node_from_engine(AffineTransform.identity(), scene, "identity")
    fails("^starting transform: 'identity' is the output transform",
          lambda: _set(logic, case, starting_transform=start, output_transform=start))
    assert logic.session is None

    assert _set(logic, case)
    centre = bridge.ras_from_lps(bridge.image_from_volume(fixed).grid.center)
    box = logic.place_box(centre)
    fails("^ISO refinement: there is no registration to refine yet", logic.refine_whole_image)
    fails("^RSO refinement: there is no registration to refine yet", lambda: logic.refine_in_box(box))
    fails("^Undo: there is no step to undo", logic.undo)
    fails("^Redo: there is no undone step", logic.redo)
    fails("^Show step: there is no step 1; the history has 0", lambda: logic.show_step(0))
    fails("^RSO export: ", lambda: logic.export("unused-folder"), "nothing to export")
    fails("^Place box: the box size must be positive", lambda: logic.place_box(centre, 0.0))
    fails("^General model registration: weights", lambda: logic.register_general({"weights": "no_such_network"}))

    logic.register_general()
    far = logic.place_box(centre + [500.0, 0.0, 0.0], name="far box")
    flat = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "flat box")
    flat.SetCenter(*centre)
    flat.SetSize(10.0, 0.0, 10.0)
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "points")
    fails("^ROI 'far box'", lambda: logic.refine_in_box(far), "entirely outside", "RAS mm", "fixed image covers")
    fails("^ROI.*'flat box'", lambda: logic.refine_in_box(flat), "zero size")
    fails("^ROI.*'points'", lambda: logic.refine_in_box(points), "not a markups ROI")
    fails("^ROI: no box was selected", lambda: logic.refine_in_box(None))
    fails("^Place box: 'points' is a vtkMRMLMarkupsFiducialNode", lambda: logic.place_box(centre, node=points))
    fails("^ISO refinement: ", lambda: logic.refine_whole_image({"bogus": 1}), "bogus")
    fails("^RSO refinement: learning rate", lambda: logic.refine_in_box(box, {"learning_rate": 0.0}))
    fails("^Show step: there is no step 3; the history has 1", lambda: logic.show_step(2))
    fails("^Redo: there is no undone step", logic.redo)
    assert [r["step"] for r in logic.history_rows()] == ["general"]


def test_place_box_reuses_its_node_and_centres_it_in_world_coordinates(scene):
    logic = RSORefineLogic(scene)
    box = logic.place_box([10.0, -20.0, 30.0], 25.0)
    assert box.GetDisplayNode() is not None and box.GetDisplayNode().GetHandlesInteractive()
    shift = bridge.transform_node_from_engine(AffineTransform.from_translation([5.0, 0.0, 0.0]), scene, "shift")
    box.SetAndObserveTransformNodeID(shift.GetID())
    count = scene.GetNumberOfNodes()
    assert logic.place_box([1.0, 2.0, 3.0], node=box) is box and scene.GetNumberOfNodes() == count
    engine_box = bridge.box_from_roi(box)  # world: the parent transform included
    np.testing.assert_allclose(bridge.ras_from_lps(engine_box.center), [1.0, 2.0, 3.0], atol=1e-9)
    np.testing.assert_allclose(engine_box.size, [40.0, 40.0, 40.0], atol=1e-9)
    np.testing.assert_allclose(engine_box.axes, np.diag([-1.0, -1.0, 1.0]), atol=1e-12)  # the RAS axes, in LPS
