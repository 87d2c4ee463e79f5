"""Segmentations: integer label maps (any image format) and Slicer ``.seg.nrrd`` (segments by name)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io.images import read_sitk_image


@dataclass(frozen=True)
class Segmentation:
    """A label map plus optional segment names.

    Attributes:
        labelmap: integer :class:`Image` (0 = background).
        names: label value -> segment name (empty for plain label maps, whose labels match by value).
    """

    labelmap: Image
    names: dict = field(default_factory=dict)

    @property
    def labels(self) -> list:
        return self.labelmap.labels()


def normalise_segment_name(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip().lower())


def _read_seg_nrrd(image: sitk.Image, argument: str, path: Path) -> Segmentation:
    # the metadata is read first: slicing/composing a SimpleITK image drops its metadata dictionary
    meta = {k: image.GetMetaData(k) for k in image.GetMetaDataKeys()}
    indices = sorted({int(m.group(1)) for k in meta if (m := re.match(r"Segment(\d+)_Name$", k))})
    if not indices:
        raise InputError(argument, f"{path} is a .seg.nrrd without Segment*_Name entries")
    dim = image.GetDimension()
    if dim == 4:  # some writers store the layers along a 4th axis
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(argument, f"{path} is a 4-D segmentation with vector voxels; not supported")
        layers = np.stack([sitk.GetArrayFromImage(image[:, :, :, c]) for c in range(image.GetSize()[3])])
    elif dim == 3:  # Slicer: one layer = scalar voxels; several layers = one vector component per layer
        arr = sitk.GetArrayFromImage(image)
        layers = arr[None] if arr.ndim == 3 else np.moveaxis(arr, -1, 0)
    else:
        raise InputError(argument, f"{path} is {dim}-D; a 3-D segmentation is needed")
    size = image.GetSize()[:3]
    direction = np.array(image.GetDirection()).reshape(dim, dim)[:3, :3]
    grid = Grid.from_geometry(tuple(size[::-1]), image.GetSpacing()[:3], image.GetOrigin()[:3], direction)

    def integer_entry(key: str, default: int) -> int:
        if key not in meta:
            return default
        text = meta[key].strip()
        try:
            return int(text)
        except ValueError:
            raise InputError(argument, f"{path}: {key} is '{text}', not an integer") from None

    out = np.zeros(layers.shape[1:], dtype=np.uint16)
    names: dict = {}
    single_layer = layers.shape[0] == 1
    for rank, idx in enumerate(indices, start=1):
        name = meta[f"Segment{idx}_Name"]
        layer = integer_entry(f"Segment{idx}_Layer", 0)
        value = integer_entry(f"Segment{idx}_LabelValue", 1)
        if not 0 <= layer < layers.shape[0]:
            raise InputError(
                argument, f"{path}: segment '{name}' is on layer {layer} but the file has {layers.shape[0]} layer(s)"
            )
        mask = layers[layer] == value
        new_value = value if single_layer else rank
        if np.any(out[mask] != 0):
            raise InputError(argument, f"segment '{name}' overlaps another segment; overlapping segments are not supported")
        out[mask] = new_value
        names[new_value] = name
    return Segmentation(Image(out, grid), names)


def _channel_as_labelmap(image: sitk.Image, channel: int, argument: str, path: Path) -> Segmentation:
    """Channel ``channel`` of a 4-D label image (one binary channel per structure, as DeepReg/MONAI store them) as
    label 1 on the first three axes' geometry."""
    if image.GetDimension() != 4 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(argument, f"{path}: --label-channel needs a 4-D label image with one value per voxel")
    array = sitk.GetArrayFromImage(image)  # (C, K, J, I)
    if not 0 <= channel < array.shape[0]:
        raise InputError("--label-channel", f"{path} has channels 0..{array.shape[0] - 1}; channel {channel} does not exist")
    direction = np.array(image.GetDirection()).reshape(4, 4)[:3, :3]
    grid = Grid.from_geometry(array.shape[1:], image.GetSpacing()[:3], image.GetOrigin()[:3], direction)
    values = array[channel]
    if not np.all(np.isfinite(values)):
        raise InputError(argument, f"{path} channel {channel} has NaN/Inf values")
    return Segmentation(Image((values > 0.5).astype(np.uint8), grid), {})


def _refuse_channel(image: sitk.Image, is_seg_nrrd: bool, argument: str, path: Path) -> None:
    """``--label-channel`` given for a file without channels: an :class:`InputError` naming it (never ignored)."""
    what = "a Slicer .seg.nrrd (its segments are chosen by name)" if is_seg_nrrd else (
        f"a {image.GetDimension()}-D label map, not a 4-D image with one channel per structure")
    raise InputError("--label-channel", f"{argument} {path} is {what}; leave --label-channel out for it")


def read_segmentation(path: str | os.PathLike, argument: str = "segmentation", channel: int | None = None) -> Segmentation:
    """Read a label map or a Slicer ``.seg.nrrd``; raises :class:`InputError` if empty, non-integer or not 3-D.

    ``channel``: for a 4-D label image with one binary channel per structure, use that channel as label 1; given
    for any other file (a 3-D label map, a ``.seg.nrrd``) it is an :class:`InputError` naming ``--label-channel``.
    """
    path = Path(path)
    image = read_sitk_image(path, argument)
    is_seg_nrrd = any(k.startswith("Segment") and k.endswith("_Name") for k in image.GetMetaDataKeys())
    if channel is not None and (is_seg_nrrd or image.GetDimension() != 4):
        _refuse_channel(image, is_seg_nrrd, argument, path)
    if is_seg_nrrd:
        seg = _read_seg_nrrd(image, argument, path)
    elif image.GetDimension() == 4 and channel is not None:
        seg = _channel_as_labelmap(image, int(channel), argument, path)
    else:
        if image.GetDimension() != 3:
            hint = (f" (for one binary channel per structure, choose one with --label-channel N, N in "
                    f"0..{image.GetSize()[3] - 1})" if image.GetDimension() == 4 else "")
            raise InputError(argument, f"{path} is {image.GetDimension()}-D; a 3-D label map is needed{hint}")
        lab = Image.from_sitk(image, argument)
        arr = lab.array
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise InputError(argument, f"{path} has non-integer values; a label map (integers, 0 = background) is needed")
            arr = arr.astype(np.int32)
        if arr.min() < 0:
            raise InputError(
                argument, f"{path} has negative labels (minimum {arr.min()}); a label map has 0 = background and positive labels"
            )
        seg = Segmentation(lab.with_array(arr), {})
    if not seg.labels:
        raise InputError(argument, f"{path} is empty (no non-zero voxel)")
    return seg


def _by_name(seg: Segmentation, argument: str) -> dict:
    """Normalised name -> label value of the non-empty segments; two segments with one name are an error."""
    present = set(seg.labels)
    out: dict = {}
    for value, name in seg.names.items():
        if value not in present:
            continue
        key = normalise_segment_name(name)
        if key in out:
            raise InputError(argument, f"two segments are named '{name}'; segment names must be unique to match them")
        out[key] = value
    return out


def match_segmentations(
    fixed: Segmentation, moving: Segmentation, fixed_argument: str = "--fixed-seg", moving_argument: str = "--moving-seg"
) -> tuple:
    """Make corresponding structures share one label value.

    Both with names (``.seg.nrrd``): matched by name (case/space-insensitive); the moving map is relabelled
    to the fixed values. Otherwise matched by value. A structure present in only one is an error.

    Returns:
        ``(fixed_labelmap, moving_labelmap, names)`` with ``names`` label -> name (may be empty).
    """
    if fixed.names and moving.names:
        fixed_by_name = _by_name(fixed, fixed_argument)
        moving_by_name = _by_name(moving, moving_argument)
        only_f = sorted(fixed.names[fixed_by_name[k]] for k in set(fixed_by_name) - set(moving_by_name))
        only_m = sorted(moving.names[moving_by_name[k]] for k in set(moving_by_name) - set(fixed_by_name))
        if only_f or only_m:
            raise InputError(
                moving_argument if only_f else fixed_argument,
                "segments do not correspond: "
                + (f"in fixed only: {only_f}; " if only_f else "")
                + (f"in moving only: {only_m}" if only_m else ""),
            )
        out = np.zeros(
            moving.labelmap.array.shape, dtype=np.result_type(moving.labelmap.array.dtype, fixed.labelmap.array.dtype)
        )
        for name, mv in moving_by_name.items():
            out[moving.labelmap.array == mv] = fixed_by_name[name]
        names = {v: fixed.names[v] for v in fixed_by_name.values()}
        return fixed.labelmap, moving.labelmap.with_array(out), names
    lf = set(check_same_labels(fixed.labelmap, moving.labelmap, fixed_argument, moving_argument))
    names = fixed.names or moving.names
    return fixed.labelmap, moving.labelmap, {v: names[v] for v in lf if v in names}


def check_same_labels(
    fixed: Image, moving: Image, fixed_argument: str = "fixed_seg", moving_argument: str = "moving_seg"
) -> list:
    """Sorted labels shared by both maps; a label in only one of them is an error."""
    lf, lm = set(fixed.labels()), set(moving.labels())
    if lf != lm:
        parts = []
        if lf - lm:
            parts.append(f"label(s) {sorted(lf - lm)} in {fixed_argument} but not in {moving_argument}")
        if lm - lf:
            parts.append(f"label(s) {sorted(lm - lf)} in {moving_argument} but not in {fixed_argument}")
        raise InputError(
            moving_argument if lf - lm else fixed_argument,
            "; ".join(parts) + " — corresponding structures must share a label value",
        )
    return sorted(lf)


def foreground_corners_world(labelmap: Image) -> np.ndarray:
    """World (LPS mm) corners ``(8, 3)`` of the box of the non-zero voxels (outer faces, index -0.5/+0.5), in the
    label map's own index axes; None when the map is empty."""
    arr = labelmap.array
    bounds = []
    for axis in range(3):  # array axes k, j, i
        present = np.flatnonzero(arr.any(axis=tuple(a for a in range(3) if a != axis)))
        if present.size == 0:
            return None
        bounds.append((present[0] - 0.5, present[-1] + 0.5))
    lo_hi_ijk = bounds[::-1]  # (i, j, k)
    corners = np.array([[lo_hi_ijk[a][bit] for a, bit in enumerate(bits)] for bits in np.ndindex(2, 2, 2)], float)
    return labelmap.grid.index_to_world(corners)


def distance_outside_mm(points: np.ndarray, grid: Grid, tolerance_voxels: float = 1.0) -> float:
    """How far (mm, along the grid's axes) the farthest of ``points (N, 3)`` lies beyond ``grid``'s field of view
    (the voxel box, indices -0.5 .. n - 0.5) grown by ``tolerance_voxels`` on every side; 0 when all are inside."""
    index = grid.world_to_index(points)
    size = np.asarray(grid.size_ijk, dtype=np.float64)
    beyond = np.maximum(-0.5 - tolerance_voxels - index, index - (size - 0.5 + tolerance_voxels))
    beyond = np.maximum(beyond, 0.0) * grid.spacing
    return float(np.linalg.norm(beyond, axis=-1).max())


def check_on_image(labelmap: Image, image_grid: Grid, argument: str, image_argument: str,
                   other_grid: Grid | None = None, other_argument: str | None = None) -> None:
    """A segmentation belongs to its image: on exactly its grid, or on another grid (e.g. a Slicer ``.seg.nrrd``
    cropped to its segments) whose non-zero voxels lie inside the image's field of view within one voxel.

    Raises :class:`InputError` naming ``argument`` and ``image_argument``: on ``other_grid`` (the other image's,
    ``other_argument``) but not on its own (the two segmentations swapped?), or outside the image's field of view.
    """
    if labelmap.grid.same_as(image_grid):
        return
    if other_grid is not None and labelmap.grid.same_as(other_grid):
        raise InputError(argument, f"is on {other_argument}'s grid, not on {image_argument}'s (swapped with the other "
                                   f"segmentation?); each segmentation must be of its own image")
    corners = foreground_corners_world(labelmap)
    if corners is None:
        return  # emptiness is reported where the map is read
    if distance_outside_mm(corners, image_grid, tolerance_voxels=1.0) > 0:
        beyond = distance_outside_mm(corners, image_grid, tolerance_voxels=0.0)
        raise InputError(argument, f"lies outside {image_argument}'s field of view (its segmented voxels reach "
                                   f"{beyond:.1f} mm beyond it): it is not a segmentation of {image_argument} "
                                   f"(swapped, or a different case?)")
