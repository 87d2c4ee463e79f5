"""GUI-free logic shared by the registration modules (SINR Registration, DISA Similarity; RSO Refine uses its input,
ROI and output helpers): MRML nodes in, the engine's ``run_registration`` for one method, MRML nodes out. The scene
is passed explicitly, so it runs inside Slicer and on the PyPI ``slicer-core`` (where the tests exercise it).

Geometry (all conversions in :mod:`MMRegistrationSlicerLib.bridge`):

- The fixed volume and segmentation are read in world coordinates (a linear parent transform is folded in).
- The moving volume and segmentation are read in their own, local coordinates: their parent transforms are
  ignored because the result *replaces* them (it is set as their parent). To start from an existing alignment,
  choose it as the initial transform.
- The output transform's FromParent mapping is the engine result, fixed -> moving, flattened to one displacement
  field on the fixed grid (a grid transform; a linear result stays a linear transform node, exact); set as the
  moving nodes' parent it shows them aligned with the fixed
  ones. The optional inverse (moving -> fixed, on the moving grid) does the same for the fixed nodes.
- Landmarks (TRE only) are read in world coordinates; keep them outside the moving nodes' transform. Without
  segmentations (image-based methods such as DISA) the metrics are the landmarks' TRE alone.
- An ROI (markups ROI node, for methods that use a region) is read in world coordinates (orientation and linear
  parent transforms included) as the engine's ``RegistrationInputs.region``; it must select part of the fixed volume.

A run adds nodes to the scene only after the engine has finished; if anything fails or is cancelled afterwards,
the nodes it created are removed again. Inputs are never modified, except the moving volume's and segmentation's
parent transform when ``apply_to_moving`` is True.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from MMRegistrationSlicerLib import bridge
from MMRegistrationSlicerLib.evaluation_logic import RegistrationEvaluationLogic, match_segments_by_name

METHOD_LABELS = {"sinr": "SINR", "disa": "DISA", "rigid-mask": "rigid", "com": "centre of mass", "none": "initial"}
"""Engine method name -> the short label used in messages and output node names."""

_ARGUMENT_NAMES = {  # the engine's CLI argument names -> what the Slicer modules call them
    "--fixed-seg": "fixed segmentation", "--moving-seg": "moving segmentation", "--fixed": "fixed volume",
    "--moving": "moving volume", "--init": "initialization", "--fixed-landmarks": "fixed landmarks",
    "--moving-landmarks": "moving landmarks", "--roi": "ROI",
}


def readable_engine_error(error: Exception, label: str, task: str = "registration") -> str:
    """An engine error message with the CLI's argument names replaced by the module's words, prefixed with
    ``"<label> <task>: "`` (e.g. ``"DISA heatmap: "``)."""
    text = re.sub(r"--init (none|com|rigid-mask|auto|center)\b", r"initialization '\1'", str(error))
    for argument in sorted(_ARGUMENT_NAMES, key=len, reverse=True):
        text = re.sub(re.escape(argument) + r"(?![\w-])", _ARGUMENT_NAMES[argument], text)
    text = re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", " "), text)
    return f"{label} {task}: {text}"


def _same(a, b) -> bool:
    return a is not None and b is not None and (a is b or (a.GetID() is not None and a.GetID() == b.GetID()))


def _name(node) -> str:
    return f"'{node.GetName()}'"


def roi_box(roi, fixed_image=None):
    """The engine's box (``OrientedBox``, LPS mm) of a markups ROI node in world coordinates (orientation and linear
    parent transforms included), checked against ``fixed_image`` (an engine ``Image``) when given: it must select
    part of it. Raises ValueError whose message starts with ``ROI`` and names the node."""
    if not roi.IsA("vtkMRMLMarkupsROINode"):
        raise ValueError(f"ROI: {_name(roi)} is a {roi.GetClassName()}, not a markups ROI (box)")
    try:
        bridge.parent_to_world_matrix_ras(roi)  # refuses a non-linear parent transform
        box = bridge.box_from_roi(roi, argument="ROI")
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message.startswith("ROI") else f"ROI {_name(roi)}: {message}") from None
    if fixed_image is not None:
        from MMRegistrationLib.io.regions import check_region

        # an InputError (a ValueError); stated in RAS, the coordinates the Slicer user sees
        check_region(box, fixed_image, argument=f"ROI {_name(roi)}", coordinates="RAS")
    return box


def flatten_transform(transform, grid):
    """What an output transform node holds: a linear transform as it is, any other one as one displacement field on
    ``grid`` (the engine's output grid of it: the grid itself, coarsened when very large)."""
    from MMRegistrationLib.registration.pipeline import output_grid
    from MMRegistrationLib.spatial.displacement import DisplacementField

    return transform if transform.is_linear else DisplacementField.from_transform(transform, output_grid(grid))


@dataclass
class RegistrationOutcome:
    """What :meth:`RegistrationLogic.process` produced.

    Attributes:
        transform: the output transform node (FromParent = fixed -> moving).
        inverse_transform, warped_volume, segmentation, table: the optional outputs (None when not requested).
        before, after: the engine's ``CaseEvaluation`` of the mapped segments (and landmarks) without any transform
            and with the result; landmarks alone give rows-free evaluations (TRE only); None without either.
        record: the engine's run record (method, init, parameters, seed, device, seconds) plus the segment mapping.
        result: the engine's ``RegistrationResult`` (exact, not flattened).
    """

    transform: object
    inverse_transform: object = None
    warped_volume: object = None
    segmentation: object = None
    table: object = None
    before: object = None
    after: object = None
    record: dict = field(default_factory=dict)
    result: object = None


def _landmark_evaluation(inputs, transform):
    """A ``CaseEvaluation`` with the landmarks' TRE only (no segment rows, no Jacobian)."""
    from MMRegistrationLib.evaluation.case import CaseEvaluation
    from MMRegistrationLib.evaluation.checks import landmark_errors

    tre = landmark_errors(transform, inputs.fixed_landmarks, inputs.moving_landmarks)
    return CaseEvaluation(rows=[], tre=tre, jacobian=None, jacobian_image=None, warped_moving_seg=None,
                          transform="identity" if transform is None else repr(transform))


class RegistrationLogic:
    """Register a moving volume onto a fixed one with one engine method. Raises ValueError (naming the input) on
    bad input and ``MMRegistrationLib.core.errors.Cancelled`` when ``cancel()`` returned True."""

    def __init__(self, scene, method: str, label: Optional[str] = None):
        from MMRegistrationLib.core.errors import InputError
        from MMRegistrationLib.registration.methods import get_method

        try:
            self.spec = get_method(method)
        except InputError as err:
            raise ValueError(str(err)) from None
        self.scene = scene
        self.method = method
        self.label = label or METHOD_LABELS.get(method, method)

    # ---- inputs ------------------------------------------------------------------------------------------
    def segment_mapping(self, fixed_segmentation, moving_segmentation, mapping: Optional[dict] = None) -> dict:
        """Checked fixed segment ID -> moving segment ID, the prostate first (the engine's target structure).

        ``mapping=None``: every segment matched by name, which must then correspond one to one."""
        fixed_names = bridge.segment_names(fixed_segmentation)
        moving_names = bridge.segment_names(moving_segmentation)
        for names, node, which in ((fixed_names, fixed_segmentation, "fixed"), (moving_names, moving_segmentation, "moving")):
            if not names:
                raise ValueError(f"{which} segmentation: {_name(node)} has no segment")
        if mapping is None:
            mapping = match_segments_by_name(fixed_segmentation, moving_segmentation)
            only_fixed = [n for sid, n in fixed_names.items() if sid not in mapping]
            only_moving = [n for sid, n in moving_names.items() if sid not in set(mapping.values())]
            if only_fixed or only_moving:
                raise ValueError(
                    "segment mapping: the segments do not correspond by name ("
                    + "; ".join(f"only in {_name(node)}: {names}" for node, names in
                                ((fixed_segmentation, only_fixed), (moving_segmentation, only_moving)) if names)
                    + "); rename them or give the fixed -> moving segment mapping explicitly"
                )
        mapping = dict(mapping)
        if not mapping:
            raise ValueError("segment mapping: no fixed segment is mapped to a moving segment")
        unknown = [sid for sid in mapping if sid not in fixed_names]
        unknown_moving = [sid for sid in mapping.values() if sid not in moving_names]
        if unknown or unknown_moving:
            raise ValueError(f"segment mapping: unknown segment IDs {unknown + unknown_moving}")
        if len(set(mapping.values())) != len(mapping):
            raise ValueError("segment mapping: a moving segment is mapped to several fixed segments")
        from MMRegistrationLib.io.segmentations import normalise_segment_name

        order = sorted(mapping, key=lambda sid: normalise_segment_name(fixed_names[sid]) != "prostate")  # stable
        return {sid: mapping[sid] for sid in order}

    def engine_inputs(self, fixed_volume, moving_volume, fixed_segmentation=None, moving_segmentation=None,
                      segment_mapping: Optional[dict] = None, fixed_landmarks=None, moving_landmarks=None, roi=None):
        """Check the nodes and convert them: ``(RegistrationInputs, checked segment mapping)``."""
        from MMRegistrationLib.registration.base import RegistrationInputs

        if roi is not None:
            self._check_takes_region(roi)
        for node, which in ((fixed_volume, "fixed"), (moving_volume, "moving")):
            if node is None:
                raise ValueError(f"{which} volume: no volume was selected")
        if _same(fixed_volume, moving_volume):
            raise ValueError("fixed and moving volume must not be the same node")
        if fixed_segmentation is None and moving_segmentation is None and self.spec.needs_segmentations:
            raise ValueError(f"segmentations: {self.label} registration needs a segmentation of each volume "
                             "(at least the prostate); select the fixed and the moving segmentation")
        if (fixed_segmentation is None) != (moving_segmentation is None):
            which, other = ("fixed", "moving") if fixed_segmentation is None else ("moving", "fixed")
            raise ValueError(f"{which} segmentation: none was selected, but the {other} volume has one; "
                             "select a segmentation for both volumes (matching segment names)")
        if _same(fixed_segmentation, moving_segmentation):
            raise ValueError("fixed and moving segmentation must not be the same node")
        if (fixed_landmarks is None) != (moving_landmarks is None):
            raise ValueError("landmarks: give both the fixed and the moving point lists, or neither")
        fixed = bridge.image_from_volume(fixed_volume, "fixed volume")
        moving = bridge.image_from_volume(moving_volume, "moving volume", include_parent_transform=False)
        mapping, fixed_labels, moving_labels, names = {}, None, None, {}
        if fixed_segmentation is not None:
            mapping = self.segment_mapping(fixed_segmentation, moving_segmentation, segment_mapping)
            fixed_labels, names = bridge.labelmap_from_segmentation(
                fixed_segmentation, self.scene, list(mapping), argument="fixed segmentation")
            moving_labels, _ = bridge.labelmap_from_segmentation(
                moving_segmentation, self.scene, list(mapping.values()), argument="moving segmentation",
                include_parent_transform=False)
        fixed_points = moving_points = None
        if fixed_landmarks is not None:
            fixed_points = bridge.landmarks_from_markups(fixed_landmarks, "fixed landmarks")
            moving_points = bridge.landmarks_from_markups(moving_landmarks, "moving landmarks")
            if len(fixed_points) != len(moving_points):
                raise ValueError(f"landmarks: the fixed list has {len(fixed_points)} points and the moving list "
                                 f"{len(moving_points)}; they must correspond one to one")
        region = self.region(roi, fixed)
        inputs = RegistrationInputs(fixed, moving, fixed_labels, moving_labels, names, fixed_points, moving_points,
                                    region)
        return inputs, mapping

    def _check_takes_region(self, roi) -> None:
        from MMRegistrationLib.registration.methods import METHODS

        if not self.spec.region_use:
            users = ", ".join(METHOD_LABELS.get(n, n) for n, spec in METHODS.items() if spec.region_use) or "none"
            raise ValueError(f"ROI: {self.label} registration does not use a region of interest; remove the ROI "
                             f"{_name(roi)} (methods that use one: {users})")

    def region(self, roi, fixed_image=None):
        """The engine's region (``OrientedBox``, LPS mm) from a markups ROI node (world coordinates: orientation and
        linear parent transforms included), checked against ``fixed_image`` (an engine ``Image``) when given; None
        without a node. Raises ValueError naming the ROI."""
        if roi is None:
            return None
        self._check_takes_region(roi)
        return roi_box(roi, fixed_image)

    def initial_transform(self, node):
        """The engine's fixed -> moving start from a linear transform node (its FromWorld mapping), or None."""
        if node is None:
            return None
        if not node.IsTransformToWorldLinear():
            raise ValueError(f"initial transform: {_name(node)} is non-linear; {self.label} registration starts "
                             "from a linear transform (choose a linear one, or none)")
        return bridge.engine_transform_from_node(node, argument="initial transform")

    # ---- run ---------------------------------------------------------------------------------------------
    def process(
        self,
        fixed_volume,
        moving_volume,
        fixed_segmentation=None,
        moving_segmentation=None,
        segment_mapping: Optional[dict] = None,
        initial_transform=None,
        init: Optional[str] = None,
        options: Optional[dict] = None,
        seed: int = 0,
        device: str = "auto",
        fixed_landmarks=None,
        moving_landmarks=None,
        output_transform=None,
        apply_to_moving: bool = True,
        inverse_transform=None,
        make_inverse: bool = False,
        warped_volume=None,
        make_warped_volume: bool = False,
        propagated_segmentation=None,
        propagate_segmentation: bool = True,
        table=None,
        make_table: bool = True,
        progress=None,
        cancel=None,
        roi=None,
    ) -> RegistrationOutcome:
        """Register ``moving_volume`` onto ``fixed_volume``.

        Args:
            fixed_segmentation, moving_segmentation: segmentation nodes (needed by segmentation-driven methods).
            segment_mapping: fixed segment ID -> moving segment ID (default: matched by name, one to one).
            initial_transform: a linear transform node whose FromWorld mapping (fixed -> moving) is the start;
                with it, ``init`` defaults to ``none`` (``rigid-mask`` refines it).
            init: ``none``, ``com``, ``rigid-mask`` or ``auto`` (default: the method's; ``auto`` for SINR: rigid-mask with
                two or more shared structures, else com).
            options: the method's options (e.g. SINR ``{"preset": "fast", "iterations": 80}``); None = defaults.
            seed, device: engine seed and device (``auto``, ``cpu``, ``cuda``).
            fixed_landmarks, moving_landmarks: optional point lists (rows correspond) for TRE.
            output_transform: transform node to fill (created if None).
            apply_to_moving: set the output as the moving volume's and segmentation's parent transform.
            inverse_transform / make_inverse: node to fill / create with the inverse (moving -> fixed).
            warped_volume / make_warped_volume: node to fill / create with the moving volume on the fixed grid.
            propagated_segmentation / propagate_segmentation: node to fill / create with every moving segment
                mapped onto the fixed grid (names and colours kept, overlaps allowed).
            table / make_table: table node to fill / create with the metrics after registration.
            progress, cancel: ``progress(fraction, message)`` and ``cancel() -> bool`` callbacks.
            roi: a markups ROI node: the region of interest (``RegistrationInputs.region``) of a method that uses one
                (its ``region_use``); a ValueError for any other method, or an ROI that selects no fixed voxel.

        Returns:
            A :class:`RegistrationOutcome`.
        """
        from MMRegistrationLib.core.errors import Cancelled, MMRegError
        from MMRegistrationLib.core.progress import Monitor
        from MMRegistrationLib.registration.pipeline import run_registration

        monitor = Monitor(progress, cancel)
        inputs, mapping = self.engine_inputs(fixed_volume, moving_volume, fixed_segmentation, moving_segmentation,
                                             segment_mapping, fixed_landmarks, moving_landmarks, roi)
        start = self.initial_transform(initial_transform)
        inputs_nodes = (fixed_volume, moving_volume, fixed_segmentation, moving_segmentation)
        for node, what in ((output_transform, "output transform"), (inverse_transform, "inverse transform"),
                           (warped_volume, "warped volume"), (propagated_segmentation, "propagated segmentation"),
                           (table, "metrics table")):
            if any(_same(node, other) for other in inputs_nodes):
                raise ValueError(f"{what}: {_name(node)} is an input; choose another node or create a new one")
        if _same(output_transform, inverse_transform):
            raise ValueError("the output and inverse transforms must be different nodes")
        try:
            result, record = run_registration(self.method, inputs, init, options, seed, device,
                                              monitor.stage(0.0, 0.85), initial=start)
            computed = self._compute(inputs, result, moving_segmentation,
                                     make_inverse or inverse_transform is not None,
                                     make_warped_volume or warped_volume is not None,
                                     propagate_segmentation or propagated_segmentation is not None,
                                     monitor.stage(0.85, 1.0))
        except Cancelled:
            raise
        except MMRegError as err:  # InputError included
            raise ValueError(readable_engine_error(err, self.label)) from err
        monitor.check("creating the output nodes")
        names = bridge.segment_names(fixed_segmentation) if fixed_segmentation is not None else {}
        moving_names = bridge.segment_names(moving_segmentation) if moving_segmentation is not None else {}
        record["segment_mapping"] = {names[f]: moving_names[m] for f, m in mapping.items()}
        outcome = RegistrationOutcome(transform=None, before=computed["before"], after=computed["after"],
                                      record=record, result=result)
        self._create_nodes(outcome, computed, fixed_volume, moving_volume, moving_segmentation,
                           output_transform, apply_to_moving, inverse_transform, warped_volume,
                           propagated_segmentation, table, make_table)
        return outcome

    def _compute(self, inputs, result, moving_segmentation, inverse: bool, warped: bool, propagate: bool,
                 monitor) -> dict:
        """Every output as engine objects (no node is touched): flattened transforms, warped image, propagated
        masks, metrics before and after."""
        from MMRegistrationLib.evaluation import evaluate_case
        from MMRegistrationLib.spatial.resample import resample, resample_labels

        out = {"forward": flatten_transform(result.transform, inputs.fixed.grid), "inverse": None, "warped": None,
               "masks": None}
        monitor.report(0.2, "flattening the transform")
        if inverse and result.inverse is not None:
            out["inverse"] = flatten_transform(result.inverse, inputs.moving.grid)
        monitor.report(0.35, "resampling")
        if warped:
            image = resample(inputs.moving, inputs.fixed.grid, result.transform, interpolation="linear")
            out["warped"] = image.with_array(image.array.astype("float32"))
        if propagate and moving_segmentation is not None:
            out["masks"] = []
            segmentation = moving_segmentation.GetSegmentation()
            for sid, name in bridge.segment_names(moving_segmentation).items():
                monitor.check("propagating the segmentation")
                color = segmentation.GetSegment(sid).GetColor()
                try:
                    mask, _ = bridge.labelmap_from_segmentation(moving_segmentation, self.scene, [sid],
                                                                include_parent_transform=False)
                except ValueError:  # an empty segment stays an empty segment
                    mask = None
                warped_mask = (resample_labels(mask, inputs.fixed.grid, result.transform) if mask is not None
                               else inputs.fixed.with_array(inputs.fixed.array * 0))
                out["masks"].append((name, color, warped_mask))
        monitor.report(0.6, "metrics")
        out["before"] = out["after"] = None
        if inputs.has_segmentations:
            args = (inputs.fixed_seg, inputs.moving_seg)
            kwargs = dict(label_names=inputs.label_names, fixed_landmarks=inputs.fixed_landmarks,
                          moving_landmarks=inputs.moving_landmarks)
            out["before"] = evaluate_case(*args, None, jacobian=False, **kwargs)
            out["after"] = evaluate_case(*args, result.transform, jacobian=True, progress=monitor.stage(0.7, 1.0),
                                         **kwargs)
        elif inputs.fixed_landmarks is not None:  # images alone (DISA): the landmarks' TRE is the only metric
            out["before"] = _landmark_evaluation(inputs, None)
            out["after"] = _landmark_evaluation(inputs, result.transform)
        monitor.report(1.0, "done")
        return out

    def _create_nodes(self, outcome, computed, fixed_volume, moving_volume, moving_segmentation, output_transform,
                      apply_to_moving, inverse_transform, warped_volume, propagated_segmentation, table,
                      make_table) -> None:
        """Fill (or create) the output nodes; the nodes added here are removed again if anything fails."""
        before = bridge.scene_node_ids(self.scene)

        def detached(node):
            node.SetAndObserveTransformNodeID(None)  # an output is in its own space, under no transform
            return node

        moving_name, fixed_name = moving_volume.GetName(), fixed_volume.GetName()
        try:
            outcome.transform = detached(bridge.transform_node_from_engine(
                computed["forward"], self.scene, f"{moving_name} to {fixed_name} ({self.label})",
                node=output_transform, fixed_node=fixed_volume, moving_node=moving_volume))
            if computed["inverse"] is not None:  # its reference space is the moving volume: the roles swap
                outcome.inverse_transform = detached(bridge.transform_node_from_engine(
                    computed["inverse"], self.scene, f"{fixed_name} to {moving_name} ({self.label})",
                    node=inverse_transform, fixed_node=moving_volume, moving_node=fixed_volume))
            if computed["warped"] is not None:
                node = bridge.volume_from_image(computed["warped"], self.scene, f"{moving_name} warped ({self.label})",
                                                node=warped_volume)
                outcome.warped_volume = detached(node)
                if node.GetDisplayNode() is None:
                    node.CreateDefaultDisplayNodes()
            if computed["masks"] is not None:
                outcome.segmentation = detached(bridge.segmentation_from_masks(
                    computed["masks"], self.scene, f"{moving_segmentation.GetName()} on {fixed_name} ({self.label})",
                    node=propagated_segmentation))
            if computed["after"] is not None and (make_table or table is not None):
                node = table or self.scene.AddNewNodeByClass(
                    "vtkMRMLTableNode", f"{moving_name} to {fixed_name} ({self.label}) metrics")
                outcome.table = RegistrationEvaluationLogic(self.scene).fill_table(computed["after"], node)
            if apply_to_moving:
                for node in (moving_volume, moving_segmentation):
                    if node is not None:
                        node.SetAndObserveTransformNodeID(outcome.transform.GetID())
        except BaseException:
            bridge.remove_nodes_added_since(self.scene, before)  # with their display nodes
            raise
