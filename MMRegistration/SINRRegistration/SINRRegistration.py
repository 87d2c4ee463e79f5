"""SINR Registration: deformable MR -> TRUS registration driven by the prostate (and context) segmentations.

A thin module: the GUI-free logic is ``MMRegistrationSlicerLib.registration_logic`` (tested on slicer-core), the
method is the engine's (``MMRegistrationLib.registration.sinr``), the same code as ``mmreg register --method sinr``.
"""

from __future__ import annotations

import logging
from typing import Annotated

import slicer
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
    vtkMRMLTransformNode,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MMRegistrationSlicerLib.module_widget import (
    CancellableRunWidgetMixin,
    ParameterNodeWidgetMixin,
    SegmentMappingWidgetMixin,
    SegmentProstateWidgetMixin,
)

METHOD = "sinr"
OPTIONS = {  # parameter -> engine option of the method; a negative value (shown as "preset") keeps the preset's
    "iterations": "iterations", "learningRate": "learning_rate", "velocitySpacing": "velocity_spacing_mm",
    "lossSpacing": "loss_spacing_mm", "margin": "margin_mm", "weightBending": "weight_bending",
    "weightTV": "weight_tv", "weightMSE": "weight_mse", "contextWeight": "context_weight",
    "weightSDM": "weight_sdm", "outputSpacing": "output_spacing_mm", "weightImage": "weight_image",
}
EXPLICIT_OPTIONS = {"preset": "preset"}  # parameter -> engine option passed as it is (no "preset" value)


class SINRRegistration(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SINR Registration"
        self.parent.categories = ["Registration.MMRegistration"]
        self.parent.dependencies = []
        self.parent.contributors = ["MMRegistration contributors"]
        self.parent.helpText = (
            "Deformable registration of a moving volume (e.g. MR) onto a fixed one (e.g. TRUS), driven by their "
            "segmentations (segments matched by name; the prostate is the target, other segments are context). "
            "SINR fits an implicit neural velocity field (diffeomorphic, with its inverse) after an initial alignment: "
            "by default 'auto' (rigid alignment of the masks when they share two or more structures, centre of mass "
            "with the prostate alone), or your initial transform. "
            "Outputs: a grid transform (set as the moving volume's parent), optionally its inverse and the warped "
            "volume, the moving segmentation propagated onto the fixed volume, and a metrics table. "
            "'Segment prostate' beside a segmentation selector segments that volume's prostate with the trained "
            "network of its modality (fixed: TRUS, moving: MR): check and correct it before registering."
        )
        self.parent.acknowledgementText = "Part of the MMRegistration extension for MR-TRUS registration."


@parameterNodeWrapper
class SINRRegistrationParameterNode:
    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    fixedSegmentation: vtkMRMLSegmentationNode
    movingSegmentation: vtkMRMLSegmentationNode
    initialTransform: vtkMRMLTransformNode
    fixedLandmarks: vtkMRMLMarkupsFiducialNode
    movingLandmarks: vtkMRMLMarkupsFiducialNode
    outputTransform: vtkMRMLTransformNode
    applyToMoving: bool = True
    inverseTransform: vtkMRMLTransformNode
    warpedVolume: vtkMRMLScalarVolumeNode
    propagatedSegmentation: vtkMRMLSegmentationNode
    outputTable: vtkMRMLTableNode
    preset: Annotated[str, Choice(["fast", "accurate"])] = "fast"
    initialization: Annotated[str, Choice(["default", "auto", "rigid-mask", "com", "none", "center"])] = "default"
    iterations: Annotated[int, WithinRange(-1, 100000)] = -1
    learningRate: Annotated[float, WithinRange(-1.0, 1.0)] = -1.0
    velocitySpacing: Annotated[float, WithinRange(-1.0, 50.0)] = -1.0
    lossSpacing: Annotated[float, WithinRange(-1.0, 50.0)] = -1.0
    margin: Annotated[float, WithinRange(-1.0, 200.0)] = -1.0
    weightBending: Annotated[float, WithinRange(-1.0, 1e9)] = -1.0
    weightTV: Annotated[float, WithinRange(-1.0, 1e6)] = -1.0
    weightMSE: Annotated[float, WithinRange(-1.0, 1e6)] = -1.0
    contextWeight: Annotated[float, WithinRange(-1.0, 100.0)] = -1.0
    weightSDM: Annotated[float, WithinRange(-1.0, 1e6)] = -1.0
    outputSpacing: Annotated[float, WithinRange(-1.0, 50.0)] = -1.0
    weightImage: Annotated[float, WithinRange(-1.0, 1e6)] = -1.0
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"


class SINRRegistrationWidget(ParameterNodeWidgetMixin, CancellableRunWidgetMixin, SegmentMappingWidgetMixin,
                              SegmentProstateWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._running = False
        self._cancelRequested = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.setupModuleUI("SINRRegistration.ui")
        self.logic = SINRRegistrationLogic()
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.setupSegmentMapping()
        self.setupSegmentProstate()
        try:  # tooltips, ranges and units from the engine's option metadata (before the parameter node connects)
            from MMRegistrationSlicerLib.option_widgets import apply_option_metadata

            apply_option_metadata(self.ui, METHOD, {**OPTIONS, **EXPLICIT_OPTIONS}, sentinel=-1)
        except ImportError:  # the engine's dependencies are not installed yet: the .ui's labels only
            logging.info("SINR Registration: option help unavailable until the dependencies are installed")
        self.initializeParameterNode()

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        self.updateSegmentProstateButtons()
        if self._running:
            reason = "Running: press Cancel to stop"
        elif not (p and p.fixedVolume and p.movingVolume):
            reason = "Select the fixed and the moving volume"
        elif p.fixedVolume == p.movingVolume:
            reason = "Fixed and moving volume must not be the same"
        elif not (p.fixedSegmentation and p.movingSegmentation):
            reason = "Select the fixed and the moving segmentation (SINR is driven by them)"
        elif p.fixedSegmentation == p.movingSegmentation:
            reason = "Fixed and moving segmentation must not be the same"
        elif bool(p.fixedLandmarks) != bool(p.movingLandmarks):
            reason = "Select both landmark lists for TRE, or neither"
        else:
            reason = ""
        self.ui.applyButton.toolTip = reason or "Register the moving volume onto the fixed one"
        self.ui.applyButton.enabled = not reason

    def onApplyButton(self) -> None:
        self._setRunning(True)
        try:
            with slicer.util.tryWithErrorDisplay("SINR registration failed.", waitCursor=True):
                p = self._parameterNode
                outcome = self.logic.process(p, self.segmentMapping(),
                                             self._onProgress, lambda: self._cancelRequested)
                if outcome is None:
                    self.ui.statusLabel.text = "Cancelled: no output was created"
                    return
                p.outputTransform, p.propagatedSegmentation, p.outputTable = (
                    outcome.transform, outcome.segmentation, outcome.table)
                self.ui.statusLabel.text = self.logic.summary(outcome)
                slicer.util.setSliceViewerLayers(background=p.fixedVolume, foreground=p.movingVolume,
                                                 foregroundOpacity=0.5)
        finally:
            self._setRunning(False)


class SINRRegistrationLogic(ScriptedLoadableModuleLogic):
    """Slicer-side wrapper of the GUI-free logic (``MMRegistrationSlicerLib.registration_logic``)."""

    def getParameterNode(self):
        return SINRRegistrationParameterNode(super().getParameterNode())

    @staticmethod
    def options(p) -> dict:
        """The engine's SINR options from the parameter node (negative = the preset's value)."""
        from MMRegistrationSlicerLib.module_widget import options_from_parameters

        return options_from_parameters(p, OPTIONS, EXPLICIT_OPTIONS)

    def process(self, p, segmentMapping=None, progress=None, cancel=None):
        """Register with the parameter node's inputs and options; raises ValueError on bad input. Returns the
        ``RegistrationOutcome``, or None when ``cancel()`` stopped the run (the scene is then unchanged)."""
        from MMRegistrationSlicerLib.dependencies import ensure_engine_dependencies

        ensure_engine_dependencies()
        from MMRegistrationLib.core.errors import Cancelled
        from MMRegistrationSlicerLib.registration_logic import RegistrationLogic

        try:
            outcome = RegistrationLogic(slicer.mrmlScene, METHOD).process(
                p.fixedVolume, p.movingVolume, p.fixedSegmentation, p.movingSegmentation, segmentMapping,
                p.initialTransform, None if p.initialization == "default" else p.initialization, self.options(p),
                p.seed, p.device, p.fixedLandmarks, p.movingLandmarks, output_transform=p.outputTransform,
                apply_to_moving=p.applyToMoving, inverse_transform=p.inverseTransform, warped_volume=p.warpedVolume,
                propagated_segmentation=p.propagatedSegmentation, table=p.outputTable, progress=progress,
                cancel=cancel)
        except Cancelled:
            logging.info("SINR registration cancelled")
            return None
        logging.info("SINR registration: %s", self.summary(outcome))
        return outcome

    @staticmethod
    def summary(outcome) -> str:
        """One line: Dice of the first (target) segment and mean TRE before -> after, and the run time."""
        text = "Done"
        if outcome.after is not None:
            before, after = outcome.before.rows[0], outcome.after.rows[0]
            text = f"{after['name']} DSC {before['dice']:.3f} -> {after['dice']:.3f}"
        if outcome.after is not None and outcome.after.tre is not None:
            text += f", TRE {outcome.before.tre['tre_mean_mm']:.2f} -> {outcome.after.tre['tre_mean_mm']:.2f} mm"
        seconds = outcome.record["wall_seconds"]
        return text + f" ({seconds['init'] + seconds['register']:.1f} s on {outcome.record['device']})"


class SINRRegistrationTest(ScriptedLoadableModuleTest):
    """Runs in Slicer the same scenarios the pytest suite runs on slicer-core."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from MMRegistrationSlicerLib.dependencies import self_test_can_run

        if not self_test_can_run(self):
            return
        from MMRegistrationSlicerLib import scenarios

        for scenario in (scenarios.sinr_registers_sample_case, scenarios.registration_reruns_into_the_same_nodes,
                         scenarios.registration_cancel_leaves_the_scene_unchanged):
            self.setUp()
            scenario(slicer.mrmlScene)
            self.delayDisplay(f"{scenario.__name__} passed")
