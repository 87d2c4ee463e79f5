"""The registry of registration methods reachable from Python, the CLI and the Slicer modules.

A method is ``fn(inputs, initial, options, device, monitor) -> RegistrationResult`` where ``initial`` is
the fixed -> moving transform chosen by ``--init``. Later methods (SINR, DISA, RSO) register here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.registration.base import RegistrationInputs, RegistrationResult
from MMRegistrationLib.registration.initializers import center_of_mass_init, rigid_mask_init
from MMRegistrationLib.spatial.affine import AffineTransform


@dataclass(frozen=True)
class MethodOption:
    """A method parameter, exposed as ``--name-with-dashes`` on the CLI and as a keyword in Python."""

    name: str
    type: type
    default: object
    help: str


@dataclass(frozen=True)
class MethodSpec:
    name: str
    run: Callable
    needs_segmentations: bool
    default_init: str
    description: str
    options: tuple = ()
    region_use: str = ""  # how the method uses RegistrationInputs.region (--roi); "" = it does not

    def resolve_options(self, given: dict | None) -> dict:
        """Defaults overridden by ``given``; unknown keys are an error naming the method."""
        given = dict(given or {})
        known = {o.name: o for o in self.options}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise InputError("options", f"method '{self.name}' has no option(s) {unknown}; known: {sorted(known)}")
        resolved = {}
        for name, option in known.items():
            value = given.get(name, option.default)
            try:
                resolved[name] = None if value is None else option.type(value)
            except InputError:
                raise
            except (TypeError, ValueError):
                raise InputError(f"--{name.replace('_', '-')}", f"expected {option.type.__name__}, got {value!r}") from None
        return resolved


METHODS: dict = {}


def register_method(spec: MethodSpec) -> None:
    METHODS[spec.name] = spec


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise InputError("--method", f"unknown method '{name}'; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def _linear_result(transform: AffineTransform) -> RegistrationResult:
    return RegistrationResult(transform=transform, inverse=transform.inverse())


def _none(inputs: RegistrationInputs, initial: AffineTransform, options: dict, device, monitor) -> RegistrationResult:
    return _linear_result(initial)


def _com(inputs: RegistrationInputs, initial: AffineTransform, options: dict, device, monitor) -> RegistrationResult:
    return _linear_result(center_of_mass_init(inputs.fixed_seg, inputs.moving_seg))


def _rigid_mask(inputs: RegistrationInputs, initial: AffineTransform, options: dict, device, monitor) -> RegistrationResult:
    transform = rigid_mask_init(
        inputs.fixed_seg, inputs.moving_seg, initial=initial, device=device, progress=monitor, **options
    )
    return _linear_result(transform)


def _sinr_preset(name) -> str:
    """The ``--preset`` value, checked before any work starts."""
    from MMRegistrationLib.registration.sinr import PRESETS

    name = str(name)
    if name not in PRESETS:
        raise InputError("--preset", f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return name


def _sinr_options() -> tuple:
    """One option per :class:`SINRConfig` field (default None = the preset's value), help from its docstring."""
    import dataclasses

    from MMRegistrationLib.registration.sinr import SINRConfig, option_help

    return tuple(
        MethodOption(f.name, type(f.default), None, option_help(f.name)) for f in dataclasses.fields(SINRConfig)
    )


def _sinr(inputs: RegistrationInputs, initial: AffineTransform, options: dict, device, monitor) -> RegistrationResult:
    from MMRegistrationLib.registration.sinr import sinr_config, sinr_register

    options = dict(options)
    config = sinr_config(options.pop("preset"), **options)
    import torch

    return sinr_register(inputs.fixed_seg, inputs.moving_seg, initial, config, seed=torch.initial_seed(), device=device,
                         progress=monitor, fixed_image=inputs.fixed, moving_image=inputs.moving)


register_method(MethodSpec("none", _none, False, "none", "no registration beyond the initialiser (--init)"))
register_method(MethodSpec("com", _com, True, "none", "translation aligning the prostate masks' centres of mass"))
register_method(
    MethodSpec(
        "rigid-mask",
        _rigid_mask,
        True,
        "com",
        "rigid alignment of the masks' signed distance maps",
        (
            MethodOption("band_mm", float, 12.0, "only fixed points within this distance (mm) of a surface count"),
            MethodOption("context_weight", float, 0.25, "weight of structures other than the prostate (label 1)"),
            MethodOption("start_angles_deg", float, 15.0, "extra starting rotations (+-deg about each axis); 0 = one start"),
            MethodOption("iterations", int, 60, "L-BFGS iterations per start and level"),
        ),
    )
)
register_method(
    MethodSpec(
        "sinr",
        _sinr,
        True,
        "auto",
        "surface-driven implicit neural stationary velocity field (paper 000); forward and inverse",
        (
            MethodOption("preset", _sinr_preset, "fast", "fast (interactive) or accurate"),
            *_sinr_options(),
        ),
    )
)


def _disa_options() -> tuple:
    """One option per :class:`DISARegistrationConfig` field, checked before any work starts."""
    import dataclasses

    from MMRegistrationLib.registration import disa

    def choice(name: str, choices: tuple):
        def check(value) -> str:
            value = str(value)
            if value not in choices:
                raise InputError(f"--{name.replace('_', '-')}",
                                 f"unknown value '{value}'; choose one of {', '.join(choices)}")
            return value

        return check

    types = {
        "mode": choice("mode", disa.MODES),
        "search": choice("search", disa.SEARCHES),
        "similarity": choice("similarity", disa.SIMILARITIES),
        "mask": choice("mask", disa.MASKS),
        "weighting": choice("weighting", disa.WEIGHTINGS),
        "deformable_after": choice("deformable_after", disa.DEFORMABLE_AFTER),
        "weights": str,
        "precision": choice("precision", disa.PRECISIONS),
        "spacing_mm": float,
        "fixed_fov_threshold": disa.fov_threshold_option,
        "moving_fov_threshold": disa.fov_threshold_option,
        "probe_point": str,
        "probe_direction": str,
    }
    return tuple(
        MethodOption(f.name, types.get(f.name, type(f.default)), f.default, disa.OPTION_HELP[f.name])
        for f in dataclasses.fields(disa.DISARegistrationConfig)
    )


def _disa(inputs: RegistrationInputs, initial: AffineTransform, options: dict, device, monitor) -> RegistrationResult:
    import torch

    from MMRegistrationLib.registration.disa import disa_config, disa_register

    config = disa_config(**options)
    if config.mask != "none" and not inputs.has_segmentations:
        raise InputError("--mask", f"'{config.mask}' needs --fixed-seg and --moving-seg")
    fixed_mask = inputs.fixed_seg if config.mask in ("fixed", "both") else None
    moving_mask = inputs.moving_seg if config.mask in ("moving", "both") else None
    return disa_register(inputs.fixed, inputs.moving, initial, config, fixed_mask, moving_mask,
                         seed=torch.initial_seed(), device=device, progress=monitor,
                         mask_arguments=("--fixed-seg", "--moving-seg"))


register_method(
    MethodSpec(
        "disa",
        _disa,
        False,
        "com",
        "image-based registration on DISA descriptors (paper 001): rigid, affine, probe pressure or deformable; "
        "local or global search; images alone suffice (--init com when segmentations are given, else none)",
        _disa_options(),
    )
)
