"""Options of DISA registration (:mod:`MMRegistrationLib.registration.disa`): the config, its CLI help, value parsing
and the automatic working spacing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.options import MethodConfig, existing_file, option
from MMRegistrationLib.registration.pose_models import PROBE_DECAY_RANGE_MM
from MMRegistrationLib.similarity.disa import PRECISIONS
from MMRegistrationLib.similarity.objectives import WEIGHTINGS

MODES = ("rigid", "affine", "probe", "deformable")
SEARCHES = ("local", "global")
SIMILARITIES = ("disa", "lc2", "mind", "mi")
MASKS = ("none", "fixed", "moving", "both")
DEFORMABLE_AFTER = ("affine", "rigid")
FINEST_POINTS = ("descriptors", "interpolated")

__all__ = [
    "DEFORMABLE_AFTER", "DISARegistrationConfig", "FINEST_POINTS", "MASKS", "MODES", "PRECISIONS", "SEARCHES",
    "SIMILARITIES", "WEIGHTINGS", "config_dict", "disa_config", "optional_float", "parse_vector", "resolution_plan",
    "working_spacing",
]


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


def _threshold(value, argument: str) -> Optional[float]:
    """A field-of-view threshold: any finite number, or None (``none``: every voxel)."""
    out = optional_float(value, argument)
    if out is not None and not math.isfinite(out):
        raise InputError(argument, f"must be a finite number or 'none', got {value}")
    return out


@dataclass(frozen=True)
class DISARegistrationConfig(MethodConfig):
    """Parameters of :func:`disa_register` (every field is also a ``mmreg register --method disa`` option).

    Notes beyond each field's help: ``spacing_mm`` and ``levels`` None are automatic, from both images' voxel sizes
    and fields of view (:mod:`MMRegistrationLib.registration.disa_resolution`); the probe geometry (``probe_point``/``probe_direction`` None) is inferred
    from the fixed field of view (:func:`~MMRegistrationLib.spatial.probe.infer_probe_geometry`); ``weight_bending``
    weighs the velocity's bending energy (per mm^2) against the similarity divided by its value after the affine
    stage (3000 was best of 1000/3000/10000 on a synthetic 4.7 mm bump with MIND).
    """

    mode: str = option("rigid", "transform model: rigid, affine, probe (rigid + probe-pressure compression) or "
                       "deformable (affine + velocity field)", choices=MODES, advanced=False)
    search: str = option("local", "local (refine the initial transform) or global (random starts, the best refined)",
                         choices=SEARCHES, advanced=False)
    similarity: str = option("disa", "disa (trained descriptors), mind (MIND-SSC), lc2 (slow reference) or mi "
                             "(SimpleITK Mattes MI)", choices=SIMILARITIES, advanced=False)
    weights: Optional[str] = option(None, "DISA weights file (default: the shipped Resources/DISA/disa_lc2.pt)",
                                    kind=str, optional=True, parse=existing_file)
    precision: str = option("auto", "precision of the network's forward pass (bfloat16: 3-4x faster on CPUs with "
                            "native bfloat16, descriptors within 7e-3; auto: bfloat16 where the device has it "
                            "natively)", choices=PRECISIONS)
    spacing_mm: Optional[float] = option(None, "isotropic working spacing of both images; none = from the images: "
                                         "the coarsest spacing at which the smaller field of view holds 8000 "
                                         "descriptors, not finer than the finer image's voxels, at most 2 mm (lc2, "
                                         "mi: 2 mm)", unit="mm", kind=float, optional=True, minimum=0.1, maximum=20.0)
    levels: Optional[int] = option(None, "resolution levels (each halves the descriptor resolution); none = a "
                                   "coarser level while it keeps 150 descriptors (lc2, mi: 2)", kind=int, optional=True,
                                   minimum=1, maximum=6)
    finest_points: str = option("descriptors", "fixed points of the finest level: the descriptor positions, or "
                                "also halfway between them (interpolated: descriptors trilinear, 8x the points, one "
                                "more refinement level; the global search stays on the descriptor positions)",
                                choices=FINEST_POINTS)
    iterations: int = option(40, "L-BFGS iterations per start and level", minimum=1, maximum=10000)
    starts: int = option(500, "random starting poses of the global search", minimum=1, maximum=100000)
    refine: int = option(8, "best global-search poses refined locally", minimum=1, maximum=100)
    rotation_range_deg: float = option(40.0, "global search: rotation-vector components within +- this angle",
                                       unit="deg", minimum=0.0, maximum=180.0)
    translation_range_mm: float = option(150.0, "global search: translations within +- this distance, kept inside "
                                         "the moving image", unit="mm", minimum=0.0, maximum=1000.0)
    min_overlap: float = option(0.5, "global search: fraction of the fixed points that must map inside the moving "
                                "image", minimum=0.0, maximum=1.0)
    weighting: str = option("variance", "weight of each fixed point: variance (LC2's: local fixed intensity variance) or uniform",
                            choices=WEIGHTINGS)
    mask: str = option("none", "restrict the similarity to the dilated segmentations",
                       choices=MASKS, advanced=False)
    mask_margin_mm: float = option(10.0, "dilation of the masks", unit="mm", minimum=0.0, maximum=100.0)
    fixed_fov_threshold: Optional[float] = option(0.0, "fixed field of view = voxels above this value ('none' = all; "
                                                  "0 suits ultrasound)", kind=float, optional=True,
                                                  parse=_threshold)
    moving_fov_threshold: Optional[float] = option(None, "moving field of view = voxels above this value ('none' = "
                                                   "all)", kind=float, optional=True, parse=_threshold)
    probe_point: Optional[tuple] = option(None, "probe mode: probe position x,y,z (LPS mm, fixed image; default: the "
                                          "sector apex)", kind=tuple, optional=True, parse=parse_vector)
    probe_direction: Optional[tuple] = option(None, "probe mode: beam direction x,y,z into the tissue (default: the "
                                              "sector axis)", kind=tuple, optional=True, parse=parse_vector)
    probe_decay_mm: float = option(15.0, "probe mode: starting decay length of the compression (fitted within "
                                   "5-60 mm; the amplitude is fitted >= 0: a probe only pushes)", unit="mm",
                                   minimum=PROBE_DECAY_RANGE_MM[0], maximum=PROBE_DECAY_RANGE_MM[1])
    deformable_after: str = option("affine", "deformable: start the velocity field from the affine (default) or the "
                                   "rigid result", choices=DEFORMABLE_AFTER)
    grid_spacing_mm: float = option(8.0, "deformable: velocity grid spacing", unit="mm", minimum=1.0, maximum=100.0)
    weight_bending: float = option(3000.0, "deformable: weight of the velocity field's bending energy", minimum=0.0,
                                   maximum=1e9)
    deformable_iterations: int = option(60, "deformable: L-BFGS iterations", minimum=1, maximum=10000)
    squaring_steps: int = option(6, "deformable: scaling-and-squaring steps", minimum=1, maximum=12)
    output_spacing_mm: float = option(4.0, "deformable: spacing of the output displacement fields", unit="mm",
                                      minimum=0.25, maximum=50.0)

    def check(self) -> None:
        if self.probe_direction is not None and np.linalg.norm(self.probe_direction) < 1e-9:
            raise InputError("--probe-direction", "must not be the zero vector")
        if self.similarity == "mi" and (self.mode not in ("rigid", "affine") or self.search != "local"):
            raise InputError("--similarity", "'mi' (Mattes mutual information through SimpleITK) supports --mode rigid "
                             "or affine with --search local only")


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


def resolution_plan(fixed: Image, moving: Image, config: DISARegistrationConfig):
    """The :class:`~MMRegistrationLib.registration.disa_resolution.ResolutionPlan` of ``config`` for these images
    (its given ``spacing_mm`` / ``levels`` kept, the others chosen from the images)."""
    from MMRegistrationLib.registration.disa_resolution import plan_resolution

    return plan_resolution(fixed, moving, config.similarity, config.spacing_mm, config.levels,
                           config.fixed_fov_threshold, config.moving_fov_threshold)


def working_spacing(fixed: Image, moving: Image, config: DISARegistrationConfig) -> float:
    """The working spacing (mm) of :func:`resolution_plan`."""
    return resolution_plan(fixed, moving, config).spacing_mm


def disa_config(**options) -> DISARegistrationConfig:
    """Config from keyword options (None = default); unknown names are an error naming them."""
    return DISARegistrationConfig.from_options(options, method="disa")


def config_dict(config: DISARegistrationConfig) -> dict:
    """The config as a plain dict (result.json)."""
    return config.as_dict()
