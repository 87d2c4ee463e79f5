"""The Registration Evaluation logic on a real slicer-core scene: the shared scenarios (also run by the Slicer
self-test), numbers equal to `mmreg evaluate` on the same files, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from MMRegistrationLib.cli.main import main
from MMRegistrationSlicerLib import scenarios
from MMRegistrationSlicerLib.evaluation_logic import RegistrationEvaluationLogic, match_segments_by_name

slicer = pytest.importorskip("slicer")


def test_scenario_evaluation_improves_with_ground_truth(scene):
    scenarios.evaluation_improves_with_ground_truth(scene)


def test_scenario_evaluation_follows_the_moving_parent_transform(scene):
    scenarios.evaluation_follows_the_moving_parent_transform(scene)


def test_logic_gives_the_same_numbers_as_the_cli(scene, tmp_path):
    nodes = scenarios.load_sample_case(scene)
    paths = nodes["paths"]
    logic = RegistrationEvaluationLogic(scene)
    ev = logic.process(nodes["fixed_seg"], nodes["moving_seg"], transform=nodes["ground_truth"],
                       fixed_landmarks=nodes["fixed_landmarks"], moving_landmarks=nodes["moving_landmarks"])
    out = tmp_path / "report.json"
    assert main(["evaluate", "--fixed-seg", str(paths["fixed_seg"]), "--moving-seg", str(paths["moving_seg"]),
                 "--transform", str(paths["ground_truth"]), "--fixed-landmarks", str(paths["fixed_landmarks"]),
                 "--moving-landmarks", str(paths["moving_landmarks"]), "--out", str(out)]) == 0
    cli = json.loads(out.read_text(encoding="utf-8"))
    cli_rows = {str(r["label"]): r for r in cli["labels"]}
    for row in ev.rows:
        other = cli_rows[str(row["label"])]
        # the scene's segmentation is cropped to the segments' extent and the grid transform is sampled through
        # VTK: overlap and distances agree to a fraction of a voxel
        assert row["dice"] == pytest.approx(other["dice"], abs=0.01), (row, other)
        assert row["msd_mm"] == pytest.approx(other["msd_mm"], abs=0.1), (row, other)
    # the non-linear node is re-sampled on the fixed grid (interpolating an interpolated field): micrometres
    assert ev.tre["tre_mean_mm"] == pytest.approx(cli["tre"]["tre_mean_mm"], abs=5e-3)


def test_report_files(scene, tmp_path):
    nodes = scenarios.load_sample_case(scene)
    logic = RegistrationEvaluationLogic(scene)
    ev = logic.process(nodes["fixed_seg"], nodes["moving_seg"], transform=nodes["ground_truth"])
    paths = logic.save_report(ev, tmp_path / "report")
    assert {"csv", "json", "png"} <= set(paths)
    assert all(p.stat().st_size > 0 for p in paths.values())


def test_bad_input_is_a_clear_value_error(scene):
    nodes = scenarios.load_sample_case(scene)
    logic = RegistrationEvaluationLogic(scene)
    with pytest.raises(ValueError, match="both required"):
        logic.process(nodes["fixed_seg"], None)
    with pytest.raises(ValueError, match="must not be the same"):
        logic.process(nodes["fixed_seg"], nodes["fixed_seg"])
    with pytest.raises(ValueError, match="landmarks"):
        logic.process(nodes["fixed_seg"], nodes["moving_seg"], fixed_landmarks=nodes["fixed_landmarks"])
    renamed = nodes["moving_seg"]
    for n in range(renamed.GetSegmentation().GetNumberOfSegments()):
        renamed.GetSegmentation().GetNthSegment(n).SetName(f"other {n}")
    assert match_segments_by_name(nodes["fixed_seg"], renamed) == {}
    with pytest.raises(ValueError, match="no segment name is shared"):
        logic.process(nodes["fixed_seg"], renamed)
    # an explicit mapping makes it work again
    fixed_ids = list(match_segments_by_name(nodes["fixed_seg"], nodes["fixed_seg"]))
    moving_ids = [renamed.GetSegmentation().GetNthSegmentID(n) for n in range(len(fixed_ids))]
    ev = logic.process(nodes["fixed_seg"], renamed, segment_mapping=dict(zip(fixed_ids, moving_ids)))
    assert len(ev.rows) == len(fixed_ids) and np.isfinite(ev.rows[0]["dice"])
