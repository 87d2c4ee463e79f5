"""Unsupervised training of the DISA network to approximate LC2 (paper 001), reproducible on a CPU.

Sections of this module:

1. **Data** — volumes from three sources, each resampled to an isotropic ``spacing_mm`` (default 2 mm, as the
   paper), anti-aliased, normalised inside its field of view (:func:`~MMRegistrationLib.similarity.disa.prepare_volume`):
   real CT and MR (``ct_mr_unregistered/``: every usable CT paired with every MR, never registered), real TRUS
   (``trus_real/``, each paired with the MR of a synthetic case) and synthetic MR/TRUS cases from
   :func:`MMRegistrationLib.synthetic.generate_case` (TRUS paired with its own MR; further seeds are held out).
2. **Patch-pair sampler** — for each volume pair, repeatedly: pick the *target* volume (the ultrasound when there is
   one, otherwise either at random: the other one supplies intensity and gradient magnitude); draw a target patch
   centre with probability proportional to the LC2 weight ``w(p)`` (patch variance); compute the LC2 of that patch
   against every patch of a region of the other volume (:class:`~MMRegistrationLib.similarity.lc2.PatchSearch`);
   draw ``t ~ U[0, 1]`` and keep the patch whose LC2 is closest to ``t``. Patch centres are restricted to voxels
   whose ``17^3`` neighbourhood lies inside the volume and its field of view.
3. **Augmentation** — the same random rotation for both ``17^3`` network inputs of a pair (uniform on SO(3), from a
   ``29^3`` crop, trilinear), then an independent random sign and linear intensity change per patch; LC2 is
   invariant to the latter exactly and to the former approximately, so the target is unchanged.
4. **Training loop** — L2 loss between ``<phi(a), phi(b)>`` (centre descriptors, :meth:`DISANet.forward_center`)
   and the LC2 target, Adam with a cosine learning-rate decay, progress and cancel through
   :class:`~MMRegistrationLib.core.progress.Monitor`, bit-for-bit repeatable on a CPU for a seed and an iteration
   count.
5. **Evaluation** — mean squared error (the paper's "patch-wise L2 error") and Pearson correlation between dot
   products and LC2 on held-out pairs, with float and with 8-bit descriptors.
6. **Run** — :func:`run_training` (what ``mmreg train-disa`` calls) and :func:`validate_weights`.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from MMRegistrationLib.core.conventions import ALIGN_CORNERS
from MMRegistrationLib.core.errors import InputError, MMRegError
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.networks.disa import (
    RECEPTIVE_FIELD,
    DISAConfig,
    DISANet,
    quantize_descriptors,
    quantized_dot,
)
from MMRegistrationLib.similarity.disa import DEFAULT_SPACING_MM, PreparedVolume, prepare_volume
from MMRegistrationLib.similarity.lc2 import DEFAULT_RADII, PatchSearch, gradient_magnitude, patch_variance

HALF = RECEPTIVE_FIELD // 2
"""8: a patch centre needs this many voxels of field of view on every side (17^3 network input)."""
CROP_HALF = 14
"""Half-size of the crop a rotated ``17^3`` input is sampled from (``8 sqrt(3) < 14``)."""
PAD = CROP_HALF - HALF
"""Zero padding around stored volumes so every crop around a valid centre fits."""


# =============================================================================================================
# Configuration
# =============================================================================================================
@dataclass(frozen=True)
class TrainingConfig:
    """Every setting of a DISA training run (stored in the weights sidecar).

    Attributes:
        spacing_mm: isotropic working spacing of every volume (paper: 2 mm).
        radii: LC2 patch radii (voxels) averaged into the target (paper: 3, 5, 7).
        samples_per_pair: patch pairs drawn from each volume pair (paper: 5000).
        validation_fraction: share of the drawn pairs held out for validation (same volumes, unseen pairs).
        synthetic_cases: synthetic MR/TRUS cases used for training (seeds ``synthetic_seed + 0 ..``).
        heldout_synthetic_cases: further synthetic cases never trained on (held-out volumes).
        synthetic_seed: first synthetic seed.
        synthetic_scale: ``SyntheticCaseConfig.scale`` of the synthetic cases.
        search_size: the regressor volume is searched in regions of at most this many voxels per axis.
        targets_per_round: target patches searched against one region.
        batch_size: patch pairs per iteration.
        iterations: optimiser steps (``run_training(minutes=...)`` replaces it by what fits the budget).
        learning_rate: initial Adam learning rate; cosine decay to ``learning_rate * final_lr_fraction``.
        final_lr_fraction: see above.
        warmup_iterations: linear warm-up of the learning rate.
        rotation: ``"uniform"`` (random rotation, paper), ``"octahedral"`` (the 48 exact cube symmetries) or
            ``"none"``.
        intensity_scale: range of the random intensity factor (log-uniform), applied per patch with a random sign.
        intensity_shift: range ``[-s, s]`` of the random intensity offset per patch.
        seed: seeds data sampling, network initialisation and augmentation.
        network: widths of the network.
    """

    spacing_mm: float = DEFAULT_SPACING_MM
    radii: tuple = DEFAULT_RADII
    samples_per_pair: int = 5000
    validation_fraction: float = 0.1
    synthetic_cases: int = 4
    heldout_synthetic_cases: int = 1
    synthetic_seed: int = 1000
    synthetic_scale: float = 1.0
    search_size: int = 64
    targets_per_round: int = 16
    batch_size: int = 128
    iterations: int = 8000
    learning_rate: float = 2e-3
    final_lr_fraction: float = 0.02
    warmup_iterations: int = 100
    rotation: str = "uniform"
    intensity_scale: tuple = (0.5, 2.0)
    intensity_shift: float = 0.5
    seed: int = 0
    network: DISAConfig = field(default_factory=DISAConfig)

    def __post_init__(self):
        if self.rotation not in ("uniform", "octahedral", "none"):
            raise InputError("rotation", f"must be 'uniform', 'octahedral' or 'none', got {self.rotation!r}")
        for name in ("samples_per_pair", "batch_size", "iterations", "search_size", "targets_per_round"):
            if int(getattr(self, name)) < 1:
                raise InputError(name, f"must be a positive integer, got {getattr(self, name)}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise InputError("validation_fraction", f"must be in [0, 1), got {self.validation_fraction}")
        if int(self.search_size) < 2 * max(self.radii) + 1:
            raise InputError("search_size", f"must hold one patch ({2 * max(self.radii) + 1} voxels), got {self.search_size}")
        if max(self.radii) > HALF - 1:
            raise InputError("radii", f"the network sees 17^3 voxels: the largest radius is {HALF - 1}, got {max(self.radii)}")
        object.__setattr__(self, "radii", tuple(int(r) for r in self.radii))
        object.__setattr__(self, "intensity_scale", tuple(float(v) for v in self.intensity_scale))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["radii"] = list(self.radii)
        data["intensity_scale"] = list(self.intensity_scale)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingConfig":
        data = dict(data)
        data["network"] = DISAConfig.from_dict(data.get("network", {}))
        return cls(**data)


def samples_per_pair_for_budget(minutes: float) -> int:
    """Patch pairs per volume pair for a time budget (90 per minute, at most the paper's 5000).

    On one CPU thread sampling then takes about a fifth of the budget with the default data (about 40 ms per pair
    for the CT/MR pairs, 5 ms for the ultrasound ones). A function of ``minutes`` only (not of the machine), so a
    budgeted run samples the same pairs everywhere.
    """
    return int(min(5000, max(100, round(90.0 * float(minutes)))))


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
        monitor.report(step / steps, f"preparing {src.name}")
        path = data_dir / src.path
        image = read_image(path, argument=src.name)
        add(src.name, src.modality, image, src.fov_threshold,
            {"file": src.path, "sha256": _sha256(path), "modality": src.modality, "fov_threshold": src.fov_threshold})
    for missing in (s for s in REAL_VOLUMES if s not in real):
        skipped.append({"name": missing.name, "reason": f"{missing.path} not found under {data_dir}"})

    synthetic = []
    for case_index in range(n_synth):
        seed = int(config.synthetic_seed) + case_index
        monitor.report((len(real) + case_index) / steps, f"synthetic case seed {seed}")
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
    monitor.report(1.0, f"{len(volumes)} volumes, {len(pairs)} pairs")
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


# =============================================================================================================
# 2. Patch-pair sampler
# =============================================================================================================
@dataclass
class PatchPairs:
    """Sampled patch pairs (rows correspond).

    Attributes:
        volume_a, volume_b: ``(N,)`` int volume indices (``a`` = LC2 target, ``b`` = regressor).
        centre_a, centre_b: ``(N, 3)`` int ``(k, j, i)`` patch centres.
        target: ``(N,)`` float32 LC2 of the pair, in [0, 1].
        pair: ``(N,)`` int index of the :class:`VolumePair` they come from.
    """

    volume_a: np.ndarray
    centre_a: np.ndarray
    volume_b: np.ndarray
    centre_b: np.ndarray
    target: np.ndarray
    pair: np.ndarray

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def subset(self, rows) -> "PatchPairs":
        return PatchPairs(*(np.asarray(getattr(self, f))[rows] for f in self.__dataclass_fields__))

    @classmethod
    def concatenate(cls, parts: Sequence["PatchPairs"]) -> "PatchPairs":
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))

    @classmethod
    def empty(cls) -> "PatchPairs":
        z = np.zeros(0, dtype=np.int64)
        return cls(z, np.zeros((0, 3), np.int64), z, np.zeros((0, 3), np.int64), np.zeros(0, np.float32), z)

    def histogram(self, bins: int = 10) -> list:
        """Counts of the targets in ``bins`` equal bins over [0, 1]."""
        return np.histogram(self.target, bins=bins, range=(0.0, 1.0))[0].astype(int).tolist()


class PatchPairSampler:
    """The LC2-targeted sampler of the paper (see the module docstring, section 2).

    Args:
        volumes: the :class:`TrainingVolume` list the pairs refer to.
        radii: LC2 radii.
        search_size: largest region (voxels per axis) of the regressor volume searched at once.
        targets_per_round: target patches per searched region.
        rng: numpy ``Generator`` (all randomness of the sampler).
    """

    def __init__(self, volumes: Sequence[TrainingVolume], radii=DEFAULT_RADII, search_size: int = 64,
                 targets_per_round: int = 16, rng: np.random.Generator | None = None):
        self.volumes = list(volumes)
        self.radii = tuple(radii)
        self.margin = max(self.radii)
        self.search_size = int(search_size)
        self.targets_per_round = int(targets_per_round)
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def _region(self, volume: TrainingVolume) -> tuple:
        """Random region ``(start, stop)`` (per axis) of at most ``search_size`` voxels that holds valid centres."""
        shape = np.array(volume.shape)
        size = np.minimum(shape, self.search_size)
        valid = np.argwhere(volume.centres)
        for _ in range(20):
            # centre the region on a random valid centre so that it always holds candidates
            centre = valid[self.rng.integers(len(valid))]
            start = np.clip(centre - size // 2, 0, shape - size)
            stop = start + size
            inner = volume.centres[tuple(slice(a + self.margin, b - self.margin) for a, b in zip(start, stop))]
            if inner.any():
                return start, stop
        raise MMRegError(f"sampler: no valid patch centre found in regions of {volume.name}")

    def _targets(self, volume: TrainingVolume, count: int) -> np.ndarray:
        """``(count, 3)`` centres drawn with probability proportional to the LC2 weight."""
        flat = volume.weights.ravel()
        chosen = self.rng.choice(flat.size, size=count, p=flat / flat.sum())
        return np.stack(np.unravel_index(chosen, volume.shape), axis=1)

    def round(self, pair_index: int, pair: VolumePair, count: int) -> PatchPairs:
        """Up to ``count`` pairs (one searched region of the regressor volume)."""
        first, second = pair.first, pair.second
        if pair.target == "random" and self.rng.random() < 0.5:
            first, second = second, first
        va, vb = self.volumes[first], self.volumes[second]
        r = self.margin
        centres_a = self._targets(va, count)
        patches = np.stack([va.volume.array[k - r:k + r + 1, j - r:j + r + 1, i - r:i + r + 1] for k, j, i in centres_a])
        start, stop = self._region(vb)
        box = tuple(slice(a, b) for a, b in zip(start, stop))
        search = PatchSearch(vb.volume.array[box], self.radii, gradient=vb.gradient[box], dtype=torch.float32)
        lc2, _ = search(torch.as_tensor(patches))
        lc2 = lc2.numpy()
        valid = vb.centres[tuple(slice(a + r, b - r) for a, b in zip(start, stop))]
        flat_valid = np.flatnonzero(valid.ravel())
        values = lc2.reshape(count, -1)[:, flat_valid]  # (count, candidates)
        t = self.rng.random(count)
        best = np.abs(values - t[:, None]).argmin(axis=1)
        local = np.stack(np.unravel_index(flat_valid[best], valid.shape), axis=1)
        centres_b = local + start + r
        target = values[np.arange(count), best].astype(np.float32)
        n = np.full(count, first, np.int64), np.full(count, second, np.int64)
        return PatchPairs(n[0], centres_a.astype(np.int64), n[1], centres_b.astype(np.int64), target,
                          np.full(count, pair_index, np.int64))

    def sample(self, pair_index: int, pair: VolumePair, count: int, monitor: Monitor | None = None) -> PatchPairs:
        """``count`` patch pairs from one volume pair."""
        monitor = monitor or Monitor()
        parts, done = [], 0
        while done < count:
            n = min(self.targets_per_round, count - done)
            parts.append(self.round(pair_index, pair, n))
            done += n
            monitor.report(done / count, f"sampling {self.volumes[pair.first].name} / {self.volumes[pair.second].name}")
        return PatchPairs.concatenate(parts)


# =============================================================================================================
# 3. Augmentation and network inputs
# =============================================================================================================
def random_rotations(count: int, kind: str, generator: torch.Generator) -> torch.Tensor:
    """``(count, 3, 3)`` rotation matrices: uniform on SO(3) (normalised Gaussian quaternions), the 48 signed
    axis permutations (``octahedral``), or identities."""
    if kind == "none":
        return torch.eye(3).expand(count, 3, 3).clone()
    if kind == "octahedral":
        perms = torch.stack([torch.randperm(3, generator=generator) for _ in range(count)])
        signs = torch.randint(0, 2, (count, 3), generator=generator).float() * 2 - 1
        mats = torch.zeros(count, 3, 3)
        mats.scatter_(2, perms[:, :, None], signs[:, :, None])
        return mats
    q = torch.randn(count, 4, generator=generator)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


class PatchBatcher:
    """Network inputs ``(2B, 1, 17, 17, 17)`` for a batch of patch pairs (rows ``0..B-1``: patches ``a``;
    ``B..2B-1``: patches ``b``), augmented or plain centre crops."""

    def __init__(self, volumes: Sequence[TrainingVolume], config: TrainingConfig, generator: torch.Generator | None = None):
        self.volumes = list(volumes)
        self.config = config
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        n = RECEPTIVE_FIELD
        self._base = F.affine_grid(torch.eye(3, 4)[None] * 1.0, (1, 1, n, n, n), align_corners=ALIGN_CORNERS)

    def _crops(self, volume_index: np.ndarray, centres: np.ndarray, half: int) -> torch.Tensor:
        out = []
        for v, (k, j, i) in zip(volume_index, centres):
            padded = self.volumes[int(v)].padded
            k, j, i = k + PAD, j + PAD, i + PAD
            out.append(padded[k - half:k + half + 1, j - half:j + half + 1, i - half:i + half + 1])
        return torch.stack(out)[:, None]

    def inputs(self, pairs: PatchPairs, augment: bool) -> torch.Tensor:
        """``(2B, 1, 17, 17, 17)`` float32 network inputs for the pairs (augmented when ``augment``)."""
        volume_index = np.concatenate([pairs.volume_a, pairs.volume_b])
        centres = np.concatenate([pairs.centre_a, pairs.centre_b])
        if not augment or self.config.rotation == "none":
            x = self._crops(volume_index, centres, HALF)
        else:
            b = len(pairs)
            rot = random_rotations(b, self.config.rotation, self.generator).repeat(2, 1, 1)  # same for a and b
            theta = torch.cat([rot * (HALF / CROP_HALF), torch.zeros(2 * b, 3, 1)], dim=2)
            grid = F.affine_grid(theta, (2 * b, 1) + (RECEPTIVE_FIELD,) * 3, align_corners=ALIGN_CORNERS)
            crops = self._crops(volume_index, centres, CROP_HALF)
            x = F.grid_sample(crops, grid, mode="bilinear", padding_mode="zeros", align_corners=ALIGN_CORNERS)
        if augment:
            n = x.shape[0]
            lo, hi = (math.log(v) for v in self.config.intensity_scale)
            scale = torch.exp(lo + (hi - lo) * torch.rand(n, generator=self.generator))
            sign = torch.randint(0, 2, (n,), generator=self.generator).float() * 2 - 1
            shift = (torch.rand(n, generator=self.generator) * 2 - 1) * self.config.intensity_shift
            x = x * (sign * scale).view(n, 1, 1, 1, 1) + shift.view(n, 1, 1, 1, 1)
        return x


# =============================================================================================================
# 4. Training loop
# =============================================================================================================
@dataclass
class TrainingHistory:
    """Per logged step: iteration, mean loss since the previous log, learning rate, elapsed seconds."""

    iteration: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    learning_rate: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    stopped_at: Optional[int] = None
    """Set when a deadline ended the run before the planned iterations (steps actually made)."""

    def to_csv(self) -> str:
        rows = ["iteration,loss,learning_rate,seconds"]
        rows += [f"{i},{l:.6g},{r:.6g},{s:.2f}" for i, l, r, s in zip(self.iteration, self.loss, self.learning_rate, self.seconds)]
        return "\n".join(rows) + "\n"


def learning_rate_at(step: int, config: TrainingConfig, total: int) -> float:
    """Linear warm-up, then cosine decay from ``learning_rate`` to ``learning_rate * final_lr_fraction``."""
    base = config.learning_rate
    warm = min(config.warmup_iterations, max(1, total // 10))
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    low = base * config.final_lr_fraction
    return low + 0.5 * (base - low) * (1 + math.cos(math.pi * min(1.0, progress)))


def pair_loss(network: DISANet, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between ``<phi(a), phi(b)>`` and the LC2 target (the paper's L2 loss)."""
    desc = network.forward_center(inputs)
    b = target.shape[0]
    dots = (desc[:b] * desc[b:]).sum(dim=1)
    return ((dots - target) ** 2).mean()


def train_network(
    network: DISANet,
    batcher: PatchBatcher,
    train: PatchPairs,
    config: TrainingConfig,
    iterations: int,
    device=None,
    rng: np.random.Generator | None = None,
    progress=None,
    cancel=None,
    log_every: int = 50,
    deadline: float | None = None,
) -> TrainingHistory:
    """Optimise ``network`` in place for ``iterations`` steps of ``batch_size`` pairs (epoch-wise shuffling).

    Deterministic on a CPU for the same network state, pairs, ``rng`` and batcher generator. ``deadline``
    (``time.perf_counter()`` value) is a safety net for time budgets: past it the loop stops early and
    ``history.stopped_at`` records the steps made.
    """
    if len(train) == 0:
        raise MMRegError("train_network: no training pairs")
    monitor = Monitor.wrap(progress, cancel)
    device = torch.device(device) if device is not None else torch.device("cpu")
    rng = rng if rng is not None else np.random.default_rng(0)
    network.to(device).train()
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    history = TrainingHistory()
    order, cursor = rng.permutation(len(train)), 0
    running, seen, start = 0.0, 0, time.perf_counter()
    batch = min(int(config.batch_size), len(train))
    for step in range(int(iterations)):
        monitor.check("training")
        if deadline is not None and time.perf_counter() > deadline:
            history.stopped_at = step
            break
        if cursor + batch > len(order):
            order, cursor = rng.permutation(len(train)), 0
        rows = order[cursor:cursor + batch]
        cursor += batch
        pairs = train.subset(rows)
        inputs = batcher.inputs(pairs, augment=True).to(device)
        target = torch.as_tensor(pairs.target, device=device)
        lr = learning_rate_at(step, config, int(iterations))
        for group in optimiser.param_groups:
            group["lr"] = lr
        loss = pair_loss(network, inputs, target)
        if not torch.isfinite(loss):
            raise MMRegError(f"train_network: the loss became {loss.item()} at iteration {step}; lower the learning rate")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        running += float(loss.detach())
        seen += 1
        if (step + 1) % log_every == 0 or step + 1 == iterations or (
            deadline is not None and time.perf_counter() > deadline
        ):
            history.iteration.append(step + 1)
            history.loss.append(running / seen)
            history.learning_rate.append(lr)
            history.seconds.append(time.perf_counter() - start)
            monitor.report((step + 1) / iterations, f"training {step + 1}/{iterations}, loss {running / seen:.4f}")
            running, seen = 0.0, 0
    network.eval()
    return history


def seconds_per_iteration(network: DISANet, batcher: PatchBatcher, train: PatchPairs, config: TrainingConfig,
                          device=None, repeats: int = 8) -> float:
    """Median wall time of one training step, measured on copies (the network, its RNG streams untouched)."""
    net = copy.deepcopy(network).to(device or "cpu").train()
    probe = PatchBatcher(batcher.volumes, config, torch.Generator().manual_seed(12345))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-4)
    rows = np.random.default_rng(12345).integers(0, len(train), size=min(config.batch_size, len(train)))
    pairs = train.subset(rows)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss = pair_loss(net, probe.inputs(pairs, augment=True).to(device or "cpu"),
                         torch.as_tensor(pairs.target, device=device or "cpu"))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:] if len(times) > 2 else times))


# =============================================================================================================
# 5. Evaluation
# =============================================================================================================
def predict(network: DISANet, batcher: PatchBatcher, pairs: PatchPairs, device=None, batch_size: int = 256,
            quantized: bool = False) -> np.ndarray:
    """``(N,)`` descriptor dot products of the pairs (plain centre crops; 8-bit descriptors if ``quantized``)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    network.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            part = pairs.subset(np.arange(start, min(len(pairs), start + batch_size)))
            desc = network.forward_center(batcher.inputs(part, augment=False).to(device))
            b = len(part)
            if quantized:
                q = quantize_descriptors(desc)
                out.append(quantized_dot(q[:b], q[b:]).cpu().numpy())
            else:
                out.append((desc[:b] * desc[b:]).sum(dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def agreement(prediction: np.ndarray, target: np.ndarray) -> dict:
    """``mse`` (the paper's patch-wise L2 error), ``rmse``, ``mae``, Pearson ``r`` and ``n``."""
    prediction = np.asarray(prediction, np.float64)
    target = np.asarray(target, np.float64)
    if prediction.size < 2:
        return {"n": int(prediction.size), "mse": None, "rmse": None, "mae": None, "pearson": None}
    err = prediction - target
    with np.errstate(invalid="ignore", divide="ignore"):
        r = float(np.corrcoef(prediction, target)[0, 1]) if prediction.std() > 0 and target.std() > 0 else float("nan")
    return {"n": int(prediction.size), "mse": float(np.mean(err**2)), "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))), "pearson": r}


def evaluate(network: DISANet, batcher: PatchBatcher, pairs: PatchPairs, device=None) -> dict:
    """:func:`agreement` of float and 8-bit descriptors on ``pairs`` (``{"float": ..., "int8": ...}``)."""
    return {
        "float": agreement(predict(network, batcher, pairs, device), pairs.target),
        "int8": agreement(predict(network, batcher, pairs, device, quantized=True), pairs.target),
        "target_histogram": pairs.histogram(),
    }


# =============================================================================================================
# 6. Run
# =============================================================================================================
@dataclass
class SampledData:
    """Everything sampled for one run: volumes, pairs and the three patch-pair sets."""

    volumes: list
    pairs: list
    description: dict
    train: PatchPairs
    validation: PatchPairs
    heldout: PatchPairs
    seconds: float


def sample_data(volumes, pairs, config: TrainingConfig, rng: np.random.Generator, progress=None, cancel=None) -> tuple:
    """``(train, validation, heldout)`` patch pairs: ``samples_per_pair`` from each pair, the training pairs'
    samples split by ``validation_fraction``; held-out pairs are evaluation only."""
    monitor = Monitor.wrap(progress, cancel)
    sampler = PatchPairSampler(volumes, config.radii, config.search_size, config.targets_per_round, rng)
    train_parts, val_parts, held_parts = [], [], []
    for index, pair in enumerate(pairs):
        part = sampler.sample(index, pair, int(config.samples_per_pair),
                              monitor.stage(index / len(pairs), (index + 1) / len(pairs)))
        if pair.split == "heldout":
            held_parts.append(part)
            continue
        perm = rng.permutation(len(part))
        n_val = int(round(config.validation_fraction * len(part)))
        val_parts.append(part.subset(np.sort(perm[:n_val])))
        train_parts.append(part.subset(np.sort(perm[n_val:])))
    return tuple(PatchPairs.concatenate(p) for p in (train_parts, val_parts, held_parts))


def prepare_run(data_dir, config: TrainingConfig, progress=None, cancel=None) -> SampledData:
    """Load the data and sample the patch pairs (deterministic for ``config.seed``)."""
    monitor = Monitor.wrap(progress, cancel)
    t0 = time.perf_counter()
    volumes, pairs, description = load_training_data(data_dir, config, monitor.stage(0.0, 0.25))
    rng = np.random.default_rng([int(config.seed), 1])
    train, validation, heldout = sample_data(volumes, pairs, config, rng, monitor.stage(0.25, 1.0))
    description["samples"] = {
        "per_pair": int(config.samples_per_pair),
        "train": len(train), "validation": len(validation), "heldout": len(heldout),
        "train_target_histogram_10_bins": train.histogram(),
    }
    return SampledData(volumes, pairs, description, train, validation, heldout, time.perf_counter() - t0)


@dataclass
class TrainingResult:
    """A trained network with its account: history, metrics, data description, timings and settings."""

    network: DISANet
    config: TrainingConfig
    history: TrainingHistory
    metrics: dict
    description: dict
    timings: dict


def run_training(
    data_dir=None,
    config: TrainingConfig | None = None,
    minutes: float | None = None,
    device="cpu",
    progress=None,
    cancel=None,
    samples_from_budget: bool = True,
) -> TrainingResult:
    """Train a DISA network from scratch.

    Args:
        data_dir: folder laid out like ``../shared/data`` (None: synthetic data only).
        config: settings; with ``minutes`` its ``samples_per_pair`` comes from
            :func:`samples_per_pair_for_budget` and its ``iterations`` from the measured step time so that the
            whole run fits ``minutes`` (the chosen counts are recorded: ``config`` of the result reproduces the
            run bit for bit on a CPU).
        minutes: wall-clock budget, or None to run ``config.iterations``.
        samples_from_budget: with ``minutes``, take ``samples_per_pair`` from the budget (False: keep the config's).
        device: torch device for the network (sampling runs on the CPU).
        progress, cancel: see :mod:`MMRegistrationLib.core.progress`.
    """
    from MMRegistrationLib.core.device import resolve_device

    t_start = time.perf_counter()
    config = config or TrainingConfig()
    if minutes is not None:
        if not minutes > 0:
            raise InputError("--minutes", f"must be positive, got {minutes}")
        if samples_from_budget:
            config = replace(config, samples_per_pair=samples_per_pair_for_budget(minutes))
    device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    monitor = Monitor.wrap(progress, cancel)
    data = prepare_run(data_dir, config, monitor.stage(0.0, 0.3))
    torch.manual_seed(int(config.seed))
    network = DISANet(config.network).to(device)
    batcher = PatchBatcher(data.volumes, config, torch.Generator().manual_seed(int(config.seed) + 1))
    step_seconds = seconds_per_iteration(network, batcher, data.train, config, device)
    deadline = None
    if minutes is not None:
        reserve = min(30.0, 6.0 * minutes) + 0.02 * 60.0 * minutes  # evaluation and saving
        deadline = t_start + 60.0 * minutes - reserve
        left = deadline - time.perf_counter()
        iterations = int(max(1, left // (1.05 * step_seconds)))  # 5 % margin for a machine that slows down
        config = replace(config, iterations=iterations)
    t_train = time.perf_counter()
    history = train_network(network, batcher, data.train, config, config.iterations, device,
                            np.random.default_rng([int(config.seed), 2]), monitor.stage(0.3, 0.97),
                            deadline=deadline)
    train_seconds = time.perf_counter() - t_train
    monitor.report(0.97, "evaluating")
    metrics = {
        "validation": evaluate(network, batcher, data.validation, device),
        "heldout_volumes": evaluate(network, batcher, data.heldout, device) if len(data.heldout) else None,
        "final_training_loss": history.loss[-1] if history.loss else None,
        "iterations_run": history.stopped_at if history.stopped_at is not None else config.iterations,
    }
    timings = {
        "data_and_sampling_s": round(data.seconds, 1),
        "seconds_per_iteration_measured": round(step_seconds, 4),
        "training_s": round(train_seconds, 1),
        "total_s": round(time.perf_counter() - t_start, 1),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    monitor.report(1.0, "done")
    return TrainingResult(network.cpu(), config, history, metrics, data.description, timings)


def reproduce_command(config: TrainingConfig) -> str:
    """The ``mmreg train-disa`` line that repeats a run with ``config`` exactly (on a CPU)."""
    default = TrainingConfig()
    parts = [f"mmreg train-disa --iterations {config.iterations}",
             f"--samples-per-pair {config.samples_per_pair} --seed {config.seed}"]
    for name, flag in (("batch_size", "--batch-size"), ("synthetic_cases", "--synthetic-cases"),
                       ("synthetic_scale", "--synthetic-scale")):
        if getattr(config, name) != getattr(default, name):
            parts.append(f"{flag} {getattr(config, name)}")
    return " ".join(parts) + " --device cpu --out DIR"


def training_record(result: TrainingResult, command: str | None = None) -> dict:
    """The ``training`` block of the weights sidecar."""
    reproduce = command or reproduce_command(result.config)
    if result.history.stopped_at is not None:
        reproduce = (f"(the time budget stopped this run after {result.history.stopped_at} of "
                     f"{result.config.iterations} planned iterations; this repeats the planned run) {reproduce}")
    return {
        "objective": "L2 between descriptor dot products and patch LC2 (mean over radii), paper 001",
        "config": result.config.to_dict(),
        "reproduce": reproduce,
        "data": result.description,
        "metrics": result.metrics,
        "timings": result.timings,
    }


def validate_weights(weights_path, data_dir=None, overrides: dict | None = None, device="cpu",
                     progress=None, cancel=None) -> dict:
    """Evaluate saved weights on freshly sampled pairs (a different seed from training) and held-out volumes.

    The data settings are the ones stored in the sidecar (``samples_per_pair`` capped at 300 for speed), then
    ``overrides`` (``TrainingConfig`` field -> value). Returns ``{"weights", "sha256", "samples_per_pair",
    "fresh_pairs": metrics, "heldout_volumes": metrics}`` (see :func:`evaluate`).
    """
    from MMRegistrationLib.core.device import resolve_device
    from MMRegistrationLib.networks.disa import load_disa

    device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    network, meta = load_disa(weights_path, device=device)
    stored = (meta.get("training") or {}).get("config")
    try:
        config = TrainingConfig.from_dict(stored) if stored else TrainingConfig()
    except TypeError as err:
        raise InputError("--weights", f"the training config in the sidecar of {weights_path} is not readable ({err})") from err
    config = replace(config, samples_per_pair=min(config.samples_per_pair, 300))
    config = replace(config, **dict(overrides or {}))
    config = replace(config, seed=int(config.seed) + 7919, validation_fraction=0.0)
    data = prepare_run(data_dir, config, progress, cancel)
    batcher = PatchBatcher(data.volumes, config)
    return {
        "weights": str(weights_path),
        "sha256": meta["sha256"],
        "samples_per_pair": config.samples_per_pair,
        "fresh_pairs": evaluate(network, batcher, data.train, device),
        "heldout_volumes": evaluate(network, batcher, data.heldout, device) if len(data.heldout) else None,
    }
