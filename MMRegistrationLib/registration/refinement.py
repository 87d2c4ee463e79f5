"""The interactive refinement session of paper 002's three-step workflow (GUI-free; the RSO Refine Slicer module and
``mmreg refine`` use it).

A session holds one case (:class:`~MMRegistrationLib.registration.base.RegistrationInputs`), a history of steps and
the network being fine-tuned:

- ``register_general()``: step 1, the trained network's forward pass (``--method net``), or ``start_from(T)``: any
  earlier fixed -> moving transform (a SINR or DISA result, a Slicer transform node);
- ``refine(box=None)``: step 2 (ISO, the whole fixed field of view) or, with a box, step 3 (RSO): a correction
  composed on the current transform (:func:`~MMRegistrationLib.registration.rso.tune_step`); the network's weights
  continue from the current step's;
- ``undo()`` / ``redo()`` restore a step's transform and the network's weights exactly; ``export(out, index)``
  writes any step as every method's result (transform, inverse, warped images, metrics, ``result.json``).

A step that fails or is cancelled leaves the history unchanged.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from MMRegistrationLib.core.box import OrientedBox
from MMRegistrationLib.core.device import resolve_device, seed_everything
from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.core.threads import choose_threads, engine_threads
from MMRegistrationLib.io.regions import check_region, describe_box
from MMRegistrationLib.networks.registration import RegistrationNet, load_registration_net, resolve_weights_path
from MMRegistrationLib.registration.base import RegistrationInputs, RegistrationResult
from MMRegistrationLib.registration.rso_config import RefineConfig
from MMRegistrationLib.spatial.base import SpatialTransform

STEP_KINDS = ("general", "initial", "iso", "rso")


@dataclass
class RefinementStep:
    """One step of the history.

    Attributes:
        name: ``general``, ``initial``, ``ISO``, ``ISO 2``, ``RSO box 1`` ...
        kind: one of :data:`STEP_KINDS`.
        transform: fixed -> moving after this step; ``inverse`` moving -> fixed (None when unknown).
        box: the RSO box (LPS mm), None otherwise.
        iterations, loss_curve, seconds: the optimisation (0, [], the method's time for general/initial steps).
        metrics: Dice/distances/TRE after the step when segmentations/landmarks are given (``compute_metrics``).
        info: the step's record (``tune_step`` info or the general method's record).
        network_state: the fine-tuned weights after this step (None: the loaded weights).
    """

    name: str
    kind: str
    transform: SpatialTransform
    inverse: Optional[SpatialTransform]
    box: Optional[OrientedBox] = None
    iterations: int = 0
    loss_curve: list = field(default_factory=list)
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    network_state: Optional[dict] = None

    def row(self) -> dict:
        """One line of the history table: step, box, iterations, seconds, final loss, gland Dice, mean TRE."""
        dice = self.metrics.get("dice") or {}
        return {
            "step": self.name,
            "box": describe_box(self.box) if self.box is not None else "",
            "iterations": self.iterations,
            "seconds": round(float(self.seconds), 2),
            "loss": self.loss_curve[-1] if self.loss_curve else None,
            "dice": next(iter(dice.values()), None),
            "tre_mean_mm": self.metrics.get("tre_mean_mm"),
        }


class RefinementSession:
    """The three-step workflow on one case (module docstring).

    Args:
        inputs: the case (fixed = TRUS, moving = MR; segmentations and landmarks optional).
        device: ``auto``, ``cpu``, ``cuda``, ``mps``.
        seed: seeds torch before each step (CPU runs are deterministic).
        metrics: compute Dice/TRE after each step (what the history table shows).
        threads: CPU threads (``--threads``); ``None`` = the engine's thread policy for the images' size.
    """

    def __init__(self, inputs: RegistrationInputs, device: str = "auto", seed: int = 0, metrics: bool = True,
                 threads: Optional[int] = None):
        from MMRegistrationLib.registration.pipeline import work_voxels

        self.inputs = inputs
        self.threads = choose_threads(threads, work_voxels(inputs))
        self.device = resolve_device(device)
        self.seed = int(seed)
        self.with_metrics = bool(metrics)
        self._steps: list = []
        self._redo: list = []
        self._network: Optional[RegistrationNet] = None
        self._network_meta: dict = {}
        self._weights_path = None
        self._rso_count = 0

    # ---- the history ------------------------------------------------------------------------------------------
    @property
    def steps(self) -> list:
        """The steps of the current history, first to current."""
        return list(self._steps)

    @property
    def current(self) -> Optional[RefinementStep]:
        return self._steps[-1] if self._steps else None

    @property
    def can_undo(self) -> bool:
        return bool(self._steps)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def history(self) -> list:
        """:meth:`RefinementStep.row` of every step."""
        return [step.row() for step in self._steps]

    def undo(self) -> Optional[RefinementStep]:
        """Drop the current step (kept for :meth:`redo`); returns the new current step (None when empty)."""
        if not self._steps:
            raise InputError("undo", "nothing to undo")
        self._redo.append(self._steps.pop())
        return self.current

    def redo(self) -> RefinementStep:
        """Restore the last undone step; returns it."""
        if not self._redo:
            raise InputError("redo", "nothing to redo")
        self._steps.append(self._redo.pop())
        return self.current

    def _add(self, step: RefinementStep) -> RefinementStep:
        if self.with_metrics and (self.inputs.has_segmentations or self.inputs.fixed_landmarks is not None):
            from MMRegistrationLib.registration.pipeline import compute_metrics

            step.metrics = compute_metrics(self.inputs, step.transform)
        self._steps.append(step)
        self._redo.clear()
        return step

    # ---- step 1 -----------------------------------------------------------------------------------------------
    def register_general(self, options=None, init: Optional[str] = None, progress=None, cancel=None,
                         initial: Optional[SpatialTransform] = None) -> RefinementStep:
        """Step 1: ``--method net`` (options as for ``mmreg register``; ``initial`` a linear start). Starts a new
        history (the previous one can be reached again with :meth:`undo` only until the next step)."""
        from MMRegistrationLib.registration.pipeline import run_registration

        result, record = run_registration("net", self.inputs, init, options, self.seed, str(self.device), progress,
                                          cancel, initial=initial, threads=self.threads)
        weights = record["method_info"]["weights"]
        self._load_network(weights)
        seconds = float(sum(record["wall_seconds"].get(k, 0.0) for k in ("init", "register")))
        return self._add(RefinementStep("general", "general", result.transform, result.inverse, seconds=seconds,
                                        info=record))

    def start_from(self, transform: SpatialTransform, inverse: Optional[SpatialTransform] = None,
                   name: str = "initial", info: Optional[dict] = None) -> RefinementStep:
        """Start from any fixed -> moving transform (a SINR/DISA result, a file, a Slicer node). Without ``inverse``
        the transform's own inverse is used when it has one (dense fields: a fixed-point inverse)."""
        if inverse is None:
            try:
                inverse = transform.inverse()
            except NotImplementedError:
                inverse = None
        return self._add(RefinementStep(name, "initial", transform, inverse, info=dict(info or {})))

    # ---- steps 2 and 3 ----------------------------------------------------------------------------------------
    def refine(self, box: Optional[OrientedBox] = None, options=None, progress=None, cancel=None) -> RefinementStep:
        """ISO (``box`` None) or RSO in ``box`` (LPS mm) on the current transform; ``options`` a
        :class:`RefineConfig` or its keyword options. The history changes only when the step completes."""
        from MMRegistrationLib.registration.net import check_inputs, network_precision
        from MMRegistrationLib.registration.net_geometry import network_grid
        from MMRegistrationLib.registration.rso import box_grid, tune_step

        config = options if isinstance(options, RefineConfig) else RefineConfig.from_options(options or {},
                                                                                            method="refine")
        if self.current is None:
            raise InputError("--from", "there is no registration to refine yet: register with the general model or "
                                       "start from an earlier result first")
        if box is not None:
            check_region(box, self.inputs.fixed, "--roi")
        network = self._network_for(config)
        check_inputs(network, self.inputs, self._weights_name(), grid_centre=False)
        if self.current.network_state is not None and self.current.info.get("weights") == str(self._weights_path):
            network.load_state_dict(self.current.network_state)  # continue from the current step's weights
        seed_everything(self.seed)
        precision = network_precision(config.precision, self._network_meta, self.device)
        if box is None:
            grid = network_grid(network.config, self.inputs.fixed.grid, self._grid_center(network))
            name, kind = self._next_name("ISO"), "iso"
        else:
            grid = box_grid(box, float(network.config.grid_spacing_mm), config.margin_mm, network.size_multiple)
            name, kind = f"RSO box {self._rso_count + 1}", "rso"
        monitor = Monitor.wrap(progress, cancel)
        current = self.current
        started = time.perf_counter()
        with engine_threads(self.threads):
            result = tune_step(self.inputs, current.transform, current.inverse, network, grid, box, config,
                               config.iterations_for(box is not None), precision, self.device, monitor, name,
                               config.hold, config.hold_weight, config.ramp_mm)
        seconds = time.perf_counter() - started
        if kind == "rso":
            self._rso_count += 1
        info = {**result.info, "weights": str(self._weights_path), "weights_sha256": self._network_meta.get("sha256"),
                "options": config.as_dict()}
        state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        return self._add(RefinementStep(name, kind, result.transform, result.inverse, box, result.info["iterations"],
                                        result.info["loss_curve"], seconds, info=info, network_state=state))

    def _next_name(self, base: str) -> str:
        count = sum(1 for s in self._steps if s.kind == "iso")
        return base if count == 0 else f"{base} {count + 1}"

    def _grid_center(self, network: RegistrationNet):
        from MMRegistrationLib.registration.initializers import center_of_mass_mm, gland_label

        if network.config.center == "fixed-mask" and self.inputs.fixed_seg is not None:
            return center_of_mass_mm(self.inputs.fixed_seg, gland_label(self.inputs.fixed_seg))
        return None

    # ---- the network ------------------------------------------------------------------------------------------
    def default_weights(self) -> str:
        """The network fine-tuned when none is named: the general step's, else ``mix_plus`` with a moving
        segmentation (it takes the MR gland mask), else ``srml`` (images alone)."""
        if self._weights_path is not None:
            return str(self._weights_path)
        return "mix_plus" if self.inputs.moving_seg is not None else "srml"

    def _weights_name(self) -> str:
        return self._weights_path.stem if self._weights_path is not None else "?"

    def _load_network(self, weights: str) -> None:
        path = resolve_weights_path(weights)
        if self._weights_path is not None and path.resolve() == self._weights_path.resolve():
            return
        network, meta = load_registration_net(str(path), self.device, argument="--weights")
        self._network = copy.deepcopy(network)
        self._initial_state = {k: v.detach().clone() for k, v in self._network.state_dict().items()}
        self._network_meta = meta
        self._weights_path = path

    def _network_for(self, config: RefineConfig) -> RegistrationNet:
        """The network to fine-tune, at the loaded weights (a step then loads the current step's state)."""
        self._load_network(config.weights or self.default_weights())
        self._network.load_state_dict(self._initial_state)
        return self._network

    # ---- output -----------------------------------------------------------------------------------------------
    def export(self, out_dir: str | os.PathLike, index: Optional[int] = None, record: Optional[dict] = None) -> dict:
        """Write step ``index`` (default: the current) like every method's result; ``result.json`` also holds the
        history up to that step, the step's box and loss curve. Returns the record."""
        from MMRegistrationLib.registration.pipeline import write_outputs

        if not self._steps:
            raise InputError("--out", "nothing to export: the session has no step yet")
        index = len(self._steps) - 1 if index is None else int(index)
        if not 0 <= index < len(self._steps):
            raise InputError("step", f"no step {index}; the history has {len(self._steps)}")
        step = self._steps[index]
        base = {
            "method": "rso",
            "step": step.name,
            "seed": self.seed,
            "device": str(self.device),
            "threads": self.threads.as_dict(),
            "wall_seconds": {"step": step.seconds},
            "history": [s.row() for s in self._steps[: index + 1]],
            "method_info": step.info,
        }
        if step.box is not None:
            base["region"] = step.box.as_record()
        if step.loss_curve:
            base["loss_curve"] = step.loss_curve
        base.update(record or {})
        with engine_threads(self.threads):
            return write_outputs(out_dir, self.inputs,
                                 RegistrationResult(step.transform, step.inverse, {}, step.info), base)


def box_at(center_mm, size_mm: float = 40.0, axes=None) -> OrientedBox:
    """A cubic box of ``size_mm`` at ``center_mm`` (LPS; ``axes`` default the LPS axes): what "Place box" makes."""
    return OrientedBox(np.asarray(center_mm, dtype=np.float64), np.eye(3) if axes is None else axes,
                       np.full(3, float(size_mm) / 2.0))

