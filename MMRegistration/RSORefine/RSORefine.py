"""RSO Refine: MR -> TRUS registration in three steps (paper 002): the trained network, image-specific (ISO) and
region-specific refinement (RSO) in boxes you place, with an undoable history. A thin module over the GUI-free
``MMRegistrationSlicerLib.rso_logic`` (tested on slicer-core) and the engine's ``RefinementSession``."""

from __future__ import annotations

import logging
from typing import Annotated

import slicer
from slicer import (vtkMRMLMarkupsFiducialNode, vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode,
                    vtkMRMLTransformNode)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MMRegistrationSlicerLib.module_widget import (CancellableRunWidgetMixin, ParameterNodeWidgetMixin,
                                                  SegmentMappingWidgetMixin, SegmentProstateWidgetMixin)

METHOD = "refine"  # the engine's options of one refinement step (RefineConfig), see option_widgets.OPTION_SETS
OPTIONS = {  # parameter -> engine option; a negative value (shown as "default") keeps the engine's
    "iterations": "iterations", "learningRate": "learning_rate", "labelWeight": "label_weight",
    "imageWeight": "image_weight", "smoothWeight": "smooth_weight", "patience": "patience",
    "holdWeight": "hold_weight", "margin": "margin_mm", "ramp": "ramp_mm"}
EXPLICIT_OPTIONS = {  # parameter -> engine option passed as it is (the weights only when given)
    "trainable": "trainable", "imageSimilarity": "image_similarity", "precision": "precision", "hold": "hold",
    "weights": "weights"}


class RSORefine(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "RSO Refine"
        self.parent.categories = ["Registration.MMRegistration"]
        self.parent.dependencies = []
        self.parent.contributors = ["MMRegistration contributors"]
        self.parent.helpText = (
            "Registers a moving volume (MR) onto a fixed one (TRUS) in steps: 'Register (general model)' runs the "
            "trained network (or choose a starting transform, e.g. a SINR result); 'Refine whole image (ISO)' "
            "fine-tunes the network on this case; 'Place box' puts a 40 mm box at the crosshair and 'Refine in box "
            "(RSO)' fine-tunes inside it only, as often as needed. The history table shows each step's DSC and TRE; "
            "Undo, Redo and 'Show step' move through it. The output grid transform (the moving volume's parent) "
            "always holds the shown step. Segmentations (matched by name) drive the label term ('Segment prostate' "
            "makes one with the trained network of the volume's modality); landmarks add TRE."
        )
        self.parent.acknowledgementText = "Part of the MMRegistration extension for MR-TRUS registration."


@parameterNodeWrapper
class RSORefineParameterNode:
    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    fixedSegmentation: vtkMRMLSegmentationNode
    movingSegmentation: vtkMRMLSegmentationNode
    startingTransform: vtkMRMLTransformNode
    fixedLandmarks: vtkMRMLMarkupsFiducialNode
    movingLandmarks: vtkMRMLMarkupsFiducialNode
    outputTransform: vtkMRMLTransformNode
    roi: vtkMRMLMarkupsROINode
    boxSize: Annotated[float, WithinRange(5.0, 200.0)] = 40.0
    iterations: Annotated[int, WithinRange(-1, 100000)] = -1
    learningRate: Annotated[float, WithinRange(-1.0, 1.0)] = -1.0
    trainable: Annotated[str, Choice(["coarse", "decoder", "all"])] = "coarse"
    labelWeight: Annotated[float, WithinRange(-1.0, 100.0)] = -1.0
    imageSimilarity: Annotated[str, Choice(["disa", "mind", "lc2", "mi", "none"])] = "disa"
    imageWeight: Annotated[float, WithinRange(-1.0, 100.0)] = -1.0
    smoothWeight: Annotated[float, WithinRange(-1.0, 1000.0)] = -1.0
    patience: Annotated[int, WithinRange(-1, 100000)] = -1
    hold: Annotated[str, Choice(["window", "penalty"])] = "window"
    holdWeight: Annotated[float, WithinRange(-1.0, 1000.0)] = -1.0
    margin: Annotated[float, WithinRange(-1.0, 100.0)] = -1.0
    ramp: Annotated[float, WithinRange(-1.0, 50.0)] = -1.0
    precision: Annotated[str, Choice(["auto", "float32", "bfloat16"])] = "auto"
    weights: str = ""
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"


class RSORefineWidget(ParameterNodeWidgetMixin, CancellableRunWidgetMixin, SegmentMappingWidgetMixin,
                      SegmentProstateWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None  # the parameter node and run state: the mixins' class attributes

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.setupModuleUI("RSORefine.ui")
        self.logic = RSORefineLogic()
        for button, slot in ((self.ui.generalButton, self.onGeneralButton), (self.ui.isoButton, self.onIsoButton),
                             (self.ui.rsoButton, self.onRsoButton), (self.ui.placeBoxButton, self.onPlaceBoxButton),
                             (self.ui.cancelButton, self.onCancelButton), (self.ui.undoButton, self.onUndoButton),
                             (self.ui.redoButton, self.onRedoButton), (self.ui.showStepButton, self.onShowStepButton),
                             (self.ui.exportButton, self.onExportButton)):
            button.connect("clicked(bool)", slot)
        self.setupSegmentMapping()
        self.setupSegmentProstate()
        try:  # tooltips, ranges and units from the engine's option metadata (before the parameter node connects)
            from MMRegistrationSlicerLib.option_widgets import apply_option_metadata

            apply_option_metadata(self.ui, METHOD, {**OPTIONS, **EXPLICIT_OPTIONS}, sentinel=-1)
        except ImportError:  # the engine's dependencies are not installed yet: the .ui's labels only
            logging.info("RSO Refine: option help unavailable until the dependencies are installed")
        self.initializeParameterNode()
        self.updateHistory()

    def onSceneStartClose(self, caller, event) -> None:
        ParameterNodeWidgetMixin.onSceneStartClose(self, caller, event)
        self.logic.reset()
        self.updateHistory()

    def _checkCanApply(self, caller=None, event=None) -> None:
        p, reason = self._parameterNode, ""
        self.updateSegmentProstateButtons()
        if self._running:
            reason = "Running: press Cancel to stop"
        elif not (p and p.fixedVolume and p.movingVolume):
            reason = "Select the fixed and the moving volume"
        elif p.fixedVolume == p.movingVolume:
            reason = "Fixed and moving volume must not be the same"
        elif bool(p.fixedSegmentation) != bool(p.movingSegmentation):
            reason = "Select both segmentations, or neither"
        elif bool(p.fixedLandmarks) != bool(p.movingLandmarks):
            reason = "Select both landmark lists for TRE, or neither"
        for button in (self.ui.generalButton, self.ui.isoButton):
            button.enabled = not reason
        roiReason = reason or ("" if p.roi else "Place a box (or choose a markups ROI) first")
        self.ui.rsoButton.enabled = not roiReason
        self.ui.rsoButton.toolTip = roiReason or "Fine-tune the network inside the box, from the newest step"
        self.ui.placeBoxButton.enabled = not self._running
        self.updateHistory()

    def updateHistory(self) -> None:
        """The history table (the shown step selected) and the history buttons."""
        import qt

        rows, cells, columns, session = self.logic.history()
        table = self.ui.historyTable
        table.setColumnCount(len(columns))
        table.setHorizontalHeaderLabels(columns)
        table.setRowCount(len(cells))
        for r, texts in enumerate(cells):
            for c, text in enumerate(texts):
                table.setItem(r, c, qt.QTableWidgetItem(text))
        shown = next((r for r, row in enumerate(rows) if row["shown"]), None)
        if shown is not None:
            table.selectRow(shown)
        idle = not self._running
        self.ui.undoButton.enabled = idle and session is not None and session.can_undo
        self.ui.redoButton.enabled = idle and session is not None and session.can_redo
        self.ui.showStepButton.enabled = self.ui.exportButton.enabled = idle and bool(rows)

    def _run(self, title: str, action) -> None:
        """Run ``action(logic, options, progress, cancel)`` on the current inputs, then show the history."""
        self._setRunning(True)
        try:
            with slicer.util.tryWithErrorDisplay(f"{title} failed.", waitCursor=True):
                p = self._parameterNode
                summary = self.logic.run(p, self.segmentMapping(), action,
                                         self._onProgress, lambda: self._cancelRequested)
                self.ui.statusLabel.text = summary or "Cancelled: the history and the output are unchanged"
                slicer.util.setSliceViewerLayers(background=p.fixedVolume, foreground=p.movingVolume,
                                                 foregroundOpacity=0.5)
        finally:
            self._setRunning(False)

    def onGeneralButton(self) -> None:
        weights = self._parameterNode.weights.strip()
        self._run("General model registration", lambda logic, options, progress, cancel: logic.register_general(
            {"weights": weights} if weights else None, progress, cancel))

    def onIsoButton(self) -> None:
        self._run("ISO refinement", lambda logic, options, progress, cancel: logic.refine_whole_image(
            options, progress, cancel))

    def onRsoButton(self) -> None:
        roi = self._parameterNode.roi
        self._run("RSO refinement", lambda logic, options, progress, cancel: logic.refine_in_box(
            roi, options, progress, cancel))

    def onPlaceBoxButton(self) -> None:
        with slicer.util.tryWithErrorDisplay("Placing the box failed."):
            p = self._parameterNode
            crosshair = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
            p.roi = self.logic.refineLogic().place_box(crosshair.GetCrosshairRAS(), p.boxSize, node=p.roi)

    def _history(self, title: str, action) -> None:
        """Run ``action(logic) -> status text`` on the session's history, then show it."""
        with slicer.util.tryWithErrorDisplay(f"{title} failed."):
            self.ui.statusLabel.text = action(self.logic.refineLogic())
        self.updateHistory()

    def onUndoButton(self) -> None:
        self._history("Undo", lambda logic: f"Undone; shown: {getattr(logic.undo(), 'name', 'no step (identity)')}")

    def onRedoButton(self) -> None:
        self._history("Redo", lambda logic: f"Redone: {logic.redo().name}")

    def onShowStepButton(self) -> None:
        row = self.ui.historyTable.currentRow()
        self._history("Show step", lambda logic: f"Shown: {logic.show_step(max(row, 0)).name}")

    def onExportButton(self) -> None:
        import qt

        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Export the shown step into")
        if folder:  # into a new sub-folder named after the step: the chosen folder itself is never replaced
            self._history("Export", lambda logic: "Exported step '{step}' to {folder}".format(
                **logic.export_into(folder)))


class RSORefineLogic(ScriptedLoadableModuleLogic):
    """Slicer-side wrapper of the GUI-free logic (``MMRegistrationSlicerLib.rso_logic.RSORefineLogic``), kept for
    the scene with its session."""

    _refine = None

    def getParameterNode(self):
        return RSORefineParameterNode(super().getParameterNode())

    def refineLogic(self):
        from MMRegistrationSlicerLib.module_widget import scene_logic

        def make(scene):
            from MMRegistrationSlicerLib.rso_logic import RSORefineLogic as SceneLogic

            return SceneLogic(scene)

        self._refine = scene_logic(self._refine, make)
        return self._refine

    def reset(self) -> None:
        if self._refine is not None:
            self._refine.reset()

    def history(self) -> tuple:
        """``(rows, cell texts, column titles, session)`` of the history table (nothing before the first run, when
        the engine may not be importable yet)."""
        if self._refine is None:
            return [], [], [], None
        from MMRegistrationSlicerLib.rso_logic import HISTORY_COLUMNS, history_cells

        rows = self._refine.history_rows()
        return rows, history_cells(rows), [title for _, title in HISTORY_COLUMNS], self._refine.session

    @staticmethod
    def options(p) -> dict:
        """The refinement options from the parameter node (negative numbers = the engine's default)."""
        from MMRegistrationSlicerLib.module_widget import options_from_parameters

        explicit = {name: key for name, key in EXPLICIT_OPTIONS.items() if name != "weights"}
        return options_from_parameters(p, OPTIONS, explicit, {"weights": "weights"})

    def run(self, p, segmentMapping, action, progress=None, cancel=None):
        """Pass the parameter node's inputs to the logic (a new session when they changed), run ``action(logic,
        options, progress, cancel)``; returns the step's summary, or None when cancelled (nothing changed)."""
        logic = self.refineLogic()
        from MMRegistrationLib.core.errors import Cancelled
        from MMRegistrationSlicerLib.rso_logic import step_summary

        if logic.set_inputs(p.fixedVolume, p.movingVolume, p.fixedSegmentation, p.movingSegmentation, segmentMapping,
                            p.fixedLandmarks, p.movingLandmarks, p.startingTransform, p.outputTransform, p.device,
                            p.seed):
            logging.info("RSO Refine: new session (the inputs changed)")
        try:
            step = action(logic, self.options(p), progress, cancel)
        except Cancelled:
            logging.info("RSO Refine: step cancelled")
            return None
        finally:
            p.outputTransform = logic.output_transform
        logging.info("RSO Refine: %s", step_summary(step))
        return step_summary(step)


class RSORefineTest(ScriptedLoadableModuleTest):
    """Runs in Slicer the same scenarios the pytest suite runs on slicer-core."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from MMRegistrationSlicerLib.dependencies import self_test_can_run

        if not self_test_can_run(self):
            return
        from MMRegistrationSlicerLib import scenarios

        for scenario in (scenarios.rso_refines_sample_case, scenarios.rso_cancel_leaves_history_and_output_unchanged,
                         scenarios.rso_starts_from_a_transform_node):
            self.setUp()
            scenario(slicer.mrmlScene)
            self.delayDisplay(f"{scenario.__name__} passed")
