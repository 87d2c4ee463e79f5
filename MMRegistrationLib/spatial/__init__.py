"""Spatial transforms (each with a ``source -> target`` direction), resampling and Jacobians."""

from __future__ import annotations

from MMRegistrationLib.spatial.affine import AffineTransform, rotation_matrix
from MMRegistrationLib.spatial.base import SpatialTransform
from MMRegistrationLib.spatial.composite import ComposedTransform, compose
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.spatial.velocity import VelocityField, exponentiate

__all__ = [
    "AffineTransform",
    "ComposedTransform",
    "DisplacementField",
    "SpatialTransform",
    "VelocityField",
    "compose",
    "exponentiate",
    "rotation_matrix",
]
