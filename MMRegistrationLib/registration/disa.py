"""DISA registration (paper 001): image registration on pre-computed descriptor volumes.

Each image is described once (no gradient through the network); the similarity of a pose is the weighted mean
dot product (paper Eq. 2) between the fixed descriptors at the fixed descriptor positions ``p`` and the moving
descriptors sampled (trilinearly, ``grid_sample``) at ``T(p)``:

    ``loss(T) = 1 - sum_p w(p) <phi(F)[p], phi(M)[T(p)]>``,  ``sum_p w(p) = 1``

with ``phi(M)`` taken as 0 outside the moving field of view (a point that leaves the moving image costs as much
as a dissimilar one, so the optimiser gains nothing by leaving the overlap) and ``w(p)`` the LC2 weight (local
fixed intensity variance inside the field of view, ``weighting="variance"``) or uniform. Only fixed positions
inside the fixed field of view count (for ultrasound, the zero region around the sector never does; see
:mod:`MMRegistrationLib.similarity.disa`), optionally also restricted to a dilated fixed mask. Gradients flow to
the transform parameters only.

Transform models (fixed -> moving; ``A0`` the initial affine, ``c`` the weighted centroid of the fixed points):

- ``rigid``: ``T(x) = A0(R(x - c) + c + t)``, 6 parameters (rotation vector, translation mm);
- ``affine``: ``T(x) = A0((I + L)(x - c) + c + t)``, 12 parameters, started from the rigid result;
- ``probe``: ``T(x) = A0(R(P(x) - c) + c + t)`` with ``P`` the probe-pressure compression of
  :mod:`MMRegistrationLib.spatial.probe` (amplitude ``a`` mm at the probe, decay length ``b`` mm, along the beam
  direction of the ultrasound sector): 6 + 2 parameters;
- ``deformable``: after ``affine``, ``T(x) = A(x + u(x))`` with ``u = exp(v) - id`` a stationary velocity field
  on a coarse grid (``grid_spacing_mm``) over the fixed points, windowed to 0 at its border, with bending energy
  regularisation; forward ``exp(v)`` and inverse ``exp(-v)`` as in SINR.

Optimisation: L-BFGS (strong Wolfe line search) coarse to fine over a descriptor pyramid (``levels``). With
``search="global"``, ``starts`` random rigid poses (rotation-vector components within ``+-rotation_range_deg``,
translations within ``+-translation_range_mm``, clipped so that the fixed centre stays inside the moving field of
view) are evaluated in batches at the coarsest level (one ``grid_sample`` call per batch of poses); the ``refine``
best that overlap the moving image by at least ``min_overlap`` are refined there and the best of them is carried
through the finer levels. Seeded and deterministic on the CPU.

Similarities: ``disa`` (trained DISA network, default), ``mind`` (MIND-SSC descriptors, mean squared difference),
``lc2`` (LC2 recomputed on the resampled moving image at every evaluation: the slow reference), ``mi`` (Mattes
mutual information through SimpleITK's own registration framework; rigid/affine, local search only).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from MMRegistrationLib.core.conventions import ALIGN_CORNERS
from MMRegistrationLib.core.errors import InputError, MMRegError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.losses.functional import bending_energy
from MMRegistrationLib.registration.base import RegistrationResult
from MMRegistrationLib.registration.global_search import (
    best_poses,
    evaluate_in_batches,
    rotation_matrices,
    sample_poses,
    translation_bounds,
)
from MMRegistrationLib.similarity.descriptors import (
    DescriptorBackend,
    MINDDescriptors,
    NetworkDescriptors,
    pyramid,
    variance_weights,
)
from MMRegistrationLib.similarity.disa import DescriptorVolume, PreparedVolume, prepare_volume
from MMRegistrationLib.spatial.affine import AffineTransform
from MMRegistrationLib.spatial.composite import ComposedTransform
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.spatial.probe import ProbeCompression, compress, infer_probe_geometry
from MMRegistrationLib.spatial.sampling import sample_at_world, sample_normalized, world_to_normalized_matrix
from MMRegistrationLib.spatial.velocity import exponentiate

MODES = ("rigid", "affine", "probe", "deformable")
SEARCHES = ("local", "global")
SIMILARITIES = ("disa", "lc2", "mind", "mi")
MASKS = ("none", "fixed", "moving", "both")
DEFORMABLE_AFTER = ("affine", "rigid")
WEIGHTINGS = ("variance", "uniform")

PARAMETER_SCALE_MM = 50.0
"""Rotation-vector and affine-matrix parameters are optimised multiplied by this length (mm): one unit moves a
point 50 mm from the centre by about 1 mm, like one unit of translation, which keeps L-BFGS well conditioned."""

MIN_DESCRIPTOR_POINTS = 1500
"""``spacing_mm=None`` (auto) picks the coarsest working spacing in [1, 2] mm at which the fixed field of view holds
about this many descriptor positions. Measured on the synthetic sample case (TRUS sector of ~0.26 l) with the trained
network: at 2 mm only 252 positions survive the field-of-view margin and the DISA loss is flat (0.7447 at the ground
truth vs 0.7443 at the start; rigid registration drifted to a 12 mm TRE), at 1.5 / 1 mm (748 / 2870 positions) the
ground truth is clearly preferred and rigid registration brings the TRE from 5.0 to 2.5 / 2.6 mm."""

SEPARATION_MM = 10.0
"""Global search: a start is only kept for refinement if it differs by at least this much (translation + 50 mm x
rotation) from every better kept start, so the refined starts explore different basins."""

MAX_BATCH_SAMPLES = 2**22
"""Upper bound on sampled values (points x poses x channels) per ``grid_sample`` call of the global search."""


@dataclass(frozen=True)
class DISARegistrationConfig:
    """Parameters of :func:`disa_register` (every field is also a ``mmreg register --method disa`` option).

    Attributes:
        mode: ``rigid``, ``affine``, ``probe`` (rigid + probe pressure) or ``deformable`` (affine + SVF).
        search: ``local`` (refine the initial transform) or ``global`` (random starts, see module docstring).
        similarity: ``disa``, ``mind``, ``lc2`` or ``mi``.
        weights: DISA weights file (None = the shipped ``Resources/DISA/disa_lc2.pt``).
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
    precision: str = "float32"
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
                              ("weighting", WEIGHTINGS), ("deformable_after", DEFORMABLE_AFTER)):
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
    "precision": "float32 | bfloat16: precision of the network's forward pass (bfloat16 is ~5x faster on CPUs with "
                 "native bfloat16, descriptors within 3e-3)",
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
    "probe_decay_mm": "probe mode: starting decay length (mm) of the compression",
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
    stride = 2 if config.similarity == "mind" else 4
    threshold = config.fixed_fov_threshold
    count = fixed.array.size if threshold is None else int(np.count_nonzero(fixed.array > threshold))
    spacing = (count * fixed.grid.voxel_volume / MIN_DESCRIPTOR_POINTS) ** (1.0 / 3.0) / stride
    return float(np.clip(np.floor(spacing * 10.0) / 10.0, 1.0, 2.0))


def disa_config(**options) -> DISARegistrationConfig:
    """Config from keyword options (None = default); unknown names are an error naming them."""
    known = {f.name for f in fields(DISARegistrationConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError("disa options", f"unknown option(s) {unknown}; known: {sorted(known)}")
    return DISARegistrationConfig(**{k: v for k, v in options.items() if v is not None})


# ---- objectives ---------------------------------------------------------------------------------------------
class _DescriptorLevel:
    """Similarity of one pyramid level: fixed descriptors at fixed positions vs moving descriptors sampled at
    mapped positions. ``evaluate(mapped (B, P, 3)) -> (loss (B,), overlap (B,))``, both weighted means."""

    def __init__(self, fixed: DescriptorVolume, moving: DescriptorVolume, kind: str, weights: np.ndarray,
                 fixed_keep: Optional[np.ndarray], moving_keep: Optional[np.ndarray], device):
        self.kind = kind
        self.grid = fixed.grid
        self.fov = fixed.mask.detach().cpu().numpy().astype(bool)
        mask = self.fov & (weights > 0)
        if fixed_keep is not None:
            mask &= fixed_keep
        self.mask = mask
        self.count = int(mask.sum())
        self.spacing_mm = float(np.mean(fixed.grid.spacing))
        sel = torch.as_tensor(mask, device=device)
        self.points = fixed.grid.world_points_torch(device=device)[sel]  # (P, 3)
        self.features = fixed.descriptors[0].float().to(device).permute(1, 2, 3, 0)[sel]  # (P, C)
        w = torch.as_tensor(weights[mask], dtype=torch.float64, device=device)
        self.weights = w / w.sum() if self.count else w
        moving_mask = moving.mask.detach().cpu().numpy().astype(bool)
        if moving_keep is not None:
            moving_mask = moving_mask & moving_keep
        self.moving_count = int(moving_mask.sum())
        inside = torch.as_tensor(moving_mask, dtype=torch.float32, device=device)
        self.volume = torch.cat([moving.descriptors[0].float().to(device) * inside, inside[None]])  # (C + 1, k, j, i)
        self.to_normalized = torch.as_tensor(world_to_normalized_matrix(moving.grid), dtype=torch.float32,
                                             device=device)
        self.moving_points = moving.grid.world_points()[moving_mask]
        self.channels = int(self.features.shape[1])

    def batch_size(self) -> int:
        return max(1, MAX_BATCH_SAMPLES // max(1, self.count * (self.channels + 1)))

    def evaluate(self, mapped: torch.Tensor) -> tuple:
        b, p = mapped.shape[:2]
        lin = self.to_normalized
        norm = mapped.to(torch.float32) @ lin[:3, :3].T + lin[:3, 3]
        out = F.grid_sample(self.volume[None], norm.reshape(1, b, p, 1, 3), mode="bilinear", padding_mode="zeros",
                            align_corners=ALIGN_CORNERS)[0, :, :, :, 0]  # (C + 1, B, P)
        feats = out[:-1].permute(1, 2, 0)
        if self.kind == "dot":
            per_point = 1.0 - (feats * self.features).sum(-1)
        else:
            per_point = ((feats - self.features) ** 2).mean(-1)
        loss = (per_point.to(torch.float64) * self.weights).sum(-1)
        overlap = (out[-1].to(torch.float64) * self.weights).sum(-1)
        return loss, overlap


class _LC2Level:
    """LC2 of the fixed image against the moving image resampled at the mapped fixed voxel centres (every
    evaluation recomputes the patch statistics: the slow reference the DISA descriptors approximate)."""

    def __init__(self, fixed: PreparedVolume, moving: PreparedVolume, fixed_keep: Optional[np.ndarray],
                 moving_keep: Optional[np.ndarray], device):
        from MMRegistrationLib.similarity.lc2 import DEFAULT_RADII

        self.radii = DEFAULT_RADII
        margin = max(self.radii)
        self.grid = fixed.grid
        self.spacing_mm = float(np.mean(fixed.grid.spacing))
        self.fov = fixed.mask.copy()
        mask = fixed.mask.copy()
        if fixed_keep is not None:
            mask &= fixed_keep
        self.mask = mask
        inner = np.zeros_like(mask)
        inner[margin:-margin, margin:-margin, margin:-margin] = True
        self.count = int((mask & inner).sum())
        self.points = fixed.grid.world_points_torch(device=device).reshape(-1, 3)
        self.fixed = fixed.to_tensor(device)
        crop = mask[margin:-margin, margin:-margin, margin:-margin]
        self.crop_mask = torch.as_tensor(np.ascontiguousarray(crop), dtype=torch.float64, device=device)
        w = torch.as_tensor(mask.reshape(-1), dtype=torch.float64, device=device)
        self.weights = w / max(float(w.sum()), 1.0)
        moving_mask = moving.mask if moving_keep is None else moving.mask & moving_keep
        self.moving_count = int(moving_mask.sum())
        inside = torch.as_tensor(moving_mask, dtype=torch.float32, device=device)
        self.volume = torch.stack([moving.to_tensor(device)[0, 0] * inside, inside])
        self.to_normalized = torch.as_tensor(world_to_normalized_matrix(moving.grid), dtype=torch.float32,
                                             device=device)
        self.moving_points = moving.grid.world_points()[moving_mask]
        self.spacing_ijk = tuple(float(s) for s in fixed.grid.spacing)

    def batch_size(self) -> int:
        return 1

    def evaluate(self, mapped: torch.Tensor) -> tuple:
        from MMRegistrationLib.similarity.lc2 import lc2_map

        b, p = mapped.shape[:2]
        lin = self.to_normalized
        norm = mapped.to(torch.float32) @ lin[:3, :3].T + lin[:3, 3]
        out = F.grid_sample(self.volume[None], norm.reshape(1, b, p, 1, 3), mode="bilinear", padding_mode="zeros",
                            align_corners=ALIGN_CORNERS)[0, :, :, :, 0]  # (2, B, P)
        shape = self.fixed.shape[-3:]
        values = out[0].reshape(b, 1, *shape)
        if values.requires_grad:
            # lc2's gradient magnitude is sqrt(.) of exactly 0 where the resampled moving image is flat (outside it):
            # its derivative there is 0 * inf = NaN; the subgradient is bounded, 0 is a valid choice
            values.register_hook(lambda g: torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0))
        result = lc2_map(self.fixed.expand(b, 1, *shape), values, self.radii, self.spacing_ijk)
        w = result.weights.to(torch.float64)[:, 0] * self.crop_mask
        total = w.sum(dim=(1, 2, 3)).clamp_min(1e-30)
        loss = 1.0 - (w * result.values.to(torch.float64)[:, 0]).sum(dim=(1, 2, 3)) / total
        overlap = (out[1].to(torch.float64) * self.weights).sum(-1)
        return loss, overlap


# ---- transform models -----------------------------------------------------------------------------------------
class _Model:
    """Maps a batch of parameter vectors ``(B, n)`` and fixed points ``(P, 3)`` to moving points ``(B, P, 3)``."""

    def __init__(self, kind: str, centre: np.ndarray, initial: np.ndarray, probe: Optional[tuple] = None,
                 decay_mm: float = 15.0):
        self.kind = kind
        self.n = {"rigid": 6, "affine": 12, "probe": 8}[kind]
        self.centre = torch.as_tensor(centre, dtype=torch.float64)
        self.initial = torch.as_tensor(initial, dtype=torch.float64)
        self.probe = probe
        self.decay_mm = float(decay_mm)

    def linear(self, params: torch.Tensor) -> tuple:
        """``(M (B, 3, 3), m (B, 3))`` of the affine part, initial transform included (float64)."""
        c = self.centre
        eye = torch.eye(3, dtype=params.dtype)
        if self.kind == "affine":
            lin = eye + params[:, :9].reshape(-1, 3, 3) / PARAMETER_SCALE_MM
            t = params[:, 9:12]
        else:
            lin = rotation_matrices(params[:, :3] / PARAMETER_SCALE_MM)
            t = params[:, 3:6]
        b = c - lin @ c + t
        a0, t0 = self.initial[:3, :3], self.initial[:3, 3]
        return a0 @ lin, b @ a0.T + t0

    def probe_parameters(self, params: torch.Tensor) -> tuple:
        """``(a, b)`` (mm) of each row; ``a`` is kept above ``-0.9 b`` (invertible compression)."""
        decay = self.decay_mm * torch.exp(params[:, 7] / self.decay_mm)
        amplitude = torch.maximum(params[:, 6], -0.9 * decay)
        return amplitude, decay

    def map(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        m_lin, m_off = self.linear(params)
        dtype = points.dtype
        m_lin, m_off = m_lin.to(points.device, dtype), m_off.to(points.device, dtype)
        if self.kind == "probe":
            amplitude, decay = self.probe_parameters(params)
            p0 = torch.as_tensor(self.probe[0], dtype=dtype, device=points.device)
            n = torch.as_tensor(self.probe[1], dtype=dtype, device=points.device)
            pts = compress(points[None], p0, n, amplitude.to(points.device, dtype)[:, None],
                           decay.to(points.device, dtype)[:, None])
            return torch.einsum("bij,bpj->bpi", m_lin, pts) + m_off[:, None]
        return torch.einsum("bij,pj->bpi", m_lin, points) + m_off[:, None]

    def matrix(self, params: torch.Tensor) -> np.ndarray:
        """4x4 fixed(-after-probe) -> moving matrix of one parameter vector ``(n,)``."""
        m_lin, m_off = self.linear(params[None].detach())
        out = np.eye(4)
        out[:3, :3] = m_lin[0].numpy()
        out[:3, 3] = m_off[0].numpy()
        return out


def _rigid_to_affine(params: torch.Tensor) -> torch.Tensor:
    rot = rotation_matrices(params[None, :3] / PARAMETER_SCALE_MM)[0]
    return torch.cat([((rot - torch.eye(3, dtype=params.dtype)) * PARAMETER_SCALE_MM).reshape(9), params[3:6]])


def _lbfgs(params: torch.Tensor, loss_fn, iterations: int, monitor: Monitor, label: str) -> tuple:
    """Minimise ``loss_fn(p)`` from ``params`` with L-BFGS; returns ``(p, loss, evaluations)``."""
    p = params.clone().detach().requires_grad_(True)
    opt = torch.optim.LBFGS([p], lr=1.0, max_iter=int(iterations), line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-9, history_size=10)
    count = [0]

    def closure():
        monitor.check(label)
        opt.zero_grad()
        loss = loss_fn(p)
        if not bool(torch.isfinite(loss)):
            raise MMRegError(f"DISA registration: the {label} loss became {float(loss)}; check the input images")
        loss.backward()
        count[0] += 1
        return loss

    opt.step(closure)
    with torch.no_grad():
        final = float(loss_fn(p))
    return p.detach(), final, count[0]


# ---- masks ----------------------------------------------------------------------------------------------------
def _dilated(mask_image: Image, margin_mm: float) -> Image:
    """Foreground of a label map dilated by ``margin_mm`` (float32 0/1 on its own grid)."""
    from scipy import ndimage

    fg = mask_image.array != 0
    if margin_mm > 0:
        fg = ndimage.distance_transform_edt(~fg, sampling=mask_image.grid.spacing[::-1]) <= margin_mm
    return mask_image.with_array(fg.astype(np.float32))


def _check_images(fixed: Image, moving: Image, config: DISARegistrationConfig, fixed_mask, moving_mask,
                  mask_arguments: tuple) -> None:
    """Refuse what cannot be described before any work: NaN/Inf voxels, an image constant inside its field of view
    (relative tolerance 1e-6: float32 resampling noise must not pass for structure), empty masks."""
    for image, threshold, argument in ((fixed, config.fixed_fov_threshold, "--fixed"),
                                       (moving, config.moving_fov_threshold, "--moving")):
        image.check_finite(argument)
        values = image.array if threshold is None else image.array[image.array > threshold]
        if values.size == 0:
            raise InputError(argument, f"has no voxel above the field-of-view threshold {threshold}")
        low, high = float(values.min()), float(values.max())
        if high - low <= 1e-6 * max(abs(low), abs(high), 1e-30):
            raise InputError(argument, "is constant inside its field of view; it has no structure to register")
    for mask, argument in ((fixed_mask, mask_arguments[0]), (moving_mask, mask_arguments[1])):
        if mask is not None and not np.any(mask.array != 0):
            raise InputError(argument, "is empty (no non-zero voxel); the similarity would have nothing to compare")


def _on_grid(dilated: Optional[Image], grid: Grid) -> Optional[np.ndarray]:
    if dilated is None:
        return None
    from MMRegistrationLib.spatial.resample import resample

    return resample(dilated, grid).array > 0.5


# ---- the registration -----------------------------------------------------------------------------------------
def _backend(config: DISARegistrationConfig, descriptors: Optional[DescriptorBackend], device) -> DescriptorBackend:
    if descriptors is not None:
        return descriptors
    if config.similarity == "mind":
        return MINDDescriptors(device=device)
    from MMRegistrationLib.networks.disa import load_disa

    network, _ = load_disa(config.weights, device=device, argument="--weights")
    return NetworkDescriptors(network, device=device, precision=config.precision)


def _levels(fixed: Image, moving: Image, config: DISARegistrationConfig, backend, fixed_keep_img, moving_keep_img,
            device) -> tuple:
    """``(objectives coarsest first, seconds spent preparing and describing, finest prepared fixed volume)``."""
    levels = []
    prepared = None
    t0 = time.perf_counter()
    if config.similarity == "lc2":
        for level in range(config.levels):
            spacing = config.spacing_mm * 2 ** (config.levels - 1 - level)
            fp = prepare_volume(fixed, spacing, config.fixed_fov_threshold, "--fixed")
            mp = prepare_volume(moving, spacing, config.moving_fov_threshold, "--moving")
            if min(fp.array.shape) < 2 * 7 + 1 or min(mp.array.shape) < 2 * 7 + 1:
                if level == config.levels - 1:
                    raise InputError("--fixed" if min(fp.array.shape) < 15 else "--moving",
                                     f"is too small for LC2 at {spacing:g} mm: every axis needs at least 15 voxels "
                                     "(patch radius 7); use a finer spacing_mm")
                continue
            levels.append(_LC2Level(fp, mp, _on_grid(fixed_keep_img, fp.grid), _on_grid(moving_keep_img, mp.grid),
                                    device))
            prepared = fp
        return levels, time.perf_counter() - t0, prepared
    fp = prepare_volume(fixed, config.spacing_mm, config.fixed_fov_threshold, "--fixed")
    mp = prepare_volume(moving, config.spacing_mm, config.moving_fov_threshold, "--moving")
    fixed_desc = backend(fp, "--fixed")
    moving_desc = backend(mp, "--moving")
    seconds = time.perf_counter() - t0
    for fd, md in zip(pyramid(fixed_desc, config.levels), pyramid(moving_desc, config.levels)):
        if config.weighting == "variance":
            weights = variance_weights(fp, fd.grid)
        else:
            weights = np.ones(fd.grid.shape)
        levels.append(_DescriptorLevel(fd, md, backend.kind, weights, _on_grid(fixed_keep_img, fd.grid),
                                       _on_grid(moving_keep_img, md.grid), device))
    return levels, seconds, fp


def _check_levels(levels: list, has_fixed_mask: bool, has_moving_mask: bool, mask_arguments: tuple) -> list:
    finest = levels[-1]
    if finest.count == 0:
        if has_fixed_mask:
            raise InputError(mask_arguments[0], "the fixed mask (dilated by mask_margin_mm) and the fixed field of "
                             "view share no point where the similarity is evaluated; check that the mask belongs to "
                             "the fixed image, or increase --mask-margin-mm")
        raise InputError("--fixed", "has no point where the similarity can be evaluated (field of view empty, too "
                         "thin, or without intensity variation); check --fixed-fov-threshold")
    if finest.moving_count == 0:
        if has_moving_mask:
            raise InputError(mask_arguments[1], "the moving mask (dilated by mask_margin_mm) and the moving field of "
                             "view share no descriptor; check that the mask belongs to the moving image")
        raise InputError("--moving", "has an empty field of view; check --moving-fov-threshold")
    return [lv for lv in levels if lv.count > 0 and lv.moving_count > 0]


def disa_register(
    fixed: Image,
    moving: Image,
    initial: Optional[AffineTransform] = None,
    config: DISARegistrationConfig = DISARegistrationConfig(),
    fixed_mask: Optional[Image] = None,
    moving_mask: Optional[Image] = None,
    descriptors: Optional[DescriptorBackend] = None,
    seed: int = 0,
    device=None,
    progress=None,
    cancel=None,
    mask_arguments: tuple = ("fixed_mask", "moving_mask"),
) -> RegistrationResult:
    """Register ``moving`` (e.g. MR) to ``fixed`` (e.g. TRUS) on images alone (module docstring).

    Args:
        fixed, moving: the images (any geometry, LPS mm).
        initial: fixed -> moving affine start (default identity).
        config: :class:`DISARegistrationConfig`.
        fixed_mask, moving_mask: optional label maps (non-zero = inside) restricting the similarity after dilation
            by ``config.mask_margin_mm``; used whatever ``config.mask`` says (that option is for the method wrapper).
        descriptors: descriptor backend replacing the default of ``similarity`` ``disa``/``mind`` (e.g. a
            :class:`NetworkDescriptors` of an untrained network in tests); ignored for ``lc2``/``mi``.
        seed: seed of the global search.
        mask_arguments: names used in errors about the masks (``--fixed-seg``/``--moving-seg`` from the CLI).

    Returns:
        :class:`RegistrationResult` with ``transform`` fixed -> moving and ``inverse`` moving -> fixed.

    Raises:
        InputError: bad images (NaN/Inf, constant, too small for the descriptors), missing or damaged weights,
            masks that leave nothing to compare, no overlap between the images at the start.
        MMRegError: the loss became non-finite.
    """
    monitor = Monitor.wrap(progress, cancel)
    device = torch.device(device) if device is not None else torch.device("cpu")
    initial = initial if initial is not None else AffineTransform.identity()
    a0 = np.array(initial.matrix, dtype=np.float64)
    times = {}
    t0 = time.perf_counter()
    _check_images(fixed, moving, config, fixed_mask, moving_mask, mask_arguments)
    fixed_keep = _dilated(fixed_mask, config.mask_margin_mm) if fixed_mask is not None else None
    moving_keep = _dilated(moving_mask, config.mask_margin_mm) if moving_mask is not None else None
    spacing = working_spacing(fixed, config)
    if config.spacing_mm is None:
        config = replace(config, spacing_mm=spacing)
    if config.similarity == "mi":
        return _mi_register(fixed, moving, a0, config, fixed_keep, moving_keep, seed, monitor, mask_arguments)
    backend = None if config.similarity == "lc2" else _backend(config, descriptors, device)
    monitor.report(0.0, "DISA: describing the images")
    levels, times["descriptors"], prepared = _levels(fixed, moving, config, backend, fixed_keep, moving_keep, device)
    levels = _check_levels(levels, fixed_mask is not None, moving_mask is not None, mask_arguments)
    finest = levels[-1]
    w = finest.weights.detach().cpu()
    centre = (finest.points.detach().cpu().to(torch.float64) * w[:, None]).sum(0).numpy() / float(w.sum())
    times["setup"] = time.perf_counter() - t0 - times["descriptors"]
    info: dict = {
        "similarity": config.similarity,
        "descriptors": None if backend is None else backend.name,
        "mode": config.mode,
        "search": config.search,
        "centre_mm": centre.tolist(),
        "working_spacing_mm": config.spacing_mm,
        "levels": [{"spacing_mm": lv.spacing_mm, "points": lv.count} for lv in levels],
        "config": asdict(config),
    }

    probe = None
    if config.mode == "probe":
        probe = infer_probe_geometry(prepared.mask, prepared.grid, config.probe_point, config.probe_direction)
        info["probe_point_mm"], info["probe_direction"] = probe[0].tolist(), probe[1].tolist()
    rigid = _Model("rigid", centre, a0)
    pose_model = _Model("probe", centre, a0, probe, config.probe_decay_mm) if config.mode == "probe" else rigid

    # ---- starting poses
    t1 = time.perf_counter()
    coarse = levels[0]
    zero = torch.zeros((1, 6), dtype=torch.float64)
    with torch.no_grad():
        start_overlap = float(finest.evaluate(rigid.map(zero, finest.points))[1][0])
    info["start_overlap"] = start_overlap
    if config.search == "global":
        lo, hi = translation_bounds(centre, a0, coarse.moving_points, config.translation_range_mm)
        poses = sample_poses(config.starts, config.rotation_range_deg, lo, hi, seed)
        losses, overlaps = evaluate_in_batches(lambda p: coarse.evaluate(rigid.map(p, coarse.points)), poses,
                                               coarse.batch_size(), lambda: monitor.check("DISA global search"))
        keep = best_poses(losses, overlaps, config.refine, config.min_overlap, poses, SEPARATION_MM, PARAMETER_SCALE_MM)
        if keep.numel() == 0:
            raise InputError("--min-overlap", f"none of the {len(poses)} global-search poses maps "
                             f"{config.min_overlap:.0%} of the fixed points inside the moving image; start closer "
                             "(--init, --initial-transform) or lower --min-overlap")
        candidates = [poses[i] for i in keep.tolist()]
        info["global_search"] = {
            "starts": int(len(poses)),
            "overlapping": int((overlaps >= config.min_overlap).sum()),
            "best_start_loss": float(losses[keep[0]]),
            "start_loss_of_initial": float(losses[0]),
            "translation_bounds_mm": [lo.tolist(), hi.tolist()],
        }
    else:
        if start_overlap <= 0.0:
            raise InputError("--init", "the fixed image's field of view does not overlap the moving image after "
                             "initialisation; start from --init com, an --initial-transform, or use --search global")
        candidates = [zero[0]]
    times["search"] = time.perf_counter() - t1
    monitor.report(0.1, "DISA: refining")

    # ---- local refinement, coarse to fine
    t2 = time.perf_counter()
    if pose_model.kind == "probe":
        candidates = [torch.cat([c, torch.zeros(2, dtype=torch.float64)]) for c in candidates]
    with_affine = config.mode == "affine" or (config.mode == "deformable" and config.deformable_after == "affine")
    stages = [pose_model] + ([_Model("affine", centre, a0)] if with_affine else [])
    evaluations = 0
    history = []
    params = None
    total_steps = len(stages) * len(levels) + max(0, len(candidates) - 1)
    step = 0
    for s, model in enumerate(stages):
        if s > 0:
            candidates = [_rigid_to_affine(params)]
        for li, level in enumerate(levels):
            results = []
            for cand in candidates:
                p, loss, count = _lbfgs(
                    cand, lambda q, lv=level, md=model: lv.evaluate(md.map(q[None], lv.points))[0][0],
                    config.iterations, monitor, f"DISA {model.kind}")
                evaluations += count
                results.append((loss, p))
                step += 1
                monitor.report(0.1 + 0.6 * step / max(total_steps, 1),
                               f"DISA {model.kind} level {li + 1}: loss {loss:.4f}")
            entry = {"stage": model.kind, "level": li, "loss": min(r[0] for r in results), "starts": len(results)}
            if len(results) > 1:
                # several refined starts: the finest level decides (the coarse level may prefer a wrong basin)
                with torch.no_grad():
                    fine = [float(finest.evaluate(model.map(r[1][None], finest.points))[0][0]) for r in results]
                best = int(np.argmin(fine))
                entry["losses"] = [r[0] for r in results]
                entry["finest_losses"] = fine
            else:
                best = 0
            params = results[best][1]
            candidates = [params]
            history.append(entry)
    times["refine"] = time.perf_counter() - t2
    model = stages[-1]
    with torch.no_grad():
        final_loss, final_overlap = (float(v[0]) for v in finest.evaluate(model.map(params[None], finest.points)))
    info.update({"history": history, "evaluations": evaluations, "final_loss": final_loss,
                 "final_overlap": final_overlap})
    if final_overlap <= 0.0:
        raise MMRegError("DISA registration: the result maps no fixed point inside the moving image; try --search "
                         "global or a closer initial transform")
    matrix = model.matrix(params)
    info["matrix"] = matrix.tolist()
    local = np.linalg.inv(a0) @ matrix
    info["rotation_deg"] = float(np.degrees(np.arccos(np.clip((np.trace(_polar(local[:3, :3])) - 1) / 2, -1, 1))))
    info["translation_mm"] = (local[:3, :3] @ centre + local[:3, 3] - centre).tolist()

    if config.mode == "probe":
        amplitude, decay = (float(v[0]) for v in model.probe_parameters(params[None]))
        info["probe_amplitude_mm"], info["probe_decay_mm"] = amplitude, decay
        compression = ProbeCompression(probe[0], probe[1], amplitude, decay, "fixed", "fixed:probe")
        affine = AffineTransform(matrix, "fixed:probe", "moving")
        transform = ComposedTransform([compression, affine])
        inverse = ComposedTransform([affine.inverse(), compression.inverse()])
    elif config.mode == "deformable":
        t3 = time.perf_counter()
        transform, inverse, deformable_info = _deformable(finest, matrix, config, monitor.stage(0.7, 1.0))
        info["deformable"] = deformable_info
        times["deformable"] = time.perf_counter() - t3
    else:
        transform = AffineTransform(matrix, "fixed", "moving")
        inverse = transform.inverse()
    info["seconds"] = dict(times)
    monitor.report(1.0, "DISA: done")
    return RegistrationResult(transform=transform, inverse=inverse, stage_seconds=times, info=info)


def _polar(linear: np.ndarray) -> np.ndarray:
    """Nearest rotation to a 3x3 matrix (for reporting the rotation angle of an affine result)."""
    u, _, vt = np.linalg.svd(linear)
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        u[:, -1] *= -1
        rot = u @ vt
    return rot


# ---- deformable stage ------------------------------------------------------------------------------------------
def _window(grid: Grid, ramp_mm: float) -> torch.Tensor:
    """``(K, J, I, 1)`` weight: 0 on the grid border, rising as ``sin^2`` to 1 over ``ramp_mm``."""
    factors = []
    for axis, n in enumerate(grid.shape):
        pos = np.arange(n) * grid.spacing[2 - axis]
        dist = np.minimum(pos - pos[0], pos[-1] - pos)
        factors.append(torch.as_tensor(np.sin(0.5 * np.pi * np.clip(dist / ramp_mm, 0.0, 1.0)) ** 2,
                                       dtype=torch.float32))
    return (factors[0][:, None, None] * factors[1][None, :, None] * factors[2][None, None, :])[..., None]


def _velocity_grid(level, spacing_mm: float) -> tuple:
    """Velocity grid over the fixed points of ``level`` (their bounding box grown by two velocity spacings, the
    window's ramp) in the fixed grid's orientation; returns ``(grid, ramp_mm)``."""
    k, j, i = np.nonzero(level.mask)
    ramp = 2.0 * spacing_mm
    grow = np.ceil(ramp / level.grid.spacing).astype(int) + 1
    lo = np.array([i.min(), j.min(), k.min()]) - grow
    hi = np.array([i.max(), j.max(), k.max()]) + 1 + grow
    box = level.grid.cropped(lo, hi)
    return box.resized(np.minimum(spacing_mm, box.spacing * np.array(box.size_ijk) / 4.0)), ramp


def _deformable(level, matrix: np.ndarray, config: DISARegistrationConfig, monitor: Monitor) -> tuple:
    """Fit the windowed SVF after the affine ``matrix``; ``(forward, inverse, info)`` as SINR builds them."""
    from MMRegistrationLib.spatial.jacobian import jacobian_determinant

    vgrid, ramp = _velocity_grid(level, config.grid_spacing_mm)
    window = _window(vgrid, ramp).to(level.points.device)
    pts = level.points
    to_v = torch.as_tensor(world_to_normalized_matrix(vgrid), dtype=torch.float32, device=pts.device)
    pts_v = pts @ to_v[:3, :3].T + to_v[:3, 3]
    lin = torch.as_tensor(matrix[:3, :3], dtype=torch.float32, device=pts.device)
    off = torch.as_tensor(matrix[:3, 3], dtype=torch.float32, device=pts.device)
    steps = int(config.squaring_steps)
    spacing = vgrid.spacing
    state = {}

    with torch.no_grad():
        start = float(level.evaluate((pts @ lin.T + off)[None])[0][0])
    scale = 1.0 / max(start, 1e-12)  # the similarity term is relative to its value after the affine stage

    def loss_fn(v: torch.Tensor) -> torch.Tensor:
        vw = v * window
        u = exponentiate(vw, vgrid, steps)
        up = sample_normalized(u.permute(3, 0, 1, 2), pts_v)
        loss, overlap = level.evaluate(((pts + up) @ lin.T + off)[None])
        state["similarity"], state["overlap"] = float(loss[0].detach()), float(overlap[0].detach())
        reg = bending_energy(vw, spacing) if config.weight_bending > 0 else torch.zeros((), device=pts.device)
        return loss[0] * scale + config.weight_bending * reg.to(torch.float64)

    v0 = torch.zeros((*vgrid.shape, 3), dtype=torch.float32, device=pts.device)
    v, final, count = _lbfgs(v0, loss_fn, config.deformable_iterations, monitor, "deformable")
    monitor.report(0.8, f"DISA deformable: loss {final:.4f}")
    out_grid = vgrid.resized(min(config.output_spacing_mm, config.grid_spacing_mm))
    with torch.no_grad():
        vw = (v * window).permute(3, 0, 1, 2).to(torch.float64).cpu()
        v_out = sample_at_world(vw, vgrid, out_grid.world_points_torch(dtype=torch.float64), outside_value=0.0)
        forward = exponentiate(v_out, out_grid, steps + 1)
        backward = exponentiate(-v_out, out_grid, steps + 1)
    svf_space = "fixed:svf"
    field = DisplacementField(out_grid, forward, "fixed", svf_space)
    inverse_field = DisplacementField(out_grid, backward, svf_space, "fixed")
    affine = AffineTransform(matrix, svf_space, "moving")
    det = jacobian_determinant(field)
    info = {
        "velocity_grid": {"shape": list(vgrid.shape), "spacing_mm": vgrid.spacing.tolist()},
        "output_grid": {"shape": list(out_grid.shape), "spacing_mm": out_grid.spacing.tolist()},
        "evaluations": count,
        "similarity_loss_after_affine": start,
        "similarity_loss": state.get("similarity"),
        "final_objective": final,
        "max_displacement_mm": float(np.linalg.norm(forward.numpy(), axis=-1).max()),
        "jacobian_min_output_grid": float(det.min()),
        "folding_fraction_output_grid": float(np.mean(det <= 0)),
    }
    return (ComposedTransform([field, affine]), ComposedTransform([affine.inverse(), inverse_field]), info)


# ---- mutual information baseline (SimpleITK) ------------------------------------------------------------------
def _mi_register(fixed: Image, moving: Image, a0: np.ndarray, config: DISARegistrationConfig, fixed_keep, moving_keep,
                 seed: int, monitor: Monitor, mask_arguments: tuple) -> RegistrationResult:
    """Rigid/affine Mattes MI with SimpleITK's framework on the prepared (isotropic, normalised) volumes."""
    import SimpleITK as sitk

    from MMRegistrationLib.io.transforms import from_sitk_transform, to_sitk_transform

    t0 = time.perf_counter()
    fp = prepare_volume(fixed, config.spacing_mm, config.fixed_fov_threshold, "--fixed")
    mp = prepare_volume(moving, config.spacing_mm, config.moving_fov_threshold, "--moving")
    fmask = fp.mask & (_on_grid(fixed_keep, fp.grid) if fixed_keep is not None else True)
    mmask = mp.mask & (_on_grid(moving_keep, mp.grid) if moving_keep is not None else True)
    if not fmask.any():
        raise InputError(mask_arguments[0] if fixed_keep is not None else "--fixed",
                         "leaves no fixed voxel for mutual information (mask and field of view do not overlap)")
    if not mmask.any():
        raise InputError(mask_arguments[1] if moving_keep is not None else "--moving",
                         "leaves no moving voxel for mutual information (mask and field of view do not overlap)")
    k, j, i = np.nonzero(fmask)
    centre = fp.grid.index_to_world(np.stack([i, j, k], axis=-1).mean(axis=0))
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.5, int(seed) % (2**31))
    reg.SetMetricFixedMask(Image(fmask.astype(np.uint8), fp.grid).to_sitk())
    reg.SetMetricMovingMask(Image(mmask.astype(np.uint8), mp.grid).to_sitk())
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3,
                                                 numberOfIterations=config.iterations * 5, relaxationFactor=0.6,
                                                 gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    shrink = [2 ** (config.levels - 1 - n) for n in range(config.levels)]
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel([0.5 * (s - 1) for s in shrink])
    tx = sitk.Euler3DTransform() if config.mode == "rigid" else sitk.AffineTransform(3)
    tx.SetCenter(tuple(float(c) for c in centre))
    reg.SetMovingInitialTransform(to_sitk_transform(AffineTransform(a0)))  # applied after the optimised transform
    reg.SetInitialTransform(tx, inPlace=True)
    monitor.check("MI")
    try:
        reg.Execute(sitk.Cast(Image(fp.array, fp.grid).to_sitk(), sitk.sitkFloat32),
                    sitk.Cast(Image(mp.array, mp.grid).to_sitk(), sitk.sitkFloat32))
    except RuntimeError as err:
        raise InputError("--moving", "mutual information registration failed "
                         f"({str(err).strip().splitlines()[-1]}); do the images overlap after initialisation?") from err
    monitor.check("MI")
    local = from_sitk_transform(tx).matrix
    matrix = a0 @ local
    transform = AffineTransform(matrix, "fixed", "moving")
    info = {
        "similarity": "mi", "mode": config.mode, "search": "local", "centre_mm": centre.tolist(),
        "iterations": int(reg.GetOptimizerIteration()), "final_metric": float(reg.GetMetricValue()),
        "stop": reg.GetOptimizerStopConditionDescription(), "matrix": matrix.tolist(),
    }
    seconds = {"register": time.perf_counter() - t0}
    return RegistrationResult(transform=transform, inverse=transform.inverse(), stage_seconds=seconds, info=info)


def config_dict(config: DISARegistrationConfig) -> dict:
    """The config as a plain dict (result.json)."""
    return asdict(config)
