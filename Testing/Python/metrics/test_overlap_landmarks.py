"""Dice and TRE against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from MMRegistrationLib.metrics import dice_per_label, target_registration_error_mm
from MMRegistrationLib.spatial import AffineTransform


def test_dice_per_label_by_hand():
    a = np.zeros((4, 4, 4), np.uint8)
    b = np.zeros_like(a)
    a[0, :2, :2] = 1  # 4 voxels
    b[0, :2, :1] = 1  # 2 voxels, both inside a
    a[3, 3, 3] = 2
    dice = dice_per_label(a, b, [1, 2, 5])
    assert dice[1] == pytest.approx(2 * 2 / 6)
    assert dice[2] == 0.0  # present in the reference only: a real zero
    assert math.isnan(dice[5])  # absent from both: undefined, never a silent 0 or 1
    with pytest.raises(ValueError, match="shapes differ"):
        dice_per_label(a, b[:2])


def test_tre_uses_the_fixed_to_moving_direction():
    fixed = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    moving = fixed + [3.0, 4.0, 0.0]
    t = AffineTransform.from_translation([3.0, 4.0, 0.0])
    assert target_registration_error_mm(t, fixed, moving)["tre_max_mm"] == pytest.approx(0.0)
    assert target_registration_error_mm(t.inverse().inverse(), fixed, moving)["tre_mean_mm"] == pytest.approx(0.0)
    wrong_way = target_registration_error_mm(AffineTransform(t.inverse().matrix), fixed, moving)
    assert wrong_way["tre_mean_mm"] == pytest.approx(10.0)
    identity = target_registration_error_mm(None, fixed, moving)
    assert identity["tre_mm"] == pytest.approx([5.0, 5.0]) and identity["tre_median_mm"] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="counts differ"):
        target_registration_error_mm(None, fixed, moving[:1])
