"""ITK transform files (``.h5``, ``.tfm``, ``.txt``) through SimpleITK.

Files hold the ITK "resampling" direction, which for a registration result is fixed -> moving: exactly the
engine's convention, so no inversion happens here. 3D Slicer loads a ``DisplacementFieldTransform`` file as a
grid transform and an ``AffineTransform`` file as a linear transform (as the moving volume's parent transform).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io.images import itk_error_reason
from MMRegistrationLib.spatial.affine import AffineTransform
from MMRegistrationLib.spatial.base import SpatialTransform
from MMRegistrationLib.spatial.composite import ComposedTransform, compose
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.spatial.velocity import VelocityField


# ---- engine -> SimpleITK ----------------------------------------------------------------------------
def displacement_to_sitk_image(field: DisplacementField) -> sitk.Image:
    """Vector (float64) SimpleITK image of ``u`` on the field's grid."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(field.numpy()), isVector=True)
    ref = Image(np.zeros(field.grid.shape, np.uint8), field.grid).to_sitk()
    img.CopyInformation(ref)
    return img


def to_sitk_transform(transform: SpatialTransform) -> sitk.Transform:
    """Convert to the SimpleITK transform that maps points identically."""
    if transform.is_linear and not isinstance(transform, AffineTransform):
        transform = ComposedTransform([transform]).as_affine()
    if isinstance(transform, AffineTransform):
        tx = sitk.AffineTransform(3)
        tx.SetMatrix(tuple(transform.matrix[:3, :3].ravel()))
        tx.SetTranslation(tuple(transform.matrix[:3, 3]))
        return tx
    if isinstance(transform, VelocityField):
        transform = transform.to_displacement()
    if isinstance(transform, DisplacementField):
        return sitk.DisplacementFieldTransform(displacement_to_sitk_image(transform))
    if isinstance(transform, ComposedTransform):
        composite = sitk.CompositeTransform(3)
        for t in reversed(transform.transforms):  # ITK applies the last-added transform first
            composite.AddTransform(to_sitk_transform(t))
        return composite
    raise TypeError(f"to_sitk_transform: unsupported transform {type(transform).__name__}")


# ---- SimpleITK -> engine ----------------------------------------------------------------------------
def _affine_from_linear(tx: sitk.Transform, source: str, target: str) -> AffineTransform:
    base = np.zeros(3)
    y0 = np.array(tx.TransformPoint(tuple(base)))
    matrix = np.eye(4)
    for axis in range(3):
        e = np.zeros(3)
        e[axis] = 1.0
        matrix[:3, axis] = np.array(tx.TransformPoint(tuple(e))) - y0
    matrix[:3, 3] = y0
    return AffineTransform(matrix, source, target)


def _bspline_domain_grid(tx: sitk.BSplineTransform, spacing_mm: float = 1.0, max_nodes_per_axis: int = 160) -> Grid:
    """Cell-centred sampling grid of a B-spline's domain (no node on a face, where ITK's inside test is
    sensitive to rounding); at most ``max_nodes_per_axis`` nodes per axis. The field's own half-voxel rule
    then covers the faces."""
    origin = np.array(tx.GetTransformDomainOrigin())
    extent = np.array(tx.GetTransformDomainPhysicalDimensions())
    direction = np.array(tx.GetTransformDomainDirection()).reshape(3, 3)
    size = np.clip(np.ceil(extent / spacing_mm).astype(int), 2, max_nodes_per_axis)
    spacing = extent / size
    return Grid.from_geometry(tuple(size[::-1]), spacing, origin + direction @ (spacing / 2), direction)


def _field_from_sitk(field_img: sitk.Image, source: str, target: str) -> DisplacementField:
    """A displacement-field image as a :class:`DisplacementField`, with one numpy copy of the vectors (large fields
    are the biggest thing an evaluation reads)."""
    grid = Grid.from_geometry(field_img.GetSize()[::-1], field_img.GetSpacing(), field_img.GetOrigin(),
                              np.array(field_img.GetDirection()).reshape(3, 3))
    disp = sitk.GetArrayFromImage(field_img)
    return DisplacementField(grid, torch.from_numpy(disp.astype(np.float64, copy=False)), source, target)


def from_sitk_transform(
    tx: sitk.Transform, source: str = "fixed", target: str = "moving", argument: str = "transform"
) -> SpatialTransform:
    """Convert a SimpleITK transform; composites keep their parts (applied in ITK's order).

    B-spline transforms are sampled into a displacement field on their domain (about 1 mm, cell-centred).
    """
    tx = tx.Downcast() if hasattr(tx, "Downcast") else tx
    if isinstance(tx, sitk.CompositeTransform):
        parts = [tx.GetNthTransform(n) for n in range(tx.GetNumberOfTransforms())]
        if not parts:
            return AffineTransform.identity(source, target)
        names = [source] + [f"{source}:{n}" for n in range(1, len(parts))] + [target]
        engine_parts = [
            from_sitk_transform(p, names[i], names[i + 1], argument) for i, p in enumerate(reversed(parts))
        ]
        return compose(*engine_parts)
    if tx.IsLinear():
        return _affine_from_linear(tx, source, target)
    if isinstance(tx, sitk.DisplacementFieldTransform):
        return _field_from_sitk(tx.GetDisplacementField(), source, target)
    if isinstance(tx, sitk.BSplineTransform):
        grid = _bspline_domain_grid(tx)
        ref = Image(np.zeros(grid.shape, np.uint8), grid).to_sitk()
        disp_img = sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat64, ref.GetSize(), ref.GetOrigin(),
                                                     ref.GetSpacing(), ref.GetDirection())
        return DisplacementField(grid, torch.from_numpy(sitk.GetArrayFromImage(disp_img)), source, target)
    raise InputError(argument, f"unsupported ITK transform type {tx.GetName()}")


# ---- files ----------------------------------------------------------------------------------------
def write_transform(transform: SpatialTransform, path: str | os.PathLike, flatten_on: Optional[Grid] = None) -> Path:
    """Write an ITK transform file (``.h5`` recommended). Written to a temporary name, then renamed.

    Args:
        transform: the mapping to store (for a registration result: fixed -> moving).
        flatten_on: if given and the transform is not linear, store it as one ``DisplacementFieldTransform``
            sampled on this grid (what Slicer shows as a single grid transform) instead of an ITK composite.
    """
    path = Path(path)
    if flatten_on is not None and not transform.is_linear and not isinstance(transform, DisplacementField):
        transform = DisplacementField.from_transform(transform, flatten_on)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    sitk.WriteTransform(to_sitk_transform(transform), str(tmp))
    os.replace(tmp, path)
    return path


def read_transform(
    path: str | os.PathLike, argument: str = "transform", source: str = "fixed", target: str = "moving"
) -> SpatialTransform:
    """Read an ITK transform file as the engine transform ``source -> target`` (default fixed -> moving)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(argument, f"file not found: {path}")
    try:
        tx = sitk.ReadTransform(str(path))
    except RuntimeError as err:
        raise InputError(argument, f"cannot read {path} as an ITK transform ({itk_error_reason(str(err))})") from None
    return from_sitk_transform(tx, source, target, argument)
