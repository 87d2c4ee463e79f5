"""DISA Similarity: MR -> TRUS registration on DISA descriptors from the images alone, and similarity heatmaps. A thin
module over ``MMRegistrationSlicerLib.disa_logic`` (GUI-free, tested on slicer-core), which runs the engine's ``disa``
method (``mmreg register --method disa``) and heatmap (``mmreg disa-heatmap``) through the shared registration logic.
"""

from __future__ import annotations

import logging
from typing import Annotated

import slicer
from slicer import (vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode,
                    vtkMRMLTransformNode, vtkMRMLVectorVolumeNode)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MMRegistrationSlicerLib.module_widget import CancellableRunWidgetMixin, ParameterNodeWidgetMixin

METHOD = "disa"
OPTIONS = {  # parameter -> engine option of the method; a negative value (shown as "default") keeps the engine's
    "iterations": "iterations", "levels": "levels", "spacing": "spacing_mm", "starts": "starts", "refine": "refine",
    "rotationRange": "rotation_range_deg", "translationRange": "translation_range_mm", "minOverlap": "min_overlap",
    "maskMargin": "mask_margin_mm", "gridSpacing": "grid_spacing_mm", "weightBending": "weight_bending",
    "deformableIterations": "deformable_iterations"}
EXPLICIT_OPTIONS = {  # parameter -> engine option passed on its own (no "default" value; the weights file if given)
    "mode": "mode", "search": "search", "similarity": "similarity", "mask": "mask", "weightsFile": "weights"}


class DISASimilarity(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "DISA Similarity"
        self.parent.categories = ["Registration.MMRegistration"]
        self.parent.dependencies = []
        self.parent.contributors = ["MMRegistration contributors"]
        self.parent.helpText = (
            "Registers a moving volume (e.g. MR) onto a fixed one (e.g. TRUS) from the images alone on learned DISA "
            "descriptors (or MIND, LC2, mutual information): rigid, affine, probe pressure or deformable, local or global "
            "search; segmentations are optional (masks, metrics); the result becomes the moving volume's parent transform. "
            "'Descriptors' shows both volumes' descriptors in one colour space (same colour = similar descriptors); "
            "'Heatmap' shows how similar the point you place in the fixed volume is to every moving voxel."
        )
        self.parent.acknowledgementText = "Part of the MMRegistration extension for MR-TRUS registration."


@parameterNodeWrapper
class DISASimilarityParameterNode:
    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    fixedSegmentation: vtkMRMLSegmentationNode
    movingSegmentation: vtkMRMLSegmentationNode
    initialTransform: vtkMRMLTransformNode
    fixedLandmarks: vtkMRMLMarkupsFiducialNode
    movingLandmarks: vtkMRMLMarkupsFiducialNode
    mode: Annotated[str, Choice(["rigid", "affine", "probe", "deformable"])] = "rigid"
    search: Annotated[str, Choice(["local", "global"])] = "local"
    similarity: Annotated[str, Choice(["disa", "lc2", "mind", "mi"])] = "disa"
    mask: Annotated[str, Choice(["none", "fixed", "moving", "both"])] = "none"
    initialization: Annotated[str, Choice(["default", "none", "com", "rigid-mask", "auto", "center"])] = "default"
    iterations: Annotated[int, WithinRange(-1, 10000)] = -1
    levels: Annotated[int, WithinRange(-1, 6)] = -1
    spacing: Annotated[float, WithinRange(-1.0, 20.0)] = -1.0
    starts: Annotated[int, WithinRange(-1, 100000)] = -1
    refine: Annotated[int, WithinRange(-1, 100)] = -1
    rotationRange: Annotated[float, WithinRange(-1.0, 180.0)] = -1.0
    translationRange: Annotated[float, WithinRange(-1.0, 1000.0)] = -1.0
    minOverlap: Annotated[float, WithinRange(-1.0, 1.0)] = -1.0
    maskMargin: Annotated[float, WithinRange(-1.0, 100.0)] = -1.0
    gridSpacing: Annotated[float, WithinRange(-1.0, 100.0)] = -1.0
    weightBending: Annotated[float, WithinRange(-1.0, 1e9)] = -1.0
    deformableIterations: Annotated[int, WithinRange(-1, 10000)] = -1
    weightsFile: str = ""
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    outputTransform: vtkMRMLTransformNode
    applyToMoving: bool = True
    inverseTransform: vtkMRMLTransformNode
    warpedVolume: vtkMRMLScalarVolumeNode
    outputTable: vtkMRMLTableNode
    heatmapPoint: vtkMRMLMarkupsFiducialNode
    heatmapVolume: vtkMRMLScalarVolumeNode
    heatmapAutoUpdate: bool = True
    fixedDescriptors: vtkMRMLVectorVolumeNode
    movingDescriptors: vtkMRMLVectorVolumeNode


class DISASimilarityWidget(ParameterNodeWidgetMixin, CancellableRunWidgetMixin, ScriptedLoadableModuleWidget,
                            VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._observedPoints = None
        self._running = False
        self._cancelRequested = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.setupModuleUI("DISASimilarity.ui")
        self.logic = DISASimilarityLogic()
        self.ui.heatmapPlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceSingleMarkup
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.heatmapButton.connect("clicked(bool)", self.onHeatmapButton)
        self.ui.describeButton.connect("clicked(bool)", self.onDescribeButton)
        self.ui.heatmapPointSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onHeatmapPointChanged)
        try:  # tooltips, ranges and units from the engine's option metadata (before the parameter node connects)
            from MMRegistrationSlicerLib.option_widgets import apply_option_metadata

            apply_option_metadata(self.ui, METHOD, {**OPTIONS, **EXPLICIT_OPTIONS}, sentinel=-1)
        except ImportError:  # the engine's dependencies are not installed yet: the .ui's labels only
            logging.info("DISA Similarity: option help unavailable until the dependencies are installed")
        self.initializeParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        ParameterNodeWidgetMixin.onSceneStartClose(self, caller, event)
        self.onHeatmapPointChanged(None)

    def _checkCanApply(self, caller=None, event=None) -> None:
        p, reason = self._parameterNode, ""
        if self._running:
            reason = "Running: press Cancel to stop"
        elif not (p and p.fixedVolume and p.movingVolume):
            reason = "Select the fixed and the moving volume"
        elif p.fixedVolume == p.movingVolume:
            reason = "Fixed and moving volume must not be the same"
        elif bool(p.fixedSegmentation) != bool(p.movingSegmentation):
            reason = "Select both segmentations, or neither"
        elif p.mask != "none" and not p.fixedSegmentation:
            reason = f"Mask '{p.mask}' needs the fixed and the moving segmentation"
        elif bool(p.fixedLandmarks) != bool(p.movingLandmarks):
            reason = "Select both landmark lists for TRE, or neither"
        self.ui.applyButton.toolTip = reason or "Register the moving volume onto the fixed one"
        self.ui.applyButton.enabled = not reason
        heatmapReason = ("Running" if self._running else "Select the fixed and the moving volume"
                         if not (p and p.fixedVolume and p.movingVolume) else
                         "Select or create a point list, then place a point in the fixed volume"
                         if not p.heatmapPoint else "")
        self.ui.heatmapButton.toolTip = heatmapReason or "Similarity of the last placed point to the moving volume"
        self.ui.heatmapButton.enabled = not heatmapReason
        describeReason = ("Running" if self._running else "Select the fixed and the moving volume"
                          if not (p and p.fixedVolume and p.movingVolume) else "")
        self.ui.describeButton.enabled = not describeReason

    def onHeatmapPointChanged(self, node) -> None:
        self.ui.heatmapPlaceWidget.setCurrentNode(node)
        markups = slicer.vtkMRMLMarkupsNode
        for event in (markups.PointPositionDefinedEvent, markups.PointEndInteractionEvent):
            if self._observedPoints is not None:
                self.removeObserver(self._observedPoints, event, self._onPointMoved)
            if node is not None:  # a placed or moved point updates the heatmap (heatmapAutoUpdate)
                self.addObserver(node, event, self._onPointMoved)
        self._observedPoints = node

    def _onPointMoved(self, caller=None, event=None) -> None:
        if self._parameterNode and self._parameterNode.heatmapAutoUpdate and self.ui.heatmapButton.enabled:
            self.onHeatmapButton()

    def onApplyButton(self) -> None:
        from MMRegistrationSlicerLib.disa_logic import registration_summary

        self._setRunning(True)
        try:
            with slicer.util.tryWithErrorDisplay("DISA registration failed.", waitCursor=True):
                p = self._parameterNode
                outcome = self.logic.process(p, self._onProgress, lambda: self._cancelRequested)
                if outcome is None:
                    self.ui.statusLabel.text = "Cancelled: no output was created"
                    return
                p.outputTransform, p.outputTable = outcome.transform, outcome.table
                self.ui.statusLabel.text = registration_summary(outcome)
                slicer.util.setSliceViewerLayers(background=p.fixedVolume, foreground=p.movingVolume,
                                                 foregroundOpacity=0.5)
        finally:
            self._setRunning(False)

    def onHeatmapButton(self) -> None:
        from MMRegistrationSlicerLib.disa_logic import heatmap_summary

        with slicer.util.tryWithErrorDisplay("DISA heatmap failed.", waitCursor=True):
            p = self._parameterNode
            result = self.logic.heatmap(p)
            p.heatmapVolume = result.volume
            self.ui.statusLabel.text = heatmap_summary(result)
            slicer.util.setSliceViewerLayers(background=p.movingVolume, foreground=result.volume,
                                             foregroundOpacity=0.5)

    def onDescribeButton(self) -> None:
        from MMRegistrationSlicerLib.disa_logic import descriptor_summary

        with slicer.util.tryWithErrorDisplay("Computing the descriptors failed.", waitCursor=True):
            p = self._parameterNode
            result = self.logic.describe(p)
            p.fixedDescriptors, p.movingDescriptors = result.fixed_volume, result.moving_volume
            self.ui.statusLabel.text = descriptor_summary(result)
            slicer.util.setSliceViewerLayers(background=result.fixed_volume, foreground=result.moving_volume,
                                             foregroundOpacity=0.5)


class DISASimilarityLogic(ScriptedLoadableModuleLogic):
    """Slicer-side wrapper of the GUI-free logic (``MMRegistrationSlicerLib.disa_logic``)."""

    _disa = None  # the DISALogic: its descriptor cache is kept between heatmaps

    def getParameterNode(self):
        return DISASimilarityParameterNode(super().getParameterNode())

    def disaLogic(self):
        from MMRegistrationSlicerLib.module_widget import scene_logic

        def make(scene):
            from MMRegistrationSlicerLib.disa_logic import DISALogic

            return DISALogic(scene)

        self._disa = scene_logic(self._disa, make)
        return self._disa

    @staticmethod
    def options(p) -> dict:
        """The engine's advanced DISA options from the parameter node (negative = the engine's default)."""
        from MMRegistrationSlicerLib.module_widget import options_from_parameters

        return options_from_parameters(p, OPTIONS, text={"weightsFile": "weights"})

    def process(self, p, progress=None, cancel=None):
        """Register with the parameter node's inputs and options; raises ValueError on bad input. Returns the
        ``RegistrationOutcome``, or None when ``cancel()`` stopped the run (the scene is then unchanged)."""
        logic = self.disaLogic()
        from MMRegistrationLib.core.errors import Cancelled

        try:
            return logic.register(
                p.fixedVolume, p.movingVolume, p.fixedSegmentation, p.movingSegmentation, p.initialTransform,
                p.mode, p.search, p.similarity, p.mask, self.options(p),
                init=None if p.initialization == "default" else p.initialization, seed=p.seed, device=p.device,
                fixed_landmarks=p.fixedLandmarks, moving_landmarks=p.movingLandmarks,
                output_transform=p.outputTransform, apply_to_moving=p.applyToMoving,
                inverse_transform=p.inverseTransform, warped_volume=p.warpedVolume, table=p.outputTable,
                progress=progress, cancel=cancel)
        except Cancelled:
            logging.info("DISA registration cancelled")
            return None

    def describe(self, p):
        """Descriptors of both volumes as RGB volumes into ``p.fixedDescriptors``/``p.movingDescriptors`` (created if
        None; MIND when the similarity is ``mind``, else DISA); raises ValueError on bad input."""
        return self.disaLogic().describe(
            p.fixedVolume, p.movingVolume, p.fixedDescriptors, p.movingDescriptors,
            similarity="mind" if p.similarity == "mind" else "disa", weights=p.weightsFile.strip() or None,
            spacing_mm=p.spacing if p.spacing > 0 else None, device=p.device)

    def heatmap(self, p):
        """Heatmap of the last control point of ``p.heatmapPoint`` (MIND descriptors when the similarity is
        ``mind``, else DISA) into ``p.heatmapVolume`` (created if None); raises ValueError on bad input."""
        return self.disaLogic().heatmap(
            p.fixedVolume, p.movingVolume, p.heatmapPoint, p.heatmapVolume, point_index=-1,
            similarity="mind" if p.similarity == "mind" else "disa", weights=p.weightsFile.strip() or None,
            spacing_mm=p.spacing if p.spacing > 0 else None, device=p.device)


class DISASimilarityTest(ScriptedLoadableModuleTest):
    """Runs in Slicer the same scenarios the pytest suite runs on slicer-core."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from MMRegistrationSlicerLib.dependencies import self_test_can_run

        if not self_test_can_run(self):
            return
        from MMRegistrationSlicerLib import scenarios

        for scenario in (scenarios.disa_registers_sample_case_from_images,
                         scenarios.heatmap_peaks_at_the_point_of_the_same_image,
                         scenarios.disa_heatmap_ranks_the_corresponding_point_high,
                         scenarios.disa_cancel_leaves_the_scene_unchanged,
                         scenarios.disa_descriptor_pictures_share_one_colour_space):
            self.setUp()
            scenario(slicer.mrmlScene)
            self.delayDisplay(f"{scenario.__name__} passed")
