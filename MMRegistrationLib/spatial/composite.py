"""Composition of transforms, applied in list order."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from MMRegistrationLib.spatial.affine import AffineTransform
from MMRegistrationLib.spatial.base import SpatialTransform, check_chain


class ComposedTransform(SpatialTransform):
    """``ComposedTransform([T1, T2, ...])(x) = ... T2(T1(x))``: ``T1`` is applied **first**.

    Consecutive transforms must chain (``T1.target == T2.source``); the result maps ``T1.source`` to the last
    transform's target. (ITK's ``CompositeTransform`` stores the opposite order; the ``.h5`` writer converts.)
    """

    def __init__(self, transforms: Sequence[SpatialTransform]):
        flat: list[SpatialTransform] = []
        for t in transforms:
            flat.extend(t.transforms if isinstance(t, ComposedTransform) else [t])
        if not flat:
            raise ValueError("ComposedTransform: needs at least one transform")
        for a, b in zip(flat[:-1], flat[1:]):
            check_chain(a, b)
        self.transforms = flat
        self.source = flat[0].source
        self.target = flat[-1].target

    @property
    def is_linear(self) -> bool:
        return all(t.is_linear for t in self.transforms)

    def map_points(self, points: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            points = t.map_points(points)
        return points

    def inverse(self) -> "ComposedTransform":
        return ComposedTransform([t.inverse() for t in reversed(self.transforms)])

    def as_affine(self) -> AffineTransform:
        """Collapse a purely linear chain into one :class:`AffineTransform`."""
        if not self.is_linear:
            raise ValueError("ComposedTransform.as_affine: the chain contains a non-linear transform")
        matrix = np.eye(4)
        for t in self.transforms:
            matrix = t.matrix @ matrix
        return AffineTransform(matrix, self.source, self.target)

    def __repr__(self) -> str:
        return f"ComposedTransform({self.direction_label}: {' then '.join(type(t).__name__ for t in self.transforms)})"


def compose(*transforms: SpatialTransform) -> SpatialTransform:
    """``compose(A, B)`` applies ``A`` first then ``B``; linear chains collapse to one affine."""
    composed = ComposedTransform(transforms)
    if len(composed.transforms) == 1:
        return composed.transforms[0]
    return composed.as_affine() if composed.is_linear else composed
