"""Registration Evaluation: Dice, surface distances (MSD, HD95), landmark TRE and Jacobian of any transform.

A thin module: the GUI-free logic is ``MMRegistrationSlicerLib.evaluation_logic`` (tested on slicer-core),
the metrics are the engine's (``MMRegistrationLib.evaluation``), the same code as ``mmreg evaluate``.
"""

from __future__ import annotations

import logging

import qt
import slicer
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
    vtkMRMLTransformNode,
)
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MMRegistrationSlicerLib.module_widget import ParameterNodeWidgetMixin, SegmentMappingWidgetMixin


class RegistrationEvaluation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Registration Evaluation"
        self.parent.categories = ["Registration.MMRegistration"]
        self.parent.dependencies = []
        self.parent.contributors = ["MMRegistration contributors"]
        self.parent.helpText = (
            "Evaluate a registration: the moving segmentation is mapped onto the fixed one through the chosen "
            "transform (any Slicer transform; by default the moving segmentation's own parent transform) and "
            "compared per segment (Dice, mean symmetric surface distance, HD95, HD in mm), with landmark TRE and "
            "the Jacobian determinant of the transform. Segments are matched by name; edit the mapping if needed."
        )
        self.parent.acknowledgementText = "Part of the MMRegistration extension for MR-TRUS registration."


@parameterNodeWrapper
class RegistrationEvaluationParameterNode:
    fixedSegmentation: vtkMRMLSegmentationNode
    movingSegmentation: vtkMRMLSegmentationNode
    transform: vtkMRMLTransformNode
    fixedLandmarks: vtkMRMLMarkupsFiducialNode
    movingLandmarks: vtkMRMLMarkupsFiducialNode
    outputTable: vtkMRMLTableNode
    jacobianVolume: vtkMRMLScalarVolumeNode


class RegistrationEvaluationWidget(ParameterNodeWidgetMixin, SegmentMappingWidgetMixin, ScriptedLoadableModuleWidget,
                                   VTKObservationMixin):
    _mappingUnusedText = "(not evaluated)"

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._evaluation = None
        self._running = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.setupModuleUI("RegistrationEvaluation.ui")
        self.logic = RegistrationEvaluationLogic()
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.saveReportButton.connect("clicked(bool)", self.onSaveReport)
        self.setupSegmentMapping()
        self.initializeParameterNode()

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if self._running:
            reason = "Computing the metrics"
        elif not (p and p.fixedSegmentation and p.movingSegmentation):
            reason = "Select the fixed and the moving segmentation"
        elif p.fixedSegmentation == p.movingSegmentation:
            reason = "Fixed and moving segmentation must not be the same"
        elif bool(p.fixedLandmarks) != bool(p.movingLandmarks):
            reason = "Select both landmark lists for TRE, or neither"
        else:
            reason = ""
        self.ui.applyButton.toolTip = reason or "Compute the metrics"
        self.ui.applyButton.enabled = not reason

    def _setRunning(self, running: bool) -> None:
        self._running = running
        self._checkCanApply()

    def onApplyButton(self) -> None:
        """Evaluate (Apply stays disabled meanwhile); the output table is created or filled only on success."""
        self._setRunning(True)
        try:
            with slicer.util.tryWithErrorDisplay("Evaluation failed.", waitCursor=True):
                self._evaluate(self._parameterNode)
        finally:
            self._setRunning(False)

    def _evaluate(self, p) -> None:
        self._evaluation = self.logic.process(
            p.fixedSegmentation, p.movingSegmentation, p.transform, self.segmentMapping(),
            p.fixedLandmarks, p.movingLandmarks, p.outputTable, p.jacobianVolume,
            progress=lambda fraction, message: slicer.app.processEvents(),
        )
        p.outputTable = self.logic.table
        self.ui.saveReportButton.enabled = True
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(p.outputTable.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()

    def onSaveReport(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(None, "Folder for the evaluation report (CSV, JSON, PNG)")
        if not folder or self._evaluation is None:
            return
        with slicer.util.tryWithErrorDisplay("Saving the report failed.", waitCursor=True):
            paths = self.logic.saveReport(self._evaluation, folder)
            slicer.util.infoDisplay("Report written:\n" + "\n".join(str(p) for p in paths.values()))


class RegistrationEvaluationLogic(ScriptedLoadableModuleLogic):
    """Slicer-side wrapper of the GUI-free logic (``MMRegistrationSlicerLib.evaluation_logic``)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._logic = None
        self.table = None  # the output table node of the last evaluation

    def getParameterNode(self):
        return RegistrationEvaluationParameterNode(super().getParameterNode())

    def process(self, fixedSegmentation, movingSegmentation, transform=None, segmentMapping=None,
                fixedLandmarks=None, movingLandmarks=None, outputTable=None, jacobianVolume=None,
                progress=None, cancel=None):
        """Evaluate; raises ValueError on bad input. Returns the engine's CaseEvaluation; the table node (``outputTable``,
        or a new one) is filled only once the metrics are computed and is then ``self.table``."""
        from MMRegistrationSlicerLib.dependencies import ensure_engine_dependencies

        ensure_engine_dependencies()
        from MMRegistrationSlicerLib.evaluation_logic import RegistrationEvaluationLogic as Logic

        self._logic = Logic(slicer.mrmlScene)
        evaluation = self._logic.process(
            fixedSegmentation, movingSegmentation, transform, segmentMapping, fixedLandmarks, movingLandmarks,
            outputTable, jacobianVolume, progress, cancel,
        )
        self.table = self._logic.table
        logging.info("Registration evaluation: %s", [(r["name"], round(r["dice"], 3)) for r in evaluation.rows])
        return evaluation

    def saveReport(self, evaluation, folder):
        """CSV + JSON + PNG of the last evaluation into ``folder``."""
        from MMRegistrationSlicerLib.dependencies import ensure_report_dependencies

        if self._logic is None:
            raise ValueError("Run the evaluation first")
        ensure_report_dependencies()
        return self._logic.save_report(evaluation, folder)


class RegistrationEvaluationTest(ScriptedLoadableModuleTest):
    """Runs in Slicer the same scenarios the pytest suite runs on slicer-core."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from MMRegistrationSlicerLib.dependencies import self_test_can_run

        if not self_test_can_run(self):
            return
        self.setUp()
        self.test_evaluation_improves_with_ground_truth()
        self.setUp()
        self.test_evaluation_follows_the_moving_parent_transform()

    def test_evaluation_improves_with_ground_truth(self):
        from MMRegistrationSlicerLib import scenarios

        scenarios.evaluation_improves_with_ground_truth(slicer.mrmlScene)
        self.delayDisplay("Evaluation with the ground truth passed")

    def test_evaluation_follows_the_moving_parent_transform(self):
        from MMRegistrationSlicerLib import scenarios

        scenarios.evaluation_follows_the_moving_parent_transform(slicer.mrmlScene)
        self.delayDisplay("Evaluation of the moving parent transform passed")
