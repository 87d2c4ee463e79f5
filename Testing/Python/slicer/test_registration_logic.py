"""The shared registration logic (SINR Registration module) on a real slicer-core scene: the shared scenarios (also
run by the module's Slicer self-test), the initial transform, inputs left alone, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from MMRegistrationLib.spatial import AffineTransform
from MMRegistrationSlicerLib import bridge, scenarios
from MMRegistrationSlicerLib.registration_logic import RegistrationLogic, readable_engine_error

slicer = pytest.importorskip("slicer")

QUICK = dict(options={"preset": "fast", "iterations": 10}, device="cpu", propagate_segmentation=False,
             make_table=False)


def test_scenario_sinr_registers_sample_case(scene):
    scenarios.sinr_registers_sample_case(scene)


def test_scenario_registration_reruns_into_the_same_nodes(scene):
    scenarios.registration_reruns_into_the_same_nodes(scene)


def test_scenario_registration_cancel_leaves_the_scene_unchanged(scene):
    scenarios.registration_cancel_leaves_the_scene_unchanged(scene)


@pytest.fixture
def case(scene):
    return scenarios.load_sample_case(scene)


def _inputs(case):
    return case["fixed"], case["moving"], case["fixed_seg"], case["moving_seg"]


def test_initial_transform_is_the_start_and_inputs_are_left_alone(scene, case):
    start = AffineTransform.from_translation([2.0, -1.0, 3.0])
    initial = bridge.transform_node_from_engine(start, scene, "manual alignment")
    case["moving"].SetAndObserveTransformNodeID(initial.GetID())  # ignored: the moving volume is read locally
    arrays = {name: slicer.util.arrayFromVolume(case[name]).copy() for name in ("fixed", "moving")}
    segments = {name: dict(bridge.segment_names(case[name])) for name in ("fixed_seg", "moving_seg")}
    outcome = RegistrationLogic(scene, "sinr").process(*_inputs(case), initial_transform=initial,
                                                       apply_to_moving=False, **QUICK)
    assert outcome.record["init"] == "none"
    np.testing.assert_allclose(outcome.record["initial_matrix"], start.matrix, atol=1e-9)
    assert outcome.record["segment_mapping"]["prostate"] == "prostate"
    for name, array in arrays.items():
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(case[name]), array)
    for name, names in segments.items():
        assert bridge.segment_names(case[name]) == names
    assert case["moving"].GetTransformNodeID() == initial.GetID()  # apply_to_moving=False: untouched
    assert case["moving_seg"].GetTransformNodeID() is None
    assert outcome.segmentation is None and outcome.table is None and outcome.transform is not None


def test_an_explicit_mapping_can_leave_segments_out_and_puts_the_prostate_first(scene, case):
    fixed_ids = {name: sid for sid, name in bridge.segment_names(case["fixed_seg"]).items()}
    moving_ids = {name: sid for sid, name in bridge.segment_names(case["moving_seg"]).items()}
    mapping = {fixed_ids[n]: moving_ids[n] for n in ("rectum", "prostate")}
    logic = RegistrationLogic(scene, "sinr")
    assert list(logic.segment_mapping(case["fixed_seg"], case["moving_seg"], mapping)) == [
        fixed_ids["prostate"], fixed_ids["rectum"]]
    outcome = logic.process(*_inputs(case), segment_mapping=mapping, init="com", **QUICK)
    assert [r["name"] for r in outcome.after.rows] == ["prostate", "rectum"]


def test_bad_input_is_a_clear_value_error_and_adds_no_node(scene, case):
    logic = RegistrationLogic(scene, "sinr")
    fixed, moving, fixed_seg, moving_seg = _inputs(case)
    identity = bridge.transform_node_from_engine(AffineTransform.identity(), scene, "identity")
    far = bridge.transform_node_from_engine(AffineTransform.from_translation([300.0, 0.0, 0.0]), scene, "far")
    count = scene.GetNumberOfNodes()

    def fails(match, *args, **kwargs):
        with pytest.raises(ValueError, match=match) as err:
            logic.process(*args, **{**QUICK, **kwargs})
        assert "--" not in str(err.value), err.value  # no CLI argument names in the module's messages
        assert scene.GetNumberOfNodes() == count, (str(err.value), count, scene.GetNumberOfNodes())
        return str(err.value)

    fails("fixed volume: no volume", None, moving, fixed_seg, moving_seg)
    fails("moving volume: no volume", fixed, None, fixed_seg, moving_seg)
    fails("must not be the same", fixed, fixed, fixed_seg, moving_seg)
    fails("needs a segmentation of each volume", fixed, moving)
    fails("moving segmentation: none was selected", fixed, moving, fixed_seg, None)
    fails("fixed segmentation: none was selected", fixed, moving, None, moving_seg)
    fails("segmentation must not be the same", fixed, moving, fixed_seg, fixed_seg)
    fails("landmarks", fixed, moving, fixed_seg, moving_seg, fixed_landmarks=case["fixed_landmarks"])
    fails("is an input", fixed, moving, fixed_seg, moving_seg, warped_volume=moving)
    fails("unknown segment IDs", fixed, moving, fixed_seg, moving_seg, segment_mapping={"nope": "nada"})
    fails("non-linear", fixed, moving, fixed_seg, moving_seg, initial_transform=case["ground_truth"])
    fails("preset", fixed, moving, fixed_seg, moving_seg, options={"preset": "slowest"})
    fails("bogus", fixed, moving, fixed_seg, moving_seg, options={"bogus": 1})
    fails("'com'", fixed, moving, fixed_seg, moving_seg, init="com", initial_transform=identity)
    message = fails("do not overlap", fixed, moving, fixed_seg, moving_seg, initial_transform=far)
    assert message.startswith("SINR registration: initialization:"), message

    segmentation = moving_seg.GetSegmentation()
    bladder = next(sid for sid, name in bridge.segment_names(moving_seg).items() if name == "bladder")
    segmentation.GetSegment(bladder).SetName("Blase")
    message = fails("do not correspond by name", fixed, moving, fixed_seg, moving_seg)
    assert "Blase" in message and "bladder" in message, message
    segmentation.GetSegment(bladder).SetName("bladder")
    for node in (fixed_seg, moving_seg):
        node.GetSegmentation().AddEmptySegment("", "lesion", [1.0, 0.0, 0.0])
    fails("empty", fixed, moving, fixed_seg, moving_seg)

    with pytest.raises(ValueError, match="unknown method"):
        RegistrationLogic(scene, "no-such-method")


def test_engine_messages_use_the_modules_words():
    from MMRegistrationLib.core.errors import InputError

    error = InputError("--init", "the masks do not overlap after initialisation; use --init com (centre of mass)")
    assert readable_engine_error(error, "SINR") == (
        "SINR registration: initialization: the masks do not overlap after initialisation; use initialization "
        "'com' (centre of mass)")
    assert readable_engine_error(InputError("--fixed-seg", "empty"), "SINR") == "SINR registration: fixed segmentation: empty"
    assert readable_engine_error(InputError("--learning-rate", "bad"), "X") == "X registration: learning rate: bad"
