"""DISA training data (section 1 of :mod:`MMRegistrationLib.training.disa`): real CT/MR, real TRUS and synthetic
MR/TRUS volumes, prepared at the training spacing and paired."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.networks.disa import (
    RECEPTIVE_FIELD,
)
from MMRegistrationLib.similarity.disa import PreparedVolume, prepare_volume
from MMRegistrationLib.similarity.lc2 import (
    DEFAULT_RADII,
    gradient_magnitude,
    patch_variance,
)
from MMRegistrationLib.training.disa_config import (
    PAD,
    TrainingConfig,
)


# =============================================================================================================
# 1. Data
# =============================================================================================================
@dataclass(frozen=True)
class VolumeSource:
    """A real volume under the data folder: name, relative path, modality and field-of-view threshold."""

    name: str
    path: str
    modality: str
    fov_threshold: Optional[float]


REAL_VOLUMES = (
    VolumeSource("porcine_head_ct", "ct_mr_unregistered/porcine_head_ct.nrrd", "ct", -1500.0),  # -2048 padding
    VolumeSource("porcine_head_mr_t2", "ct_mr_unregistered/porcine_head_mr_t2.nrrd", "mr", None),
    VolumeSource("rire001_mr_t1", "ct_mr_unregistered/rire001_mr_t1.nrrd", "mr", None),
    VolumeSource("visible_male_head_ct", "ct_mr_unregistered/visible_male_head_ct.nrrd", "ct", None),
    VolumeSource("visible_male_head_mr", "ct_mr_unregistered/visible_male_head_mr.nrrd", "mr", None),
    VolumeSource("trus_case001", "trus_real/trus_case001.nrrd", "us", 0.0),
    VolumeSource("trus_case002", "trus_real/trus_case002.nrrd", "us", 0.0),
)
"""Real volumes looked for under the data folder (``../shared/data`` layout); missing ones are skipped."""

BRAIN_US_FOLDER = "us_brain_real"
"""Real intra-operative brain ultrasound volumes (RESECT, 0.5 mm; no MR partner): every ``*.nrrd`` there, by name;
the last :attr:`TrainingConfig.heldout_real_us` are held out."""


def brain_us_sources(data_dir) -> list:
    """The real brain ultrasound volumes under ``data_dir`` (sorted by name; empty when the folder is absent)."""
    folder = Path(data_dir) / BRAIN_US_FOLDER if data_dir is not None else None
    if folder is None or not folder.is_dir():
        return []
    return [VolumeSource(f.name.split(".")[0], f"{BRAIN_US_FOLDER}/{f.name}", "us", 0.0)
            for f in sorted(folder.glob("*.nrrd"))]


def crop_around_field_of_view(image, fov_threshold: Optional[float], extent_mm: float):
    """``image`` cropped (in its own index space, no resampling) to at most ``extent_mm`` per axis around the centre
    of its field of view (voxels above ``fov_threshold``; every voxel when None), kept inside the image."""
    from MMRegistrationLib.core.image import Image
    from MMRegistrationLib.similarity.disa import field_of_view_mask

    inside = field_of_view_mask(image.array, fov_threshold)
    centre_kji = np.array(ndimage.center_of_mass(inside)) if inside.any() else (np.array(inside.shape) - 1) / 2.0
    half = np.ceil(0.5 * extent_mm / image.grid.spacing[::-1]).astype(int)  # (k, j, i) voxels
    shape = np.array(image.array.shape)
    start = np.clip(np.round(centre_kji).astype(int) - half, 0, None)
    stop = np.minimum(start + 2 * half, shape)
    start = np.maximum(stop - 2 * half, 0)
    grid = image.grid.cropped(start[::-1].tolist(), stop[::-1].tolist())
    return Image(np.ascontiguousarray(image.array[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]]), grid)


@dataclass(eq=False)
class TrainingVolume:
    """One prepared volume with what the sampler and the batcher need.

    Attributes:
        name, modality: identification (modality ``ct``, ``mr`` or ``us``).
        volume: the :class:`PreparedVolume` (array ``(D, H, W)``, field of view, grid).
        centres: ``(D, H, W)`` bool, voxels whose ``17^3`` neighbourhood is inside the volume and field of view.
        weights: ``(D, H, W)`` float64 LC2 weight ``w(p)`` at valid centres, 0 elsewhere.
        gradient: ``(D, H, W)`` float64 gradient magnitude of the whole volume.
        padded: ``(D + 2 PAD, H + 2 PAD, W + 2 PAD)`` float32 tensor for cropping network inputs.
        source: JSON-friendly description (file, checksum, original geometry).
    """

    name: str
    modality: str
    volume: PreparedVolume
    centres: np.ndarray
    weights: np.ndarray
    gradient: torch.Tensor
    padded: torch.Tensor
    source: dict

    @property
    def shape(self) -> tuple:
        return self.volume.array.shape


@dataclass(frozen=True)
class VolumePair:
    """Two volumes (indices into the volume list) sampled together; ``target``: ``"first"`` (the first volume is
    always the LC2 target, e.g. ultrasound) or ``"random"`` (either, chosen per round)."""

    first: int
    second: int
    target: str = "random"
    split: str = "train"  # "train" (split into train/validation), "heldout" / "heldout_real_us" (evaluation only)


def make_training_volume(
    name: str, modality: str, prepared: PreparedVolume, radii: Sequence[int] = DEFAULT_RADII, source: dict | None = None
) -> TrainingVolume:
    """Valid centres, LC2 weights, gradient and padded copy of a prepared volume.

    Raises :class:`InputError` naming the volume when no voxel has a whole ``17^3`` neighbourhood inside it.
    """
    array = prepared.array
    if min(array.shape) < RECEPTIVE_FIELD:
        raise InputError(
            name, f"is {array.shape} voxels at the working spacing; every axis needs at least {RECEPTIVE_FIELD}"
        )
    centres = ndimage.minimum_filter(prepared.mask.astype(np.uint8), size=RECEPTIVE_FIELD, mode="constant", cval=0) > 0
    if not centres.any():
        raise InputError(name, f"has no {RECEPTIVE_FIELD}^3 neighbourhood inside its field of view")
    big = max(radii)
    weights = np.zeros(array.shape, dtype=np.float64)
    weights[big:-big, big:-big, big:-big] = patch_variance(torch.as_tensor(array, dtype=torch.float64), radii).numpy()
    weights *= centres
    if not weights.sum() > 0:
        raise InputError(name, "is constant wherever a patch fits; nothing to sample")
    volume64 = torch.as_tensor(array, dtype=torch.float64)
    padded = F.pad(torch.as_tensor(array, dtype=torch.float32)[None, None], (PAD,) * 6)[0, 0]
    return TrainingVolume(name, modality, prepared, centres, weights, gradient_magnitude(volume64), padded, source or {})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _describe_image(image, prepared: PreparedVolume) -> dict:
    return {
        "original_size_ijk": [int(v) for v in image.grid.size_ijk],
        "original_spacing_mm": [round(float(v), 4) for v in image.grid.spacing],
        "prepared_shape_kji": [int(v) for v in prepared.array.shape],
        "prepared_spacing_mm": [round(float(v), 4) for v in prepared.grid.spacing],
        "field_of_view_fraction": round(float(prepared.mask.mean()), 4),
    }


def default_data_dir() -> Path:
    """``$MMREG_DATA`` or ``../shared/data`` beside the repository."""
    env = os.environ.get("MMREG_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


def volume_name(name: str, spacing_mm: float, config: TrainingConfig) -> str:
    """A prepared volume's name: the source's at the main spacing, ``name@<spacing>mm`` at an extra one."""
    return name if spacing_mm == config.spacing_mm else f"{name}@{spacing_mm:g}mm"


def _pairs_at(volumes: list, indices: dict, synthetic: list, brain_split: dict) -> list:
    """The volume pairs of one spacing. ``indices``: source name -> volume index (volumes of this spacing);
    ``synthetic``: ``(us index, mr index, split)``; ``brain_split``: brain US source name -> split.

    CT x MR (either is the LC2 target); each real TRUS with a training synthetic MR (real MR without those); each
    real brain US with a real MR (round robin; the held-out ones form the ``heldout_real_us`` pairs); the
    synthetic TRUS/MR pairs (TRUS the target)."""
    def of(modality, synthetic_too=False, names=None):
        return [i for n, i in indices.items() if volumes[i].modality == modality and (names is None or n in names)
                and (synthetic_too or not volumes[i].source.get("generator"))]

    cts, mrs = of("ct"), of("mr")
    pairs = [VolumePair(c, m, "random") for c in cts for m in mrs]
    train_synth_mr = [mr for us, mr, split in synthetic if split == "train" and mr is not None]
    trus = of("us", names={n for n in indices if n not in brain_split})
    for k, us in enumerate(trus):
        if train_synth_mr:
            pairs.append(VolumePair(us, train_synth_mr[k % len(train_synth_mr)], "first"))
        elif mrs:
            pairs.append(VolumePair(us, mrs[k % len(mrs)], "first"))
    partners = mrs or train_synth_mr
    for k, name in enumerate(n for n in brain_split if n in indices):
        if partners:
            pairs.append(VolumePair(indices[name], partners[k % len(partners)], "first", brain_split[name]))
    pairs += [VolumePair(us, mr, "first", split) for us, mr, split in synthetic if us is not None and mr is not None]
    return pairs


def load_training_data(data_dir, config: TrainingConfig, progress=None, cancel=None) -> tuple:
    """Load and prepare every source at every training spacing; returns ``(volumes, pairs, description)``.

    ``pairs`` lists :class:`VolumePair` per spacing (training pairs, held-out real brain ultrasound pairs
    ``heldout_real_us``, held-out synthetic pairs ``heldout``); ``description`` is the JSON-friendly account (used
    volumes with checksums, skipped ones with the reason, pairs, synthetic seeds). A missing ``data_dir`` or missing
    files are skipped (synthetic data alone still trains). At the extra spacings every volume is first cropped to
    ``crop_voxels`` voxels per axis around its field of view (:func:`crop_around_field_of_view`).
    """
    from MMRegistrationLib.io.images import read_image
    from MMRegistrationLib.synthetic import SyntheticCaseConfig, generate_case

    monitor = Monitor.wrap(progress, cancel)
    data_dir = Path(data_dir) if data_dir is not None else None
    volumes: list = []
    skipped: list = []
    spacings = (float(config.spacing_mm),) + tuple(config.extra_spacings_mm)

    def add(name, modality, image, fov_threshold, source, spacing, indices):
        try:
            if spacing != config.spacing_mm:
                image = crop_around_field_of_view(image, fov_threshold, config.crop_voxels * spacing)
            prepared = prepare_volume(image, spacing, fov_threshold, argument=name)
            volume = make_training_volume(volume_name(name, spacing, config), modality, prepared, config.radii,
                                          dict(source, spacing_mm=spacing))
        except InputError as err:
            skipped.append({"name": volume_name(name, spacing, config), "reason": str(err)})
            return None
        volume.source.update(_describe_image(image, prepared))
        indices[name] = len(volumes)
        volumes.append(volume)
        return indices[name]

    found = [s for s in REAL_VOLUMES if data_dir is not None and (data_dir / s.path).is_file()]
    brain = brain_us_sources(data_dir)
    held = min(int(config.heldout_real_us), len(brain))
    brain_split = {src.name: "heldout_real_us" if k >= len(brain) - held else "train" for k, src in enumerate(brain)}
    real = found + brain
    checksums = {src.name: _sha256(data_dir / src.path) for src in real}
    n_synth = int(config.synthetic_cases) + int(config.heldout_synthetic_cases)
    cases = []
    for case_index in range(n_synth):
        seed = int(config.synthetic_seed) + case_index
        monitor.report(0.0, f"data: synthetic case seed {seed}")
        cases.append((seed, generate_case(SyntheticCaseConfig(seed=seed, scale=config.synthetic_scale))))
    steps = max(1, (len(real) + n_synth) * len(spacings))
    pairs = []
    for si, spacing in enumerate(spacings):
        indices: dict = {}
        for step, src in enumerate(real):
            monitor.report((si * (len(real) + n_synth) + step) / steps, f"data: preparing {src.name} at {spacing:g} mm")
            image = read_image(data_dir / src.path, argument=src.name)
            add(src.name, src.modality, image, src.fov_threshold,
                {"file": src.path, "sha256": checksums[src.name], "modality": src.modality,
                 "fov_threshold": src.fov_threshold}, spacing, indices)
        synthetic = []
        for case_index, (seed, case) in enumerate(cases):
            split = "train" if case_index < config.synthetic_cases else "heldout"
            info = {"generator": "MMRegistrationLib.synthetic.generate_case", "seed": seed,
                    "scale": config.synthetic_scale, "split": split}
            us = add(f"synthetic{seed}_trus", "us", case.fixed, 0.0, dict(info, modality="us", fov_threshold=0.0),
                     spacing, indices)
            mr = add(f"synthetic{seed}_mr", "mr", case.moving, None, dict(info, modality="mr", fov_threshold=None),
                     spacing, indices)
            synthetic.append((us, mr, split))
        pairs += _pairs_at(volumes, indices, synthetic, brain_split)
    for missing in (s for s in REAL_VOLUMES if s not in found):
        skipped.append({"name": missing.name, "reason": f"{missing.path} not found under {data_dir}"})
    if not any(p.split == "train" for p in pairs):
        raise InputError("--data", f"no usable training pair (data folder {data_dir}; skipped: {skipped})")
    monitor.report(1.0, f"data: {len(volumes)} volumes, {len(pairs)} pairs")
    description = {
        "data_dir": str(data_dir) if data_dir is not None else None,
        "spacing_mm": config.spacing_mm,
        "extra_spacings_mm": list(config.extra_spacings_mm),
        "crop_voxels_at_extra_spacings": int(config.crop_voxels),
        "normalisation": "zero mean, unit standard deviation inside the field of view; 0 outside",
        "heldout_real_us": [name for name, split in brain_split.items() if split != "train"],
        "volumes": [dict(name=v.name, **v.source) for v in volumes],
        "skipped": skipped,
        "pairs": [
            {"first": volumes[p.first].name, "second": volumes[p.second].name, "target": p.target, "split": p.split}
            for p in pairs
        ],
    }
    return volumes, pairs, description
