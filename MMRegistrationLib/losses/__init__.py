"""Losses, channels-first and batched: functional forms return ``(B,)``; the modules reduce over the batch.
All are minimised."""

from __future__ import annotations

from MMRegistrationLib.losses.functional import (
    bending_energy,
    signed_distance_loss,
    soft_dice_loss,
    total_variation,
    velocity_mse,
)
from MMRegistrationLib.losses.modules import (
    BendingEnergyLoss,
    SignedDistanceLoss,
    SoftDiceLoss,
    TotalVariationLoss,
    VelocityMSELoss,
)

__all__ = [
    "BendingEnergyLoss",
    "SignedDistanceLoss",
    "SoftDiceLoss",
    "TotalVariationLoss",
    "VelocityMSELoss",
    "bending_energy",
    "signed_distance_loss",
    "soft_dice_loss",
    "total_variation",
    "velocity_mse",
]
