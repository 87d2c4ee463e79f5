"""The fixed -> moving segment mapping tables of the modules on real segmentation nodes: defaults by name, choices
kept when segments are added, removed or renamed, stale IDs dropped, an all-"not used" table is an error (never
silent name matching), and Registration Evaluation's Apply (disabled while it runs, its table made only on success).
Qt is replaced by the stand-ins of ``gui_stubs.py``."""

from __future__ import annotations

import pytest

from MMRegistrationSlicerLib import scenarios
from MMRegistrationSlicerLib.segment_mapping_table import (
    NOT_USED,
    mapping_from_choices,
    mapping_rows,
)
from MMRegistrationSlicerLib.segments import normalise_segment_name, segment_names

slicer = pytest.importorskip("slicer")


def _ids(node) -> dict:
    return {name: sid for sid, name in segment_names(node).items()}


def test_names_are_matched_by_the_engines_rule():
    from MMRegistrationLib.io.segmentations import normalise_segment_name as engine_rule

    for name in ("Prostate", "  seminal   Vesicles ", "RECTUM\t", "bladder neck", ""):
        assert normalise_segment_name(name) == engine_rule(name), name


def test_rows_default_to_name_matching_and_keep_valid_choices(scene, gui_stubs):
    fixed = gui_stubs.segmentation(scene, "fixed", ["Prostate", "Bladder", "Urethra"])
    moving = gui_stubs.segmentation(scene, "moving", ["prostate", " BLADDER", "rectum"])
    f, m = _ids(fixed), _ids(moving)
    rows, moving_names = mapping_rows(fixed, moving)
    assert [(name, choice) for _, name, choice in rows] == [
        ("Prostate", m["prostate"]), ("Bladder", m[" BLADDER"]), ("Urethra", NOT_USED)]
    assert list(moving_names.values()) == ["prostate", " BLADDER", "rectum"]
    # the user's choices survive a refresh; a choice of a removed moving segment (stale ID) falls back to the default
    previous = {f["Prostate"]: m["prostate"], f["Bladder"]: NOT_USED, f["Urethra"]: m["rectum"]}
    moving.GetSegmentation().RemoveSegment(m["rectum"])
    rows, _ = mapping_rows(fixed, moving, previous)
    assert [choice for _, _, choice in rows] == [m["prostate"], NOT_USED, NOT_USED]


def test_all_not_used_is_an_error_and_no_rows_is_name_matching():
    assert mapping_from_choices({}) is None
    assert mapping_from_choices({"a": "x", "b": NOT_USED}) == {"a": "x"}
    with pytest.raises(ValueError, match="every fixed segment is set to 'not used'"):
        mapping_from_choices({"a": NOT_USED, "b": NOT_USED})


def _mapping_widget(gui, module: str):
    loaded = gui.stubs.load_module_file(module)
    widget = getattr(loaded, f"{module}Widget")()
    widget.ui = gui.stubs.fake_ui(module)
    widget.setupSegmentMapping()
    return widget


@pytest.mark.parametrize("module", ["SINRRegistration", "RSORefine", "RegistrationEvaluation"])
def test_table_follows_segments_added_removed_and_renamed(gui, module):
    fixed = gui.stubs.segmentation(gui.scene, "fixed", ["Prostate", "Bladder"])
    moving = gui.stubs.segmentation(gui.scene, "moving", ["prostate", "bladder", "rectum"])
    widget = _mapping_widget(gui, module)
    table, unused = widget.ui.mappingTable, widget._mappingUnusedText
    widget.ui.fixedSegmentationSelector.setCurrentNode(fixed)
    widget.ui.movingSegmentationSelector.setCurrentNode(moving)
    assert table.shown() == [("Prostate", "prostate"), ("Bladder", "bladder")]
    table.cellWidget(1, 1).choose("rectum")  # the user maps Bladder -> rectum
    fixed.GetSegmentation().AddEmptySegment("", "Rectum")  # added: a new row, the user's choice stays
    assert table.shown() == [("Prostate", "prostate"), ("Bladder", "rectum"), ("Rectum", "rectum")]
    fixed.GetSegmentation().GetSegment(_ids(fixed)["Prostate"]).SetName("Gland")  # renamed: same ID, same choice
    assert table.shown()[0] == ("Gland", "prostate")
    moving.GetSegmentation().RemoveSegment(_ids(moving)["rectum"])  # removed: its ID is dropped everywhere
    assert table.shown() == [("Gland", "prostate"), ("Bladder", "bladder"), ("Rectum", unused)]
    assert "rectum" not in [text for text, _ in table.cellWidget(0, 1).items]
    assert widget.segmentMapping() == {_ids(fixed)["Gland"]: _ids(moving)["prostate"],
                                       _ids(fixed)["Bladder"]: _ids(moving)["bladder"]}
    other = gui.stubs.segmentation(gui.scene, "other", ["Prostate", "Bladder"])
    table.cellWidget(1, 1).choose(unused)
    widget.ui.fixedSegmentationSelector.setCurrentNode(other)  # another node: name matching again, not the choices
    assert table.shown() == [("Prostate", "prostate"), ("Bladder", "bladder")]
    fixed.GetSegmentation().AddEmptySegment("", "Urethra")  # the old node is no longer followed
    assert table.shown() == [("Prostate", "prostate"), ("Bladder", "bladder")]


def test_segment_mapping_refuses_an_all_not_used_table(gui):
    fixed = gui.stubs.segmentation(gui.scene, "fixed", ["Prostate"])
    moving = gui.stubs.segmentation(gui.scene, "moving", ["prostate"])
    widget = _mapping_widget(gui, "SINRRegistration")
    widget.ui.fixedSegmentationSelector.setCurrentNode(fixed)
    widget.ui.movingSegmentationSelector.setCurrentNode(moving)
    widget.ui.mappingTable.cellWidget(0, 1).choose("(not used)")
    with pytest.raises(ValueError, match="not used"):
        widget.segmentMapping()


def _table_nodes(scene) -> int:
    return scene.GetNumberOfNodesByClass("vtkMRMLTableNode")


def _evaluation_widget(gui, nodes):
    from types import SimpleNamespace

    loaded = gui.stubs.load_module_file("RegistrationEvaluation")
    widget = _mapping_widget(gui, "RegistrationEvaluation")
    widget.logic = loaded.RegistrationEvaluationLogic()
    widget._parameterNode = SimpleNamespace(
        fixedSegmentation=nodes["fixed_seg"], movingSegmentation=nodes["moving_seg"], transform=nodes["ground_truth"],
        fixedLandmarks=None, movingLandmarks=None, outputTable=None, jacobianVolume=None)
    widget.ui.fixedSegmentationSelector.setCurrentNode(nodes["fixed_seg"])
    widget.ui.movingSegmentationSelector.setCurrentNode(nodes["moving_seg"])
    return widget


def test_evaluation_apply_is_disabled_while_running_and_makes_its_table_only_on_success(gui):
    nodes = scenarios.load_sample_case(gui.scene)
    widget = _evaluation_widget(gui, nodes)
    widget._checkCanApply()
    assert widget.ui.applyButton.enabled
    states = []
    gui.app.on_process_events = lambda: states.append(widget.ui.applyButton.enabled)
    for row in range(widget.ui.mappingTable.rowCount):  # every row "not evaluated": an error, no table, no nodes
        widget.ui.mappingTable.cellWidget(row, 1).choose("(not evaluated)")
    before = gui.scene.GetNumberOfNodes()
    widget.onApplyButton()
    assert len(gui.errors) == 1 and "not used" in gui.errors[0], gui.errors
    assert gui.scene.GetNumberOfNodes() == before and widget._parameterNode.outputTable is None
    assert widget.ui.applyButton.enabled  # enabled again after the failure
    widget.updateMapping()  # back to name matching
    widget.onApplyButton()
    assert len(gui.errors) == 1, gui.errors
    assert states and not any(states), "Apply was enabled while the evaluation ran"
    assert _table_nodes(gui.scene) == 1 and widget._parameterNode.outputTable is widget.logic.table
    assert widget.ui.applyButton.enabled and widget.ui.saveReportButton.enabled


def test_evaluation_logic_refuses_an_empty_mapping_and_a_failure_adds_no_table(scene):
    from MMRegistrationLib.core.errors import Cancelled
    from MMRegistrationSlicerLib.evaluation_logic import RegistrationEvaluationLogic

    nodes = scenarios.load_sample_case(scene)
    logic = RegistrationEvaluationLogic(scene)
    before = scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="no fixed segment is mapped"):
        logic.process(nodes["fixed_seg"], nodes["moving_seg"], segment_mapping={})
    with pytest.raises(Cancelled):
        logic.process(nodes["fixed_seg"], nodes["moving_seg"], cancel=lambda: True)
    assert scene.GetNumberOfNodes() == before and logic.table is None
