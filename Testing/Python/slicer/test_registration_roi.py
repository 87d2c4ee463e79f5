"""The registration logic's ROI input: a markups ROI node (orientation and parent transform included) reaches a
method that uses a region as ``inputs.region`` (LPS mm) and is recorded; a bad ROI, or an ROI for a method that does
not use one, is a ValueError naming the ROI, with no node added. The method is a test-only one."""

from __future__ import annotations

import numpy as np
import pytest
import vtk

from MMRegistrationLib.spatial import AffineTransform
from MMRegistrationSlicerLib import bridge, scenarios
from MMRegistrationSlicerLib.registration_logic import RegistrationLogic

slicer = pytest.importorskip("slicer")

QUICK = dict(device="cpu", propagate_segmentation=False, make_table=False, apply_to_moving=False)


@pytest.fixture
def case(scene):
    return scenarios.load_sample_case(scene)


def _fixed_centre_ras(node) -> np.ndarray:
    bounds = np.zeros(6)
    node.GetRASBounds(bounds)
    return (bounds[0::2] + bounds[1::2]) / 2


def _roi(scene, center_ras, size, angle_deg=0.0, name="prostate box"):
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    rotation = vtk.vtkTransform()
    rotation.RotateWXYZ(angle_deg, 0.3, -0.2, 0.9)
    roi.SetAndObserveObjectToNodeMatrix(rotation.GetMatrix())  # orientation before centre (notes)
    roi.SetCenter(*center_ras)
    roi.SetSize(*size)
    return roi


def test_the_logic_passes_an_roi_node_through_with_its_parent_transform(scene, case, region_method):
    centre = _fixed_centre_ras(case["fixed"])
    roi = _roi(scene, centre - [4.0, 0.0, 0.0], (30.0, 25.0, 20.0), angle_deg=35.0)
    parent = bridge.transform_node_from_engine(AffineTransform.from_translation([3.0, -2.0, 1.0]), scene, "shift")
    roi.SetAndObserveTransformNodeID(parent.GetID())
    expected = bridge.box_from_roi(roi)  # world: orientation and parent transform included
    world_centre = np.zeros(3)
    roi.GetCenterWorld(world_centre)
    assert np.abs(world_centre - (centre - [4.0, 0.0, 0.0])).max() > 1.0  # the parent transform moved it
    outcome = RegistrationLogic(scene, "roi-test").process(case["fixed"], case["moving"], roi=roi, **QUICK)
    (box,) = region_method
    np.testing.assert_allclose(box.center, expected.center, atol=1e-9)
    np.testing.assert_allclose(box.axes, expected.axes, atol=1e-9)
    np.testing.assert_allclose(box.half_size, expected.half_size, atol=1e-9)
    np.testing.assert_allclose(box.center, world_centre * [-1, -1, 1], atol=1e-9)
    np.testing.assert_allclose(outcome.record["region"]["center"], box.center, atol=1e-12)
    np.testing.assert_allclose(outcome.record["region"]["size"], [30.0, 25.0, 20.0], atol=1e-9)
    assert outcome.transform is not None
    assert roi.GetTransformNodeID() == parent.GetID()  # the ROI is left alone
    # without an ROI the method gets none
    RegistrationLogic(scene, "roi-test").process(case["fixed"], case["moving"], **QUICK)
    assert region_method[-1] is None


def test_a_bad_roi_is_a_value_error_naming_it_and_adds_no_node(scene, case, region_method):
    fixed, moving = case["fixed"], case["moving"]
    centre = _fixed_centre_ras(fixed)
    far = _roi(scene, centre + [500.0, 0.0, 0.0], (10.0, 10.0, 10.0), name="far box")
    flat = _roi(scene, centre, (10.0, 0.0, 10.0), name="flat box")
    good = _roi(scene, centre, (20.0, 20.0, 20.0), name="good box")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "points")
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "bent")
    count = scene.GetNumberOfNodes()

    def fails(method, roi, *words):
        with pytest.raises(ValueError) as err:
            RegistrationLogic(scene, method).process(fixed, moving, roi=roi, **QUICK)
        message = str(err.value)
        assert message.startswith("ROI"), message
        for word in words:
            assert word in message, (word, message)
        assert "--" not in message, message  # no CLI argument names in the module's messages
        assert scene.GetNumberOfNodes() == count
        return message

    fails("roi-test", far, "'far box'", "entirely outside", "RAS mm", "fixed image covers")
    fails("roi-test", flat, "'flat box'", "zero size")
    fails("roi-test", points, "'points'", "not a markups ROI")
    bent = _roi(scene, centre, (20.0, 20.0, 20.0), name="bent box")
    bent.SetAndObserveTransformNodeID(grid.GetID())
    count = scene.GetNumberOfNodes()
    fails("roi-test", bent, "'bent box'", "non-linear")
    message = fails("none", good, "'good box'", "does not use a region", "roi-test")
    assert region_method == [], message
