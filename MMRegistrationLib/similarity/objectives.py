"""Image similarities as differentiable objectives of mapped points, for any transform model.

An objective holds fixed-space points ``p`` (``points (P, 3)``, LPS mm) with per-point weights summing to 1, and
:meth:`evaluate` takes where a transform sends them in the moving image, ``mapped (B, P, 3)`` (``B`` candidate
transforms at once), and returns ``(loss (B,), overlap (B,))``: the weighted dissimilarity (minimise) and the
weighted fraction of the points that land inside the moving field of view. Gradients flow to ``mapped`` only, so
rigid/affine/probe parameters (DISA registration), a velocity field (DISA deformable, SINR's image term) or a
network's output (RSO) can all be optimised through the same object.

- :class:`DescriptorObjective`: pre-computed descriptor volumes (DISA, paper 001: ``1 - <phi(F)[p], phi(M)[T(p)]>``;
  MIND-SSC: mean squared difference). The moving descriptors are sampled trilinearly and taken as 0 outside the
  moving field of view, so leaving the overlap costs as much as a dissimilar match.
- :class:`LC2Objective`: LC2 recomputed on the moving image resampled at every fixed voxel (the slow reference).
- :func:`descriptor_objectives`: a descriptor pyramid of two images as objectives, coarsest first.
- :func:`disa_image_term`: the DISA similarity of two images inside a fixed-space region, ready to add to another
  method's loss (SINR's optional image term).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from MMRegistrationLib.core.conventions import ALIGN_CORNERS
from MMRegistrationLib.core.device import float_dtype_for
from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.similarity.descriptors import DescriptorBackend, interpolated, pyramid, variance_weights
from MMRegistrationLib.similarity.disa import DescriptorVolume, PreparedVolume, prepare_volume
from MMRegistrationLib.spatial.sampling import world_to_normalized_matrix

MAX_BATCH_SAMPLES = 2**22
"""Upper bound on sampled values (points x transforms x channels) per ``grid_sample`` call of a batched evaluation."""

WEIGHTINGS = ("variance", "uniform")

MIN_DESCRIPTOR_POINTS = 1500
"""Automatic working spacing: the coarsest spacing in [1, 2] mm at which a field of view holds about this many
descriptor positions. Measured on the synthetic sample case (TRUS sector of ~0.26 l) with the trained network: at
2 mm only 252 positions survive the field-of-view margin and the DISA loss is flat (0.7447 at the ground truth vs
0.7443 at the start; rigid registration drifted to a 12 mm TRE), at 1.5 / 1 mm (748 / 2870 positions) the ground truth
is clearly preferred and rigid registration brings the TRE from 5.0 to 2.5 / 2.6 mm."""


def descriptor_spacing(fov_volume_mm3: float, stride: int = 4, points: int = MIN_DESCRIPTOR_POINTS) -> float:
    """The coarsest working spacing (mm, 0.1 mm steps, within [1, 2]) at which ``fov_volume_mm3`` holds about
    ``points`` descriptor positions of a descriptor grid with this ``stride`` (4 for DISA, 2 for MIND)."""
    spacing = (max(float(fov_volume_mm3), 0.0) / points) ** (1.0 / 3.0) / stride
    return float(np.clip(np.floor(spacing * 10.0) / 10.0, 1.0, 2.0))


class DescriptorObjective:
    """Fixed descriptors at the fixed descriptor positions vs moving descriptors sampled at mapped positions.

    Args:
        fixed, moving: descriptor volumes of the two images (their masks: the fields of view).
        kind: ``"dot"`` (loss ``1 - <f, g>``) or ``"mse"`` (loss ``mean_c (f_c - g_c)^2``).
        weights: ``fixed.grid.shape`` non-negative per-position weights (e.g. LC2's variance weight).
        fixed_keep, moving_keep: optional bool masks on the descriptor grids restricting either side.

    Attributes:
        points ``(P, 3)``, features ``(P, C)``, weights ``(P,)`` float64 summing to 1; ``mask`` (descriptor grid
        shape) the positions kept; ``count`` = P; ``moving_count`` moving positions inside the field of view;
        ``moving_points`` their world coordinates ``(N, 3)`` numpy; ``spacing_mm`` the mean descriptor spacing.
    """

    def __init__(self, fixed: DescriptorVolume, moving: DescriptorVolume, kind: str, weights: np.ndarray,
                 fixed_keep: Optional[np.ndarray] = None, moving_keep: Optional[np.ndarray] = None, device=None):
        device = torch.device(device) if device is not None else fixed.descriptors.device
        self.kind = kind
        self.grid = fixed.grid
        mask = fixed.mask.detach().cpu().numpy().astype(bool) & (weights > 0)
        if fixed_keep is not None:
            mask &= fixed_keep
        self.mask = mask
        self.count = int(mask.sum())
        self.spacing_mm = float(np.mean(fixed.grid.spacing))
        sel = torch.as_tensor(mask, device=device)
        self.points = fixed.grid.world_points_torch(device=device)[sel]  # (P, 3)
        self.features = fixed.descriptors[0].float().to(device).permute(1, 2, 3, 0)[sel]  # (P, C)
        w = torch.as_tensor(weights[mask], dtype=float_dtype_for(device)).to(device)  # float32 on MPS
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
        """Transforms per :meth:`evaluate` call that keep one ``grid_sample`` under :data:`MAX_BATCH_SAMPLES`."""
        return max(1, MAX_BATCH_SAMPLES // max(1, self.count * (self.channels + 1)))

    def evaluate(self, mapped: torch.Tensor) -> tuple:
        """``mapped (B, P, 3)`` moving-space positions of :attr:`points` -> ``(loss (B,), overlap (B,))`` float64."""
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
        loss = (per_point.to(self.weights.dtype) * self.weights).sum(-1)
        overlap = (out[-1].to(self.weights.dtype) * self.weights).sum(-1)
        return loss, overlap


class LC2Objective:
    """LC2 of the fixed image against the moving image resampled at the mapped fixed voxel centres; every evaluation
    recomputes the patch statistics (the slow reference the DISA descriptors approximate). Same interface as
    :class:`DescriptorObjective`; the points are every fixed voxel centre, the loss ``1 - LC2`` over the voxels
    inside the fixed field of view (and ``fixed_keep``) at least the largest patch radius from the border."""

    def __init__(self, fixed: PreparedVolume, moving: PreparedVolume, fixed_keep: Optional[np.ndarray] = None,
                 moving_keep: Optional[np.ndarray] = None, device=None):
        from MMRegistrationLib.similarity.lc2 import DEFAULT_RADII

        self.radii = DEFAULT_RADII
        margin = max(self.radii)
        self.grid = fixed.grid
        self.spacing_mm = float(np.mean(fixed.grid.spacing))
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
        wide = float_dtype_for(self.points.device)  # float64, float32 on MPS
        self.crop_mask = torch.as_tensor(np.ascontiguousarray(crop), dtype=wide).to(self.points.device)
        w = torch.as_tensor(mask.reshape(-1), dtype=wide).to(self.points.device)
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
        wide = self.weights.dtype
        result = lc2_map(self.fixed.expand(b, 1, *shape), values, self.radii, self.spacing_ijk, dtype=wide)
        w = result.weights.to(wide)[:, 0] * self.crop_mask
        total = w.sum(dim=(1, 2, 3)).clamp_min(1e-30)
        loss = 1.0 - (w * result.values.to(wide)[:, 0]).sum(dim=(1, 2, 3)) / total
        overlap = (out[1].to(wide) * self.weights).sum(-1)
        return loss, overlap


def keep_on_grid(mask: Optional[Image], grid: Grid) -> Optional[np.ndarray]:
    """A label/indicator image resampled onto ``grid`` as a bool array (> 0.5), or None."""
    if mask is None:
        return None
    from MMRegistrationLib.spatial.resample import resample

    return resample(mask, grid).array > 0.5


def descriptor_objectives(fixed: Image, moving: Image, backend: DescriptorBackend, spacing_mm: float, levels: int = 1,
                          fixed_fov_threshold: Optional[float] = 0.0, moving_fov_threshold: Optional[float] = None,
                          weighting: str = "variance", fixed_keep: Optional[Image] = None,
                          moving_keep: Optional[Image] = None, device=None, interpolate_finest: bool = False) -> tuple:
    """Describe both images once at ``spacing_mm`` and build one :class:`DescriptorObjective` per pyramid level.

    Args:
        fixed_keep, moving_keep: optional indicator images (any grid) restricting the points / the moving side.
        interpolate_finest: append one more level: the finest with its fixed points also halfway between the
            descriptor positions (fixed descriptors interpolated trilinearly, 8x the points).

    Returns:
        ``(objectives coarsest first, the prepared fixed volume)``.
    """
    if weighting not in WEIGHTINGS:
        raise InputError("weighting", f"unknown value '{weighting}'; choose one of {', '.join(WEIGHTINGS)}")
    fp = prepare_volume(fixed, spacing_mm, fixed_fov_threshold, "--fixed")
    mp = prepare_volume(moving, spacing_mm, moving_fov_threshold, "--moving")
    fixed_desc = backend(fp, "--fixed")
    moving_desc = backend(mp, "--moving")
    out = []
    fixed_levels, moving_levels = pyramid(fixed_desc, levels), pyramid(moving_desc, levels)
    if interpolate_finest:
        fixed_levels.append(interpolated(fixed_desc))
        moving_levels.append(moving_desc)
    for fd, md in zip(fixed_levels, moving_levels):
        weights = variance_weights(fp, fd.grid) if weighting == "variance" else np.ones(fd.grid.shape)
        out.append(DescriptorObjective(fd, md, backend.kind, weights, keep_on_grid(fixed_keep, fd.grid),
                                       keep_on_grid(moving_keep, md.grid), device))
    return out, fp


def disa_image_term(fixed: Image, moving: Image, region: Grid, spacing_mm: Optional[float] = None,
                    weights: Optional[str] = None, precision: str = "auto",
                    fixed_fov_threshold: Optional[float] = 0.0, moving_fov_threshold: Optional[float] = None,
                    device=None) -> DescriptorObjective:
    """The DISA similarity of ``fixed`` and ``moving`` restricted to the fixed-space box ``region`` (e.g. the box a
    deformable method optimises in), as a :class:`DescriptorObjective` to add to another method's loss.

    Args:
        region: fixed-space grid whose extent bounds the points (its voxels are not used).
        spacing_mm: working spacing; None = automatic (:func:`descriptor_spacing`: 2 mm, finer down to 1 mm when the
            region's field of view would hold fewer than 1500 descriptors; SINR's and RSO's image terms, tuned with
            it, keep this rule, DISA registration has its own: ``registration/disa_resolution.py``).
        weights: DISA weights file (None: the shipped one).

    Raises:
        InputError: bad images or weights, or no descriptor of the fixed field of view inside ``region``.
    """
    from MMRegistrationLib.similarity.descriptors import make_backend

    backend = make_backend("disa", weights, device, precision, argument="--image-weights")
    region_mask = Image(np.ones(region.shape, dtype=np.float32), region)
    if spacing_mm is None:
        inside = keep_on_grid(region_mask, fixed.grid)
        if fixed_fov_threshold is not None:
            inside &= fixed.array > fixed_fov_threshold
        spacing_mm = descriptor_spacing(float(np.count_nonzero(inside)) * fixed.grid.voxel_volume)
    objectives, _ = descriptor_objectives(fixed, moving, backend, spacing_mm, 1, fixed_fov_threshold,
                                          moving_fov_threshold, "variance", region_mask, None, device)
    term = objectives[-1]
    if term.count == 0:
        raise InputError("--fixed", "has no DISA descriptor inside the registration region (field of view empty, "
                         "too thin, or without intensity variation there)")
    return term
