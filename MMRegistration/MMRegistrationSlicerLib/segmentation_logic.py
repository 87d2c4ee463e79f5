"""GUI-free logic of the "Segment prostate" action (SINR Registration, RSO Refine): a volume node in, the engine's
prostate segmentation network (paper 003, ``MMRegistrationLib.segmentation.predict.segment_image``), a segmentation
node with one segment named "prostate" out. The scene is passed explicitly, so it runs inside Slicer and on the PyPI
``slicer-core`` (where the tests exercise it).

Geometry: the volume is read in its own (local) coordinates and the mask is written on its voxel grid; the
segmentation is put under the volume's parent transform (whatever its kind), so both show in the same place, and
its reference geometry is the volume (Segment Editor edits on the volume's grid). The registration modules read a
fixed segmentation in world coordinates and a moving one in its own coordinates, like their volumes: the result
fits either.

A run adds or changes nodes only after the network has finished; if anything fails or is cancelled, the scene is
as it was. Bad input and "no gland found" raise ValueError with a message in the module's words; a cancelled run
raises the engine's ``Cancelled``. This module imports neither torch nor the engine at import time.
"""

from __future__ import annotations

from typing import Optional

from MMRegistrationSlicerLib.segments import normalise_segment_name, segment_names

PROSTATE = "prostate"
"""The segment's name (the engine's ``segmentation.predict.PROSTATE``, the registration methods' target)."""
PROSTATE_COLOR = (0.85, 0.55, 0.45)
"""RGB (0..1) of a new prostate segment; a replaced segment keeps its colour."""
MODALITIES = {"trus": "TRUS", "mr": "MR"}
"""Engine modality -> how messages name it."""
LABEL = "Prostate segmentation"
"""What a failing call is called in messages: ``"Prostate segmentation: ..."``."""


def prostate_segment_ids(segmentation_node) -> list:
    """IDs of the segments named "prostate" (case and spaces ignored), in the segmentation's order."""
    return [sid for sid, name in segment_names(segmentation_node).items() if normalise_segment_name(name) == PROSTATE]


def segmentation_of_volume(volume_node, selected, other_selected=None):
    """The segmentation the "Segment prostate" button writes into: ``selected`` (the side's selector) when it is
    that volume's (its reference geometry is ``volume_node``, under the same transform) and not the other side's
    selection, else None (a new one is made). A selector that picked some other segmentation by itself is never
    overwritten."""
    if selected is None or volume_node is None or selected is other_selected:
        return None
    role = selected.GetReferenceImageGeometryReferenceRole()
    if selected.GetNodeReferenceID(role) != volume_node.GetID():
        return None
    return selected if selected.GetTransformNodeID() == volume_node.GetTransformNodeID() else None


def _node_name(node) -> str:
    return f"'{node.GetName()}'"


def _check_inputs(scene, volume_node, modality: str, segmentation_node, argument: str) -> None:
    """ValueError naming ``argument`` for a missing volume, an unknown modality or a segmentation the mask cannot be
    written into."""
    if modality not in MODALITIES:
        raise ValueError(f"{LABEL}: modality '{modality}' is not one of {', '.join(MODALITIES)}")
    if volume_node is None:
        raise ValueError(f"{argument}: no volume was selected")
    if volume_node.GetScene() is not scene:
        raise ValueError(f"{argument}: {_node_name(volume_node)} is not in this scene")
    if segmentation_node is None:
        return
    if not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        raise ValueError(f"segmentation: {_node_name(segmentation_node)} is a {segmentation_node.GetClassName()}, "
                         "not a segmentation")
    if segmentation_node.GetTransformNodeID() != volume_node.GetTransformNodeID():
        raise ValueError(f"segmentation: {_node_name(segmentation_node)} is under another transform than "
                         f"{_node_name(volume_node)}; choose a segmentation under the same transform, or none (a new "
                         "one is created)")


def _weights_path(modality: str, weights):
    """``weights`` or the shipped network of ``modality``; ValueError when the shipped one is not installed."""
    from MMRegistrationLib.segmentation.weights import default_segmentation_weights

    if weights is not None:
        return weights
    path = default_segmentation_weights(modality)
    if not path.is_file():
        raise ValueError(f"{LABEL}: the {MODALITIES[modality]} segmentation network is not installed ({path} is "
                         "missing); update the extension")
    return path


def predict_mask(volume_node, modality: str, weights=None, device: str = "auto", threads: Optional[int] = None,
                 monitor=None, argument: str = "volume"):
    """The engine's ``PredictedGland`` of ``volume_node`` read in its own coordinates (its ``mask``: uint8 ``Image``
    on the volume's voxel grid, LPS). Engine errors become ValueError in the module's words."""
    from MMRegistrationLib.core.device import resolve_device
    from MMRegistrationLib.core.errors import Cancelled, MMRegError
    from MMRegistrationLib.core.threads import choose_threads, engine_threads
    from MMRegistrationLib.segmentation.predict import segment_image
    from MMRegistrationSlicerLib import bridge
    from MMRegistrationSlicerLib.registration_logic import readable_engine_error

    image = bridge.image_from_volume(volume_node, argument, include_parent_transform=False)
    try:
        path = _weights_path(modality, weights)
        torch_device = resolve_device(device, "device")
        with engine_threads(choose_threads(threads, image.array.size)):
            return segment_image(image, modality, path, torch_device, argument=argument,
                                 modality_argument=f"modality of the {argument}:", progress=monitor)
    except Cancelled:
        raise
    except MMRegError as err:  # InputError included: no gland, bad weights, unavailable device
        raise ValueError(readable_engine_error(err, "Prostate", "segmentation")) from err


def _import_mask(scene, mask, segmentation_node) -> str:
    """Import ``mask`` (uint8 ``Image``, LPS) as a new segment of ``segmentation_node``; returns its ID. The
    temporary label map (and the display and colour nodes MRML adds for it) are removed again."""
    import slicer

    from MMRegistrationSlicerLib import bridge

    before = bridge.scene_node_ids(scene)
    segmentation = segmentation_node.GetSegmentation()
    count = segmentation.GetNumberOfSegments()
    try:
        temporary = bridge.volume_from_image(mask.with_array((mask.array != 0).astype("uint8")), scene,
                                             "__mmreg_prostate", labelmap=True)
        # under the segmentation's own transform: the import then takes the voxels as they are (no resampling)
        temporary.SetAndObserveTransformNodeID(segmentation_node.GetTransformNodeID())
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(temporary, segmentation_node):
            raise ValueError(f"{LABEL}: the mask could not be imported into {_node_name(segmentation_node)}")
    finally:
        kept = [segmentation_node] + [segmentation_node.GetNthDisplayNode(n)
                                      for n in range(segmentation_node.GetNumberOfDisplayNodes())]
        bridge.remove_nodes_added_since(scene, before, keep=kept)
    if segmentation.GetNumberOfSegments() != count + 1:
        raise ValueError(f"{LABEL}: the mask gave {segmentation.GetNumberOfSegments() - count} segments, not one")
    return segmentation.GetNthSegmentID(count)


def replace_prostate_segment(scene, segmentation_node, mask) -> str:
    """Put ``mask`` into ``segmentation_node`` as its only "prostate" segment: at the place and in the colour of the
    first existing one (which is removed with any other of that name), else last in :data:`PROSTATE_COLOR`. Other
    segments are kept. Returns the new segment's ID."""
    segmentation = segmentation_node.GetSegmentation()
    old = prostate_segment_ids(segmentation_node)
    index = segmentation.GetSegmentIndex(old[0]) if old else None
    color = tuple(segmentation.GetSegment(old[0]).GetColor()) if old else PROSTATE_COLOR
    new_id = _import_mask(scene, mask, segmentation_node)  # first: a failed import leaves the old segment in place
    for sid in old:
        segmentation.RemoveSegment(sid)
    segment = segmentation.GetSegment(new_id)
    segment.SetName(PROSTATE)
    segment.SetColor(*[float(c) for c in color])
    if index is not None:
        segmentation.SetSegmentIndex(new_id, index)
    return new_id


def _new_segmentation(scene, volume_node):
    """A segmentation node named "<volume> prostate" with its display node, under the volume's parent transform."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volume_node.GetName()} {PROSTATE}")
    node.CreateDefaultDisplayNodes()
    node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    return node


def segment_prostate(scene, volume_node, modality: str, weights=None, device: str = "auto", progress=None,
                     cancel=None, segmentation_node=None, threads: Optional[int] = None,
                     argument: str = "volume") -> tuple:
    """Segment the prostate of ``volume_node`` with the engine's network of ``modality``.

    Args:
        scene: the MRML scene holding ``volume_node``.
        volume_node: a scalar volume (any grid: oblique, anisotropic, any origin; any parent transform).
        modality: ``trus`` (the fixed volume of the modules) or ``mr`` (the moving volume).
        weights: a segmentation network file (default: the shipped ``Resources/Segmentation/prostate_<modality>.pt``).
        device: ``auto``, ``cpu`` or ``cuda``; threads: CPU threads (None: the engine's thread policy).
        progress, cancel: ``progress(fraction, message)`` and ``cancel() -> bool`` callbacks.
        segmentation_node: a segmentation to write into (its "prostate" segment is replaced, other segments kept);
            None creates "<volume name> prostate".
        argument: how messages name the volume (e.g. "fixed volume").

    Returns:
        ``(segmentation node, warnings)``: ``warnings`` is the engine's quality check (implausible volume, several
        large parts, a gland cut by the field of view, a hint that the image looks like the other modality), a list
        of str, empty when the gland looks plausible.
    """
    from MMRegistrationLib.core.progress import Monitor
    from MMRegistrationSlicerLib import bridge

    _check_inputs(scene, volume_node, modality, segmentation_node, argument)
    monitor = Monitor(progress, cancel)
    monitor.report(0.0, f"segmenting the prostate of {_node_name(volume_node)} ({MODALITIES[modality]})")
    predicted = predict_mask(volume_node, modality, weights, device, threads, monitor.stage(0.0, 0.95), argument)
    monitor.check("creating the segmentation")
    before = bridge.scene_node_ids(scene)
    try:
        node = segmentation_node if segmentation_node is not None else _new_segmentation(scene, volume_node)
        replace_prostate_segment(scene, node, predicted.mask)
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)  # Segment Editor: the volume's grid
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
    except BaseException:
        bridge.remove_nodes_added_since(scene, before)  # a new node with its display node
        raise
    if progress is not None:  # reported, not a cancel point: the nodes are made
        progress(1.0, f"prostate of {_node_name(volume_node)} in {_node_name(node)}")
    return node, list(predicted.warnings)
