"""Losses (functional forms); all are minimised."""

from __future__ import annotations

from MMRegistrationLib.losses.functional import (
    bending_energy,
    soft_dice_loss,
    total_variation,
    velocity_mse,
)

__all__ = ["bending_energy", "soft_dice_loss", "total_variation", "velocity_mse"]
