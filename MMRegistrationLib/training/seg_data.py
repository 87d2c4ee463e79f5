"""Training images of the segmentation networks: one image and its gland mask per sample, for one modality.

- DeepReg / MONAI paired layout: TRUS = ``fixed_images`` + channel 0 of ``fixed_labels``, MR = ``moving_images`` +
  channel 0 of ``moving_labels``.
- Cohort layout (case folders): TRUS = ``fixed.*`` + ``fixed_seg.*``, MR = ``moving.*`` + ``moving_seg.*`` (the gland
  is the label the registration rule picks: label 1, else the lowest).
- Generated cases (:func:`MMRegistrationLib.synthetic.generate_case`, oblique on even seeds): exact gland labels,
  the generator's TRUS (speckle, shadows, sector) or MR.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.registration.net_geometry import normalised_intensity

SIDE = {"trus": "fixed", "mr": "moving"}
"""Modality -> side of an MR -> TRUS registration case (TRUS is the fixed image)."""


@dataclass
class SegCase:
    """One training/validation image: ``image`` the original (for validation through the inference path),
    ``volume (1, K, J, I)`` its scaled intensity, ``mask (1, K, J, I)`` float32 gland (0/1) on ``image.grid``."""

    name: str
    image: Image
    volume: torch.Tensor
    mask: torch.Tensor
    source: str

    @property
    def grid(self) -> Grid:
        return self.image.grid


def make_seg_case(name: str, image: Image, gland: np.ndarray, source: str) -> SegCase:
    """A :class:`SegCase`; :class:`InputError` naming ``--data`` when the gland is empty."""
    gland = np.asarray(gland, dtype=bool)
    if not gland.any():
        raise InputError("--data", f"{name}: the gland label is empty")
    volume = torch.as_tensor(normalised_intensity(image.array)[None])
    return SegCase(name, image, volume, torch.as_tensor(gland[None].astype(np.float32)), source)


def load_folder_image(folder: Path, layout: str, name: str, modality: str) -> SegCase:
    """The ``modality`` image of case ``name`` in a DeepReg or cohort folder with its gland."""
    from MMRegistrationLib.evaluation.cohort import find_case_file
    from MMRegistrationLib.io.images import read_image
    from MMRegistrationLib.training.net_data import _files, cohort_gland, read_label_channels

    side = SIDE[modality]
    if layout == "deepreg":
        image = read_image(_files(Path(folder) / f"{side}_images")[name], "--data")
        gland = read_label_channels(_files(Path(folder) / f"{side}_labels")[name], image.grid, "--data")[0]
    else:
        case = Path(folder) / name
        image = read_image(find_case_file(case, side, "--data", True), "--data")
        gland = cohort_gland(find_case_file(case, f"{side}_seg", "--data", True), image)
    return make_seg_case(f"{name}_{modality}", image, np.zeros(image.array.shape, bool) if gland is None else gland,
                         "folder")


def generated_image(seed: int, scale: float, modality: str) -> SegCase:
    """The ``modality`` image of generated case ``seed`` (oblique on even seeds) with its exact gland."""
    from MMRegistrationLib.synthetic import SyntheticCaseConfig, generate_case

    case = generate_case(SyntheticCaseConfig(seed=int(seed), oblique=seed % 2 == 0, scale=float(scale)))
    image, seg = (case.fixed, case.fixed_seg) if SIDE[modality] == "fixed" else (case.moving, case.moving_seg)
    return make_seg_case(f"generated{seed}_{modality}", image, seg.array == 1, "generated")
