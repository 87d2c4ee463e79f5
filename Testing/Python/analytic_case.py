"""Writes a small analytic MR/TRUS-like case with a known rigid fixed->moving transform to a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import covering_grid, phantom_intensity, phantom_labels
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io import write_image, write_landmarks_csv
from MMRegistrationLib.spatial import AffineTransform

TRUE = AffineTransform.from_rigid(np.deg2rad([5.0, -4.0, 7.0]), [7.0, -4.0, 5.0], center=[5.0, -2.0, 10.0])
LANDMARKS_FIXED = np.array([[5.0, -2.0, 10.0], [14.0, 3.0, 12.0], [-4.0, -6.0, 6.0], [5.0, -10.0, 40.0]])


def slicer_segment_metadata(segments) -> dict:
    """The per-segment header keys Slicer writes in a ``.seg.nrrd``; ``segments`` = [(name, value, layer), ...]."""
    meta = {}
    for n, (name, value, layer) in enumerate(segments):
        meta[f"Segment{n}_ID"] = f"Segment_{n + 1}"
        meta[f"Segment{n}_Name"] = name
        meta[f"Segment{n}_LabelValue"] = str(value)
        meta[f"Segment{n}_Layer"] = str(layer)
        meta[f"Segment{n}_Color"] = "0.5 0.6 0.7"
        meta[f"Segment{n}_Extent"] = "0 13 0 11 0 9"
    meta["Segmentation_MasterRepresentation"] = "Binary labelmap"
    meta["Segmentation_ContainedRepresentationNames"] = "Binary labelmap|"
    return meta


def write_seg_nrrd(labelmap: Image, names: dict, path: Path, relabel: dict | None = None) -> str:
    """Write a single-layer Slicer ``.seg.nrrd``: ``names`` label -> segment name; ``relabel`` old -> new value."""
    import SimpleITK as sitk

    relabel = relabel or {}
    arr = np.zeros_like(labelmap.array)
    for old in names:
        arr[labelmap.array == old] = relabel.get(old, old)
    img = labelmap.with_array(arr).to_sitk()
    for key, value in slicer_segment_metadata([(names[o], relabel.get(o, o), 0) for o in names]).items():
        img.SetMetaData(key, value)
    sitk.WriteImage(img, str(path), True)
    return str(path)


def write_case(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    fixed_grid = covering_grid([5, 0, 15], 96, (1.2, 1.2, 1.5), (10, -5, 20))
    moving_grid = covering_grid([12, -6, 22], 110, (0.9, 0.9, 2.5), (-12, 8, -25), origin_shift=(3, -2, 1))
    fseg = phantom_labels(fixed_grid)
    mseg = phantom_labels(moving_grid, TRUE.inverse().map_points_np)
    paths = {
        "fixed": write_image(phantom_intensity(fseg, 1), folder / "fixed.nrrd"),
        "moving": write_image(phantom_intensity(mseg, 2), folder / "moving.nrrd"),
        "fixed_seg": write_image(fseg, folder / "fixed_seg.nrrd"),
        "moving_seg": write_image(mseg, folder / "moving_seg.nrrd"),
        "fixed_landmarks": write_landmarks_csv(LANDMARKS_FIXED, folder / "fixed_landmarks.csv"),
        "moving_landmarks": write_landmarks_csv(TRUE.map_points_np(LANDMARKS_FIXED), folder / "moving_landmarks.csv"),
    }
    return {k: str(v) for k, v in paths.items()}
