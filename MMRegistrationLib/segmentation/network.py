"""The prostate segmentation network (paper 003, section 2.1: one network per modality) and where it works.

The network is MONAI's residual 3-D U-Net (``monai.networks.nets.UNet``: one input channel, the image's intensity
scaled as for the registration networks; one output channel, the gland's logit). Like the registration networks it
works on its own grid in world mm (:func:`segmentation_grid`): ``grid_size^3`` voxels of ``grid_spacing_mm`` along the
image's axes reordered to be closest to LPS, centred on the image's centre — so oblique, anisotropic and
non-zero-origin images are all seen the same way, and the prediction is resampled back onto the image's own grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.options import check_known_fields
from MMRegistrationLib.registration.net_geometry import cubic_grid

MODALITIES = ("mr", "trus")


@dataclass(frozen=True)
class SegNetConfig:
    """Everything that rebuilds a segmentation network and places it in the world (stored beside its weights).

    Attributes:
        modality: ``mr`` or ``trus`` (one network each).
        channels: U-Net feature channels per level (finest first).
        strides: the down-sampling strides between levels (``len(channels) - 1`` of them).
        num_res_units: residual units per level.
        grid_size: voxels per side of the network's cubic grid (a multiple of the product of the strides).
        grid_spacing_mm: isotropic spacing of that grid.
        threshold: probability above which a voxel is gland.
    """

    modality: str = "trus"
    channels: tuple = (16, 32, 64, 128)
    strides: tuple = (2, 2, 2)
    num_res_units: int = 1
    grid_size: int = 48
    grid_spacing_mm: float = 2.0
    threshold: float = 0.5

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise InputError("--modality", f"'{self.modality}' is not one of {', '.join(MODALITIES)}")
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError("SegNetConfig: one stride between consecutive levels is needed")
        if self.grid_size % int(np.prod(self.strides)):
            raise ValueError(f"SegNetConfig: grid_size {self.grid_size} is not a multiple of {int(np.prod(self.strides))}")

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "SegNetConfig":
        """The config from :meth:`as_dict`'s output (a sidecar); unknown keys are an :class:`InputError`."""
        check_known_fields(cls, data, "weights")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def build_network(config: SegNetConfig) -> torch.nn.Module:
    """A new (randomly initialised, torch's seed) MONAI U-Net for ``config``."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=tuple(config.channels),
                strides=tuple(config.strides), num_res_units=int(config.num_res_units))


def segmentation_grid(config: SegNetConfig, image: Grid) -> Grid:
    """The network's ``grid_size^3`` grid of ``grid_spacing_mm`` along the image's axes closest to LPS, centred on the
    image's centre (LPS mm)."""
    return cubic_grid(config.grid_size, config.grid_spacing_mm, image.center, image.direction)
