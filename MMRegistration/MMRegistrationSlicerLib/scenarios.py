"""End-to-end scenarios on a real MRML scene, shared by the pytest suite (slicer-core) and the modules'
Slicer self-tests (``ScriptedLoadableModuleTest``), so both run the same checks. Each raises AssertionError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from MMRegistrationSlicerLib import bridge


def load_sample_case(scene, case_dir: Optional[Path] = None) -> dict:
    """The bundled sample case as MRML nodes: volumes, segmentations (named segments), fiducials, and the
    ground-truth fixed -> moving transform as a grid transform node."""
    import json

    from MMRegistrationLib.io.images import read_image
    from MMRegistrationLib.io.landmarks import read_landmarks
    from MMRegistrationLib.io.transforms import read_transform
    from MMRegistrationLib.resources import sample_case_paths

    paths = sample_case_paths(case_dir)
    names = {int(k): v for k, v in json.loads(paths["case"].read_text(encoding="utf-8"))["labels"].items()}
    nodes = {
        "fixed": bridge.volume_from_image(read_image(paths["fixed"]), scene, "TRUS"),
        "moving": bridge.volume_from_image(read_image(paths["moving"]), scene, "MR"),
        "fixed_seg": bridge.segmentation_from_labelmap(read_image(paths["fixed_seg"]), names, scene, "TRUS segmentation"),
        "moving_seg": bridge.segmentation_from_labelmap(read_image(paths["moving_seg"]), names, scene, "MR segmentation"),
        "fixed_landmarks": bridge.markups_from_landmarks(read_landmarks(paths["fixed_landmarks"]), scene, "TRUS landmarks"),
        "moving_landmarks": bridge.markups_from_landmarks(read_landmarks(paths["moving_landmarks"]), scene, "MR landmarks"),
    }
    nodes["ground_truth"] = bridge.transform_node_from_engine(
        read_transform(paths["ground_truth"]), scene, "ground truth", fixed_node=nodes["fixed"], moving_node=nodes["moving"]
    )
    nodes["paths"] = paths
    return nodes


def evaluation_improves_with_ground_truth(scene, case_dir: Optional[Path] = None) -> dict:
    """Evaluate the sample case without and with its ground-truth transform; the truth must give prostate DSC
    close to 1 and landmark TRE close to 0, and be much better than no transform. Returns both evaluations."""
    from MMRegistrationSlicerLib.evaluation_logic import RegistrationEvaluationLogic, table_as_dict

    nodes = load_sample_case(scene, case_dir)
    logic = RegistrationEvaluationLogic(scene)
    kwargs = dict(fixed_landmarks=nodes["fixed_landmarks"], moving_landmarks=nodes["moving_landmarks"])
    before = logic.process(nodes["fixed_seg"], nodes["moving_seg"], **kwargs)
    jacobian = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Jacobian")
    after = logic.process(nodes["fixed_seg"], nodes["moving_seg"], transform=nodes["ground_truth"],
                          jacobian_volume=jacobian, **kwargs)
    table = table_as_dict(logic.table)
    prostate = next(r for r in after.rows if r["name"] == "prostate")
    prostate_before = next(r for r in before.rows if r["name"] == "prostate")
    assert prostate["dice"] > 0.95, prostate
    assert prostate["dice"] > prostate_before["dice"] + 0.1, (prostate_before, prostate)
    assert prostate["msd_mm"] < 0.6 < prostate_before["msd_mm"], (prostate_before, prostate)
    assert after.tre["tre_max_mm"] < 0.05 < before.tre["tre_mean_mm"], (before.tre, after.tre)
    assert abs(table["prostate"]["DSC"] - prostate["dice"]) < 1e-12
    assert jacobian.GetImageData() is not None and after.jacobian["folding_fraction"] == 0.0
    return {"before": before, "after": after, "nodes": nodes, "table": table}


def evaluation_follows_the_moving_parent_transform(scene, case_dir: Optional[Path] = None) -> None:
    """With no transform chosen, the moving segmentation's own parent transform is evaluated (what the user
    sees): the same numbers as passing that transform explicitly."""
    from MMRegistrationSlicerLib.evaluation_logic import RegistrationEvaluationLogic

    nodes = load_sample_case(scene, case_dir)
    logic = RegistrationEvaluationLogic(scene)
    explicit = logic.process(nodes["fixed_seg"], nodes["moving_seg"], transform=nodes["ground_truth"])
    nodes["moving_seg"].SetAndObserveTransformNodeID(nodes["ground_truth"].GetID())
    implicit = logic.process(nodes["fixed_seg"], nodes["moving_seg"])
    for a, b in zip(explicit.rows, implicit.rows):
        assert a["name"] == b["name"] and np.isclose(a["dice"], b["dice"]) and np.isclose(a["msd_mm"], b["msd_mm"]), (a, b)
