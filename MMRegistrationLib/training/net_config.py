"""Configuration of the registration-network training (:mod:`MMRegistrationLib.training.net`): every setting of a
run, stored in the weights sidecar, and the presets that reproduce the papers' set-ups."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.options import check_known_fields
from MMRegistrationLib.networks.registration import RegNetConfig

PRECISIONS = ("bfloat16", "float32")


def check_run_settings(config) -> None:
    """The settings every training run has (``iterations``, ``batch_size``, ``validate_every``, ``learning_rate``,
    ``validation_fraction``, ``synthetic_cases``, ``precision``): :class:`InputError` naming the option."""
    for name in ("iterations", "batch_size", "validate_every"):
        if int(getattr(config, name)) < 1:
            raise InputError(f"--{name.replace('_', '-')}", f"must be a positive integer, got {getattr(config, name)}")
    if not config.learning_rate > 0:
        raise InputError("--learning-rate", f"must be positive, got {config.learning_rate}")
    if not 0 < config.validation_fraction < 1:
        raise InputError("validation_fraction", f"must be in (0, 1), got {config.validation_fraction}")
    if int(config.synthetic_cases) < 0:
        raise InputError("--synthetic-cases", f"must be 0 or more, got {config.synthetic_cases}")
    if config.precision not in PRECISIONS:
        raise InputError("--precision", f"must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")


@dataclass(frozen=True)
class NetTrainingConfig:
    """Every setting of a registration-network training run.

    Loss weights (each term off at 0): ``weight_mdice`` (004 alpha: multi-scale Dice of the gland, Gaussian
    ``mdice_sigmas`` in grid voxels), ``weight_sdm`` (004 beta: mean squared log error of the gland's signed distance
    maps), ``weight_bending`` (004 gamma: bending energy of the displacement, per mm^2), ``weight_dice`` (003: Dice
    over the gland and the landmark structures weighted ``gland_weight`` / ``landmark_weight``), ``weight_mi`` (003:
    minus the mutual information of the images inside the fixed gland dilated by ``mi_dilation_mm``),
    ``weight_gradient`` (003 lambda: mean squared displacement gradient).

    Optimisation: Adam at a constant ``learning_rate`` (so a run stopped by its time budget after N steps equals the
    run of N steps), ``batch_size`` pairs per step, validation every ``validate_every`` steps (the best state by
    validation gland Dice, then TRE, is what is saved). Augmentation, separately for each image (004): a random
    rotation up to ``rotation_deg`` about each axis, scaling by up to ``scale_fraction`` and a shift up to
    ``translation_mm`` per axis about the grid centre. Data: the folder's cases split by name (the last
    ``validation_fraction`` of them are the test part, never loaded; as many before them validate), plus
    ``synthetic_cases`` generated cases (seeds ``synthetic_seed ..``,
    voxel-count factor ``synthetic_scale``) for training. ``precision``: ``bfloat16`` autocast (CPU: ~4x faster than
    float32) or ``float32``.
    """

    network: RegNetConfig = field(default_factory=RegNetConfig)
    weight_mdice: float = 0.05
    weight_sdm: float = 0.45
    weight_bending: float = 0.5
    weight_dice: float = 0.0
    weight_mi: float = 0.0
    weight_gradient: float = 0.0
    mdice_sigmas: tuple = (0.0, 1.0, 2.0, 4.0, 8.0)
    gland_weight: float = 0.1
    landmark_weight: float = 0.3
    mi_dilation_mm: float = 5.0
    mi_bins: int = 24
    iterations: int = 4000
    batch_size: int = 2
    learning_rate: float = 1e-3
    validate_every: int = 200
    rotation_deg: float = 5.0
    scale_fraction: float = 0.05
    translation_mm: float = 4.0
    validation_fraction: float = 0.125
    synthetic_cases: int = 12
    synthetic_seed: int = 5000
    synthetic_scale: float = 0.5
    precision: str = "bfloat16"
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.network, dict):
            object.__setattr__(self, "network", RegNetConfig.from_dict(self.network))
        object.__setattr__(self, "mdice_sigmas", tuple(float(s) for s in self.mdice_sigmas))
        weights = [self.weight_mdice, self.weight_sdm, self.weight_bending, self.weight_dice, self.weight_mi,
                   self.weight_gradient]
        if min(weights) < 0 or self.weight_mdice + self.weight_sdm + self.weight_dice + self.weight_mi <= 0:
            raise InputError("--preset", "loss weights must be 0 or more with at least one similarity term")
        if int(self.mi_bins) < 1:
            raise InputError("--mi-bins", f"must be a positive integer, got {self.mi_bins}")
        check_run_settings(self)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["network"] = self.network.to_dict()
        data["mdice_sigmas"] = list(self.mdice_sigmas)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "NetTrainingConfig":
        check_known_fields(cls, data)
        return cls(**data)


_NO_TERMS = dict(weight_mdice=0.0, weight_sdm=0.0, weight_bending=0.0, weight_dice=0.0, weight_mi=0.0,
                 weight_gradient=0.0)
_UNET = dict(architecture="unet", init="center", center="fixed-image")
_DUAL = dict(architecture="dual-stream", channels=(8, 16, 32, 32, 32), inputs=("fixed", "moving"), init="rigid-mask",
             center="fixed-mask", cmsa=True)
_SRML = dict(_NO_TERMS, weight_dice=1.0, weight_mi=1.0, weight_gradient=0.4)

PRESETS = {
    # paper 004: images + the MR mask (MIX+), mDSC 0.05, SDM 0.45, bending 0.5
    "mix_plus": (dict(_UNET, inputs=("fixed", "moving", "moving_mask")),
                 dict(_NO_TERMS, weight_mdice=0.05, weight_sdm=0.45, weight_bending=0.5)),
    "mix": (dict(_UNET, inputs=("fixed", "moving")), dict(_NO_TERMS, weight_mdice=0.05, weight_sdm=0.45,
                                                          weight_bending=0.5)),
    "mdsc": (dict(_UNET, inputs=("fixed", "moving")), dict(_NO_TERMS, weight_mdice=0.3, weight_bending=0.7)),
    "sdm": (dict(_UNET, inputs=("fixed", "moving")), dict(_NO_TERMS, weight_sdm=0.8, weight_bending=0.2)),
    # both masks as inputs (the TRUS segmentation is there): centred on the fixed gland, started from com
    "both_masks": (dict(_UNET, inputs=("fixed", "moving", "moving_mask", "fixed_mask"), init="com",
                        center="fixed-mask"),
                   dict(_NO_TERMS, weight_mdice=0.05, weight_sdm=0.45, weight_bending=0.5)),
    # paper 003: dual stream with CMSA, SRML (ROI-MI + weighted gland/landmark Dice) + 0.4 gradient L2, rigid start
    "srml": (_DUAL, _SRML),
    "srml_no_cmsa": (dict(_DUAL, cmsa=False), _SRML),
    "srml_dice_only": (_DUAL, dict(_SRML, weight_mi=0.0)),
    "srml_no_rigid": (dict(_DUAL, init="center", center="fixed-image"), _SRML),
}
"""Preset name -> (network settings, loss weights). ``mix_plus`` is the shipped default network."""


def preset_config(name: str, **changes) -> NetTrainingConfig:
    """The training config of preset ``name`` with ``changes`` (``NetTrainingConfig`` fields; ``network`` may be
    a dict of network changes)."""
    if name not in PRESETS:
        raise InputError("--preset", f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    network_changes, loss = PRESETS[name]
    network = replace(RegNetConfig(), **dict(network_changes, **dict(changes.pop("network", {}) or {})))
    return NetTrainingConfig(network=network, **{**loss, **changes})
