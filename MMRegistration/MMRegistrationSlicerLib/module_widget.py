"""What every MMRegistration module widget does the same way: load its ``.ui``, follow the scene's close events,
keep a typed parameter node connected to the GUI (``SlicerParameterName`` bindings), keep the volumes the modules
compute out of the input volume selectors, (:class:`SegmentMappingWidgetMixin`) show the segment mapping table and
(:class:`SegmentProstateWidgetMixin`) segment the prostate of the fixed and moving volumes.

A widget class lists :class:`ParameterNodeWidgetMixin` before ``ScriptedLoadableModuleWidget`` and
``VTKObservationMixin``, calls :meth:`setupModuleUI` from its ``setup`` and defines ``_checkCanApply(caller=None,
event=None)`` (called whenever the parameter node changes). Imports of Slicer's GUI and of the rest of this package
live inside the functions, so the module can be imported (and checked) where Qt, torch or SciPy are absent.
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
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)
        return ui_widget

    def onNodeAdded(self, caller=None, event=None) -> None:
        """A new node may be a derived volume: its marking attribute is set right after it is added, so the input
        selectors are filtered once the current call has returned."""
        import qt

        qt.QTimer.singleShot(0, self.hideDerivedVolumes)

    def hideDerivedVolumes(self) -> None:
        """Keep the volumes the modules compute (descriptors, heatmaps) out of the input volume selectors."""
        import slicer

        hide_derived_volumes(self.ui, slicer.mrmlScene)

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.hideDerivedVolumes()
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


class SegmentProstateWidgetMixin:
    """The "Segment prostate" buttons of the fixed (TRUS) and the moving (MR) volume: the ``.ui`` has
    ``fixedSegmentProstateButton`` and ``movingSegmentProstateButton``; the widget is a
    :class:`CancellableRunWidgetMixin` whose parameter node has ``fixedVolume``, ``movingVolume``,
    ``fixedSegmentation``, ``movingSegmentation`` and ``device``.

    A click segments the volume with the engine's network of its modality (progress bar, Cancel) into the side's
    selected segmentation when it is that volume's (its "prostate" segment replaced after asking; see
    ``segmentation_logic.segmentation_of_volume``), else into a new one, which the side's selector then shows; the
    quality check's warnings are shown in a message box. Call :meth:`setupSegmentProstate` from ``setup`` and
    :meth:`updateSegmentProstateButtons` from ``_checkCanApply``.
    """

    SEGMENT_SIDES = {"fixed": ("trus", "TRUS"), "moving": ("mr", "MR")}
    """Side -> (the engine's modality, how the tooltip names it)."""

    def setupSegmentProstate(self) -> None:
        self.ui.fixedSegmentProstateButton.connect("clicked(bool)", self.onSegmentFixedProstate)
        self.ui.movingSegmentProstateButton.connect("clicked(bool)", self.onSegmentMovingProstate)

    def onSegmentFixedProstate(self) -> None:
        self.segmentProstate("fixed")

    def onSegmentMovingProstate(self) -> None:
        self.segmentProstate("moving")

    def updateSegmentProstateButtons(self) -> None:
        """Enabled when the side's volume is selected and nothing runs; the tooltip says why not."""
        p = self._parameterNode
        for side, (_, shown) in self.SEGMENT_SIDES.items():
            button = getattr(self.ui, f"{side}SegmentProstateButton")
            reason = ("Running: press Cancel to stop" if self._running else "" if p and getattr(p, f"{side}Volume")
                      else f"Select the {side} volume first")
            button.enabled = not reason
            button.toolTip = reason or (f"Segment the prostate of the {side} volume with the {shown} network; the "
                                        f"result becomes the {side} segmentation (check and correct it)")

    def segmentProstate(self, side: str) -> None:
        """Run the segmentation of ``side`` ("fixed" or "moving") with the progress bar and Cancel."""
        import slicer

        p = self._parameterNode
        if p is None or self._running or not getattr(p, f"{side}Volume"):
            return
        self._setRunning(True)
        try:
            with slicer.util.tryWithErrorDisplay(f"Prostate segmentation of the {side} volume failed.",
                                                 waitCursor=True):
                self.ui.statusLabel.text = self._segmentProstate(p, side)
        finally:
            self._setRunning(False)

    def _segmentProstate(self, p, side: str) -> str:
        """Segment, select the result, show the warnings; returns the status line."""
        import slicer

        from MMRegistrationSlicerLib.dependencies import ensure_segmentation_dependencies

        ensure_segmentation_dependencies()
        from MMRegistrationLib.core.errors import Cancelled
        from MMRegistrationSlicerLib.segmentation_logic import (prostate_segment_ids, segment_prostate,
                                                                segmentation_of_volume)

        other = "moving" if side == "fixed" else "fixed"
        volume = getattr(p, f"{side}Volume")
        target = segmentation_of_volume(volume, getattr(p, f"{side}Segmentation"), getattr(p, f"{other}Segmentation"))
        if target is not None and prostate_segment_ids(target) and not slicer.util.confirmOkCancelDisplay(
                f"Replace the 'prostate' segment of '{target.GetName()}' with the network's? Its other segments are "
                "kept.", "Segment prostate"):
            return f"Not segmented: the prostate of '{target.GetName()}' is kept"
        try:
            node, warnings = segment_prostate(slicer.mrmlScene, volume, self.SEGMENT_SIDES[side][0], device=p.device,
                                              progress=self._onProgress, cancel=lambda: self._cancelRequested,
                                              segmentation_node=target, argument=f"{side} volume")
        except Cancelled:
            return "Cancelled: no segmentation was created or changed"
        setattr(p, f"{side}Segmentation", node)
        if warnings:
            slicer.util.warningDisplay("\n\n".join(warnings), windowTitle="Prostate segmentation: check the result")
        return (f"Prostate of '{volume.GetName()}' segmented into '{node.GetName()}'"
                + (f" ({len(warnings)} warning{'s' if len(warnings) > 1 else ''}: check it)" if warnings else ""))


class SegmentMappingWidgetMixin:
    """The fixed -> moving segment mapping table of a module (the ``.ui`` has ``mappingTable``,
    ``fixedSegmentationSelector`` and ``movingSegmentationSelector``; the widget is a ``VTKObservationMixin``).

    :meth:`setupSegmentMapping` (from ``setup``) fills the table whenever a segmentation is chosen and refreshes it
    when segments of the chosen segmentations are added, removed or renamed (the table's choices are kept, stale
    segment IDs dropped). Works before the engine's dependencies are installed (see :mod:`.segment_mapping_table`).
    """

    _mappingUnusedText = "(not used)"
    _mappingObserved = ()
    _mappingNames = None

    def setupSegmentMapping(self) -> None:
        for selector in (self.ui.fixedSegmentationSelector, self.ui.movingSegmentationSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateMapping)

    def _mappingSegmentations(self) -> tuple:
        return self.ui.fixedSegmentationSelector.currentNode(), self.ui.movingSegmentationSelector.currentNode()

    def updateMapping(self, node=None) -> None:
        """Fill the table for the chosen segmentations (matched by name) and follow their segments."""
        self._observeSegments(*self._mappingSegmentations())
        self._fillMapping(keep_choices=False)

    def onSegmentsChanged(self, caller=None, event=None) -> None:
        """Refresh the table, keeping its choices, when a segment name or ID of the chosen segmentations changed (a
        segment edited in place changes neither)."""
        from MMRegistrationSlicerLib.segments import segment_names

        names = tuple(segment_names(n) if n is not None else None for n in self._mappingSegmentations())
        if names != self._mappingNames:
            self._fillMapping(keep_choices=True)

    def segmentMapping(self):
        """Fixed -> moving segment IDs of the table (refreshed first: never a stale ID); None without rows (the logic
        matches by name). Raises ValueError when every row is "not used"."""
        from MMRegistrationSlicerLib.segment_mapping_table import mapping_from_table

        self.onSegmentsChanged()
        return mapping_from_table(self.ui.mappingTable)

    def _fillMapping(self, keep_choices: bool) -> None:
        from MMRegistrationSlicerLib.segment_mapping_table import fill_mapping_table
        from MMRegistrationSlicerLib.segments import segment_names

        fixed, moving = self._mappingSegmentations()
        self._mappingNames = tuple(segment_names(n) if n is not None else None for n in (fixed, moving))
        fill_mapping_table(self.ui.mappingTable, fixed, moving, self._mappingUnusedText, keep_choices)

    def _observeSegments(self, *nodes) -> None:
        import slicer

        events = (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved,
                  slicer.vtkSegmentation.SegmentModified)
        for node in self._mappingObserved:
            for event in events:
                self.removeObserver(node, event, self.onSegmentsChanged)
        self._mappingObserved = tuple({id(n): n for n in nodes if n is not None}.values())
        for node in self._mappingObserved:
            for event in events:
                self.addObserver(node, event, self.onSegmentsChanged)


DERIVED_ATTRIBUTE = "MMRegistration.Derived"
"""Node attribute marking a volume computed by a module (DISA descriptors, heatmap): not an image to register."""


def mark_derived(node, kind: str):
    """Mark ``node`` as a derived volume (``kind``, e.g. "DISA heatmap"); returns it."""
    node.SetAttribute(DERIVED_ATTRIBUTE, kind)
    return node


def derived_volume_ids(scene) -> list:
    """IDs of the volume nodes of ``scene`` marked by :func:`mark_derived`."""
    nodes = scene.GetNodesByClass("vtkMRMLVolumeNode")
    found = [nodes.GetItemAsObject(n) for n in range(nodes.GetNumberOfItems())]
    return [node.GetID() for node in found if node.GetAttribute(DERIVED_ATTRIBUTE)]


INPUT_VOLUME_PARAMETERS = ("fixedVolume", "movingVolume")
"""Parameters whose selectors list the images to register (derived volumes are hidden from them)."""


def hide_derived_volumes(ui, scene) -> list:
    """Hide the derived volumes of ``scene`` from the input volume selectors of ``ui`` (those bound to
    :data:`INPUT_VOLUME_PARAMETERS`, through their proxy model's ``hiddenNodeIDs``). Returns the selectors."""
    ids = derived_volume_ids(scene)
    selectors = [w for w in vars(ui).values() if _bound_parameter(w) in INPUT_VOLUME_PARAMETERS]
    for selector in selectors:
        selector.sortFilterProxyModel().hiddenNodeIDs = ids
    return selectors


def _bound_parameter(widget):
    read = getattr(widget, "property", None)
    try:
        return str(read("SlicerParameterName") or "") if callable(read) else ""
    except TypeError:  # not a Qt object's property()
        return ""


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
