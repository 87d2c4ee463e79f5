"""What every MMRegistration module widget does the same way: load its ``.ui``, follow the scene's close events and
keep a typed parameter node connected to the GUI (``SlicerParameterName`` bindings).

A widget class lists :class:`ParameterNodeWidgetMixin` before ``ScriptedLoadableModuleWidget`` and
``VTKObservationMixin``, calls :meth:`setupModuleUI` from its ``setup`` and defines ``_checkCanApply(caller=None,
event=None)`` (called whenever the parameter node changes). Imports of Slicer's GUI live inside the methods, so the
module can be imported (and checked) where Qt is absent.
"""

from __future__ import annotations


class ParameterNodeWidgetMixin:
    """Parameter-node plumbing shared by the module widgets (needs ``self.logic.getParameterNode()``)."""

    _parameterNode = None
    _parameterNodeGuiTag = None

    def setupModuleUI(self, ui_file: str):
        """Load ``Resources/UI/<ui_file>`` into the module panel, set ``self.ui`` and observe the scene closing.
        Returns the loaded widget."""
        import slicer

        ui_widget = slicer.util.loadUI(self.resourcePath(f"UI/{ui_file}"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        return ui_widget

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnectParameterNode()
        self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        """Connect ``inputParameterNode`` (a ``parameterNodeWrapper`` instance, or None) to the GUI."""
        import vtk

        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _disconnectParameterNode(self) -> None:
        import vtk

        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)


class CancellableRunWidgetMixin:
    """Progress bar, status line and Cancel button of a long run (the ``.ui`` has ``progressBar``, ``statusLabel`` and
    ``cancelButton``). Pass :meth:`_onProgress` and ``lambda: self._cancelRequested`` to the logic."""

    _running = False
    _cancelRequested = False

    def _setRunning(self, running: bool) -> None:
        self._running, self._cancelRequested = running, False
        self.ui.cancelButton.enabled = running
        if running:
            self.ui.progressBar.value = 0
        self._checkCanApply()

    def _onProgress(self, fraction: float, message: str) -> None:
        import slicer

        self.ui.progressBar.value = round(100 * fraction)
        self.ui.statusLabel.text = message
        slicer.app.processEvents()  # keeps the GUI (and the Cancel button) responsive

    def onCancelButton(self) -> None:
        self._cancelRequested = True
        self.ui.statusLabel.text = "Cancelling..."


def options_from_parameters(p, numeric: dict, explicit: dict = (), text: dict = ()) -> dict:
    """Engine options from a parameter node: ``numeric`` (parameter -> option; a negative value shows "default" and
    is not passed, so the engine's or the preset's value applies), ``explicit`` (parameter -> option, passed as
    they are) and ``text`` (parameter -> option, passed when not blank, e.g. a weights file)."""
    options = {key: getattr(p, name) for name, key in dict(explicit).items()}
    options.update({key: getattr(p, name) for name, key in numeric.items() if getattr(p, name) >= 0})
    options.update({key: getattr(p, name).strip() for name, key in dict(text).items() if getattr(p, name).strip()})
    return options


def scene_logic(current, factory):
    """The module's GUI-free logic for the current scene: ``current`` when it was made for ``slicer.mrmlScene``,
    else ``factory(slicer.mrmlScene)`` (after making sure the engine's dependencies are installed)."""
    import slicer

    from MMRegistrationSlicerLib.dependencies import ensure_engine_dependencies

    ensure_engine_dependencies()
    if current is None or current.scene is not slicer.mrmlScene:
        return factory(slicer.mrmlScene)
    return current
