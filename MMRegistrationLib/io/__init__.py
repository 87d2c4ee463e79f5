"""Reading and writing images, segmentations, landmarks and transforms (SimpleITK underneath)."""

from __future__ import annotations

from MMRegistrationLib.io.images import read_image, write_image
from MMRegistrationLib.io.landmarks import read_landmarks, write_landmarks_csv
from MMRegistrationLib.io.outputs import atomic_output_dir
from MMRegistrationLib.io.segmentations import Segmentation, match_segmentations, read_segmentation
from MMRegistrationLib.io.transforms import read_transform, to_sitk_transform, from_sitk_transform, write_transform

__all__ = [
    "Segmentation",
    "atomic_output_dir",
    "from_sitk_transform",
    "match_segmentations",
    "read_image",
    "read_landmarks",
    "read_segmentation",
    "read_transform",
    "to_sitk_transform",
    "write_image",
    "write_landmarks_csv",
    "write_transform",
]
