"""The MRML <-> engine bridge on a real slicer-core scene: geometry, segments, markups, ROIs, transforms, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import vtk

from analytic_case import TRUE
from conftest import covering_grid, oblique_grid, phantom_intensity, phantom_labels
from MMRegistrationLib.io.images import read_image
from MMRegistrationLib.io.landmarks import read_landmarks
from MMRegistrationLib.io.segmentations import read_segmentation
from MMRegistrationLib.io.transforms import read_transform
from MMRegistrationLib.metrics.overlap import dice_per_label
from MMRegistrationLib.spatial import AffineTransform, DisplacementField, compose
from MMRegistrationLib.spatial.resample import resample_labels
from MMRegistrationSlicerLib import bridge

slicer = pytest.importorskip("slicer")


def _save(scene, node, path, storage_class):
    storage = node.CreateDefaultStorageNode()
    assert storage.IsA(storage_class), storage.GetClassName()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.WriteData(node) == 1, path
    return path


@pytest.fixture
def oblique_image(rng):
    grid = oblique_grid(shape=(12, 14, 16), spacing=(0.7, 1.1, 2.5), origin=(-40.0, 25.0, 11.0))
    return phantom_intensity(phantom_labels(grid)).with_array(rng.normal(size=grid.shape).astype(np.float32))


def test_volume_round_trip_keeps_voxels_and_world_geometry(scene, oblique_image):
    node = bridge.volume_from_image(oblique_image, scene, "oblique")
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    ras = np.array([[ijk_to_ras.GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(ras, np.diag([-1, -1, 1, 1]) @ oblique_image.grid.affine, atol=1e-9)
    # a voxel centre: Slicer's IJK->RAS and the engine's index->LPS name the same physical point
    np.testing.assert_allclose((ras @ [3, 5, 7, 1])[:3] * [-1, -1, 1], oblique_image.grid.index_to_world([3, 5, 7]), atol=1e-9)
    back = bridge.image_from_volume(node)
    np.testing.assert_array_equal(back.array, oblique_image.array)
    np.testing.assert_allclose(back.grid.affine, oblique_image.grid.affine, atol=1e-9)


def test_volume_saved_by_slicer_reads_identically_in_the_engine(scene, oblique_image, tmp_path):
    node = bridge.volume_from_image(oblique_image, scene, "oblique")
    path = _save(scene, node, tmp_path / "vol.nrrd", "vtkMRMLVolumeArchetypeStorageNode")
    engine = read_image(path)
    np.testing.assert_allclose(engine.array, oblique_image.array)
    np.testing.assert_allclose(engine.grid.affine, oblique_image.grid.affine, atol=1e-6)


def test_linear_parent_transform_is_folded_into_the_geometry(scene, oblique_image):
    node = bridge.volume_from_image(oblique_image, scene, "oblique")
    shift = AffineTransform.from_translation([5.0, -3.0, 2.0])
    parent = bridge.transform_node_from_engine(shift.inverse(), scene, "shift")  # ToParent = shift
    node.SetAndObserveTransformNodeID(parent.GetID())
    moved = bridge.image_from_volume(node)
    np.testing.assert_allclose(moved.grid.origin, oblique_image.grid.origin + [5.0, -3.0, 2.0], atol=1e-9)


def test_segmentation_round_trip_and_seg_nrrd_names(scene, tmp_path):
    grid = oblique_grid(shape=(30, 34, 32), spacing=(1.5, 1.2, 2.0), origin=(-25.0, -30.0, -20.0))
    labels = phantom_labels(grid)
    names = {1: "Prostate", 2: "Bladder", 3: "Rectum"}
    seg_node = bridge.segmentation_from_labelmap(labels, names, scene, "anatomy")
    assert list(bridge.segment_names(seg_node).values()) == ["Prostate", "Bladder", "Rectum"]
    reference = bridge.volume_from_image(labels, scene, "reference", labelmap=True)
    back, back_names = bridge.labelmap_from_segmentation(seg_node, scene, reference_volume=reference)
    assert back_names == names
    np.testing.assert_array_equal(back.array, labels.array)
    np.testing.assert_allclose(back.grid.affine, labels.grid.affine, atol=1e-6)
    # segment subset and order decide the values
    ids = {n: sid for sid, n in bridge.segment_names(seg_node).items()}
    sub, sub_names = bridge.labelmap_from_segmentation(seg_node, scene, [ids["Rectum"], ids["Prostate"]], reference)
    assert sub_names == {1: "Rectum", 2: "Prostate"}
    assert np.array_equal(sub.array == 1, labels.array == 3) and np.array_equal(sub.array == 2, labels.array == 1)
    # the .seg.nrrd written by Slicer's storage node is read by the engine with the same names and masks
    path = _save(scene, seg_node, tmp_path / "anatomy.seg.nrrd", "vtkMRMLSegmentationStorageNode")
    seg = read_segmentation(path)
    by_name = {n: v for v, n in seg.names.items()}
    warped = resample_labels(seg.labelmap, labels.grid)
    for value, name in names.items():
        assert dice_per_label(labels.array == value, warped.array == by_name[name], [1])[1] > 0.99


def test_empty_or_missing_segments_are_clear_errors(scene):
    grid = covering_grid([5, 0, 15], 90, (2.0, 2.0, 2.0), (10, -5, 20))
    seg_node = bridge.segmentation_from_labelmap(phantom_labels(grid), {1: "Prostate", 2: "Bladder", 3: "Rectum"},
                                                 scene, "anatomy")
    assert seg_node.GetSegmentation().GetNumberOfSegments() == 3
    empty = slicer.vtkSegment()
    empty.SetName("Empty")
    empty.AddRepresentation("Binary labelmap", slicer.vtkOrientedImageData())
    seg_node.GetSegmentation().AddSegment(empty, "empty_one")
    with pytest.raises(ValueError, match=r"moving segmentation: segment\(s\) \['Empty'\].*empty"):
        bridge.labelmap_from_segmentation(seg_node, scene, argument="moving segmentation")
    with pytest.raises(ValueError, match="no segment with ID"):
        bridge.labelmap_from_segmentation(seg_node, scene, ["nope"])


def test_conversions_leave_no_temporary_node_behind(scene):
    """Exports and imports go through temporary labelmaps; their display and colour nodes are removed too."""
    grid = covering_grid([5, 0, 15], 90, (2.0, 2.0, 2.0), (10, -5, 20))
    labels = phantom_labels(grid)
    seg_node = bridge.segmentation_from_labelmap(labels, {1: "Prostate", 2: "Bladder", 3: "Rectum"}, scene, "anatomy")
    bridge.labelmap_from_segmentation(seg_node, scene)  # the first export may add singletons (subject hierarchy)
    count = scene.GetNumberOfNodes()
    for _ in range(2):
        bridge.labelmap_from_segmentation(seg_node, scene)
        bridge.segmentation_from_labelmap(labels, {1: "Prostate"}, scene, "again", node=seg_node)
    assert scene.GetNumberOfNodes() == count
    # one segment per mask, overlaps kept, names and colours set, an all-zero mask gives an empty segment
    masks = [("gland", (1.0, 0.0, 0.0), labels.with_array(labels.array == 1)),
             ("lesion", (0.0, 1.0, 0.0), labels.with_array((labels.array == 1) & (grid.world_points()[..., 2] > 15))),
             ("nothing", (0.0, 0.0, 1.0), labels.with_array(labels.array * 0))]
    node = bridge.segmentation_from_masks(masks, scene, "masks")
    assert scene.GetNumberOfNodes() == count + 2  # the segmentation and its display node
    assert list(bridge.segment_names(node).values()) == ["gland", "lesion", "nothing"]
    ids = list(bridge.segment_names(node))
    gland, _ = bridge.labelmap_from_segmentation(node, scene, ids[:1], reference_volume=None)
    lesion, _ = bridge.labelmap_from_segmentation(node, scene, ids[1:2])
    assert gland.array.sum() == (labels.array == 1).sum() and 0 < lesion.array.sum() < gland.array.sum()
    assert np.allclose(node.GetSegmentation().GetSegment(ids[1]).GetColor(), (0.0, 1.0, 0.0))
    assert scene.GetNumberOfNodes() == count + 2


def test_roi_becomes_an_oriented_box(scene):
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    rotation = vtk.vtkTransform()
    rotation.RotateWXYZ(30.0, 0.2, 0.3, 0.9)
    roi.SetAndObserveObjectToNodeMatrix(rotation.GetMatrix())  # orientation first, then centre (notes)
    roi.SetCenter(10.0, -20.0, 30.0)
    roi.SetSize(20.0, 30.0, 40.0)
    box = bridge.box_from_roi(roi)
    np.testing.assert_allclose(box.center, [-10.0, 20.0, 30.0], atol=1e-9)
    np.testing.assert_allclose(np.sort(box.half_size), [10.0, 15.0, 20.0], atol=1e-9)
    rng = np.random.default_rng(0)
    pts_ras = np.array([10.0, -20.0, 30.0]) + rng.uniform(-25, 25, size=(300, 3))
    slicer_inside = np.array([roi.IsPointInROIWorld(p) for p in pts_ras])
    ours = box.contains(pts_ras * [-1, -1, 1])
    assert 20 < slicer_inside.sum() < 280
    np.testing.assert_array_equal(ours, slicer_inside)


def test_fiducials_become_lps_landmarks_and_mrk_json_round_trips(app_scene, tmp_path):
    points_lps = np.array([[1.0, 2.0, 3.0], [-4.5, 6.25, -7.0]])
    node = bridge.markups_from_landmarks(points_lps, app_scene, "F")
    ras = [0.0, 0.0, 0.0]
    node.GetNthControlPointPositionWorld(0, ras)
    np.testing.assert_allclose(ras, [-1.0, -2.0, 3.0])
    np.testing.assert_allclose(bridge.landmarks_from_markups(node), points_lps)
    path = _save(app_scene, node, tmp_path / "F.mrk.json", "vtkMRMLMarkupsJsonStorageNode")
    assert json.loads(path.read_text(encoding="utf-8"))["markups"][0]["coordinateSystem"] in ("LPS", "RAS")
    np.testing.assert_allclose(read_landmarks(path), points_lps, atol=1e-6)


def _moving_case(scene):
    """Fixed and moving label volumes of the analytic phantom, moving = fixed mapped by TRUE (fixed->moving)."""
    fixed = phantom_labels(covering_grid([5, 0, 15], 96, (1.5, 1.5, 2.0), (10, -5, 20)))
    moving = phantom_labels(covering_grid([12, -6, 22], 110, (1.2, 1.2, 2.5), (-12, 8, -25)), TRUE.inverse().map_points_np)
    return fixed, moving, bridge.volume_from_image(moving, scene, "moving", labelmap=True)


def test_hardening_a_linear_result_on_the_moving_volume_aligns_it(scene):
    fixed, moving, moving_node = _moving_case(scene)
    node = bridge.transform_node_from_engine(TRUE, scene, "result")
    moving_node.SetAndObserveTransformNodeID(node.GetID())
    slicer.vtkSlicerTransformLogic.hardenTransform(moving_node)
    aligned = bridge.image_from_volume(moving_node)
    before = dice_per_label(fixed.array, resample_labels(moving, fixed.grid).array)[1]
    after = dice_per_label(fixed.array, resample_labels(aligned, fixed.grid).array)[1]
    engine = dice_per_label(fixed.array, resample_labels(moving, fixed.grid, TRUE).array)[1]  # the same in the engine
    assert after > before + 0.2 and after > engine - 0.01, (before, after, engine)


def test_hardening_a_grid_result_on_the_moving_volume_aligns_it(scene):
    fixed, moving, moving_node = _moving_case(scene)
    field = DisplacementField.from_transform(TRUE, fixed.grid.resized(3.0))  # a dense fixed->moving result
    node = bridge.transform_node_from_engine(field, scene, "result", fixed_node=None, moving_node=moving_node)
    assert node.IsA("vtkMRMLGridTransformNode") and node.GetNodeReferenceID(bridge.MOVING_ROLE) == moving_node.GetID()
    moving_node.SetAndObserveTransformNodeID(node.GetID())
    slicer.vtkSlicerTransformLogic.hardenTransform(moving_node)
    aligned = bridge.image_from_volume(moving_node)
    after = dice_per_label(fixed.array, resample_labels(aligned, fixed.grid).array)[1]
    engine = dice_per_label(fixed.array, resample_labels(moving, fixed.grid, field).array)[1]
    assert after > engine - 0.02 and after > 0.9, (after, engine)


def test_engine_transforms_round_trip_through_nodes(scene, rng):
    grid = oblique_grid(shape=(16, 18, 20), spacing=(2.0, 2.0, 2.5))
    u = rng.normal(size=(*grid.shape, 3))
    from scipy import ndimage

    u = np.stack([ndimage.gaussian_filter(u[..., c], 2) for c in range(3)], -1) * 15
    field = DisplacementField(grid, u)
    affine = AffineTransform.from_rigid([0.1, -0.05, 0.2], [3.0, 1.0, -2.0], center=[0, 0, 0], source="moving", target="m2")
    field_then_affine = compose(field, affine)
    pts = grid.index_to_world(rng.uniform(3, 12, size=(30, 3)))
    for transform in (TRUE, field, field_then_affine):
        node = bridge.transform_node_from_engine(transform, scene, "t")
        back = bridge.engine_transform_from_node(node, reference=grid)
        np.testing.assert_allclose(back.map_points_np(pts), transform.map_points_np(pts), atol=1e-4)


def test_grid_node_saved_by_slicer_reads_back_in_the_engine(scene, rng, tmp_path):
    grid = oblique_grid(shape=(10, 12, 14), spacing=(2.0, 2.5, 3.0))
    field = DisplacementField(grid, rng.normal(size=(*grid.shape, 3)))
    node = bridge.transform_node_from_engine(field, scene, "t")
    path = _save(scene, node, tmp_path / "t.h5", "vtkMRMLTransformStorageNode")
    back = read_transform(path)
    pts = grid.index_to_world(rng.uniform(1, 8, size=(20, 3)))
    np.testing.assert_allclose(back.map_points_np(pts), field.map_points_np(pts), atol=1e-4)
    sitk_tx = sitk.ReadTransform(str(path))
    np.testing.assert_allclose([sitk_tx.TransformPoint(tuple(p)) for p in pts], field.map_points_np(pts), atol=1e-4)
