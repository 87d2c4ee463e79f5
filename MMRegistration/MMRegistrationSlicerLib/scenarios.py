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


# ---- registration (SINR Registration module) ----------------------------------------------------------------
def _map_through_node(node, points_lps: np.ndarray) -> np.ndarray:
    """Points (N, 3) LPS mapped by a transform node's FromParent mapping, through VTK (what Slicer applies)."""
    transform = node.GetTransformFromParent()
    return np.array([transform.TransformPoint(*(p @ bridge.FLIP3)) for p in points_lps]) @ bridge.FLIP3


def _gland_points(scene, segmentation, step: int = 40) -> np.ndarray:
    """Every ``step``-th voxel centre of the segment named 'prostate' (LPS mm)."""
    prostate = next(sid for sid, name in bridge.segment_names(segmentation).items() if name == "prostate")
    labels, _ = bridge.labelmap_from_segmentation(segmentation, scene, [prostate])
    return labels.grid.world_points()[labels.array == 1][::step]


def sinr_registers_sample_case(scene, case_dir: Optional[Path] = None, options: Optional[dict] = None) -> dict:
    """SINR (fast preset) on the sample case through the shared registration logic: prostate DSC and landmark TRE
    improve to DSC > 0.9 and TRE < 2 mm; the grid transform node maps points as the engine result does (RAS/LPS);
    the moving volume and segmentation are under it; the inverse node undoes it within 0.5 mm in the gland; the
    propagated segmentation, warped volume and metrics table exist. Returns the nodes and the outcome."""
    from MMRegistrationSlicerLib.evaluation_logic import table_as_dict
    from MMRegistrationSlicerLib.registration_logic import RegistrationLogic

    nodes = load_sample_case(scene, case_dir)
    outcome = RegistrationLogic(scene, "sinr").process(
        nodes["fixed"], nodes["moving"], nodes["fixed_seg"], nodes["moving_seg"],
        fixed_landmarks=nodes["fixed_landmarks"], moving_landmarks=nodes["moving_landmarks"],
        options=dict(options or {"preset": "fast"}), device="cpu", make_inverse=True, make_warped_volume=True,
    )
    before = next(r for r in outcome.before.rows if r["name"] == "prostate")
    after = next(r for r in outcome.after.rows if r["name"] == "prostate")
    assert after["dice"] > max(before["dice"], 0.9), (before, after)
    assert outcome.after.tre["tre_mean_mm"] < min(outcome.before.tre["tre_mean_mm"], 2.0), (outcome.before.tre,
                                                                                          outcome.after.tre)
    assert outcome.after.jacobian["folding_fraction"] == 0.0, outcome.after.jacobian
    forward = outcome.transform
    assert forward.IsA("vtkMRMLTransformNode") and not forward.IsLinear()
    assert forward.GetNodeReferenceID(bridge.FIXED_ROLE) == nodes["fixed"].GetID()
    assert forward.GetNodeReferenceID(bridge.MOVING_ROLE) == nodes["moving"].GetID()
    for name in ("moving", "moving_seg"):
        assert nodes[name].GetTransformNodeID() == forward.GetID(), name
    for name in ("fixed", "fixed_seg"):
        assert nodes[name].GetTransformNodeID() is None, name
    points = _gland_points(scene, nodes["fixed_seg"])
    through_node = _map_through_node(forward, points)
    engine = outcome.result.transform.map_points_np(points)
    assert np.abs(through_node - engine).max() < 0.05, np.abs(through_node - engine).max()
    assert np.linalg.norm(engine - points, axis=1).max() > 1.0  # the check above is not trivially true
    back = _map_through_node(outcome.inverse_transform, through_node)
    assert np.linalg.norm(back - points, axis=1).max() < 0.5, np.linalg.norm(back - points, axis=1).max()
    moving_names = list(bridge.segment_names(nodes["moving_seg"]).values())
    assert list(bridge.segment_names(outcome.segmentation).values()) == moving_names
    propagated = outcome.segmentation.GetSegmentation()
    original = nodes["moving_seg"].GetSegmentation()
    assert all(np.allclose(propagated.GetNthSegment(n).GetColor(), original.GetNthSegment(n).GetColor())
               for n in range(len(moving_names)))
    warped = bridge.image_from_volume(outcome.warped_volume)
    assert warped.grid.same_as(bridge.image_from_volume(nodes["fixed"]).grid) and warped.array.max() > 0
    assert abs(table_as_dict(outcome.table)["prostate"]["DSC"] - after["dice"]) < 1e-12
    return {"nodes": nodes, "outcome": outcome}


def registration_reruns_into_the_same_nodes(scene, case_dir: Optional[Path] = None) -> None:
    """A second run with the first run's output nodes fills those nodes again (the moving volume is under the
    first result meanwhile) and adds none; with the same seed it gives the same transform."""
    from MMRegistrationSlicerLib.registration_logic import RegistrationLogic

    nodes = load_sample_case(scene, case_dir)
    logic = RegistrationLogic(scene, "sinr")
    inputs = (nodes["fixed"], nodes["moving"], nodes["fixed_seg"], nodes["moving_seg"])
    quick = dict(init="com", options={"preset": "fast", "iterations": 30}, device="cpu", seed=3)
    first = logic.process(*inputs, make_inverse=True, **quick)
    points = _gland_points(scene, nodes["fixed_seg"], step=200)
    mapped_first = _map_through_node(first.transform, points)
    count = scene.GetNumberOfNodes()
    second = logic.process(*inputs, output_transform=first.transform, inverse_transform=first.inverse_transform,
                           propagated_segmentation=first.segmentation, table=first.table, **quick)
    assert scene.GetNumberOfNodes() == count, (count, scene.GetNumberOfNodes())
    for name in ("transform", "inverse_transform", "segmentation", "table"):
        assert getattr(second, name).GetID() == getattr(first, name).GetID(), name
    assert nodes["moving"].GetTransformNodeID() == second.transform.GetID()
    assert np.abs(_map_through_node(second.transform, points) - mapped_first).max() < 1e-6


def registration_cancel_leaves_the_scene_unchanged(scene, case_dir: Optional[Path] = None) -> None:
    """Cancelling at the first progress report stops the run with ``Cancelled``, adds no node and leaves the
    moving volume where it was."""
    from MMRegistrationLib.core.errors import Cancelled
    from MMRegistrationSlicerLib.registration_logic import RegistrationLogic

    nodes = load_sample_case(scene, case_dir)
    count = scene.GetNumberOfNodes()
    reports = []
    try:
        RegistrationLogic(scene, "sinr").process(
            nodes["fixed"], nodes["moving"], nodes["fixed_seg"], nodes["moving_seg"], device="cpu",
            make_inverse=True, make_warped_volume=True,
            progress=lambda fraction, message: reports.append(fraction), cancel=lambda: bool(reports),
        )
    except Cancelled:
        pass
    else:
        raise AssertionError("the cancelled run finished")
    assert len(reports) == 1, reports
    assert scene.GetNumberOfNodes() == count, (count, scene.GetNumberOfNodes())
    assert nodes["moving"].GetTransformNodeID() is None and nodes["moving_seg"].GetTransformNodeID() is None
