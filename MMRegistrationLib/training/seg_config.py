"""Settings of a segmentation-network training run (``mmreg train-seg``): the network, the optimiser, the
augmentation and the data, in one dataclass stored in the checkpoint and the sidecar."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.segmentation.network import SegNetConfig
from MMRegistrationLib.core.options import check_known_fields
from MMRegistrationLib.training.net_config import check_run_settings


@dataclass(frozen=True)
class SegTrainingConfig:
    """One segmentation training run.

    Attributes:
        network: the network and its grid (:class:`SegNetConfig`; its ``modality`` chooses the images).
        iterations: upper bound on optimiser steps (the time budget usually stops first).
        batch_size: images per step.
        learning_rate: Adam's.
        validate_every: steps between validations (gland Dice on the validation images' own grids).
        rotation_deg, scale_fraction, translation_mm: random affine of the network grid about the image's centre
            (per axis) - the placement a new image may have.
        flip_probability: chance of a left-right flip (the gland is nearly symmetric).
        gamma_range: random intensity gamma (the scaled intensity is in [0, 1]).
        validation_fraction: split of the folder's sorted names (the last part is never loaded; see
            :func:`~MMRegistrationLib.training.net_run.split_names`).
        synthetic_cases, synthetic_seed, synthetic_scale: generated training images (exact labels).
        precision: ``bfloat16`` autocast or ``float32`` training arithmetic.
        seed: everything random (network init, augmentation draws).
    """

    network: SegNetConfig = field(default_factory=SegNetConfig)
    iterations: int = 20000
    batch_size: int = 2
    learning_rate: float = 1e-3
    validate_every: int = 100
    rotation_deg: float = 12.0
    scale_fraction: float = 0.1
    translation_mm: float = 10.0
    flip_probability: float = 0.5
    gamma_range: tuple = (0.7, 1.5)
    validation_fraction: float = 0.125
    synthetic_cases: int = 16
    synthetic_seed: int = 6000
    synthetic_scale: float = 0.5
    precision: str = "bfloat16"
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.network, dict):
            object.__setattr__(self, "network", SegNetConfig.from_dict(self.network))
        object.__setattr__(self, "gamma_range", tuple(float(g) for g in self.gamma_range))
        check_run_settings(self)
        if not 0 < self.gamma_range[0] <= self.gamma_range[1]:
            raise InputError("gamma_range", f"must be 0 < low <= high, got {self.gamma_range}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["network"] = self.network.as_dict()
        data["gamma_range"] = list(self.gamma_range)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "SegTrainingConfig":
        check_known_fields(cls, data)
        return cls(**data)
