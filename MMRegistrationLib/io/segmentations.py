"""Segmentations: integer label maps (any image format) and Slicer ``.seg.nrrd`` (segments by name)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from MMRegistrationLib.core.errors import InputError
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


def _normalise_name(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip().lower())


def _read_seg_nrrd(image: sitk.Image, argument: str, path: Path) -> Segmentation:
    keys = set(image.GetMetaDataKeys())
    indices = sorted({int(m.group(1)) for k in keys if (m := re.match(r"Segment(\d+)_Name$", k))})
    if not indices:
        raise InputError(argument, f"{path} is a .seg.nrrd without Segment*_Name entries")
    if image.GetDimension() == 4:  # some writers store layers as a 4th axis
        image = sitk.Compose([image[:, :, :, c] for c in range(image.GetSize()[3])])
    arr = sitk.GetArrayFromImage(image)
    layers = arr[None] if image.GetNumberOfComponentsPerPixel() == 1 else np.moveaxis(arr, -1, 0)
    ref = image if image.GetNumberOfComponentsPerPixel() == 1 else sitk.VectorIndexSelectionCast(image, 0)
    out = np.zeros(layers.shape[1:], dtype=np.uint16)
    names: dict = {}
    single_layer = layers.shape[0] == 1
    for rank, idx in enumerate(indices, start=1):
        name = image.GetMetaData(f"Segment{idx}_Name")
        layer = int(image.GetMetaData(f"Segment{idx}_Layer")) if f"Segment{idx}_Layer" in keys else 0
        value = int(image.GetMetaData(f"Segment{idx}_LabelValue")) if f"Segment{idx}_LabelValue" in keys else 1
        mask = layers[layer] == value
        new_value = value if single_layer else rank
        if np.any(out[mask] != 0):
            raise InputError(argument, f"segment '{name}' overlaps another segment; overlapping segments are not supported")
        out[mask] = new_value
        names[new_value] = name
    lab = Image.from_sitk(ref, argument).with_array(out)
    return Segmentation(lab, names)


def read_segmentation(path: str | os.PathLike, argument: str = "segmentation") -> Segmentation:
    """Read a label map or a Slicer ``.seg.nrrd``; raises :class:`InputError` if empty, non-integer or not 3-D."""
    path = Path(path)
    image = read_sitk_image(path, argument)
    if "Segment0_Name" in image.GetMetaDataKeys() or any(
        k.startswith("Segment") and k.endswith("_Name") for k in image.GetMetaDataKeys()
    ):
        seg = _read_seg_nrrd(image, argument, path)
    else:
        if image.GetDimension() != 3:
            raise InputError(argument, f"{path} is {image.GetDimension()}-D; a 3-D label map is needed")
        lab = Image.from_sitk(image, argument)
        arr = lab.array
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise InputError(argument, f"{path} has non-integer values; a label map (integers, 0 = background) is needed")
            arr = arr.astype(np.int32)
        if arr.min() < 0:
            raise InputError(argument, f"{path} has negative labels")
        seg = Segmentation(lab.with_array(arr), {})
    if not seg.labels:
        raise InputError(argument, f"{path} is empty (no non-zero voxel)")
    return seg


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
        fixed_by_name = {_normalise_name(n): v for v, n in fixed.names.items() if v in fixed.labels}
        moving_by_name = {_normalise_name(n): v for v, n in moving.names.items() if v in moving.labels}
        only_f = sorted(set(fixed_by_name) - set(moving_by_name))
        only_m = sorted(set(moving_by_name) - set(fixed_by_name))
        if only_f or only_m:
            raise InputError(
                moving_argument if only_f else fixed_argument,
                "segments do not correspond: "
                + (f"in fixed only: {only_f}; " if only_f else "")
                + (f"in moving only: {only_m}" if only_m else ""),
            )
        out = np.zeros_like(moving.labelmap.array)
        for name, mv in moving_by_name.items():
            out[moving.labelmap.array == mv] = fixed_by_name[name]
        names = {v: fixed.names[v] for v in fixed_by_name.values()}
        return fixed.labelmap, moving.labelmap.with_array(out), names
    lf, lm = set(fixed.labels), set(moving.labels)
    if lf != lm:
        parts = []
        if lf - lm:
            parts.append(f"label(s) {sorted(lf - lm)} in fixed but not in moving")
        if lm - lf:
            parts.append(f"label(s) {sorted(lm - lf)} in moving but not in fixed")
        raise InputError(moving_argument, "; ".join(parts) + " — corresponding structures must share a label value")
    names = fixed.names or moving.names
    return fixed.labelmap, moving.labelmap, {v: names[v] for v in lf if v in names}
