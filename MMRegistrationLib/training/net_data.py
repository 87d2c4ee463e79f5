"""Training data of the registration networks: cases from a folder (DeepReg/MONAI layout or a cohort folder) and
generated cases, as :class:`~MMRegistrationLib.registration.net_geometry.PairVolumes` with their initial transforms.

Layouts:

- DeepReg / MONAI paired: ``fixed_images/ fixed_labels/ moving_images/ moving_labels/`` with one file per case and
  the same name in each (NIfTI/NRRD). A label file is 3-D (the gland, > 0.5) or 4-D with the channels on the last
  axis (channel 0 the gland, 1.. corresponding landmark structures; TRE = distance of their centroids).
- Cohort: one sub-folder per case with ``fixed.*``, ``moving.*``, ``fixed_seg.*``, ``moving_seg.*`` (label maps; the
  gland is label 1, else the lowest label) and optional ``fixed_landmarks.*``/``moving_landmarks.*`` (points, made
  into small spheres for the landmark Dice).

Generated cases come from :func:`MMRegistrationLib.synthetic.generate_case` (seeded; oblique on even seeds,
anisotropic MR, exact labels; landmark points made into spheres).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.io.images import read_image
from MMRegistrationLib.registration.initializers import (
    center_init,
    center_of_mass_init,
    center_of_mass_mm,
    gland_label,
    rigid_mask_init,
    signed_distance_mm,
)
from MMRegistrationLib.registration.net_geometry import PairVolumes, normalised_intensity

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
LANDMARK_RADIUS_MM = 3.0
"""Radius of the sphere made around a landmark point (cohort and generated cases)."""
SDM_CLIP_MM = 40.0


@dataclass
class TrainingCase:
    """One registration pair for training or validation.

    Attributes:
        name: case name (file stem or folder name).
        volumes: the tensors on their own grids.
        landmarks: number of landmark channels (after the gland channel).
        fixed_mask_center: the fixed gland's centre of mass (LPS mm).
        initial: init name -> 4x4 fixed -> moving matrix (filled by :func:`initial_map`).
        source: where the case comes from (``folder``, ``generated``).
    """

    name: str
    volumes: PairVolumes
    landmarks: int
    fixed_mask_center: np.ndarray
    initial: dict
    source: str


def _stem(path: Path) -> str:
    for suffix in IMAGE_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def _files(folder: Path) -> dict:
    return {_stem(p): p for p in sorted(folder.iterdir()) if p.is_file() and p.name.endswith(IMAGE_SUFFIXES)}


def read_label_channels(path: Path, reference: Grid, argument: str) -> np.ndarray:
    """A 3-D or 4-D (channels last) label file -> boolean ``(C, K, J, I)`` (> 0.5) on ``reference``'s grid."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise InputError(argument, f"cannot read {path}: {str(err).strip().splitlines()[-1]}") from err
    array = sitk.GetArrayFromImage(image)
    dim = image.GetDimension()
    if dim == 3 and image.GetNumberOfComponentsPerPixel() == 1:
        array = array[None]
    elif dim != 4 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(argument, f"{path}: expected a 3-D label map or a 4-D one with channels last")
    direction = np.array(image.GetDirection()).reshape(dim, dim)[:3, :3]
    grid = Grid.from_geometry(array.shape[1:], image.GetSpacing()[:3], image.GetOrigin()[:3], direction)
    if not grid.same_as(reference, tol=1e-3):
        raise InputError(argument, f"{path}: its grid {grid} differs from its image's {reference}")
    return array > 0.5


def _sphere_channels(points: Optional[np.ndarray], grid: Grid, radius_mm: float) -> list:
    """One boolean sphere per landmark point on ``grid`` (a point outside the grid gives an empty channel)."""
    if points is None or len(points) == 0:
        return []
    world = grid.world_points()
    return [np.linalg.norm(world - np.asarray(p, dtype=np.float64), axis=-1) <= radius_mm for p in points]


def make_case(name: str, fixed: Image, moving: Image, fixed_channels: Sequence[np.ndarray],
              moving_channels: Sequence[np.ndarray], source: str, device=None) -> TrainingCase:
    """A :class:`TrainingCase` from images and corresponding boolean channels (gland first, then landmarks; a
    landmark empty on either side is dropped)."""
    if not fixed_channels[0].any() or not moving_channels[0].any():
        raise InputError("--data", f"case {name}: the gland (first label channel) is empty on the "
                                   f"{'fixed' if not fixed_channels[0].any() else 'moving'} side")
    keep = [0] + [c for c in range(1, min(len(fixed_channels), len(moving_channels)))
                  if fixed_channels[c].any() and moving_channels[c].any()]

    def tensor(array) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=device)

    fixed_labels = np.stack([fixed_channels[c] for c in keep]).astype(np.float32)
    moving_labels = np.stack([moving_channels[c] for c in keep]).astype(np.float32)
    volumes = PairVolumes(
        fixed.grid, moving.grid, tensor(normalised_intensity(fixed.array)[None]),
        tensor(normalised_intensity(moving.array)[None]), tensor(fixed_labels), tensor(moving_labels),
        tensor(signed_distance_mm(fixed_channels[0], fixed.grid, SDM_CLIP_MM)[None]),
        tensor(signed_distance_mm(moving_channels[0], moving.grid, SDM_CLIP_MM)[None]),
    )
    fixed_gland = Image(fixed_channels[0].astype(np.uint8), fixed.grid)
    return TrainingCase(name, volumes, len(keep) - 1, center_of_mass_mm(fixed_gland), {}, source)


def deepreg_layout(folder: Path) -> bool:
    return all((folder / sub).is_dir() for sub in ("fixed_images", "fixed_labels", "moving_images", "moving_labels"))


def deepreg_names(folder: Path) -> list:
    """Case names present in all four folders of the DeepReg layout, sorted."""
    names = set(_files(folder / "fixed_images"))
    for sub in ("fixed_labels", "moving_images", "moving_labels"):
        names &= set(_files(folder / sub))
    return sorted(names)


def load_deepreg_case(folder: Path, name: str, device=None) -> TrainingCase:
    parts = {sub: _files(folder / sub)[name] for sub in ("fixed_images", "fixed_labels", "moving_images", "moving_labels")}
    fixed = read_image(parts["fixed_images"], "--data")
    moving = read_image(parts["moving_images"], "--data")
    fch = read_label_channels(parts["fixed_labels"], fixed.grid, "--data")
    mch = read_label_channels(parts["moving_labels"], moving.grid, "--data")
    return make_case(name, fixed, moving, list(fch), list(mch), "folder", device)


def cohort_names(folder: Path) -> list:
    """Sub-folders holding ``fixed.*``, ``moving.*``, ``fixed_seg.*`` and ``moving_seg.*``, sorted."""
    def has(case: Path, stem: str) -> bool:
        return any(p.name.startswith(stem + ".") for p in case.iterdir())

    return sorted(p.name for p in folder.iterdir() if p.is_dir() and all(has(p, s) for s in
                                                                          ("fixed", "moving", "fixed_seg", "moving_seg")))


def cohort_gland(path: Path, image: Image) -> Optional[np.ndarray]:
    """The gland (label 1, else the lowest label) of a segmentation file as a boolean mask on ``image``'s grid
    (resampled when the file has another grid); None when it is empty there."""
    from MMRegistrationLib.io.segmentations import read_segmentation
    from MMRegistrationLib.spatial.resample import resample_labels

    labelmap = read_segmentation(path, "--data").labelmap
    if not labelmap.grid.same_as(image.grid):
        labelmap = resample_labels(labelmap, image.grid)
    label = gland_label(labelmap)
    return None if label is None else labelmap.array == label


def load_cohort_case(folder: Path, name: str, device=None) -> TrainingCase:
    from MMRegistrationLib.evaluation.cohort import find_case_file as find_one
    from MMRegistrationLib.io.landmarks import read_landmarks

    case = folder / name
    fixed = read_image(find_one(case, "fixed", "--data", True), "--data")
    moving = read_image(find_one(case, "moving", "--data", True), "--data")
    channels = []
    for side, image in (("fixed", fixed), ("moving", moving)):
        gland = cohort_gland(find_one(case, f"{side}_seg", "--data", True), image)
        if gland is None:
            raise InputError("--data", f"case {name}: {side}_seg is empty on its image's grid")
        path = find_one(case, f"{side}_landmarks", "--data", False)
        points = read_landmarks(path, "--data") if path is not None else None
        channels.append([gland, *_sphere_channels(points, image.grid, LANDMARK_RADIUS_MM)])
    return make_case(name, fixed, moving, channels[0], channels[1], "folder", device)


def folder_cases(folder: Path) -> tuple:
    """``(layout, names)`` of a training folder; :class:`InputError` naming ``--data`` when it holds no case."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("--data", f"{folder} is not a folder")
    if deepreg_layout(folder):
        names = deepreg_names(folder)
        layout = "deepreg"
    else:
        names = cohort_names(folder)
        layout = "cohort"
    if not names:
        raise InputError("--data", f"{folder} holds no case: expected fixed_images/ fixed_labels/ moving_images/ "
                                   "moving_labels/ (DeepReg/MONAI layout) or case folders with fixed.*, moving.*, "
                                   "fixed_seg.*, moving_seg.*")
    return layout, names


def load_folder_case(folder: Path, layout: str, name: str, device=None) -> TrainingCase:
    loader = load_deepreg_case if layout == "deepreg" else load_cohort_case
    return loader(Path(folder), name, device)


def generated_case(seed: int, scale: float, device=None) -> TrainingCase:
    """A generated case (seed ``seed``): oblique on even seeds, deformation 2-8 mm drawn from the seed."""
    from MMRegistrationLib.synthetic import SyntheticCaseConfig, generate_case

    rng = np.random.default_rng(seed)
    config = SyntheticCaseConfig(seed=int(seed), oblique=seed % 2 == 0, scale=float(scale),
                                 deformation_mm=round(float(rng.uniform(2.0, 8.0)), 3))
    case = generate_case(config)
    fixed_channels = [case.fixed_seg.array == 1, *_sphere_channels(case.fixed_landmarks, case.fixed.grid,
                                                                    LANDMARK_RADIUS_MM)]
    moving_channels = [case.moving_seg.array == 1, *_sphere_channels(case.moving_landmarks, case.moving.grid,
                                                                      LANDMARK_RADIUS_MM)]
    return make_case(f"generated{seed}", case.fixed, case.moving, fixed_channels, moving_channels, "generated", device)


def initial_map(case: TrainingCase, init: str, seed: int = 0) -> np.ndarray:
    """The 4x4 fixed -> moving initial transform of ``case`` for ``init`` (cached in ``case.initial``), computed by
    the initialisers registration uses (``center``, ``com``, ``rigid-mask`` from ``com``) on the gland masks."""
    if init not in case.initial:
        v = case.volumes
        fixed_seg = Image(v.fixed_labels[0].cpu().numpy().astype(np.uint8), v.fixed_grid)
        moving_seg = Image(v.moving_labels[0].cpu().numpy().astype(np.uint8), v.moving_grid)
        if init == "center":
            transform = center_init(v.fixed_grid, v.moving_grid, moving_seg)
        else:
            transform = center_of_mass_init(fixed_seg, moving_seg)
            if init == "rigid-mask":
                transform = rigid_mask_init(fixed_seg, moving_seg, initial=transform, seed=seed)
        case.initial[init] = np.asarray(transform.matrix, dtype=np.float64)
    return case.initial[init]


def load_cases(loaders: Sequence, monitor: Monitor, label: str) -> list:
    """Run the case loaders (callables), reporting progress; returns the cases."""
    cases = []
    for index, load in enumerate(loaders):
        monitor.check(label)
        cases.append(load())
        monitor.report((index + 1) / max(1, len(loaders)), f"{label}: {index + 1}/{len(loaders)} cases")
    return cases


def default_data_dir() -> Path:
    """``deepreg_mrus`` in ``$MMREG_DATA`` or in ``../shared/data`` beside the repository."""
    from MMRegistrationLib.training.disa_data import default_data_dir as shared

    return shared() / "deepreg_mrus"
