"""Stateless loss functions. Every function is minimised; shapes are stated per function."""

from __future__ import annotations

import torch


def soft_dice_loss(fixed: torch.Tensor, warped: torch.Tensor, weights: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Weighted mean over structures of ``1 - soft Dice``.

    Args:
        fixed, warped: ``(C, ...)`` soft masks in [0, 1] sampled at the same points (one channel per structure).
        weights: ``(C,)`` structure weights (default equal); normalised to sum to 1.

    Returns:
        Scalar in [0, 1]; 0 when the masks coincide.
    """
    dims = tuple(range(1, fixed.ndim))
    intersection = (fixed * warped).sum(dim=dims)
    dice = (2 * intersection + eps) / (fixed.sum(dim=dims) + warped.sum(dim=dims) + eps)
    if weights is None:
        weights = torch.ones_like(dice)
    weights = weights / weights.sum()
    return ((1 - dice) * weights).sum()


def signed_distance_loss(fixed: torch.Tensor, warped: torch.Tensor, scale_mm: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean over structures of the mean squared difference of signed distances, in units of ``scale_mm``.

    Args:
        fixed, warped: ``(C, P)`` signed distances (mm, negative inside; typically clipped) of each structure's
            fixed surface and warped moving surface at the same points.
        scale_mm: distances are divided by this (e.g. the clip distance), so the loss is O(1).
        weights: ``(C,)`` structure weights (default equal); normalised to sum to 1.
    """
    per_structure = (((fixed - warped) / scale_mm) ** 2).mean(dim=1)
    if weights is None:
        weights = torch.ones_like(per_structure)
    return (per_structure * weights / weights.sum()).sum()


def velocity_mse(velocity: torch.Tensor) -> torch.Tensor:
    """Mean squared velocity (mm^2); ``velocity`` ``(..., 3)``."""
    return (velocity**2).sum(-1).mean()


def _differences(field: torch.Tensor, spacing) -> list:
    """Forward differences per axis of a ``(K, J, I, 3)`` field, divided by the spacing ``(s_i, s_j, s_k)`` (mm)."""
    s_i, s_j, s_k = (float(s) for s in spacing)
    return [
        (field[1:] - field[:-1]) / s_k,
        (field[:, 1:] - field[:, :-1]) / s_j,
        (field[:, :, 1:] - field[:, :, :-1]) / s_i,
    ]


def total_variation(field: torch.Tensor, spacing=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """Mean absolute first derivative (per mm) of a ``(K, J, I, 3)`` field, summed over the three axes."""
    return sum(d.abs().mean() for d in _differences(field, spacing))


def bending_energy(field: torch.Tensor, spacing=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """Mean squared second derivatives (pure and mixed, per mm^2) of a ``(K, J, I, 3)`` field."""
    total = 0.0
    for d in _differences(field, spacing):  # sum over all (a, b): mixed terms counted twice, as in the energy
        for second in _differences(d, spacing):
            total = total + (second**2).mean()
    return total
