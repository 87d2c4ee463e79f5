"""Configuration of the DISA training (see :mod:`MMRegistrationLib.training.disa`): the patch geometry constants and
:class:`TrainingConfig`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.networks.disa import (
    RECEPTIVE_FIELD,
    DISAConfig,
)
from MMRegistrationLib.similarity.disa import DEFAULT_SPACING_MM
from MMRegistrationLib.similarity.lc2 import DEFAULT_RADII

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
        spacing_mm: isotropic working spacing of every whole volume (paper: 2 mm).
        extra_spacings_mm: finer spacings at which every volume is also prepared, cropped to ``crop_voxels`` per
            axis around its field of view's centre, so that the descriptors also fit the fine working spacings
            registration picks for small fields of view (DISA registration works from 0.1 to 2 mm: a network that
            saw only 2 mm data has never seen speckle at its own scale). Pairs are formed within one spacing.
        crop_voxels: the crop of the ``extra_spacings_mm`` volumes (voxels per axis).
        heldout_real_us: real brain ultrasound volumes (the last ones by name) never trained on: their patch pairs
            are the held-out real-ultrasound metrics.
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
    extra_spacings_mm: tuple = (1.0, 0.5)
    crop_voxels: int = 96
    heldout_real_us: int = 4
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
        for name in ("samples_per_pair", "batch_size", "iterations", "search_size", "targets_per_round",
                     "crop_voxels"):
            if int(getattr(self, name)) < 1:
                raise InputError(name, f"must be a positive integer, got {getattr(self, name)}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise InputError("validation_fraction", f"must be in [0, 1), got {self.validation_fraction}")
        if int(self.search_size) < 2 * max(self.radii) + 1:
            raise InputError("search_size", f"must hold one patch ({2 * max(self.radii) + 1} voxels), got {self.search_size}")
        if max(self.radii) > HALF - 1:
            raise InputError("radii", f"the network sees 17^3 voxels: the largest radius is {HALF - 1}, got {max(self.radii)}")
        if int(self.crop_voxels) < RECEPTIVE_FIELD + 2 * max(self.radii):
            raise InputError("crop_voxels", f"must hold a patch and its search margin ({RECEPTIVE_FIELD + 2 * max(self.radii)}"
                             f" voxels), got {self.crop_voxels}")
        if int(self.heldout_real_us) < 0:
            raise InputError("heldout_real_us", f"must be 0 or more, got {self.heldout_real_us}")
        extra = tuple(float(v) for v in self.extra_spacings_mm)
        if any(not 0.1 <= v <= 20.0 for v in extra) or len(set(extra + (float(self.spacing_mm),))) != len(extra) + 1:
            raise InputError("extra_spacings_mm", f"must be distinct spacings in [0.1, 20] mm other than spacing_mm, "
                             f"got {list(extra)}")
        object.__setattr__(self, "extra_spacings_mm", extra)
        object.__setattr__(self, "radii", tuple(int(r) for r in self.radii))
        object.__setattr__(self, "intensity_scale", tuple(float(v) for v in self.intensity_scale))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["radii"] = list(self.radii)
        data["extra_spacings_mm"] = list(self.extra_spacings_mm)
        data["intensity_scale"] = list(self.intensity_scale)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingConfig":
        data = dict(data)
        data["network"] = DISAConfig.from_dict(data.get("network", {}))
        return cls(**data)


def samples_per_pair_for_budget(minutes: float, spacings: int = 1) -> int:
    """Patch pairs per volume pair for a time budget (90 per minute shared by the ``spacings`` the volumes are
    prepared at, at most the paper's 5000).

    On one CPU thread sampling then takes about a fifth of the budget with the default data (about 40 ms per pair
    for the CT/MR pairs, 5 ms for the ultrasound ones). A function of ``minutes`` only (not of the machine), so a
    budgeted run samples the same pairs everywhere.
    """
    return int(min(5000, max(100, round(90.0 * float(minutes) / max(1, int(spacings))))))
