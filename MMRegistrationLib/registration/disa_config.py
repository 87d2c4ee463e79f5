"""Options of DISA registration (:mod:`MMRegistrationLib.registration.disa`): the config, its CLI help, value parsing
and the automatic working spacing."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Optional

import numpy as np

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.registration.pose_models import PROBE_DECAY_RANGE_MM
from MMRegistrationLib.similarity.disa import PRECISIONS
from MMRegistrationLib.similarity.objectives import MIN_DESCRIPTOR_POINTS, WEIGHTINGS, descriptor_spacing

MODES = ("rigid", "affine", "probe", "deformable")
SEARCHES = ("local", "global")
SIMILARITIES = ("disa", "lc2", "mind", "mi")
MASKS = ("none", "fixed", "moving", "both")
DEFORMABLE_AFTER = ("affine", "rigid")

__all__ = [
    "DEFORMABLE_AFTER", "DISARegistrationConfig", "MASKS", "MIN_DESCRIPTOR_POINTS", "MODES", "OPTION_HELP",
    "PRECISIONS", "SEARCHES", "SIMILARITIES", "WEIGHTINGS", "config_dict", "disa_config", "fov_threshold_option",
    "optional_float", "parse_vector", "working_spacing",
]


@dataclass(frozen=True)
class DISARegistrationConfig:
    """Parameters of :func:`disa_register` (every field is also a ``mmreg register --method disa`` option).

    Attributes:
        mode: ``rigid``, ``affine``, ``probe`` (rigid + probe pressure) or ``deformable`` (affine + SVF).
        search: ``local`` (refine the initial transform) or ``global`` (random starts, see module docstring).
        similarity: ``disa``, ``mind``, ``lc2`` or ``mi``.
        weights: DISA weights file (None = the shipped ``Resources/DISA/disa_lc2.pt``).
        precision: forward pass of the network: ``auto`` (bfloat16 where the device has it natively, else float32),
            ``float32`` or ``bfloat16``.
        spacing_mm: isotropic working spacing the images are resampled to (the network is trained at 2 mm); None =
            automatic (:func:`working_spacing`: 2 mm, finer for small fields of view such as a prostate TRUS).
        levels: pyramid levels (each halves the descriptor resolution).
        iterations: L-BFGS iterations per start and level.
        starts / refine: random poses of the global search / how many of the best are refined.
        rotation_range_deg / translation_range_mm: ranges of the random starts around the initial transform.
        min_overlap: weighted fraction of the fixed points that must map inside the moving field of view for a
            global start to be kept.
        weighting: ``variance`` (LC2's weight: local fixed intensity variance) or ``uniform``.
        mask: restrict the similarity with the segmentations: ``none``, ``fixed``, ``moving`` or ``both``.
        mask_margin_mm: the masks are dilated by this distance first.
        fixed_fov_threshold / moving_fov_threshold: field of view = voxels above this value (None: every voxel);
            0 suits ultrasound, whose outside is exactly 0.
        probe_point / probe_direction: probe position ``p0`` and beam direction ``n`` (LPS, fixed space) for
            ``mode="probe"``; None = inferred from the fixed field of view (:func:`infer_probe_geometry`).
        probe_decay_mm: starting decay length ``b`` of the probe compression.
        deformable_after: the linear stage the velocity field starts from, ``affine`` (default) or ``rigid`` (when the
            similarity drives the 12 affine parameters astray, e.g. MIND between MR and ultrasound).
        grid_spacing_mm: velocity grid spacing of ``deformable``.
        weight_bending: weight of the velocity's bending energy (mean squared second derivatives, per mm^2) against
            the similarity loss divided by its value after the affine stage (so the weight does not depend on the
            similarity's scale; 3000 was best of 1000/3000/10000 on a synthetic 4.7 mm bump with MIND).
        deformable_iterations: L-BFGS iterations of the deformable stage.
        squaring_steps: scaling-and-squaring steps (one more for the outputs).
        output_spacing_mm: spacing of the output displacement fields of ``deformable``.
    """

    mode: str = "rigid"
    search: str = "local"
    similarity: str = "disa"
    weights: Optional[str] = None
    precision: str = "auto"
    spacing_mm: Optional[float] = None
    levels: int = 2
    iterations: int = 40
    starts: int = 500
    refine: int = 8
    rotation_range_deg: float = 40.0
    translation_range_mm: float = 150.0
    min_overlap: float = 0.5
    weighting: str = "variance"
    mask: str = "none"
    mask_margin_mm: float = 10.0
    fixed_fov_threshold: Optional[float] = 0.0
    moving_fov_threshold: Optional[float] = None
    probe_point: Optional[tuple] = None
    probe_direction: Optional[tuple] = None
    probe_decay_mm: float = 15.0
    deformable_after: str = "affine"
    grid_spacing_mm: float = 8.0
    weight_bending: float = 3000.0
    deformable_iterations: int = 60
    squaring_steps: int = 6
    output_spacing_mm: float = 4.0

    def __post_init__(self):
        for name in ("fixed_fov_threshold", "moving_fov_threshold"):
            value = optional_float(getattr(self, name), _flag(name))
            object.__setattr__(self, name, None if value is None or value == -math.inf else value)
        for name, choices in (("mode", MODES), ("search", SEARCHES), ("similarity", SIMILARITIES), ("mask", MASKS),
                              ("weighting", WEIGHTINGS), ("deformable_after", DEFORMABLE_AFTER),
                              ("precision", PRECISIONS)):
            value = getattr(self, name)
            if value not in choices:
                raise InputError(_flag(name), f"unknown value '{value}'; choose one of {', '.join(choices)}")
        for name in ("levels", "iterations", "starts", "refine", "deformable_iterations", "squaring_steps"):
            value = getattr(self, name)
            if int(value) != value or int(value) < 1:
                raise InputError(_flag(name), f"must be a positive integer, got {value}")
        for name in ("spacing_mm", "grid_spacing_mm", "output_spacing_mm", "probe_decay_mm"):
            if getattr(self, name) is None and name == "spacing_mm":
                continue
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise InputError(_flag(name), f"must be a positive number of mm, got {value}")
        for name in ("rotation_range_deg", "translation_range_mm", "mask_margin_mm", "weight_bending"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value >= 0):
                raise InputError(_flag(name), f"must be 0 or more, got {value}")
        if not 0.0 <= float(self.min_overlap) <= 1.0:
            raise InputError("--min-overlap", f"must be in [0, 1], got {self.min_overlap}")
        for name in ("probe_point", "probe_direction"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_vector(value, _flag(name)))
        lo, hi = PROBE_DECAY_RANGE_MM
        if not lo <= float(self.probe_decay_mm) <= hi:
            raise InputError("--probe-decay-mm", f"must be within [{lo:g}, {hi:g}] mm (the fitted decay stays there), "
                             f"got {self.probe_decay_mm}")
        if self.probe_direction is not None and np.linalg.norm(self.probe_direction) < 1e-9:
            raise InputError("--probe-direction", "must not be the zero vector")
        if self.similarity == "mi" and (self.mode not in ("rigid", "affine") or self.search != "local"):
            raise InputError("--similarity", "'mi' (Mattes mutual information through SimpleITK) supports --mode rigid "
                             "or affine with --search local only")


OPTION_HELP = {
    "mode": "rigid | affine | probe (rigid + probe-pressure compression) | deformable (affine + velocity field)",
    "search": "local (refine the initial transform) | global (random starts, the best refined)",
    "similarity": "disa (trained descriptors) | mind (MIND-SSC) | lc2 (slow reference) | mi (SimpleITK Mattes MI)",
    "weights": "DISA weights file (default: the shipped Resources/DISA/disa_lc2.pt)",
    "precision": "auto | float32 | bfloat16: precision of the network's forward pass (bfloat16: 3-4x faster on CPUs "
                 "with native bfloat16, descriptors within 7e-3; auto: bfloat16 where the device has it natively)",
    "spacing_mm": "isotropic working spacing (mm) of both images; default: 2 mm (the DISA network's), finer (down to "
                  "1 mm) when the fixed field of view would hold fewer than 1500 descriptors",
    "levels": "resolution levels (each halves the descriptor resolution)",
    "iterations": "L-BFGS iterations per start and level",
    "starts": "random starting poses of the global search",
    "refine": "best global-search poses refined locally",
    "rotation_range_deg": "global search: rotation-vector components within +- this angle (deg)",
    "translation_range_mm": "global search: translations within +- this distance (mm), kept inside the moving image",
    "min_overlap": "global search: fraction of the fixed points that must map inside the moving image",
    "weighting": "variance (LC2's weight: local fixed intensity variance) | uniform",
    "mask": "restrict the similarity to the dilated segmentations: none | fixed | moving | both",
    "mask_margin_mm": "dilation (mm) of the masks",
    "fixed_fov_threshold": "fixed field of view = voxels above this value ('none' = all; 0 suits ultrasound)",
    "moving_fov_threshold": "moving field of view = voxels above this value ('none' = all)",
    "probe_point": "probe mode: probe position x,y,z (LPS mm, fixed image; default: the sector apex)",
    "probe_direction": "probe mode: beam direction x,y,z into the tissue (default: the sector axis)",
    "probe_decay_mm": "probe mode: starting decay length (mm) of the compression (fitted within 5-60 mm; the "
                      "amplitude is fitted >= 0: a probe only pushes)",
    "deformable_after": "deformable: start the velocity field from the affine (default) or the rigid result",
    "grid_spacing_mm": "deformable: velocity grid spacing (mm)",
    "weight_bending": "deformable: weight of the velocity field's bending energy",
    "deformable_iterations": "deformable: L-BFGS iterations",
    "squaring_steps": "deformable: scaling-and-squaring steps",
    "output_spacing_mm": "deformable: spacing (mm) of the output displacement fields",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_vector(value, argument: str) -> tuple:
    """Three finite floats from ``"x,y,z"`` or a sequence; :class:`InputError` naming ``argument`` otherwise."""
    if isinstance(value, str):
        parts = [p for p in value.replace(";", ",").split(",") if p.strip()]
    else:
        parts = list(np.asarray(value, dtype=object).reshape(-1))
    try:
        out = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise InputError(argument, f"expected three numbers x,y,z, got {value!r}") from None
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise InputError(argument, f"expected three finite numbers x,y,z, got {value!r}")
    return out


def optional_float(value, argument: str = "value") -> Optional[float]:
    """A float, or None for ``None``/``"none"``/``"all"`` (CLI values of the field-of-view thresholds)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "all", "")):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputError(argument, f"expected a number or 'none', got {value!r}") from None
    if math.isnan(out):
        raise InputError(argument, "must not be NaN")
    return out


def fov_threshold_option(value) -> float:
    """CLI type of the field-of-view thresholds: a number, or ``none`` (every voxel) returned as ``-inf``, which
    :class:`DISARegistrationConfig` turns into None (a None option value would mean "the default")."""
    out = optional_float(value, "--fov-threshold")
    return -math.inf if out is None else out


def working_spacing(fixed: Image, config: DISARegistrationConfig) -> float:
    """The working spacing (mm): ``config.spacing_mm``, or when None 2 mm for ``lc2``/``mi`` and for descriptors the
    coarsest spacing in [1, 2] mm (0.1 mm steps) at which the fixed field of view holds about
    :data:`MIN_DESCRIPTOR_POINTS` descriptor positions (stride 4 for the network, 2 for MIND)."""
    if config.spacing_mm is not None:
        return float(config.spacing_mm)
    if config.similarity in ("lc2", "mi"):
        return 2.0
    threshold = config.fixed_fov_threshold
    count = fixed.array.size if threshold is None else int(np.count_nonzero(fixed.array > threshold))
    return descriptor_spacing(count * fixed.grid.voxel_volume, stride=2 if config.similarity == "mind" else 4)


def disa_config(**options) -> DISARegistrationConfig:
    """Config from keyword options (None = default); unknown names are an error naming them."""
    known = {f.name for f in fields(DISARegistrationConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError("disa options", f"unknown option(s) {unknown}; known: {sorted(known)}")
    return DISARegistrationConfig(**{k: v for k, v in options.items() if v is not None})


def config_dict(config: DISARegistrationConfig) -> dict:
    """The config as a plain dict (result.json)."""
    return asdict(config)
