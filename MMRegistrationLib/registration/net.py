"""``--method net``: a trained registration network (papers 004 / 003) registers a pair in one forward pass.

After the initial transform (the one the weights were trained after: ``center`` = the moving gland's centre of
mass onto the fixed image's centre as in 004, ``com``, or ``rigid-mask`` as in 003; or the user's ``--init`` /
initial transform), the fixed image and the moving image (and the masks the weights take) are sampled on the
network's own grid (:mod:`~MMRegistrationLib.registration.net_geometry`), the network predicts a windowed
stationary velocity (or displacement) there, and the result goes through the engine's deformable core
(:class:`NetworkVelocity`, :func:`~MMRegistrationLib.registration.deformable.finish_velocity`): ``T = A o exp(v)``
fixed -> moving and ``exp(-v) o A^-1`` back, written like every other method's result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from MMRegistrationLib.core.device import move
from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.options import option
from MMRegistrationLib.networks.registration import (
    INPUT_OPTIONS,
    RegistrationNet,
    load_registration_net,
    resolve_weights_path,
)
from MMRegistrationLib.registration.base import RegistrationInputs, RegistrationResult
from MMRegistrationLib.registration.deformable import SVF_SPACE, VelocitySource, finish_velocity
from MMRegistrationLib.registration.initializers import center_of_mass_mm, gland_label
from MMRegistrationLib.registration.rso_config import TuningOptions
from MMRegistrationLib.registration.net_geometry import (
    PairVolumes,
    network_grid,
    network_inputs,
    normalised_intensity,
    voxels_to_world,
)
from MMRegistrationLib.spatial.affine import AffineTransform
from MMRegistrationLib.spatial.composite import ComposedTransform
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.spatial.jacobian import jacobian_determinant

def weights_option(value, argument: str) -> str:
    """``parse`` of ``--weights``: '' (the shipped default), a shipped network's name or an existing ``.pt`` file."""
    text = str(value)
    if text and not resolve_weights_path(text).is_file():
        raise InputError(argument, f"weights file not found: {text} (give a .pt file with its .json sidecar, or a "
                                   "shipped name such as mix_plus)")
    return text


@dataclass(frozen=True)
class NetConfig(TuningOptions):
    """Options of ``--method net``: the network, and optionally image-specific optimisation (ISO, paper 002) after
    its forward pass, with the test-time optimisation options (:class:`TuningOptions`)."""

    weights: str = option("", "the network: a shipped name (mix_plus = images + moving gland mask, paper 004; "
                          "both_masks; srml = paper 003) or a .pt file with its .json sidecar (default: mix_plus)",
                          parse=weights_option, advanced=False)
    iso_iterations: int = option(0, "image-specific optimisation after the forward pass (paper 002: 100): "
                                 "fine-tune the network on this case over the whole fixed image; 0 = off",
                                 minimum=0, maximum=100000, advanced=False)

    @property
    def shown_weights(self) -> str:
        """The weights as named in messages (the default's name when none was given)."""
        return self.weights or resolve_weights_path(self.weights).stem

    def check(self) -> None:
        """The weights exist and their sidecar is readable (before any image is read)."""
        from MMRegistrationLib.networks.weights import read_sidecar

        path = resolve_weights_path(self.weights)
        if not path.is_file():
            raise InputError("--weights", f"the shipped network {path.name} is missing from {path.parent}; "
                                          "reinstall the extension or train one with mmreg train-net")
        read_sidecar(path, "--weights")
        if self.iso_iterations > 0:
            super().check()


def required_init(config: NetConfig, inputs: RegistrationInputs) -> str:
    """The initialiser the weights were trained after; :class:`InputError` when it needs segmentations that are not
    given (naming the option)."""
    network, _ = load_registration_net(config.weights, "cpu")
    init = network.config.init
    if init in ("com", "rigid-mask") and not inputs.has_segmentations:
        missing = "--fixed-seg" if inputs.fixed_seg is None else "--moving-seg"
        raise InputError(missing, f"these weights ({config.shown_weights}) were trained after '{init}', which needs "
                                  "--fixed-seg and --moving-seg (or give --init none with a close --initial-transform)")
    return init


def check_inputs(network: RegistrationNet, inputs: RegistrationInputs, weights: str, grid_centre: bool = True) -> None:
    """Every input the network takes is given (else :class:`InputError` naming the option); with ``grid_centre``
    also what its grid is centred on (test-time optimisation chooses its own grids)."""
    for name, flag in INPUT_OPTIONS.items():
        seg = inputs.moving_seg if name == "moving_mask" else inputs.fixed_seg
        if name in network.config.inputs and seg is None:
            what = "moving (MR)" if name == "moving_mask" else "fixed (TRUS)"
            raise InputError(flag, f"these weights ({weights}) need {flag}: the network takes the {what} gland mask "
                                   "as an input")
        if name in network.config.inputs and gland_label(seg) is None:
            raise InputError(flag, "the segmentation is empty; the network needs the gland mask")
    if grid_centre and network.config.center == "fixed-mask" and (inputs.fixed_seg is None or gland_label(inputs.fixed_seg) is None):
        raise InputError("--fixed-seg", f"these weights ({weights}) work on a grid centred on the fixed (TRUS) gland: "
                                        "give its segmentation")


class NetworkVelocity(VelocitySource):
    """The network's output on its grid as a velocity source of the deformable core: ``raw`` runs the network on
    the prepared inputs (LPS mm, before the window). Fine-tuning the network's weights through this source is
    test-time optimisation (RSO)."""

    def __init__(self, network: RegistrationNet, inputs: torch.Tensor, grid: Grid, precision: str):
        super().__init__(grid, network.config.ramp_mm)
        self.network = network
        self.inputs = inputs
        self.precision = precision

    def raw(self, grid: Grid) -> torch.Tensor:
        if not grid.same_as(self.grid):
            raise ValueError("NetworkVelocity: the network predicts on its own grid only")
        enabled = self.precision == "bfloat16"
        with torch.autocast(device_type=self.inputs.device.type, dtype=torch.bfloat16, enabled=enabled):
            out = self.network(self.inputs.contiguous(memory_format=torch.channels_last_3d))
        return voxels_to_world(out.float().contiguous(), self.grid)[0]


def _gland(seg: Optional[Image]) -> Optional[torch.Tensor]:
    if seg is None:
        return None
    return torch.as_tensor((seg.array == gland_label(seg)).astype(np.float32)[None])


def prepare_inputs(network: RegistrationNet, inputs: RegistrationInputs, initial: AffineTransform, device) -> tuple:
    """``(grid, (1, C, N, N, N) input tensor)``: the images (and masks) on the network grid after ``initial``."""
    config = network.config
    center = inputs.fixed.grid.center
    if config.center == "fixed-mask":
        center = center_of_mass_mm(inputs.fixed_seg, gland_label(inputs.fixed_seg))
    grid = network_grid(config, inputs.fixed.grid, center)
    volumes = PairVolumes(
        inputs.fixed.grid, inputs.moving.grid,
        torch.as_tensor(normalised_intensity(inputs.fixed.array)[None]),
        torch.as_tensor(normalised_intensity(inputs.moving.array)[None]),
        _gland(inputs.fixed_seg) if "fixed_mask" in config.inputs else None,
        _gland(inputs.moving_seg) if "moving_mask" in config.inputs else None,
    )
    parts = ["fixed", "moving"] + [p for p, i in (("fixed_labels", "fixed_mask"), ("moving_labels", "moving_mask"))
                                   if i in config.inputs]
    sampled = volumes.on_grid(grid, np.eye(4), initial.matrix, parts)
    return grid, network_inputs(config, network.input_order, sampled)[None].to(device)


def network_precision(option_value: str, meta: dict, device: torch.device) -> str:
    """``auto``: on a CPU with native bfloat16, the precision the weights were trained in; float32 elsewhere (a GPU:
    the float32 results a CPU reproduces; a CPU without native bfloat16, where emulating it is slower)."""
    from MMRegistrationLib.similarity.disa import native_bfloat16

    if option_value != "auto":
        return option_value
    trained = str(((meta.get("training") or {}).get("config") or {}).get("precision", "float32"))
    if device.type == "cpu" and trained == "bfloat16" and native_bfloat16(device):
        return "bfloat16"
    return "float32"


def net_register(inputs: RegistrationInputs, initial: AffineTransform, config: NetConfig, device=None,
                 progress=None) -> RegistrationResult:
    """Register ``inputs`` with the network of ``config.weights`` after ``initial`` (fixed -> moving)."""
    from MMRegistrationLib.core.progress import Monitor

    monitor = Monitor.wrap(progress, None)
    device = torch.device(device) if device is not None else torch.device("cpu")
    t0 = time.perf_counter()
    network, meta = load_registration_net(config.weights, device)
    check_inputs(network, inputs, config.shown_weights)
    monitor.report(0.1, "network: sampling the inputs on its grid")
    grid, x = prepare_inputs(network, inputs, initial, device)
    precision = network_precision(config.precision, meta, device)
    source = NetworkVelocity(network, x, grid, precision)
    monitor.check("network")
    monitor.report(0.4, f"network: forward pass ({precision})")
    t1 = time.perf_counter()
    with torch.no_grad():
        velocity = source.on()  # (N, N, N, 3) windowed, LPS mm
    t2 = time.perf_counter()
    monitor.check("network")
    monitor.report(0.7, "network: transform and inverse")
    if network.config.output == "svf":
        fixed_source = _FixedVelocity(grid, network.config.ramp_mm, velocity)
        transform, inverse, finished = finish_velocity(fixed_source, grid, initial.matrix,
                                                       network.config.squaring_steps)
    else:
        transform, inverse, finished = _finish_displacement(velocity, grid, initial)
    info = {
        "weights": str(resolve_weights_path(config.weights)),
        "weights_sha256": meta.get("sha256"),
        "network": network.config.to_dict(),
        "precision": precision,
        "network_grid": {"shape": list(grid.shape), "spacing_mm": grid.spacing.tolist(),
                         "origin_mm": grid.origin.tolist(), "direction": grid.direction.tolist()},
        **finished,
    }
    seconds = {"prepare": t1 - t0, "forward": t2 - t1, "finish": time.perf_counter() - t2}
    if config.iso_iterations > 0:
        transform, inverse = _image_specific(inputs, (transform, inverse), network, grid, config, precision, device,
                                             monitor, info)
        seconds["iso"] = info["iso"]["seconds"]
    return RegistrationResult(transform, inverse, seconds, info)


def _image_specific(inputs: RegistrationInputs, general: tuple, network: RegistrationNet, grid: Grid,
                    config: NetConfig, precision: str, device, monitor, info: dict) -> tuple:
    """ISO (paper 002) on a copy of the network after its forward pass; the step's record goes to ``info['iso']``."""
    import copy

    from MMRegistrationLib.registration.rso import tune_step

    step = tune_step(inputs, general[0], general[1], copy.deepcopy(network), grid, None, config,
                     config.iso_iterations, precision, device, monitor.stage(0.75, 1.0), "ISO")
    info["iso"] = step.info
    return step.transform, step.inverse


class _FixedVelocity(VelocitySource):
    """A computed velocity (already windowed) as a source for :func:`finish_velocity` (window 1 inside)."""

    def __init__(self, grid: Grid, ramp_mm: float, velocity: torch.Tensor):
        super().__init__(grid, ramp_mm)
        self.velocity = velocity

    def on(self, grid: Optional[Grid] = None) -> torch.Tensor:
        if grid is not None and not grid.same_as(self.grid):
            raise ValueError("_FixedVelocity: only on its own grid")
        return self.velocity


def _finish_displacement(displacement: torch.Tensor, grid: Grid, initial: AffineTransform) -> tuple:
    """A ``ddf`` network's windowed displacement (LPS mm) composed with the initial affine; the inverse by
    fixed-point inversion of the field."""
    field = DisplacementField(grid, move(displacement, "cpu", torch.float64), "fixed", SVF_SPACE)
    linear = AffineTransform(initial.matrix, SVF_SPACE, "moving")
    det = jacobian_determinant(field)
    info = {"max_displacement_mm": float(np.linalg.norm(field.numpy(), axis=-1).max()),
            "jacobian_min_output_grid": float(det.min()), "folding_fraction_output_grid": float(np.mean(det <= 0))}
    return ComposedTransform([field, linear]), ComposedTransform([linear.inverse(), field.inverse()]), info
