"""GUI-free logic of the RSO Refine module: the interactive three-step workflow of paper 002 on MRML nodes, over the
engine's :class:`~MMRegistrationLib.registration.refinement.RefinementSession`. The scene is passed explicitly, so
it runs inside Slicer and on the PyPI ``slicer-core`` (where the tests exercise it).

The workflow:

1. ``register_general()``: the trained network (``--method net``), or a starting transform node (any transform:
   linear, grid, a SINR or DISA result) given to :meth:`RSORefineLogic.set_inputs`, which becomes the first step;
2. ``refine_whole_image()``: image-specific optimisation (ISO) of the current step over the whole fixed image;
3. ``place_box()`` / ``refine_in_box(roi)``: region-specific optimisation (RSO) inside a markups ROI, as often as
   needed; ``undo()``, ``redo()`` and ``show_step(index)`` move through the history.

Inputs are read like the other registration modules' (:class:`~MMRegistrationSlicerLib.registration_logic.
RegistrationLogic`): the fixed volume and segmentation in world coordinates, the moving ones in their own
coordinates (their parent transform is what this module writes), segments matched by name or by an explicit
mapping (the prostate first: the gland Dice of the history), optional landmarks for the TRE. The session starts
afresh whenever these inputs (their content), the starting transform, the device or the seed change.

Output: one transform node (FromParent = the shown step's fixed -> moving transform, flattened to a displacement
field on the fixed grid; a grid transform node unless you chose another node) set as the parent transform of the
moving volume and segmentation. It shows the newest step after every step, undo and redo, or the step chosen with
``show_step``; refining always continues from the newest step. A step that fails or is cancelled leaves the history
and the output node unchanged. Bad input raises ValueError with a message in the module's words; a cancelled step
raises the engine's ``Cancelled``.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np

from MMRegistrationSlicerLib import bridge
from MMRegistrationSlicerLib.registration_logic import (
    RegistrationLogic,
    _name,
    _same,
    flatten_transform,
    readable_engine_error,
    roi_box,
)

LABEL = "RSO"
DEFAULT_BOX_MM = 40.0
"""Edge of the cubic box :meth:`RSORefineLogic.place_box` makes (paper 002's boxes are about this size)."""
HISTORY_COLUMNS = (("step", "Step"), ("box", "Box (RAS mm)"), ("iterations", "Iterations"), ("seconds", "Time (s)"),
                   ("loss", "Loss"), ("dice", "DSC"), ("tre_mean_mm", "TRE (mm)"))
"""Key of :meth:`RSORefineLogic.history_rows` -> column title of the module's history table."""
_TASKS = {"general": ("General model", "registration"), "iso": ("ISO", "refinement"), "rso": ("RSO", "refinement"),
          "inputs": ("RSO", "inputs"), "export": ("RSO", "export")}
"""What a failing call is called in messages: ``"<label> <task>: ..."``."""


def _digest(inputs, start) -> str:
    """A SHA-1 of everything a session depends on: the images, label maps and names, landmarks, starting
    transform."""
    digest = hashlib.sha1()

    def add(value) -> None:
        array = np.ascontiguousarray(value)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())

    for image in (inputs.fixed, inputs.moving, inputs.fixed_seg, inputs.moving_seg):
        if image is None:
            digest.update(b"-")
        else:
            add(image.array)
            add(image.grid.affine)
    digest.update(repr(sorted(inputs.label_names.items())).encode())
    for points in (inputs.fixed_landmarks, inputs.moving_landmarks):
        add(np.zeros(0) if points is None else points)
    if start is None:
        digest.update(b"no start")
    elif start.is_linear:
        add(start.matrix)
    else:  # a node that is not linear is read as a displacement field on the fixed grid
        add(start.grid.affine)
        add(start.numpy())
    return digest.hexdigest()


def _format(value, digits: int) -> str:
    return "" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def box_text(box) -> str:
    """A history table cell for an engine box (LPS): its centre in RAS and its size, e.g. ``(-4.0, 17.3, 25.9),
    40 x 40 x 40`` (``, rotated`` for an oblique box)."""
    centre = bridge.ras_from_lps(box.center)
    text = "(" + ", ".join(f"{c:.1f}" for c in centre) + "), " + " x ".join(f"{s:g}" for s in np.round(box.size, 1))
    return text + ("" if np.allclose(np.abs(box.axes), np.eye(3), atol=1e-6) else ", rotated")


def history_cells(rows: list) -> list:
    """The texts of the history table (one list per row, in :data:`HISTORY_COLUMNS` order) from
    :meth:`RSORefineLogic.history_rows`."""
    formats = {"iterations": lambda v: str(v), "seconds": lambda v: _format(v, 1), "loss": lambda v: _format(v, 4),
               "dice": lambda v: _format(v, 3), "tre_mean_mm": lambda v: _format(v, 2)}
    return [[formats.get(key, str)(row[key]) for key, _ in HISTORY_COLUMNS] for row in rows]


def step_summary(step) -> str:
    """One line for the status label: the step, its iterations and time, gland DSC and mean TRE after it."""
    row = step.row()
    text = f"{step.name}: "
    if step.iterations:
        text += f"{step.iterations} iterations in {step.seconds:.1f} s"
    else:
        text += f"{step.seconds:.1f} s" if step.seconds else "done"
    if row["dice"] is not None:
        text += f", DSC {row['dice']:.3f}"
    if row["tre_mean_mm"] is not None:
        text += f", TRE {row['tre_mean_mm']:.2f} mm"
    return text


class RSORefineLogic:
    """The RSO Refine workflow on one scene (module docstring). Call :meth:`set_inputs` before a step (the widget
    does before each one); the session and its history are kept while the inputs stay the same."""

    def __init__(self, scene):
        self.scene = scene
        self.inputs_logic = RegistrationLogic(scene, "net", LABEL)  # checks and converts the input nodes
        self.session = None
        self.output_transform = None
        self.shown_index: Optional[int] = None
        self._key = None
        self._nodes: dict = {}
        self._flattened: dict = {}  # id(step) -> (step, the transform written into the output node)

    # ---- inputs ---------------------------------------------------------------------------------------------
    def set_inputs(self, fixed_volume, moving_volume, fixed_segmentation=None, moving_segmentation=None,
                   segment_mapping: Optional[dict] = None, fixed_landmarks=None, moving_landmarks=None,
                   starting_transform=None, output_transform=None, device: str = "auto", seed: int = 0) -> bool:
        """Check and read the inputs; start a new session when they differ from the current session's. Returns True
        when a new session started (its history is empty, or holds the starting transform as its first step, which
        the output node then shows).

        Args:
            fixed_segmentation, moving_segmentation: optional (both or neither); segments matched by name unless
                ``segment_mapping`` (fixed segment ID -> moving segment ID) is given.
            fixed_landmarks, moving_landmarks: optional point lists (rows correspond) for the TRE column.
            starting_transform: optional transform node of any kind whose FromWorld mapping (fixed -> moving) is the
                first step (a grid or other non-linear node is sampled on the fixed grid).
            output_transform: the node to write (None: the node written before, else a new grid transform node).
            device, seed: the engine's (``auto``, ``cpu``, ``cuda``).
        """
        from MMRegistrationLib.core.errors import MMRegError
        from MMRegistrationLib.registration.refinement import RefinementSession

        inputs, _ = self.inputs_logic.engine_inputs(fixed_volume, moving_volume, fixed_segmentation,
                                                    moving_segmentation, segment_mapping, fixed_landmarks,
                                                    moving_landmarks)
        output = output_transform if output_transform is not None else self._output_node()
        start = None
        if starting_transform is not None:
            if _same(starting_transform, output):
                raise ValueError(f"starting transform: {_name(starting_transform)} is the output transform, which "
                                 "this module overwrites; choose another starting transform or another output")
            start = bridge.engine_transform_from_node(starting_transform, inputs.fixed.grid, "starting transform")
        nodes = {"fixed": fixed_volume, "moving": moving_volume, "moving_segmentation": moving_segmentation,
                 "output": output}
        key = (_digest(inputs, start), str(device), int(seed))
        if self.session is not None and key == self._key:
            moved = any(not (nodes[k] is self._nodes.get(k) or _same(nodes[k], self._nodes.get(k))) for k in nodes)
            self._nodes, self.output_transform = nodes, output
            if moved and self.shown_index is not None:  # another output or moving node: show the step there too
                self._show(self.shown_index)
            return False
        try:
            session = RefinementSession(inputs, device=device, seed=seed)
            if start is not None:
                session.start_from(start, name=f"initial ({starting_transform.GetName()})")
        except MMRegError as err:
            raise ValueError(readable_engine_error(err, *_TASKS["inputs"])) from err
        self.session, self._key, self._flattened, self.shown_index = session, key, {}, None
        self._nodes, self.output_transform = nodes, output
        if session.steps:
            self._show(len(session.steps) - 1)
        return True

    def reset(self) -> None:
        """Forget the session (e.g. when the scene closes); the next :meth:`set_inputs` starts a new one."""
        self.session, self._key, self._flattened, self.shown_index, self._nodes = None, None, {}, None, {}
        self.output_transform = None

    def _session(self, what: str):
        if self.session is None:
            raise ValueError(f"{what}: select the fixed and the moving volume first")
        return self.session

    def _refinable(self, kind: str):
        session = self._session(" ".join(_TASKS[kind]))
        if session.current is None:
            raise ValueError(f"{' '.join(_TASKS[kind])}: there is no registration to refine yet; register with the "
                             "general model or choose a starting transform first")
        return session

    # ---- steps ----------------------------------------------------------------------------------------------
    def register_general(self, options: Optional[dict] = None, progress=None, cancel=None):
        """Step 1: the trained network's registration (``options`` of ``--method net``, e.g. ``{"weights":
        "mix_plus"}``). Returns the new :class:`RefinementStep`."""
        session = self._session("General model registration")
        return self._step("general", lambda: session.register_general(options, progress=progress, cancel=cancel))

    def refine_whole_image(self, options: Optional[dict] = None, progress=None, cancel=None):
        """Step 2, ISO: fine-tune the network on this case over the whole fixed image, from the newest step.
        ``options``: :class:`~MMRegistrationLib.registration.rso_config.RefineConfig` fields."""
        session = self._refinable("iso")
        return self._step("iso", lambda: session.refine(None, options, progress, cancel))

    def refine_in_box(self, roi, options: Optional[dict] = None, progress=None, cancel=None):
        """Step 3, RSO: fine-tune inside the markups ROI ``roi`` (world coordinates; it must select part of the
        fixed image), from the newest step; the field outside the box is held."""
        if roi is None:
            raise ValueError("ROI: no box was selected; place one ('Place box') or choose a markups ROI")
        session = self._refinable("rso")
        box = roi_box(roi, session.inputs.fixed)
        return self._step("rso", lambda: session.refine(box, options, progress, cancel))

    def _step(self, kind: str, run):
        from MMRegistrationLib.core.errors import Cancelled, MMRegError

        try:
            step = run()
        except Cancelled:
            raise
        except MMRegError as err:  # InputError included
            raise ValueError(readable_engine_error(err, *_TASKS[kind])) from err
        try:
            self._show(len(self.session.steps) - 1)
        except BaseException:
            self.session.undo()  # not shown: not kept either (redo would bring it back)
            raise
        return step

    # ---- history --------------------------------------------------------------------------------------------
    def undo(self):
        """Drop the newest step (redo brings it back) and show the one before (identity when none is left).
        Returns the newest step now (None when the history is empty)."""
        session = self._session("Undo")
        if not session.can_undo:
            raise ValueError("Undo: there is no step to undo")
        session.undo()
        self._show(len(session.steps) - 1 if session.steps else None)
        return session.current

    def redo(self):
        """Restore the last undone step exactly (its transform and network weights) and show it."""
        session = self._session("Redo")
        if not session.can_redo:
            raise ValueError("Redo: there is no undone step to redo")
        session.redo()
        self._show(len(session.steps) - 1)
        return session.current

    def show_step(self, index: int):
        """Write step ``index`` (0 = the first) into the output node; the history is unchanged and refining still
        continues from the newest step. Returns the step."""
        steps = self._session("Show step").steps
        if not 0 <= int(index) < len(steps):
            raise ValueError(f"Show step: there is no step {int(index) + 1}; the history has {len(steps)}")
        self._show(int(index))
        return steps[int(index)]

    def history_rows(self) -> list:
        """One dict per step (first to newest): ``step, box`` (RAS text, '' for the whole image), ``iterations,
        seconds, loss`` (final), ``dice`` (the gland's), ``tre_mean_mm`` (None without segmentations/landmarks),
        and ``shown`` (the step the output node holds)."""
        if self.session is None:
            return []
        rows = []
        for index, step in enumerate(self.session.steps):
            row = step.row()
            row["box"] = box_text(step.box) if step.box is not None else ""
            row["shown"] = index == self.shown_index
            rows.append(row)
        return rows

    def export(self, out_dir, index: Optional[int] = None) -> dict:
        """Write step ``index`` (default: the shown one) to ``out_dir`` like every method's result (transform,
        inverse, warped images, metrics, ``result.json`` with the history up to it). Returns the record."""
        from MMRegistrationLib.core.errors import MMRegError

        session = self._session("Export")
        index = self.shown_index if index is None else int(index)
        try:
            return session.export(out_dir, index)
        except MMRegError as err:
            raise ValueError(readable_engine_error(err, *_TASKS["export"])) from err

    def export_into(self, parent_folder, index: Optional[int] = None) -> dict:
        """Export step ``index`` (default: the shown one) into a sub-folder of ``parent_folder`` named after the step
        (``RSO_box_1`` ...; an earlier export of it is replaced, the chosen folder itself never). Returns ``{"step",
        "folder"}``."""
        import os

        session = self._session("Export")
        index = (self.shown_index if self.shown_index is not None else len(session.steps) - 1) if index is None \
            else int(index)
        name = session.steps[index].name if 0 <= index < len(session.steps) else "step"
        folder = os.path.join(os.fspath(parent_folder), "".join(c if c.isalnum() else "_" for c in name))
        record = self.export(folder, index)
        return {"step": record["step"], "folder": folder}

    # ---- the box ----------------------------------------------------------------------------------------------
    def place_box(self, center_ras, size_mm: float = DEFAULT_BOX_MM, node=None, name: str = "RSO box"):
        """A cubic markups ROI of ``size_mm`` centred on ``center_ras`` (world RAS, e.g. the crosshair), aligned with
        the RAS axes, its handles on (resize and move it in the views). ``node`` is reused (moved and resized);
        None creates one. Returns the node."""
        import vtk

        size = float(size_mm)
        if not np.isfinite(size) or size <= 0:
            raise ValueError(f"Place box: the box size must be positive, got {size_mm} mm")
        if node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
            node.CreateDefaultDisplayNodes()
        elif not node.IsA("vtkMRMLMarkupsROINode"):
            raise ValueError(f"Place box: {_name(node)} is a {node.GetClassName()}, not a markups ROI (box)")
        node.SetAndObserveObjectToNodeMatrix(vtk.vtkMatrix4x4())  # before the centre: it resets the centre
        node.SetSize(size, size, size)
        node.SetCenterWorld(*[float(c) for c in center_ras])
        display = node.GetDisplayNode()
        if display is not None:
            display.SetHandlesInteractive(True)
        return node

    def gland_center_ras(self) -> Optional[np.ndarray]:
        """The centre of mass of the fixed gland (the first mapped segment, normally the prostate) in world RAS, or
        None without segmentations or before :meth:`set_inputs`."""
        from MMRegistrationLib.registration.initializers import center_of_mass_mm, gland_label

        if self.session is None or self.session.inputs.fixed_seg is None:
            return None
        fixed_seg = self.session.inputs.fixed_seg
        return bridge.ras_from_lps(center_of_mass_mm(fixed_seg, gland_label(fixed_seg)))

    # ---- the output node ------------------------------------------------------------------------------------
    def _output_node(self):
        node = self.output_transform
        return node if node is not None and node.GetScene() is self.scene else None

    def _flat(self, step):
        """The step's transform as the output node holds it: a displacement field on the fixed image's output grid
        (computed once per step; None: the identity)."""
        from MMRegistrationLib.registration.pipeline import output_grid
        from MMRegistrationLib.spatial.displacement import DisplacementField

        grid = self.session.inputs.fixed.grid
        if step is None:
            return DisplacementField(output_grid(grid), np.zeros((*output_grid(grid).shape, 3)))
        if id(step) not in self._flattened:
            flat = flatten_transform(step.transform, grid)
            if flat.is_linear:  # one kind of node whatever the step
                flat = DisplacementField.from_transform(flat, output_grid(grid))
            self._flattened[id(step)] = (step, flat)  # the step is kept with it: its id is not reused meanwhile
        return self._flattened[id(step)][1]

    def _show(self, index: Optional[int]) -> None:
        """Write step ``index`` (None: the identity) into the output node and put the moving nodes under it."""
        transform = self._flat(None if index is None else self.session.steps[index])
        fixed, moving = self._nodes["fixed"], self._nodes["moving"]
        node = bridge.transform_node_from_engine(transform, self.scene, f"{moving.GetName()} to {fixed.GetName()} "
                                                 f"({LABEL})", node=self._output_node(), fixed_node=fixed,
                                                 moving_node=moving)
        node.SetAndObserveTransformNodeID(None)  # the output is in the fixed volume's space, under no transform
        for target in (moving, self._nodes.get("moving_segmentation")):
            if target is not None:
                target.SetAndObserveTransformNodeID(node.GetID())
        self.output_transform, self._nodes["output"], self.shown_index = node, node, index
