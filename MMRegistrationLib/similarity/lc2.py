"""LC2 (linear correlation of linear combination), patch-wise and vectorised.

Definition (Wein et al. 2008, 3-D form of Fuerst et al. 2014, as used by DISA, paper 001):
for the patch ``P_r(p)`` of radius ``r`` (a ``(2r+1)^3`` cube) centred at voxel ``p``, the *target* patch
``u`` (the fixed image, e.g. ultrasound) is approximated by the least-squares linear combination
``alpha * m + beta * g + gamma`` of the *regressor* image's intensity ``m`` (the moving image) and its gradient
magnitude ``g``. ``LC2_r(p)`` is the fraction of the target's variance this fit explains (the coefficient of
determination R^2), in ``[0, 1]``; it is invariant to any affine change ``a * x + b`` (``a != 0``) of either
image's intensities, sign included. Patches whose target is constant have no defined LC2: their value is 0
and their weight is 0.

The similarity of a voxel is the mean of ``LC2_r`` over ``radii`` (default 3, 5, 7, as in DISA), and its weight
``w(p)`` is the variance of the target patch (averaged over the same radii). An image-level LC2 is
``sum_p w(p) LC2(p) / sum_p w(p)``.

Everything is computed with box filters (cumulative sums), O(1) per voxel whatever the radius, in float64 by
default, and is differentiable with respect to both images (gradients flow through the regressor's gradient
magnitude too). The gradient magnitude is taken on the whole regressor volume (central differences, one-sided at
the volume border) before patches are cut, so a radius-``r`` value depends on a ``(2r+3)^3`` neighbourhood.

Only patches lying entirely inside the volume are evaluated ("valid" centres): a map for radii up to ``R``
covers the centres ``R .. n-1-R`` on each axis, i.e. ``n - 2R`` voxels.

:class:`PatchSearch` computes the LC2 of given target patches against *every* patch of one regressor volume
(FFT cross-correlation), which the DISA training sampler needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from MMRegistrationLib.core.device import float_dtype_for
from MMRegistrationLib.core.errors import InputError

DEFAULT_RADII = (3, 5, 7)
"""Patch radii (voxels) averaged by DISA: cubes of 7^3, 11^3 and 15^3 voxels."""

CONSTANT_TOLERANCE = 1e-10
"""A patch whose variance is below this fraction of its image's overall variance counts as constant."""

COLLINEAR_TOLERANCE = 1e-9
"""When ``det(Cov(m, g)) <= tol * Var(m) Var(g)`` the two regressors are collinear within the patch and the
best single regressor gives the exact fit."""


@dataclass(frozen=True)
class LC2Map:
    """Patch-wise LC2 of a fixed (target) image against a moving (regressor) image.

    Attributes:
        values: ``(B, 1, D - 2R, H - 2R, W - 2R)`` mean of ``LC2_r`` over the radii, in ``[0, 1]``.
        weights: same shape; ``w(p)``, the target patch variance averaged over the radii (0 for constant patches).
        margin: ``R``, the largest radius: ``values[..., z, y, x]`` belongs to input voxel ``(z + R, y + R, x + R)``.
        radii: the radii used.
    """

    values: torch.Tensor
    weights: torch.Tensor
    margin: int
    radii: tuple

    def similarity(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted mean ``sum w LC2 / sum w`` (scalar); ``mask`` is on the map's own (cropped) grid.

        Raises :class:`InputError` when every weight is 0 (constant target, or an empty mask).
        """
        weights = self.weights if mask is None else self.weights * mask.to(self.weights.dtype)
        total = weights.sum()
        if not bool(total > 0):
            raise InputError(
                "fixed", "has no intensity variation in any evaluated patch (constant image or empty mask); "
                "LC2 is undefined"
            )
        return (weights * self.values).sum() / total


# ---- building blocks ---------------------------------------------------------------------------------------
def as_volume_batch(volume, argument: str) -> torch.Tensor:
    """Accept a ``(D, H, W)`` or ``(B, 1, D, H, W)`` array/tensor and return a ``(B, 1, D, H, W)`` tensor."""
    tensor = torch.as_tensor(volume)
    if tensor.ndim == 3:
        tensor = tensor[None, None]
    if tensor.ndim != 5 or tensor.shape[1] != 1:
        raise InputError(argument, f"expected a (D, H, W) or (B, 1, D, H, W) volume, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        raise InputError(argument, "contains NaN/Inf voxels; fix or mask them first")
    return tensor


def gradient_magnitude(volume: torch.Tensor, spacing_ijk: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """Gradient magnitude of ``(..., D, H, W)``: central differences inside, one-sided at the border.

    ``spacing_ijk`` is the voxel size along ``(i, j, k)`` = ``(W, H, D)`` (the order of ``Grid.spacing``); units
    are intensity per spacing unit. Same shape as the input; differentiable (gradient 0 where the image is flat).
    """
    s_i, s_j, s_k = (float(s) for s in spacing_ijk)
    dz, dy, dx = torch.gradient(volume, spacing=(s_k, s_j, s_i), dim=(-3, -2, -1), edge_order=1)
    squared = dz * dz + dy * dy + dx * dx
    # sqrt has an infinite derivative at 0 (flat regions, e.g. outside a field of view): 0 there instead of NaN
    flat = squared <= 0
    return torch.where(flat, torch.zeros_like(squared), torch.sqrt(torch.where(flat, torch.ones_like(squared), squared)))


def box_mean(volume: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over every ``(2r+1)^3`` cube lying inside the last three axes ("valid" mode).

    ``(..., D, H, W)`` -> ``(..., D - 2r, H - 2r, W - 2r)``; output index ``q`` is the cube centred at ``q + r``.
    Separable cumulative sums: O(1) per voxel for any radius; differentiable.
    """
    k = 2 * int(radius) + 1
    out = volume
    for dim in (-3, -2, -1):
        n = out.shape[dim]
        if n < k:
            raise InputError("volume", f"axis of {n} voxels is shorter than a patch of {k} voxels (radius {radius})")
        shape = list(out.shape)
        shape[dim] = 1
        cum = torch.cat([torch.zeros(shape, dtype=out.dtype, device=out.device), torch.cumsum(out, dim)], dim)
        out = cum.narrow(dim, k, n - k + 1) - cum.narrow(dim, 0, n - k + 1)
    return out / float(k**3)


def _crop(volume: torch.Tensor, margin: int) -> torch.Tensor:
    """Remove ``margin`` voxels on both sides of the last three axes."""
    if margin == 0:
        return volume
    return volume[..., margin:-margin, margin:-margin, margin:-margin]


def explained_fraction(
    var_u: torch.Tensor,
    var_m: torch.Tensor,
    var_g: torch.Tensor,
    cov_mg: torch.Tensor,
    cov_um: torch.Tensor,
    cov_ug: torch.Tensor,
    floor_u,
    floor_m,
    floor_g,
) -> torch.Tensor:
    """R^2 of the least-squares fit ``u ~ alpha m + beta g + gamma`` from (co)variances (any broadcastable shapes).

    ``floor_*`` are the variances below which a patch counts as constant. Collinear regressors fall back to the
    best single one (exact for a rank-1 design); a constant target gives 0. Result clamped to ``[0, 1]``;
    NaN-free in value and gradient.
    """
    ok_u = var_u > floor_u
    ok_m = var_m > floor_m
    ok_g = var_g > floor_g
    one = torch.ones((), dtype=var_u.dtype, device=var_u.device)
    safe_m = torch.where(ok_m, var_m, one)
    safe_g = torch.where(ok_g, var_g, one)
    single_m = torch.where(ok_m, cov_um * cov_um / safe_m, torch.zeros_like(var_m))
    single_g = torch.where(ok_g, cov_ug * cov_ug / safe_g, torch.zeros_like(var_g))
    det = var_m * var_g - cov_mg * cov_mg
    full_ok = ok_m & ok_g & (det > COLLINEAR_TOLERANCE * safe_m * safe_g)
    safe_det = torch.where(full_ok, det, one)
    full = (cov_um * cov_um * var_g - 2.0 * cov_um * cov_ug * cov_mg + cov_ug * cov_ug * var_m) / safe_det
    explained = torch.where(full_ok, full, torch.maximum(single_m, single_g))
    safe_u = torch.where(ok_u, var_u, one)
    return torch.where(ok_u, torch.clamp(explained / safe_u, 0.0, 1.0), torch.zeros_like(var_u))


def _check_radii(radii: Sequence[int]) -> tuple:
    radii = tuple(int(r) for r in radii)
    if not radii or min(radii) < 1:
        raise InputError("radii", f"must be one or more positive integers (voxels), got {radii}")
    return radii


def variance_floor(volume: torch.Tensor) -> torch.Tensor:
    """Patch-variance floor of a ``(..., D, H, W)`` volume (one value per leading index, dims kept).

    :data:`CONSTANT_TOLERANCE` times the volume's variance, but never below the rounding level of its values
    (``1e-12`` of their mean square) nor 0: a constant volume has every patch constant.
    """
    dims = (-3, -2, -1)
    var = volume.var(dim=dims, unbiased=False, keepdim=True)
    mean_square = (volume * volume).mean(dim=dims, keepdim=True)
    tiny = torch.finfo(volume.dtype).tiny
    return CONSTANT_TOLERANCE * torch.maximum(var, 1e-12 * mean_square).clamp_min(tiny / CONSTANT_TOLERANCE)


# ---- patch-wise map between two aligned volumes --------------------------------------------------------------
def lc2_map(
    fixed,
    moving,
    radii: Sequence[int] = DEFAULT_RADII,
    spacing_ijk: Sequence[float] = (1.0, 1.0, 1.0),
    dtype: torch.dtype | None = None,
) -> LC2Map:
    """Patch-wise LC2 of ``fixed`` (target) against ``moving`` (intensity + gradient magnitude) on one grid.

    Args:
        fixed, moving: ``(D, H, W)`` or ``(B, 1, D, H, W)`` volumes on the same grid (e.g. the moving image
            already resampled onto the fixed grid). Every axis needs at least ``2 max(radii) + 1`` voxels.
        radii: patch radii in voxels; the values are averaged.
        spacing_ijk: voxel size along (i, j, k), used for the gradient magnitude (only the anisotropy matters).
        dtype: computation dtype; None: float64 (keeps box-filter statistics exact to ~1e-12), float32 on MPS
            (:func:`~MMRegistrationLib.core.device.float_dtype_for`).

    Returns:
        :class:`LC2Map` (values and weights ``(B, 1, D - 2R, H - 2R, W - 2R)``).
    """
    radii = _check_radii(radii)
    u = as_volume_batch(fixed, "fixed")
    m = as_volume_batch(moving, "moving")
    if u.shape != m.shape:
        raise InputError("moving", f"shape {tuple(m.shape)} differs from the fixed shape {tuple(u.shape)}")
    out_dtype = u.dtype
    big = max(radii)
    if min(u.shape[-3:]) < 2 * big + 1:
        raise InputError(
            "fixed", f"shape {tuple(u.shape[-3:])} is too small for patches of radius {big} "
            f"(needs at least {2 * big + 1} voxels along every axis)"
        )
    dtype = float_dtype_for(u.device) if dtype is None else dtype
    u = u.to(dtype)
    m = m.to(dtype)
    g = gradient_magnitude(m, spacing_ijk)
    floors = variance_floor(u), variance_floor(m), variance_floor(g)
    # centring changes no (co)variance but keeps the box sums small
    u = u - u.mean(dim=(-3, -2, -1), keepdim=True)
    m = m - m.mean(dim=(-3, -2, -1), keepdim=True)
    g = g - g.mean(dim=(-3, -2, -1), keepdim=True)
    values, weights = [], []
    for r in radii:
        mu_u, mu_m, mu_g = box_mean(u, r), box_mean(m, r), box_mean(g, r)
        var_u = box_mean(u * u, r) - mu_u * mu_u
        var_m = box_mean(m * m, r) - mu_m * mu_m
        var_g = box_mean(g * g, r) - mu_g * mu_g
        cov_mg = box_mean(m * g, r) - mu_m * mu_g
        cov_um = box_mean(u * m, r) - mu_u * mu_m
        cov_ug = box_mean(u * g, r) - mu_u * mu_g
        lc2 = explained_fraction(var_u, var_m, var_g, cov_mg, cov_um, cov_ug, *floors)
        values.append(_crop(lc2, big - r))
        weights.append(_crop(torch.where(var_u > floors[0], var_u, torch.zeros_like(var_u)), big - r))
    value = torch.stack(values).mean(0).to(out_dtype)
    weight = torch.stack(weights).mean(0).to(out_dtype)
    return LC2Map(value, weight, big, radii)


def patch_variance(volume, radii: Sequence[int] = DEFAULT_RADII, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The LC2 weight ``w(p)`` of every valid centre of a target volume: its patch variance averaged over ``radii``.

    ``(D, H, W)`` or ``(B, 1, D, H, W)`` -> same rank with ``D - 2R, H - 2R, W - 2R`` (0 for constant patches).
    Equal to ``lc2_map(volume, any).weights``.
    """
    radii = _check_radii(radii)
    x = as_volume_batch(volume, "volume")
    out_dtype = x.dtype
    x = x.to(float_dtype_for(x.device) if dtype is None else dtype)  # None: float64, float32 on MPS
    floor = variance_floor(x)
    x = x - x.mean(dim=(-3, -2, -1), keepdim=True)
    big = max(radii)
    total = 0.0
    for r in radii:
        mu = box_mean(x, r)
        var = box_mean(x * x, r) - mu * mu
        total = total + _crop(torch.where(var > floor, var, torch.zeros_like(var)), big - r)
    out = (total / len(radii)).to(out_dtype)
    return out if torch.as_tensor(volume).ndim == 5 else out[0, 0]


def lc2_similarity(
    fixed,
    moving,
    radii: Sequence[int] = DEFAULT_RADII,
    mask=None,
    spacing_ijk: Sequence[float] = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """Image-level LC2 ``sum_p w(p) LC2(p) / sum_p w(p)`` in ``[0, 1]`` (maximise it; ``1 - value`` is a loss).

    Args:
        fixed, moving: as :func:`lc2_map`.
        mask: optional boolean ``(D, H, W)`` / ``(B, 1, D, H, W)`` on the *input* grid: only patch centres inside
            it count (e.g. the ultrasound field of view).

    Raises:
        InputError: the fixed image is constant over every evaluated patch (LC2 undefined).
    """
    result = lc2_map(fixed, moving, radii, spacing_ijk)
    crop = None
    if mask is not None:
        crop = _crop(as_volume_batch(torch.as_tensor(mask).to(torch.float32), "mask"), result.margin)
        if crop.shape[-3:] != result.values.shape[-3:]:
            raise InputError("mask", "must have the shape of the fixed image")
    return result.similarity(crop)


# ---- one target patch against every patch of a volume (training) ----------------------------------------------
class PatchSearch:
    """LC2 of target patches (fixed role) against every patch of one regressor volume (moving role).

    The regressor volume's intensity and gradient magnitude, their box statistics and their Fourier transforms
    are computed once; each call then costs one FFT per radius and two inverse FFTs per radius and patch.

    Args:
        volume: ``(D, H, W)`` regressor volume.
        radii: patch radii (voxels); ``R = max(radii)``.
        gradient: optional precomputed gradient magnitude ``(D, H, W)`` (e.g. of a larger volume this one was
            cropped from, so that border voxels keep their true gradient); default: computed here.
        dtype: computation dtype (float32 is accurate to ~1e-5 in LC2 on normalised volumes).

    Calling it with target patches ``(S, 2R+1, 2R+1, 2R+1)`` returns ``(lc2, weight)``: ``lc2`` of shape
    ``(S, D - 2R, H - 2R, W - 2R)`` (index ``q`` = the regressor patch centred at ``q + R``) and ``weight``
    ``(S,)``, the target patches' variance averaged over the radii (0 for a constant patch, whose LC2 is 0).
    """

    def __init__(self, volume, radii: Sequence[int] = DEFAULT_RADII, gradient=None, dtype: torch.dtype = torch.float32):
        self.radii = _check_radii(radii)
        self.margin = max(self.radii)
        self.size = 2 * self.margin + 1
        # statistics in float64 (exact box sums; float32 on MPS), correlations in ``dtype``
        x = as_volume_batch(volume, "volume")[0, 0]
        wide = float_dtype_for(x.device)
        x = x.to(wide)
        if min(x.shape) < self.size:
            raise InputError("volume", f"shape {tuple(x.shape)} is smaller than one patch ({self.size} voxels per axis)")
        g = gradient_magnitude(x) if gradient is None else as_volume_batch(gradient, "gradient")[0, 0].to(wide)
        if g.shape != x.shape:
            raise InputError("gradient", f"shape {tuple(g.shape)} differs from the volume shape {tuple(x.shape)}")
        self.floor_m = float(variance_floor(x))
        self.floor_g = float(variance_floor(g))
        x = x - x.mean()
        g = g - g.mean()
        self.shape = tuple(x.shape)
        self.dtype = dtype
        self._stats = {}
        for r in self.radii:
            mu_m, mu_g = box_mean(x, r), box_mean(g, r)
            crop = self.margin - r
            self._stats[r] = tuple(
                _crop(v, crop).to(dtype)
                for v in (
                    box_mean(x * x, r) - mu_m * mu_m,
                    box_mean(g * g, r) - mu_g * mu_g,
                    box_mean(x * g, r) - mu_m * mu_g,
                )
            )
        self._spectrum = torch.fft.rfftn(torch.stack([x, g]).to(dtype), dim=(-3, -2, -1))  # (2, D, H, W/2+1)

    @property
    def output_shape(self) -> tuple:
        """Shape of one LC2 map: ``(D - 2R, H - 2R, W - 2R)``."""
        return tuple(n - 2 * self.margin for n in self.shape)

    def __call__(self, patches, floor: float | None = None) -> tuple:
        """LC2 maps ``(S, D-2R, H-2R, W-2R)`` and weights ``(S,)`` of target patches ``(S, 2R+1, 2R+1, 2R+1)``.

        ``floor``: variance below which a target patch counts as constant; pass ``variance_floor`` of the volume
        the patches come from to match :func:`lc2_map`. Default: the rounding level of each patch's values.
        """
        t = torch.as_tensor(patches).to(self.dtype)
        if t.ndim == 3:
            t = t[None]
        p = self.size
        if t.ndim != 4 or tuple(t.shape[1:]) != (p, p, p):
            raise InputError("patches", f"expected (S, {p}, {p}, {p}) target patches, got shape {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise InputError("patches", "contain NaN/Inf values")
        s = t.shape[0]
        big = self.margin
        dz, dy, dx = self.output_shape
        lc2_sum = torch.zeros((s, dz, dy, dx), dtype=self.dtype)
        weight_sum = torch.zeros(s, dtype=self.dtype)
        for r in self.radii:
            inner = t[:, big - r: big + r + 1, big - r: big + r + 1, big - r: big + r + 1]
            n = float(inner[0].numel())
            centred = inner - inner.mean(dim=(1, 2, 3), keepdim=True)
            var_t = (centred * centred).mean(dim=(1, 2, 3))
            if floor is None:  # rounding level of the patch's own values: a constant patch has variance ~0
                floor_t = (1e-12 * (inner * inner).mean(dim=(1, 2, 3))).clamp_min(torch.finfo(self.dtype).tiny)
            else:
                floor_t = torch.full((s,), float(floor), dtype=self.dtype)
            kernel = torch.zeros((s,) + self.shape, dtype=self.dtype)
            kernel[:, big - r: big + r + 1, big - r: big + r + 1, big - r: big + r + 1] = centred
            spectrum = torch.fft.rfftn(kernel, dim=(-3, -2, -1))
            # circular cross-correlation: out[q] = sum_i kernel[i] x[q + i]; valid for q <= n - p
            corr = torch.fft.irfftn(
                torch.conj(spectrum)[:, None] * self._spectrum[None], s=self.shape, dim=(-3, -2, -1)
            )[..., :dz, :dy, :dx]
            cov_um, cov_ug = corr[:, 0] / n, corr[:, 1] / n
            var_m, var_g, cov_mg = self._stats[r]
            shape5 = (s, 1, 1, 1)
            lc2_sum += explained_fraction(
                var_t.view(shape5), var_m[None], var_g[None], cov_mg[None], cov_um, cov_ug,
                floor_t.view(shape5), self.floor_m, self.floor_g,
            )
            weight_sum += torch.where(var_t > floor_t, var_t, torch.zeros_like(var_t))
        k = float(len(self.radii))
        return lc2_sum / k, weight_sum / k


def extract_patch(volume: np.ndarray | torch.Tensor, centre_kji: Sequence[int], radius: int):
    """The ``(2r+1)^3`` cube of a ``(D, H, W)`` volume centred at voxel ``(k, j, i)`` (must lie inside)."""
    k, j, i = (int(c) for c in centre_kji)
    r = int(radius)
    shape = volume.shape
    if min(k, j, i) < r or k + r >= shape[0] or j + r >= shape[1] or i + r >= shape[2]:
        raise InputError("centre", f"patch of radius {r} at {(k, j, i)} does not fit inside shape {tuple(shape)}")
    return volume[k - r: k + r + 1, j - r: j + r + 1, i - r: i + r + 1]
