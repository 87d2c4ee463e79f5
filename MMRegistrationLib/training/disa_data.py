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
    split: str = "train"  # "train" (split into train/validation) or "heldout" (evaluation only)


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


def load_training_data(data_dir, config: TrainingConfig, progress=None, cancel=None) -> tuple:
    """Load and prepare every source; returns ``(volumes, pairs, description)``.

    ``pairs`` lists :class:`VolumePair` (training pairs, then held-out synthetic pairs); ``description`` is the
    JSON-friendly account (used volumes with checksums, skipped ones with the reason, pairs, synthetic seeds).
    A missing ``data_dir`` or missing files are skipped (synthetic data alone still trains).
    """
    from MMRegistrationLib.io.images import read_image
    from MMRegistrationLib.synthetic import SyntheticCaseConfig, generate_case

    monitor = Monitor.wrap(progress, cancel)
    data_dir = Path(data_dir) if data_dir is not None else None
    volumes: list = []
    skipped: list = []
    index: dict = {}

    def add(name, modality, image, fov_threshold, source):
        try:
            prepared = prepare_volume(image, config.spacing_mm, fov_threshold, argument=name)
            volume = make_training_volume(name, modality, prepared, config.radii, source)
        except InputError as err:
            skipped.append({"name": name, "reason": str(err)})
            return None
        volume.source.update(_describe_image(image, prepared))
        index[name] = len(volumes)
        volumes.append(volume)
        return index[name]

    real = [s for s in REAL_VOLUMES if data_dir is not None and (data_dir / s.path).is_file()]
    n_synth = int(config.synthetic_cases) + int(config.heldout_synthetic_cases)
    steps = max(1, len(real) + n_synth)
    for step, src in enumerate(real):
        monitor.report(step / steps, f"data: preparing {src.name}")
        path = data_dir / src.path
        image = read_image(path, argument=src.name)
        add(src.name, src.modality, image, src.fov_threshold,
            {"file": src.path, "sha256": _sha256(path), "modality": src.modality, "fov_threshold": src.fov_threshold})
    for missing in (s for s in REAL_VOLUMES if s not in real):
        skipped.append({"name": missing.name, "reason": f"{missing.path} not found under {data_dir}"})

    synthetic = []
    for case_index in range(n_synth):
        seed = int(config.synthetic_seed) + case_index
        monitor.report((len(real) + case_index) / steps, f"data: synthetic case seed {seed}")
        case = generate_case(SyntheticCaseConfig(seed=seed, scale=config.synthetic_scale))
        split = "train" if case_index < config.synthetic_cases else "heldout"
        info = {"generator": "MMRegistrationLib.synthetic.generate_case", "seed": seed,
                "scale": config.synthetic_scale, "split": split}
        us = add(f"synthetic{seed}_trus", "us", case.fixed, 0.0, dict(info, modality="us", fov_threshold=0.0))
        mr = add(f"synthetic{seed}_mr", "mr", case.moving, None, dict(info, modality="mr", fov_threshold=None))
        synthetic.append((us, mr, split))

    pairs = []
    cts = [i for i, v in enumerate(volumes) if v.modality == "ct"]
    mrs = [i for i, v in enumerate(volumes) if v.modality == "mr" and not v.name.startswith("synthetic")]
    pairs += [VolumePair(c, m, "random") for c in cts for m in mrs]
    train_synth_mr = [mr for us, mr, split in synthetic if split == "train" and mr is not None]
    real_us = [i for i, v in enumerate(volumes) if v.modality == "us" and not v.name.startswith("synthetic")]
    for k, us in enumerate(real_us):
        if train_synth_mr:
            pairs.append(VolumePair(us, train_synth_mr[k % len(train_synth_mr)], "first"))
        elif mrs:
            pairs.append(VolumePair(us, mrs[k % len(mrs)], "first"))
    pairs += [VolumePair(us, mr, "first", split) for us, mr, split in synthetic if us is not None and mr is not None]
    if not any(p.split == "train" for p in pairs):
        raise InputError("--data", f"no usable training pair (data folder {data_dir}; skipped: {skipped})")
    monitor.report(1.0, f"data: {len(volumes)} volumes, {len(pairs)} pairs")
    description = {
        "data_dir": str(data_dir) if data_dir is not None else None,
        "spacing_mm": config.spacing_mm,
        "normalisation": "zero mean, unit standard deviation inside the field of view; 0 outside",
        "volumes": [dict(name=v.name, **v.source) for v in volumes],
        "skipped": skipped,
        "pairs": [
            {"first": volumes[p.first].name, "second": volumes[p.second].name, "target": p.target, "split": p.split}
            for p in pairs
        ],
    }
    return volumes, pairs, description
