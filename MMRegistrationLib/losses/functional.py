"""Stateless loss functions, channels-first and batched (MONAI's convention). Every function is minimised and
returns one value per batch item, shape ``(B,)``.

Unlike MONAI's losses (voxel units, one image grid), these work in world millimetres on anisotropic grids and on
values sampled at arbitrary points:

- overlap terms take ``(B, C, *S)`` tensors: ``C`` structures, ``S`` any spatial or point axes (``(B, C, P)`` for
  values at ``P`` points, ``(B, C, D, H, W)`` for a volume);
- field terms take ``(B, 3, D, H, W)`` fields in mm whose axes ``D, H, W`` are the grid's ``k, j, i`` axes, with
  ``spacing = (s_i, s_j, s_k)`` in mm (the order of :attr:`Grid.spacing`, ``i`` first).

Every function checks its arguments (shapes and types only, so the checks cost nothing next to the loss) and
raises :class:`ValueError` naming the function and the argument.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _fail(function: str, message: str):
    raise ValueError(f"{function}(): {message}")


def _shape(x) -> tuple:
    return tuple(int(n) for n in x.shape)


def _check_tensor(function: str, name: str, x) -> None:
    if not isinstance(x, torch.Tensor):
        _fail(function, f"'{name}' must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        _fail(function, f"'{name}' must be a floating-point tensor, got {x.dtype}")


def _check_pair(function: str, fixed, warped, what: str) -> None:
    """``fixed`` and ``warped`` are floating ``(B, C, *S)`` tensors of the same shape, no axis empty."""
    _check_tensor(function, "fixed", fixed)
    _check_tensor(function, "warped", warped)
    if fixed.ndim < 3 or 0 in fixed.shape:
        _fail(function, f"'fixed' must be (B, C, *S) {what} with at least one spatial or point axis and no empty "
                        f"axis, got {_shape(fixed)}")
    if warped.shape != fixed.shape:
        _fail(function, f"'warped' must have the shape of 'fixed' {_shape(fixed)}, got {_shape(warped)}")


def _positive_number(function: str, name: str, value, unit: str = "") -> float:
    """A positive finite Python number from ``value`` (a number or a one-element tensor/array)."""
    try:
        if isinstance(value, (bool, str, bytes)):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        number = None
    if number is None or not math.isfinite(number) or number <= 0:
        _fail(function, f"'{name}' must be a positive finite number{unit}, got {value!r}")
    return number


def _normalised_weights(function: str, weights, fixed: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` weights summing to 1 per item, on ``fixed``'s device and dtype (default: equal)."""
    b, c = int(fixed.shape[0]), int(fixed.shape[1])
    if weights is None:
        return fixed.new_full((b, c), 1.0 / c)
    if not isinstance(weights, torch.Tensor):
        _fail(function, f"'weights' must be None or a torch.Tensor of shape (C,) or (B, C), "
                        f"got {type(weights).__name__}")
    if _shape(weights) not in ((c,), (b, c)):
        _fail(function, f"'weights' must have shape (C,) = ({c},) or (B, C) = ({b}, {c}) for 'fixed' {_shape(fixed)}, "
                        f"got {_shape(weights)}")
    weights = weights.to(device=fixed.device, dtype=fixed.dtype).expand(b, c)
    return weights / weights.sum(dim=1, keepdim=True)


def _check_field(function: str, field, min_size: int) -> None:
    _check_tensor(function, "field", field)
    if field.ndim != 5 or field.shape[1] != 3:
        _fail(function, f"'field' must be (B, 3, D, H, W), got {_shape(field)}")
    if field.shape[0] < 1 or min(field.shape[2:]) < min_size:
        _fail(function, f"'field' must have a batch item and at least {min_size} voxel(s) along D, H and W, "
                        f"got {_shape(field)}")


def _check_spacing(function: str, spacing) -> tuple:
    """``(s_i, s_j, s_k)`` as three positive finite floats."""
    values = None
    if not isinstance(spacing, (str, bytes)):
        try:
            values = tuple(float(s) for s in spacing)
        except (TypeError, ValueError, RuntimeError):
            values = None
    if values is None or len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        _fail(function, f"'spacing' must be three positive finite numbers (mm), got {spacing!r}")
    return values


def soft_dice_loss(fixed: torch.Tensor, warped: torch.Tensor, weights: torch.Tensor | None = None,
                   eps: float = 1e-6, squared: bool = False) -> torch.Tensor:
    """Per batch item, the weighted mean over structures of ``1 - soft Dice``.

    Args:
        fixed, warped: ``(B, C, *S)`` soft masks in [0, 1] (one channel per structure) at the same voxels or points.
        weights: ``(C,)`` or ``(B, C)`` structure weights, non-negative (default equal); normalised to sum 1 per item.
        eps: added to the numerator and denominator (an empty structure in both gives Dice 1).
        squared: the denominator sums the squared masks (V-Net's soft Dice, MONAI's ``squared_pred``):
            ``1 - 2 sum(f w) / (sum f^2 + sum w^2) = sum (f - w)^2 / (sum f^2 + sum w^2)``, whose minimum 0 is
            exactly ``w = f``. With soft (smoothed or interpolated) masks the plain form is not lowest there: it
            rewards growing ``w`` where ``f`` exceeds about 1/2, so a registration of identical inputs would drift.
            Equal to the plain form for binary masks.

    Returns:
        ``(B,)`` in [0, 1]; 0 where the masks coincide, 1 where they are disjoint.
    """
    name = "soft_dice_loss"
    _check_pair(name, fixed, warped, "soft masks")
    eps = _positive_number(name, "eps", eps)
    w = _normalised_weights(name, weights, fixed)
    dims = tuple(range(2, fixed.ndim))
    intersection = (fixed * warped).sum(dim=dims)
    if squared:
        size = (fixed * fixed).sum(dim=dims) + (warped * warped).sum(dim=dims)
    else:
        size = fixed.sum(dim=dims) + warped.sum(dim=dims)
    dice = (2 * intersection + eps) / (size + eps)  # (B, C)
    return ((1 - dice) * w).sum(dim=1)


def signed_distance_loss(fixed: torch.Tensor, warped: torch.Tensor, scale_mm: float,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per batch item, the weighted mean over structures of ``mean(((fixed - warped) / scale_mm)^2)`` over ``S``.

    Args:
        fixed, warped: ``(B, C, *S)`` signed distances (mm, negative inside; typically clipped) of each structure's
            fixed surface and warped moving surface at the same voxels or points.
        scale_mm: distances are divided by this (e.g. the clip distance) so the loss is O(1); positive, finite.
        weights: ``(C,)`` or ``(B, C)`` structure weights, non-negative (default equal); normalised to sum 1 per item.

    Returns:
        ``(B,)``, 0 where the distance maps coincide.
    """
    name = "signed_distance_loss"
    _check_pair(name, fixed, warped, "signed distances")
    scale_mm = _positive_number(name, "scale_mm", scale_mm, " (mm)")
    w = _normalised_weights(name, weights, fixed)
    per_structure = (((fixed - warped) / scale_mm) ** 2).mean(dim=tuple(range(2, fixed.ndim)))  # (B, C)
    return (per_structure * w).sum(dim=1)


def velocity_mse(field: torch.Tensor) -> torch.Tensor:
    """Per batch item, the mean over voxels of the squared vector norm (mm^2) of a ``(B, 3, D, H, W)`` field."""
    _check_field("velocity_mse", field, 1)
    return (field**2).sum(dim=1).mean(dim=(1, 2, 3))


def _differences(field: torch.Tensor, spacing: tuple) -> list:
    """Forward differences of a ``(B, 3, D, H, W)`` field along D, H, W (= k, j, i) divided by the spacing (mm)."""
    s_i, s_j, s_k = spacing
    return [
        (field[:, :, 1:] - field[:, :, :-1]) / s_k,
        (field[:, :, :, 1:] - field[:, :, :, :-1]) / s_j,
        (field[..., 1:] - field[..., :-1]) / s_i,
    ]


def _derivatives(function: str, field, spacing, order: int) -> list:
    """The checked field's forward-difference derivatives of ``order`` 1 (3 tensors) or 2 (9: every ordered pair of
    axes, so mixed terms appear twice, as in the bending energy), per mm."""
    _check_field(function, field, order + 1)
    spacing = _check_spacing(function, spacing)
    out = _differences(field, spacing)
    return out if order == 1 else [second for d in out for second in _differences(d, spacing)]


def total_variation(field: torch.Tensor, spacing=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """Per batch item, the mean absolute first derivative (per mm) of a ``(B, 3, D, H, W)`` field, summed over the
    three axes: ``sum_a mean_{c, voxels} |d u_c / d x_a|`` with forward differences.

    Args:
        field: ``(B, 3, D, H, W)``, ``D, H, W`` = ``k, j, i``, at least 2 voxels along each.
        spacing: ``(s_i, s_j, s_k)`` mm.
    """
    return sum(d.abs().mean(dim=(1, 2, 3, 4)) for d in _derivatives("total_variation", field, spacing, 1))


def bending_energy(field: torch.Tensor, spacing=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """Per batch item, the mean squared second derivatives (per mm^2) of a ``(B, 3, D, H, W)`` field:
    ``sum over ordered pairs (a, b) of mean_{c, voxels} (d2 u_c / dx_a dx_b)^2`` (mixed terms counted twice, as in
    the energy), with forward differences (each term averaged over its own, uncropped, valid region).

    Args:
        field: ``(B, 3, D, H, W)``, ``D, H, W`` = ``k, j, i``, at least 3 voxels along each.
        spacing: ``(s_i, s_j, s_k)`` mm.
    """
    return sum((d**2).mean(dim=(1, 2, 3, 4)) for d in _derivatives("bending_energy", field, spacing, 2))


def gradient_l2(field: torch.Tensor, spacing=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """Per batch item, the mean squared first derivative (per mm) of a ``(B, 3, D, H, W)`` field, summed over the
    three axes: ``sum_a mean_{c, voxels} (d u_c / d x_a)^2`` (paper 003 eq. 5, averaged instead of summed so the
    weight does not depend on the grid size).

    Args:
        field: ``(B, 3, D, H, W)``, ``D, H, W`` = ``k, j, i``, at least 2 voxels along each.
        spacing: ``(s_i, s_j, s_k)`` mm.
    """
    return sum((d**2).mean(dim=(1, 2, 3, 4)) for d in _derivatives("gradient_l2", field, spacing, 1))


def _gaussian_smoothing(volume: torch.Tensor, sigma_voxels: float) -> torch.Tensor:
    """``(B, C, D, H, W)`` smoothed by an isotropic Gaussian of ``sigma_voxels`` (normalised kernel truncated at 3
    sigma, zero padding), one 1-D convolution per axis.

    Our own rather than MONAI's ``separable_filtering``: on a CPU (48^3, two channels, forward + backward) MONAI's
    takes 0.52 s at sigma 8 and this 0.04 s, which is most of a training step."""
    radius = max(1, int(3.0 * float(sigma_voxels) + 0.5))
    taps = torch.arange(-radius, radius + 1, dtype=volume.dtype, device=volume.device)
    kernel = torch.exp(-0.5 * (taps / float(sigma_voxels)) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    b, c, d, h, w = volume.shape
    out = volume
    for axis, size in ((4, w), (3, h), (2, d)):
        moved = out.movedim(axis, -1)
        shape = moved.shape
        out = F.conv1d(moved.reshape(-1, 1, size), kernel, padding=radius).reshape(shape).movedim(-1, axis)
    return out


def multiscale_dice_loss(fixed: torch.Tensor, warped: torch.Tensor, sigmas_voxels=(0, 1, 2, 4, 8),
                         weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per batch item, the mean over Gaussian scales of :func:`soft_dice_loss` of both masks smoothed alike
    (paper 004 eq. 1, after Hu et al.: large scales give gradients where the masks do not overlap yet). The squared
    denominator keeps the minimum (0) exactly at ``warped = fixed`` for the smoothed, soft masks.

    Args:
        fixed, warped: ``(B, C, D, H, W)`` soft masks on one grid.
        sigmas_voxels: Gaussian standard deviations in voxels of that grid (0 = no smoothing).
        weights: ``(C,)`` or ``(B, C)`` structure weights (see :func:`soft_dice_loss`).
    """
    name = "multiscale_dice_loss"
    _check_pair(name, fixed, warped, "soft masks")
    if fixed.ndim != 5:
        _fail(name, f"'fixed' must be (B, C, D, H, W) volumes, got {_shape(fixed)}")
    sigmas = [float(s) for s in sigmas_voxels]
    if not sigmas or any(not math.isfinite(s) or s < 0 for s in sigmas):
        _fail(name, f"'sigmas_voxels' must be one or more non-negative numbers, got {sigmas_voxels!r}")
    total = 0.0
    for sigma in sigmas:
        f = fixed if sigma == 0 else _gaussian_smoothing(fixed, sigma)
        w = warped if sigma == 0 else _gaussian_smoothing(warped, sigma)
        total = total + soft_dice_loss(f, w, weights, squared=True)
    return total / len(sigmas)


def signed_distance_msle(fixed: torch.Tensor, warped: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per batch item, the mean squared logarithmic error between signed distance maps (mm), over their positive
    (outside) parts: ``mean((log(1 + max(w, 0)) - log(1 + max(f, 0)))^2)`` (paper 004 eq. 2: it acts outside the
    structure, where the overlap terms give no gradient, and weighs errors near the surface most).

    Args:
        fixed, warped: ``(B, C, *S)`` signed distances in mm (negative inside).
        weights: ``(C,)`` or ``(B, C)`` structure weights.
    """
    name = "signed_distance_msle"
    _check_pair(name, fixed, warped, "signed distances")
    w = _normalised_weights(name, weights, fixed)
    diff = torch.log1p(warped.clamp(min=0)) - torch.log1p(fixed.clamp(min=0))
    return ((diff**2).mean(dim=tuple(range(2, fixed.ndim))) * w).sum(dim=1)


def masked_mutual_information_loss(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor,
                                   bins: int = 24, sigma_ratio: float = 0.5) -> torch.Tensor:
    """Per batch item, minus the mutual information (nats) of two intensity images counted only where ``mask`` is
    positive (paper 003 eq. 3: MI inside the dilated prostate). Parzen windows: Gaussian bins on [0, 1].

    MONAI's ``GlobalMutualInformationLoss`` computes the same estimate over the whole image; it has no mask, which
    this term needs (the prostate is a small part of the field of view).

    Args:
        fixed, warped: ``(B, 1, *S)`` intensities in [0, 1].
        mask: ``(B, 1, *S)`` weights in [0, 1] (soft masks allowed).
        bins: number of intensity bins; ``sigma_ratio`` the Parzen width in bin spacings.
    """
    name = "masked_mutual_information_loss"
    _check_pair(name, fixed, warped, "intensities")
    _check_tensor(name, "mask", mask)
    if mask.shape != fixed.shape or fixed.shape[1] != 1:
        _fail(name, f"'fixed', 'warped' and 'mask' must share one (B, 1, *S) shape, got {_shape(fixed)}, "
                    f"{_shape(warped)}, {_shape(mask)}")
    centres = torch.linspace(0, 1, int(bins), device=fixed.device, dtype=fixed.dtype)
    width = float(sigma_ratio) / (int(bins) - 1)
    weight = mask.flatten(1).clamp(0, 1)  # (B, N)

    def parzen(values: torch.Tensor) -> torch.Tensor:  # (B, N) -> (B, N, bins), each row summing to 1
        p = torch.exp(-0.5 * ((values.flatten(1).clamp(0, 1)[..., None] - centres) / width) ** 2)
        return p / p.sum(dim=-1, keepdim=True).clamp(min=1e-12)

    pf, pw = parzen(fixed) * weight[..., None], parzen(warped)
    joint = pf.transpose(1, 2) @ pw  # (B, bins, bins)
    joint = joint / joint.sum(dim=(1, 2), keepdim=True).clamp(min=1e-12)
    marginal_f, marginal_w = joint.sum(dim=2, keepdim=True), joint.sum(dim=1, keepdim=True)
    ratio = joint / (marginal_f * marginal_w).clamp(min=1e-12)
    return -(joint * torch.log(ratio.clamp(min=1e-12))).sum(dim=(1, 2))
