"""How much of the fixed field of view the (transformed) moving image covers: what the no-overlap warning uses."""

from __future__ import annotations

import pytest

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.metrics.overlap import field_of_view_coverage
from MMRegistrationLib.spatial import AffineTransform


def test_coverage_of_shifted_boxes():
    fixed = Grid.from_geometry((20, 20, 20), (1.0, 1.0, 1.0))  # voxel box -0.5 .. 19.5 mm on each axis
    assert field_of_view_coverage(fixed, fixed) == 1.0
    half = Grid.from_geometry((20, 20, 20), (1.0, 1.0, 1.0), (10.0, 0.0, 0.0))
    assert field_of_view_coverage(fixed, half) == pytest.approx(0.5)
    far = Grid.from_geometry((20, 20, 20), (1.0, 1.0, 1.0), (500.0, 0.0, 0.0))
    assert field_of_view_coverage(fixed, far) == 0.0
    # fixed -> moving: x + 500 lands in the far grid
    assert field_of_view_coverage(fixed, far, AffineTransform.from_translation([500.0, 0.0, 0.0])) == 1.0
    assert field_of_view_coverage(fixed, half, AffineTransform.from_translation([5.0, 0.0, 0.0])) == pytest.approx(0.75)
