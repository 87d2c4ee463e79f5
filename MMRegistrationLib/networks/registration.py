"""The learned MR -> TRUS registration networks (papers 004 and 003), one forward pass from images (and masks) on
the network's own grid to a displacement or stationary velocity field.

Two encoders, one decoder:

- ``unet`` (paper 004, Fig. 2; Hu et al.'s LocalNet): one encoder over the stacked inputs (fixed TRUS, moving MR,
  optionally the moving MR mask — 004's "MIX+" — and the fixed mask), ``L`` levels of ``3x3x3`` convolution +
  LeakyReLU(0.1), max-pooling between levels.
- ``dual-stream`` (paper 003, Fig. 2-3): a fixed stream and a moving stream without weight sharing; at every level a
  cross-modal spatial attention (CMSA, eq. 1: ``att = sigmoid(W3 relu(W1 F_self + W2 F_other + b12) + b3)`` with
  ``1x1x1`` convolutions, the stream's features multiplied by ``att``) and a fused skip connection (concatenation
  + convolution block). ``cmsa=False`` keeps the two streams and the fusion without the attention (the ablation).
- The decoder (both): from the deepest level up, upsample, concatenate the skip, convolve, and a ``3x3x3`` head
  predicts a displacement at every level (``1, 1/2, ... 1/2^(L-1)``) that is upsampled and added to the finer one
  (004's additive multi-resolution output). The heads run in float32 even under bfloat16 autocast and start near
  zero, so an untrained network predicts (almost) the identity.

Output: ``(B, 3, K, J, I)`` in voxels of the network grid, channel ``c`` along tensor axis ``c`` (``k, j, i``:
MONAI's convention); :mod:`MMRegistrationLib.registration.net_geometry` converts it to LPS mm. Whether it is a
displacement or a stationary velocity is ``RegNetConfig.output``.

Why our own modules rather than MONAI's ``LocalNet``: measured on this CPU (2 threads, bfloat16, channels-last,
48^3), a training step of MONAI ``LocalNet`` (4 initial channels, 5 levels) takes 228 ms against 76 ms for this
U-Net (8-16-32-32 channels), which decides whether training fits its 60-minute budget on 2 cores; and the
dual-stream encoder needs the same decoder with fused skips, which ``LocalNet`` does not expose.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from MMRegistrationLib.core.errors import InputError

MODEL_NAME = "MMRegNet"
INPUT_NAMES = ("fixed", "moving", "moving_mask", "fixed_mask")
"""Input channels a network can take; the fixed stream takes ``fixed*``, the moving stream ``moving*``."""
INPUT_OPTIONS = {"moving_mask": "--moving-seg", "fixed_mask": "--fixed-seg"}
"""The command-line option that supplies each optional input."""
ARCHITECTURES = ("unet", "dual-stream")
OUTPUTS = ("svf", "ddf")
CENTERS = ("fixed-image", "fixed-mask")
INITS = ("center", "com", "rigid-mask")


@dataclass(frozen=True)
class RegNetConfig:
    """Everything that rebuilds a registration network and places it in the world (stored in the sidecar).

    Attributes:
        architecture: ``unet`` (004) or ``dual-stream`` (003).
        channels: feature channels per level (finest first); ``len(channels)`` levels, displacements at each.
        inputs: input channels, a subset of :data:`INPUT_NAMES` with ``fixed`` and ``moving``.
        cmsa: dual-stream only: cross-modal spatial attention at every level.
        output: ``svf`` (stationary velocity, exponentiated by scaling and squaring: an inverse for free, no
            folding) or ``ddf`` (the displacement itself).
        grid_size: voxels per side of the network's cubic grid (a multiple of ``2^(levels-1)``).
        grid_spacing_mm: isotropic spacing of that grid.
        center: ``fixed-image`` (the grid is centred on the fixed image) or ``fixed-mask`` (on the fixed gland).
        init: the initial transform the network was trained after: ``center`` (004: the moving mask's centre of
            mass onto the grid centre), ``com`` (mask centres of mass) or ``rigid-mask`` (003).
        ramp_mm: the field is multiplied by a window rising from 0 on the grid border over this distance, so the
            transform is the identity outside the grid and continuous across its border.
        squaring_steps: scaling-and-squaring steps (``svf``).
        negative_slope: LeakyReLU slope.
        output_scale: the heads' outputs are multiplied by this (voxels per unit): a larger step of the field per
            optimiser step at the same learning rate.
    """

    architecture: str = "unet"
    channels: tuple = (8, 16, 32, 32, 32)
    inputs: tuple = ("fixed", "moving", "moving_mask")
    cmsa: bool = True
    output: str = "svf"
    grid_size: int = 48
    grid_spacing_mm: float = 2.0
    center: str = "fixed-image"
    init: str = "center"
    ramp_mm: float = 8.0
    squaring_steps: int = 7
    negative_slope: float = 0.1
    output_scale: float = 8.0

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "inputs", tuple(str(i) for i in self.inputs))
        self._choice("architecture", ARCHITECTURES)
        self._choice("output", OUTPUTS)
        self._choice("center", CENTERS)
        self._choice("init", INITS)
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise InputError("channels", f"needs two or more positive channel counts, got {list(self.channels)}")
        unknown = [i for i in self.inputs if i not in INPUT_NAMES]
        repeated = len(set(self.inputs)) != len(self.inputs)
        if unknown or repeated or "fixed" not in self.inputs or "moving" not in self.inputs:
            raise InputError("inputs", f"must name 'fixed', 'moving' and optionally 'moving_mask', 'fixed_mask' once "
                                       f"each, got {list(self.inputs)}")
        step = 2 ** (len(self.channels) - 1)
        if int(self.grid_size) < step or int(self.grid_size) % step:
            raise InputError("grid_size", f"must be a positive multiple of {step} for {len(self.channels)} levels, "
                                          f"got {self.grid_size}")
        if self.center == "fixed-mask" and self.init == "center":
            raise InputError("center", "'fixed-mask' centring goes with a 'com' or 'rigid-mask' start: 'center' "
                                       "aligns the moving gland with the fixed image's centre")
        for name in ("grid_spacing_mm", "ramp_mm"):
            if not float(getattr(self, name)) > 0:
                raise InputError(name, f"must be positive, got {getattr(self, name)}")
        if not 1 <= int(self.squaring_steps) <= 12:
            raise InputError("squaring_steps", f"must be 1 to 12, got {self.squaring_steps}")

    def _choice(self, name: str, allowed: tuple) -> None:
        if getattr(self, name) not in allowed:
            raise InputError(name, f"must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    @property
    def fixed_inputs(self) -> tuple:
        return tuple(i for i in self.inputs if i.startswith("fixed"))

    @property
    def moving_inputs(self) -> tuple:
        return tuple(i for i in self.inputs if i.startswith("moving"))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["channels"], data["inputs"] = list(self.channels), list(self.inputs)
        return data

    @classmethod
    def from_dict(cls, data: dict, argument: str = "config") -> "RegNetConfig":
        known = {f.name for f in fields(cls)}
        unknown, missing = sorted(set(data) - known), sorted(known - set(data))
        if unknown or missing:
            raise InputError(argument, f"the network config does not match this engine's (unknown keys {unknown}, "
                                       f"missing keys {missing}); use weights written by this version")
        return cls(**data)


# ---- building blocks ---------------------------------------------------------------------------------------------
def _block(cin: int, cout: int, slope: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.LeakyReLU(slope))


class CrossModalAttention(nn.Module):
    """Paper 003 eq. 1: a spatial attention map for one stream from both streams' features (``1x1x1`` convolutions
    to ``C/2`` channels, ReLU, ``1x1x1`` to one channel, sigmoid), multiplied into this stream's features."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(1, channels // 2)
        self.own = nn.Conv3d(channels, hidden, 1)  # W1 with b_{1,2}
        self.other = nn.Conv3d(channels, hidden, 1, bias=False)  # W2
        self.out = nn.Conv3d(hidden, 1, 1)  # W3, b3

    def forward(self, own: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        attention = torch.sigmoid(self.out(F.relu(self.own(own) + self.other(other))))
        return attention * own


class UNetEncoder(nn.Module):
    """One stream over the stacked inputs: returns the features of every level (finest first)."""

    def __init__(self, in_channels: int, channels: tuple, slope: float):
        super().__init__()
        cins = (in_channels, *channels[:-1])
        self.levels = nn.ModuleList(_block(ci, co, slope) for ci, co in zip(cins, channels))

    def forward(self, x: torch.Tensor) -> list:
        features = []
        for index, level in enumerate(self.levels):
            x = level(x if index == 0 else F.max_pool3d(x, 2))
            features.append(x)
        return features


class DualStreamEncoder(nn.Module):
    """Paper 003's encoder: a fixed and a moving stream (no shared weights), CMSA between them at every level
    (optional) and fused skips (concatenation + convolution block)."""

    def __init__(self, fixed_channels: int, moving_channels: int, channels: tuple, cmsa: bool, slope: float):
        super().__init__()
        self.fixed_channels = fixed_channels
        self.fixed = UNetEncoder(fixed_channels, channels, slope).levels
        self.moving = UNetEncoder(moving_channels, channels, slope).levels
        self.fixed_attention = nn.ModuleList(CrossModalAttention(c) for c in channels) if cmsa else None
        self.moving_attention = nn.ModuleList(CrossModalAttention(c) for c in channels) if cmsa else None
        self.fuse = nn.ModuleList(_block(2 * c, c, slope) for c in channels)

    def forward(self, x: torch.Tensor) -> list:
        f, m = x[:, : self.fixed_channels], x[:, self.fixed_channels:]
        features = []
        for index in range(len(self.fuse)):
            if index:
                f, m = F.max_pool3d(f, 2), F.max_pool3d(m, 2)
            f, m = self.fixed[index](f), self.moving[index](m)
            if self.fixed_attention is not None:
                f, m = self.fixed_attention[index](f, m), self.moving_attention[index](m, f)
            features.append(self.fuse[index](torch.cat([f, m], dim=1)))
        return features


class AdditiveDecoder(nn.Module):
    """From the deepest features up: at each level a ``3x3x3`` head predicts a field (in finest-grid voxels) that is
    added to the upsampled coarser sum (004's multi-resolution additive output)."""

    def __init__(self, channels: tuple, slope: float):
        super().__init__()
        deepest = len(channels) - 1
        self.merge = nn.ModuleList(_block(channels[lvl + 1] + channels[lvl], channels[lvl], slope)
                                   for lvl in range(deepest))
        self.heads = nn.ModuleList(nn.Conv3d(c, 3, 3, padding=1) for c in channels)
        for head in self.heads:
            nn.init.normal_(head.weight, std=1e-5)
            nn.init.zeros_(head.bias)

    def _head(self, level: int, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.heads[level](x.float())

    def forward(self, features: list, finest: int = 0) -> torch.Tensor:
        """The field at the resolution of ``features[finest]`` (0 = the input's; 1 = half of it, the levels below
        skipped: test-time optimisation's cheaper correction), in finest-grid voxels."""
        x = features[-1]
        field = self._head(len(features) - 1, x)
        for level in reversed(range(finest, len(features) - 1)):
            skip = features[level]
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = self.merge[level](torch.cat([x, skip.to(x.dtype)], dim=1))
            coarse = F.interpolate(field, size=skip.shape[2:], mode="trilinear", align_corners=False)
            field = self._head(level, x) + coarse
        return field


class RegistrationNet(nn.Module):
    """The network of a :class:`RegNetConfig`: ``(B, len(inputs), N, N, N)`` (channels in ``config.inputs`` order,
    the fixed ones first for ``dual-stream``) -> ``(B, 3, N, N, N)`` field in grid voxels (``k, j, i``)."""

    def __init__(self, config: RegNetConfig):
        super().__init__()
        self.config = config
        slope = config.negative_slope
        if config.architecture == "unet":
            self.encoder = UNetEncoder(len(config.inputs), config.channels, slope)
        else:
            self.encoder = DualStreamEncoder(len(config.fixed_inputs), len(config.moving_inputs), config.channels,
                                             config.cmsa, slope)
        self.decoder = AdditiveDecoder(config.channels, slope)

    @property
    def input_order(self) -> tuple:
        """The input channel names in the order :meth:`forward` takes them."""
        c = self.config
        return (*c.fixed_inputs, *c.moving_inputs) if c.architecture == "dual-stream" else c.inputs

    @property
    def size_multiple(self) -> int:
        """Every spatial size of an input must be a multiple of this (one halving per level below the finest)."""
        return 2 ** (len(self.config.channels) - 1)

    def check_input(self, x: torch.Tensor) -> None:
        """``x`` is ``(B, len(inputs), D, H, W)`` with each of D, H, W a multiple of :attr:`size_multiple` (the
        network was trained on ``grid_size^3``; test-time optimisation also feeds it crops)."""
        channels, multiple = len(self.config.inputs), self.size_multiple
        if x.ndim != 5 or x.shape[1] != channels or any(int(n) % multiple or not n for n in x.shape[2:]):
            raise ValueError(f"RegistrationNet: input must be (B, {channels}, D, H, W) with D, H, W multiples of "
                             f"{multiple}, got {tuple(x.shape)}")

    def decode(self, features: list, finest: int = 0) -> torch.Tensor:
        """The field from the encoder's features (grid voxels, ``k, j, i``) at the resolution of level ``finest``."""
        return self.decoder(features, finest) * float(self.config.output_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.decode(self.encoder(x))


# ---- weights -----------------------------------------------------------------------------------------------------
def build_registration_net(config: dict) -> RegistrationNet:
    return RegistrationNet(RegNetConfig.from_dict(config, "weights"))


def save_registration_net(network: RegistrationNet, path, training: Optional[dict] = None) -> dict:
    from MMRegistrationLib.networks.weights import save_weights

    return save_weights(network, path, MODEL_NAME, network.config.to_dict(), training)


def networks_dir() -> Path:
    from MMRegistrationLib.resources import resources_dir

    return resources_dir() / "Networks"


DEFAULT_WEIGHTS = "mix_plus.pt"
"""The shipped default: 004's MIX+ network (images + moving mask)."""


def default_weights_path() -> Path:
    return networks_dir() / DEFAULT_WEIGHTS


def resolve_weights_path(weights) -> Path:
    """A weights argument: a path, or the name of a shipped network (``mix_plus``, ``both_masks`` ...)."""
    if weights is None or str(weights) == "":
        return default_weights_path()
    path = Path(os.fspath(weights))
    if not path.suffix and not path.exists() and (networks_dir() / f"{path.name}.pt").exists():
        return networks_dir() / f"{path.name}.pt"
    return path


_CACHE: dict = {}


def load_registration_net(path, device="cpu", argument: str = "--weights") -> tuple:
    """``(network in eval mode on device, sidecar)`` from a weights file written by :func:`save_registration_net`
    (checked: sidecar, model name, SHA-256, config, state dict; :class:`InputError` naming ``argument``). Loaded
    networks are cached by path, checksum and device."""
    from MMRegistrationLib.networks.weights import load_weights, read_sidecar

    path = resolve_weights_path(path)
    meta = read_sidecar(path, argument)
    key = (str(path.resolve()), meta.get("sha256"), str(device), path.stat().st_mtime_ns)
    if key not in _CACHE:
        def build(config: dict) -> RegistrationNet:
            try:
                return RegistrationNet(RegNetConfig.from_dict(config, argument))
            except InputError as err:
                raise InputError(argument, f"{path}: {err.problem}") from err

        network, meta = load_weights(path, MODEL_NAME, build, argument=argument)
        _CACHE.clear()
        _CACHE[key] = (network.to(device), meta)
    return _CACHE[key]
