"""MRML nodes <-> engine objects. The only place where Slicer's RAS meets the engine's LPS.

Directions:
- A volume node's IJK->RAS matrix becomes the engine grid's index->LPS affine (``diag(-1, -1, 1, 1) @ ijkToRas``);
  a linear parent transform of the node is folded in (the geometry the user sees).
- An engine transform fixed -> moving becomes a transform node whose **FromParent** mapping is that transform
  (in RAS). Applied as the moving volume's parent (and hardened), it moves the moving volume onto the fixed
  one. Reading a node back gives its **FromWorld** mapping as the engine's fixed -> moving transform.

Every function takes its scene explicitly, so it runs inside Slicer and on the PyPI ``slicer-core``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from MMRegistrationLib.core.box import OrientedBox
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.spatial.affine import AffineTransform
from MMRegistrationLib.spatial.base import SpatialTransform
from MMRegistrationLib.spatial.composite import ComposedTransform
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.spatial.velocity import VelocityField
from MMRegistrationSlicerLib.segments import segment_names  # noqa: F401 (bridge.segment_names)

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
"""RAS <-> LPS for 4x4 matrices and homogeneous points (its own inverse)."""
FLIP3 = FLIP[:3, :3]
FIXED_ROLE = "fixedVolume"
"""Node reference role set on output transforms: the fixed volume/segmentation of the registration."""
MOVING_ROLE = "movingVolume"
"""Node reference role set on output transforms: the moving volume/segmentation of the registration."""


def _node_label(node) -> str:
    return f"'{node.GetName()}'" if node is not None else "None"


def scene_node_ids(scene) -> set:
    return {scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())}


def remove_nodes_added_since(scene, before: set, keep=()) -> None:
    """Remove the nodes added to ``scene`` since ``before`` (a temporary node and the display and colour nodes
    MRML made for it), except ``keep`` and singletons: a conversion leaves the scene as it found it."""
    keep_ids = {node.GetID() for node in keep if node is not None}
    for node_id in scene_node_ids(scene) - before - keep_ids:
        node = scene.GetNodeByID(node_id)
        if node is not None and node.GetSingletonTag() is None:
            scene.RemoveNode(node)


# ---- matrices ---------------------------------------------------------------------------------------
def _array_from_vtk_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def parent_to_world_matrix_ras(node) -> np.ndarray:
    """4x4 RAS matrix of ``node``'s parent transforms (identity if none); ValueError if non-linear."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise ValueError(
            f"{_node_label(node)} is under the non-linear transform {_node_label(parent)}; harden it or remove it first"
        )
    matrix = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return _array_from_vtk_matrix(matrix)


# ---- volumes ------------------------------------------------------------------------------------------
def image_from_volume(node, argument: str = "volume", include_parent_transform: bool = True) -> Image:
    """Engine :class:`Image` (LPS, array copied) of a scalar or labelmap volume node, in world geometry
    (``include_parent_transform=False``: in the node's local coordinates, ignoring parent transforms)."""
    if node is None or node.GetImageData() is None:
        raise ValueError(f"{argument}: no volume (or a volume without image data) was given")
    if node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise ValueError(f"{argument}: {_node_label(node)} has several components per voxel; a scalar volume is needed")
    array = np.array(slicer.util.arrayFromVolume(node), copy=True)
    if array.ndim != 3:
        raise ValueError(f"{argument}: {_node_label(node)} is not a 3-D volume")
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    parent = parent_to_world_matrix_ras(node) if include_parent_transform else np.eye(4)
    world_ras = parent @ _array_from_vtk_matrix(ijk_to_ras)
    return Image(array, Grid(array.shape, FLIP @ world_ras))


def volume_from_image(image: Image, scene, name: str, node=None, labelmap: bool = False):
    """Write ``image`` into ``node`` (created in ``scene`` if None) with its geometry in RAS; returns the node."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(_vtk_matrix(FLIP @ image.grid.affine))
    array = image.array.astype(np.int16) if image.array.dtype == np.bool_ else image.array
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    return node


def vector_volume_from_array(array: np.ndarray, grid: Grid, scene, name: str, node=None):
    """Write a ``(K, J, I, C)`` array (e.g. RGB uint8) on the LPS ``grid`` into a vector volume ``node`` (created in
    ``scene`` if None) with its geometry in RAS; returns the node."""
    array = np.asarray(array)
    if array.ndim != 4 or tuple(array.shape[:3]) != tuple(grid.shape):
        raise ValueError(f"vector volume {name}: array of shape {array.shape} does not fit the grid {grid.shape}")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", name)
    node.SetIJKToRASMatrix(_vtk_matrix(FLIP @ grid.affine))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    return node


# ---- segmentations --------------------------------------------------------------------------------------
def labelmap_from_segmentation(
    segmentation_node, scene, segment_ids: Optional[Sequence[str]] = None, reference_volume=None,
    argument: str = "segmentation", include_parent_transform: bool = True,
) -> tuple:
    """Export segments into one engine label map (values 1..N in ``segment_ids`` order).

    Args:
        segment_ids: segments to export (default: all, in order).
        reference_volume: geometry to export on (default: the segmentation's own labelmap geometry).
        include_parent_transform: fold the node's linear parent transforms into the geometry (world, what the
            user sees); False gives the node's local coordinates (e.g. when the parent is evaluated separately).

    Returns:
        ``(Image, {value: segment name})``. Raises ValueError naming ``argument`` for no or empty segments.
    """
    if segmentation_node is None:
        raise ValueError(f"{argument}: no segmentation was given")
    names = segment_names(segmentation_node)
    ids = list(segment_ids) if segment_ids is not None else list(names)
    if not ids:
        raise ValueError(f"{argument}: {_node_label(segmentation_node)} has no segment")
    missing = [sid for sid in ids if sid not in names]
    if missing:
        raise ValueError(f"{argument}: {_node_label(segmentation_node)} has no segment with ID {missing}")
    id_array = vtk.vtkStringArray()
    for sid in ids:
        id_array.InsertNextValue(sid)
    before = scene_node_ids(scene)
    temporary = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__mmreg_export")
    try:
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, id_array, temporary, reference_volume
        )
        if not ok or temporary.GetImageData() is None:
            raise ValueError(f"{argument}: {_node_label(segmentation_node)} could not be exported (are all segments empty?)")
        image = image_from_volume(temporary, argument, include_parent_transform=False)  # export copies the parent
    finally:  # the export also adds a display node and a colour table for the temporary labelmap
        remove_nodes_added_since(scene, before)
    if include_parent_transform:  # the exported labelmap has no parent: add it back
        world = parent_to_world_matrix_ras(segmentation_node)
        image = Image(image.array, Grid(image.grid.shape, FLIP @ world @ FLIP @ image.grid.affine))
    values = {n + 1: names[sid] for n, sid in enumerate(ids)}
    present = set(np.unique(image.array).tolist())
    empty = [name for value, name in values.items() if value not in present]
    if empty:
        raise ValueError(f"{argument}: segment(s) {empty} of {_node_label(segmentation_node)} are empty")
    return image, values


def segmentation_from_labelmap(image: Image, names: dict, scene, name: str, node=None):
    """Segmentation node (created if None) whose segments are the labels of ``image``, named by ``names``."""
    before = scene_node_ids(scene)
    temporary = volume_from_image(image, scene, "__mmreg_import", labelmap=True)
    try:
        if node is None:
            node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        else:
            node.GetSegmentation().RemoveAllSegments()
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(temporary, node):
            raise ValueError(f"could not import the label map into segmentation '{name}'")
    finally:
        kept = [node] + [node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes())] if node else []
        remove_nodes_added_since(scene, before, keep=kept)
    segmentation = node.GetSegmentation()
    labels = [v for v in np.unique(image.array).tolist() if v != 0]
    for n, value in enumerate(labels):  # imported segments follow the ascending label values
        segmentation.GetNthSegment(n).SetName(names.get(value, f"label_{value}"))
    return node


def segmentation_from_masks(masks: Sequence[tuple], scene, name: str, node=None):
    """Segmentation node (created if None, emptied if given) with one segment per ``(name, rgb, Image)`` in
    ``masks`` order: the image's non-zero voxels. Masks may overlap (unlike the labels of one label map); an
    all-zero mask gives an empty segment."""
    before = scene_node_ids(scene)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
    segmentation = node.GetSegmentation()
    segmentation.RemoveAllSegments()
    try:
        for segment_name, color, image in masks:
            count = segmentation.GetNumberOfSegments()
            if not np.any(image.array):
                segmentation.AddEmptySegment("", segment_name, [float(c) for c in color])
                continue
            temporary = volume_from_image(image.with_array((image.array != 0).astype(np.uint8)), scene,
                                          "__mmreg_import", labelmap=True)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(temporary, node):
                raise ValueError(f"could not import segment '{segment_name}' into segmentation '{name}'")
            scene.RemoveNode(temporary)
            segment = segmentation.GetNthSegment(count)
            segment.SetName(segment_name)
            segment.SetColor(*[float(c) for c in color])
    finally:
        kept = [node] + [node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes())]
        remove_nodes_added_since(scene, before, keep=kept)
    return node


# ---- points -----------------------------------------------------------------------------------------------
def ras_from_lps(points_lps) -> np.ndarray:
    """Points ``(..., 3)`` from LPS to RAS mm (for messages and results shown to the user)."""
    return np.asarray(points_lps, dtype=np.float64) @ FLIP3


def points_through_parents(node, points_lps, to_world: bool) -> np.ndarray:
    """Points ``(N, 3)`` LPS mm mapped by ``node``'s parent transforms (any kind): from the node's local coordinates
    to world (``to_world``) or from world into them. Unchanged when the node has no parent transform."""
    points = np.asarray(points_lps, dtype=np.float64).reshape(-1, 3)
    parent = node.GetParentTransformNode()
    if parent is None:
        return points.copy()
    general = vtk.vtkGeneralTransform()
    if to_world:
        parent.GetTransformToWorld(general)
    else:
        parent.GetTransformFromWorld(general)
    return np.array([general.TransformPoint(*(p @ FLIP3)) for p in points]).reshape(-1, 3) @ FLIP3


# ---- markups ----------------------------------------------------------------------------------------------
def landmarks_from_markups(node, argument: str = "landmarks") -> np.ndarray:
    """Control points of a markups node in world coordinates, ``(N, 3)`` LPS mm."""
    if node is None or node.GetNumberOfControlPoints() == 0:
        raise ValueError(f"{argument}: the markups list {_node_label(node)} has no control point")
    points = np.zeros((node.GetNumberOfControlPoints(), 3))
    for n in range(len(points)):
        position = [0.0, 0.0, 0.0]
        node.GetNthControlPointPositionWorld(n, position)
        points[n] = position
    return points @ FLIP3


def markups_from_landmarks(points: np.ndarray, scene, name: str, node=None):
    """Fiducial markups node holding ``points`` ((N, 3) LPS mm)."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    node.RemoveAllControlPoints()
    for p in np.asarray(points, dtype=np.float64).reshape(-1, 3) @ FLIP3:
        node.AddControlPointWorld(vtk.vtkVector3d(*p))
    return node


def box_from_roi(node, argument: str = "roi") -> OrientedBox:
    """A markups ROI as an engine :class:`OrientedBox` (LPS mm), orientation and parent transforms included."""
    if node is None:
        raise ValueError(f"{argument}: no ROI was given")
    size = np.zeros(3)
    node.GetSizeWorld(size)
    if np.any(size <= 0):
        raise ValueError(f"{argument}: ROI {_node_label(node)} has zero size")
    center = np.zeros(3)
    node.GetCenterWorld(center)
    object_to_world = _array_from_vtk_matrix(node.GetObjectToWorldMatrix())[:3, :3]
    axes = object_to_world / np.linalg.norm(object_to_world, axis=0)
    return OrientedBox(FLIP3 @ center, FLIP3 @ axes, size / 2)


# ---- transforms ------------------------------------------------------------------------------------------
def _vtk_grid_transform(field: DisplacementField):
    grid = field.grid
    image = vtk.vtkImageData()
    image.SetDimensions(*[int(n) for n in grid.size_ijk])
    image.SetOrigin(*(FLIP3 @ grid.origin))
    image.SetSpacing(*grid.spacing)
    vectors = np.ascontiguousarray((field.numpy() @ FLIP3).reshape(-1, 3))  # i fastest, RAS components
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(vectors, deep=True, array_type=vtk.VTK_DOUBLE))
    direction = np.eye(4)
    direction[:3, :3] = FLIP3 @ grid.direction
    transform = slicer.vtkOrientedGridTransform()
    transform.SetDisplacementGridData(image)
    transform.SetGridDirectionMatrix(_vtk_matrix(direction))
    transform.SetInterpolationModeToLinear()  # the engine's and ITK's interpolation
    return transform


def _vtk_transform(transform: SpatialTransform):
    if transform.is_linear:
        affine = transform if isinstance(transform, AffineTransform) else ComposedTransform([transform]).as_affine()
        vtk_linear = vtk.vtkTransform()
        vtk_linear.SetMatrix(_vtk_matrix(FLIP @ affine.matrix @ FLIP))
        return vtk_linear
    if isinstance(transform, VelocityField):
        transform = transform.to_displacement()
    if isinstance(transform, DisplacementField):
        return _vtk_grid_transform(transform)
    if isinstance(transform, ComposedTransform):
        general = vtk.vtkGeneralTransform()
        general.PostMultiply()  # each Concatenate is applied after the previous ones: engine list order
        for part in transform.transforms:
            general.Concatenate(_vtk_transform(part))
        return general
    raise TypeError(f"no Slicer representation for {type(transform).__name__}")


def transform_node_from_engine(
    transform: SpatialTransform, scene, name: str, node=None, fixed_node=None, moving_node=None
):
    """Transform node whose FromParent mapping is ``transform`` (fixed -> moving): set it as the moving node's
    parent transform to see the moving image aligned with the fixed one.

    Linear transforms give a ``vtkMRMLLinearTransformNode``, displacement/velocity fields a
    ``vtkMRMLGridTransformNode``, compositions a ``vtkMRMLTransformNode``. ``node`` is reused when given.
    """
    vtk_transform = _vtk_transform(transform)
    if node is None:
        cls = (
            "vtkMRMLLinearTransformNode" if transform.is_linear
            else "vtkMRMLGridTransformNode" if isinstance(vtk_transform, slicer.vtkOrientedGridTransform)
            else "vtkMRMLTransformNode"
        )
        node = scene.AddNewNodeByClass(cls, name)
    if transform.is_linear:
        node.SetMatrixTransformFromParent(vtk_transform.GetMatrix())
    else:
        node.SetAndObserveTransformFromParent(vtk_transform)
    if fixed_node is not None:
        node.SetNodeReferenceID(FIXED_ROLE, fixed_node.GetID())
    if moving_node is not None:
        node.SetNodeReferenceID(MOVING_ROLE, moving_node.GetID())
    return node


def engine_transform_from_node(node, reference: Optional[Grid] = None, argument: str = "transform") -> SpatialTransform:
    """The node's FromWorld mapping (parents included) as an engine fixed -> moving transform.

    Linear transforms are converted exactly. Any other transform (grid, B-spline, thin-plate, composite, from any
    extension, stored in either direction) is sampled on ``reference`` (e.g. the fixed grid) into a
    :class:`DisplacementField`: outside ``reference`` the result is then identity.
    """
    if node is None:
        return AffineTransform.identity()
    if node.IsTransformToWorldLinear():
        matrix = vtk.vtkMatrix4x4()
        node.GetMatrixTransformFromWorld(matrix)
        return AffineTransform(FLIP @ _array_from_vtk_matrix(matrix) @ FLIP)
    if reference is None:
        raise ValueError(f"{argument}: {_node_label(node)} is non-linear; a reference geometry is needed to sample it")
    general = vtk.vtkGeneralTransform()
    node.GetTransformFromWorld(general)
    points_lps = reference.world_points().reshape(-1, 3)
    vtk_points = vtk.vtkPoints()
    vtk_points.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(points_lps @ FLIP3), deep=True))
    mapped = vtk.vtkPoints()
    mapped.SetDataTypeToDouble()
    general.TransformPoints(vtk_points, mapped)
    moved_lps = numpy_support.vtk_to_numpy(mapped.GetData()).astype(np.float64) @ FLIP3
    displacement = (moved_lps - points_lps).reshape(*reference.shape, 3)
    return DisplacementField(reference, displacement)
