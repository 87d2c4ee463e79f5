"""Thin :class:`torch.nn.Module` wrappers of :mod:`MMRegistrationLib.losses.functional` for training loops.

The constructor takes the fixed parameters (weights, scale, spacing) and the reduction over the batch
(``"mean"``, ``"sum"`` or ``"none"`` for the ``(B,)`` values), and checks them once; ``forward`` takes the
tensors and checks them as the functions do.
"""

from __future__ import annotations

import torch
from torch import nn

from MMRegistrationLib.losses import functional as F

REDUCTIONS = ("mean", "sum", "none")


class _BatchLoss(nn.Module):
    """Reduces a per-item ``(B,)`` loss over the batch."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if not isinstance(reduction, str) or reduction not in REDUCTIONS:
            raise ValueError(f"{type(self).__name__}(): 'reduction' must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def _reduce(self, per_item: torch.Tensor) -> torch.Tensor:
        if self.reduction == "mean":
            return per_item.mean()
        if self.reduction == "sum":
            return per_item.sum()
        return per_item

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


def _structure_weights(owner: str, weights) -> torch.Tensor | None:
    """``(C,)`` non-negative finite weights with a positive sum as a float tensor (checked once, by the constructor)."""
    if weights is None:
        return None
    w = None
    if not isinstance(weights, (str, bytes)):
        try:
            w = torch.as_tensor(weights).detach().to(device="cpu", dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            w = None
    if w is None or w.ndim != 1 or w.numel() == 0 or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) \
            or float(w.sum()) <= 0:
        raise ValueError(f"{owner}(): 'weights' must be a non-empty 1-D sequence of non-negative finite numbers with a "
                         f"positive sum (one per structure), got {weights!r}")
    return w.to(torch.float32)


class SoftDiceLoss(_BatchLoss):
    """:func:`~MMRegistrationLib.losses.functional.soft_dice_loss` of ``(B, C, *S)`` soft masks, reduced over B."""

    def __init__(self, weights=None, reduction: str = "mean", eps: float = 1e-6, squared: bool = False):
        super().__init__(reduction)
        self.eps = F._positive_number(type(self).__name__, "eps", eps)
        self.squared = bool(squared)
        self.register_buffer("weights", _structure_weights(type(self).__name__, weights), persistent=False)

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
        return self._reduce(F.soft_dice_loss(fixed, warped, self.weights, self.eps, self.squared))


class SignedDistanceLoss(_BatchLoss):
    """:func:`~MMRegistrationLib.losses.functional.signed_distance_loss` of ``(B, C, *S)`` signed distances (mm)."""

    def __init__(self, scale_mm: float, weights=None, reduction: str = "mean"):
        super().__init__(reduction)
        self.scale_mm = F._positive_number(type(self).__name__, "scale_mm", scale_mm, " (mm)")
        self.register_buffer("weights", _structure_weights(type(self).__name__, weights), persistent=False)

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
        return self._reduce(F.signed_distance_loss(fixed, warped, self.scale_mm, self.weights))

    def extra_repr(self) -> str:
        return f"scale_mm={self.scale_mm}, {super().extra_repr()}"


class _FieldLoss(_BatchLoss):
    def __init__(self, spacing=(1.0, 1.0, 1.0), reduction: str = "mean"):
        super().__init__(reduction)
        self.spacing = F._check_spacing(type(self).__name__, spacing)

    def extra_repr(self) -> str:
        return f"spacing={self.spacing}, {super().extra_repr()}"


class BendingEnergyLoss(_FieldLoss):
    """:func:`~MMRegistrationLib.losses.functional.bending_energy` of a ``(B, 3, D, H, W)`` field (mm) on a grid of
    spacing ``(s_i, s_j, s_k)`` mm."""

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        return self._reduce(F.bending_energy(field, self.spacing))


class TotalVariationLoss(_FieldLoss):
    """:func:`~MMRegistrationLib.losses.functional.total_variation` of a ``(B, 3, D, H, W)`` field (mm) on a grid of
    spacing ``(s_i, s_j, s_k)`` mm."""

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        return self._reduce(F.total_variation(field, self.spacing))


class VelocityMSELoss(_BatchLoss):
    """:func:`~MMRegistrationLib.losses.functional.velocity_mse` of a ``(B, 3, D, H, W)`` field (mm)."""

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        return self._reduce(F.velocity_mse(field))
