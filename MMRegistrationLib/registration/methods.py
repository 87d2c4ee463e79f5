"""The registry of registration methods reachable from Python, the CLI and the Slicer modules.

A method is ``run(inputs, initial, config, context) -> RegistrationResult`` where ``initial`` is the fixed -> moving
transform chosen by ``--init``, ``config`` an instance of the method's configuration dataclass (a
:class:`~MMRegistrationLib.core.options.MethodConfig`, whose fields are the method's options) and ``context`` the
:class:`RunContext` (device, seed, progress/cancel). See README "Adding a method".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.options import MethodConfig, OptionSpec, flag_of
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.registration.base import RegistrationInputs, RegistrationResult
from MMRegistrationLib.registration.disa_config import DISARegistrationConfig
from MMRegistrationLib.registration.initializers import RigidMaskConfig, center_of_mass_init, rigid_mask_init
from MMRegistrationLib.registration.sinr_config import PRESETS as SINR_PRESETS
from MMRegistrationLib.registration.sinr_config import SINRConfig
from MMRegistrationLib.spatial.affine import AffineTransform


@dataclass(frozen=True)
class NoOptions(MethodConfig):
    """The configuration of a method without options."""


@dataclass(frozen=True)
class RunContext:
    """What every method receives besides its inputs and options: the torch device, the seed of anything random
    (passed explicitly, never read from torch's global state) and the progress/cancel monitor."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    monitor: Monitor = field(default_factory=Monitor)


@dataclass(frozen=True)
class MethodSpec:
    """A registration method.

    Attributes:
        name: ``--method`` value.
        run: ``run(inputs, initial, config, context) -> RegistrationResult``.
        needs_segmentations: refuse to run without ``--fixed-seg``/``--moving-seg``.
        default_init: the ``--init`` used when none is given.
        description: one line for ``mmreg methods``.
        config: the configuration dataclass; its fields are the method's options.
        presets: preset name -> fields it changes from the dataclass defaults (the first preset is the default);
            empty = no ``--preset``.
        region_use: how the method uses ``RegistrationInputs.region`` (``--roi``); '' = it does not.
        init_for: ``(config, inputs) -> init`` when the default initialiser depends on the options (a network's
            weights record the start they were trained after); None = ``default_init``.
    """

    name: str
    run: Callable
    needs_segmentations: bool
    default_init: str
    description: str
    config: type = NoOptions
    presets: dict = field(default_factory=dict)
    region_use: str = ""
    init_for: Optional[Callable] = None

    @property
    def options(self) -> tuple:
        """The :class:`~MMRegistrationLib.core.options.OptionSpec` of every option, ``preset`` first when there are
        presets."""
        specs = self.config.options()
        if self.presets:
            preset = OptionSpec("preset", str, next(iter(self.presets)), "a named set of the options below (an option "
                                "given explicitly overrides it)", choices=tuple(self.presets), advanced=False)
            specs = (preset, *specs)
        return specs

    def build_config(self, given: Optional[dict] = None) -> MethodConfig:
        """The checked configuration from keyword options (values may be strings; None = not given), over the preset
        named by ``given['preset']`` (default: the first). Errors name the option as the user typed it."""
        given = dict(given or {})
        preset = given.pop("preset", None)
        base = {}
        if self.presets:
            preset = next(iter(self.presets)) if preset is None else str(preset)
            if preset not in self.presets:
                raise InputError("--preset", f"unknown preset '{preset}'; choose one of {', '.join(self.presets)}")
            base = self.presets[preset]
        elif preset is not None:
            raise InputError("--preset", f"method '{self.name}' has no presets")
        return self.config.from_options(given, base, method=self.name)

    def preset_of(self, given: Optional[dict]) -> Optional[str]:
        """The preset ``given`` selects (None for a method without presets)."""
        if not self.presets:
            return None
        return str((given or {}).get("preset") or next(iter(self.presets)))


METHODS: dict = {}


def register_method(spec: MethodSpec) -> None:
    METHODS[spec.name] = spec


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise InputError("--method", f"unknown method '{name}'; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def option_flags() -> dict:
    """Every option flag of every method -> ``[(method, OptionSpec), ...]`` (a name several methods share is one
    flag)."""
    out: dict = {}
    for spec in METHODS.values():
        for opt in spec.options:
            out.setdefault(flag_of(opt.name), []).append((spec.name, opt))
    return out


# ---- the methods ------------------------------------------------------------------------------------------------
def _linear_result(transform: AffineTransform) -> RegistrationResult:
    return RegistrationResult(transform=transform, inverse=transform.inverse())


def _none(inputs: RegistrationInputs, initial: AffineTransform, config, context: RunContext) -> RegistrationResult:
    return _linear_result(initial)


def _com(inputs: RegistrationInputs, initial: AffineTransform, config, context: RunContext) -> RegistrationResult:
    return _linear_result(center_of_mass_init(inputs.fixed_seg, inputs.moving_seg))


def _rigid_mask(inputs: RegistrationInputs, initial: AffineTransform, config: RigidMaskConfig,
                context: RunContext) -> RegistrationResult:
    transform = rigid_mask_init(inputs.fixed_seg, inputs.moving_seg, initial=initial, config=config,
                                seed=context.seed, device=context.device, progress=context.monitor)
    return _linear_result(transform)


def _sinr(inputs: RegistrationInputs, initial: AffineTransform, config: SINRConfig,
          context: RunContext) -> RegistrationResult:
    from MMRegistrationLib.registration.sinr import sinr_register

    return sinr_register(inputs.fixed_seg, inputs.moving_seg, initial, config, seed=context.seed,
                         device=context.device, progress=context.monitor, fixed_image=inputs.fixed,
                         moving_image=inputs.moving, region=inputs.region)


def _disa(inputs: RegistrationInputs, initial: AffineTransform, config: DISARegistrationConfig,
          context: RunContext) -> RegistrationResult:
    from MMRegistrationLib.registration.disa import disa_register

    if config.mask != "none" and not inputs.has_segmentations:
        raise InputError("--mask", f"'{config.mask}' needs --fixed-seg and --moving-seg")
    fixed_mask = inputs.fixed_seg if config.mask in ("fixed", "both") else None
    moving_mask = inputs.moving_seg if config.mask in ("moving", "both") else None
    return disa_register(inputs.fixed, inputs.moving, initial, config, fixed_mask, moving_mask,
                         seed=context.seed, device=context.device, progress=context.monitor,
                         mask_arguments=("--fixed-seg", "--moving-seg"), region=inputs.region)


register_method(MethodSpec("none", _none, False, "none", "no registration beyond the initialiser (--init)"))
register_method(MethodSpec("com", _com, True, "none", "translation aligning the prostate masks' centres of mass"))
register_method(MethodSpec("rigid-mask", _rigid_mask, True, "com", "rigid alignment of the masks' signed distance maps",
                           RigidMaskConfig))
register_method(MethodSpec(
    "sinr", _sinr, True, "auto",
    "surface-driven implicit neural stationary velocity field (paper 000); forward and inverse",
    SINRConfig, SINR_PRESETS,
    region_use="the velocity field is confined to the box (0 outside it, ramping up over margin_mm inside it) and "
               "the surface losses count only inside it; without --roi the box is the fixed structures' bounding box "
               "grown by margin_mm",
))
register_method(MethodSpec(
    "disa", _disa, False, "com",
    "image-based registration on DISA descriptors (paper 001): rigid, affine, probe pressure or deformable; "
    "local or global search; images alone suffice (--init com when segmentations are given, else none)",
    DISARegistrationConfig,
    region_use="the similarity is counted only at fixed points inside the box (with --mask fixed/both: inside both)",
))


def _net(inputs: RegistrationInputs, initial: AffineTransform, config, context: RunContext) -> RegistrationResult:
    from MMRegistrationLib.registration.net import net_register

    return net_register(inputs, initial, config, device=context.device, progress=context.monitor)


def _net_init(config, inputs: RegistrationInputs) -> str:
    from MMRegistrationLib.registration.net import required_init

    return required_init(config, inputs)


def _net_config():
    from MMRegistrationLib.registration.net import NetConfig

    return NetConfig


register_method(MethodSpec(
    "net", _net, False, "center",
    "trained registration network (papers 004/003): one forward pass from the images (and the masks its weights "
    "take) after the initial transform it was trained after (mix_plus: center; both_masks: com; srml: rigid-mask)",
    _net_config(), init_for=_net_init,
))
