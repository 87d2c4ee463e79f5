"""The DISA descriptor network (paper 001): one small 3-D CNN for every modality.

Layout (ten weight layers, no normalisation layers, LeakyReLU, BlurPool downsampling, total stride 4)::

    input (N, 1, D, H, W), normalised intensities
    stem      conv3x3x3 1 -> 16, LeakyReLU                        full resolution
    blur-pool stride 2                                             1/2
    res A     conv3 16 -> 32, LeakyReLU, conv3 32 -> 32, + conv1 16 -> 32 (projection), LeakyReLU
    blur-pool stride 2                                             1/4
    lift      conv1 32 -> 104, LeakyReLU
    res B, C  2 x [conv1 104 -> 104, LeakyReLU, conv1 104 -> 104, + identity, LeakyReLU]
    head      conv1 104 -> 16, then each voxel's descriptor divided by max(1, its norm)

Geometry: every convolution is centred (odd kernel, "same" zero padding) and each blur-pool keeps the even
indices, so descriptor ``o`` (per axis) sits exactly on input voxel ``4 o``; the descriptor volume has
``ceil(n / 4)`` voxels per axis and the voxel->world affine ``input_affine @ diag(4, 4, 4, 1)``
(:func:`descriptor_grid`). The receptive field is exactly ``17^3`` voxels (``4 o - 8 .. 4 o + 8``), the support of
the radius-7 LC2 patch plus its gradient stencil, so a descriptor computed from a ``17^3`` crop
(:meth:`DISANet.forward_center`, used in training) equals the whole-volume descriptor at the crop's centre.

With the default widths the network has 91,320 parameters (the paper reports 90,752).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid

STRIDE = 4
RECEPTIVE_FIELD = 17
"""Voxels per axis that one descriptor depends on (and the smallest input accepted)."""

QUANT_SCALE = 127.0
"""Descriptor components lie in [-1, 1] (norm <= 1), stored as ``round(127 x)`` in int8."""


@dataclass(frozen=True)
class DISAConfig:
    """Widths of :class:`DISANet` (the geometry — stride 4, receptive field 17 — is fixed by the layout).

    Attributes:
        stem_channels: channels of the full-resolution convolution.
        mid_channels: channels of the 1/2-resolution residual block.
        head_channels: channels of the 1/4-resolution point-wise residual blocks.
        descriptor_channels: descriptor length (16 in the paper).
        negative_slope: LeakyReLU slope.
    """

    stem_channels: int = 16
    mid_channels: int = 32
    head_channels: int = 104
    descriptor_channels: int = 16
    negative_slope: float = 0.1

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "negative_slope":
                if not (0.0 <= float(value) < 1.0):
                    raise InputError("negative_slope", f"must be in [0, 1), got {value}")
            elif int(value) < 1 or int(value) != value:
                raise InputError(f.name, f"must be a positive integer, got {value}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, argument: str = "config") -> "DISAConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(argument, f"unknown DISA network setting(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


class BlurPool3d(nn.Module):
    """Anti-aliased stride-2 downsampling (Zhang 2019): depthwise ``[1, 2, 1]^3 / 64`` blur, keep even indices.

    ``(N, C, D, H, W)`` -> ``(N, C, ceil(D/2), ceil(H/2), ceil(W/2))`` with ``padding=1`` (zero padding), or
    ``(N, C, (D-1)//2, ...)`` "valid" with ``padding=0``. Output ``o`` is centred on input ``2 o`` (+1 when valid).
    """

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = taps[:, None, None] * taps[None, :, None] * taps[None, None, :]
        kernel = (kernel / kernel.sum()).expand(channels, 1, 3, 3, 3).contiguous()
        self.register_buffer("kernel", kernel, persistent=False)
        self.channels = channels

    def forward(self, x: torch.Tensor, padding: int = 1) -> torch.Tensor:
        return F.conv3d(x, self.kernel.to(x.dtype), stride=2, padding=padding, groups=self.channels)


def _conv(cin: int, cout: int, k: int) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, kernel_size=k, padding=0)  # padding is applied explicitly (same or valid)


def _pad(x: torch.Tensor, k: int, same: bool) -> torch.Tensor:
    return F.pad(x, ((k // 2),) * 6) if same and k > 1 else x


class DISANet(nn.Module):
    """DISA descriptor CNN; see the module docstring for the layout and geometry.

    ``forward(x)``: ``(N, 1, D, H, W)`` finite normalised volume, every axis >= :data:`RECEPTIVE_FIELD` ->
    ``(N, 16, ceil(D/4), ceil(H/4), ceil(W/4))`` descriptors with norm <= 1.
    """

    def __init__(self, config: DISAConfig | None = None):
        super().__init__()
        cfg = config if config is not None else DISAConfig()
        self.config = cfg
        c0, c1, c2, cd = cfg.stem_channels, cfg.mid_channels, cfg.head_channels, cfg.descriptor_channels
        self.stem = _conv(1, c0, 3)
        self.blur1 = BlurPool3d(c0)
        self.res_a1 = _conv(c0, c1, 3)
        self.res_a2 = _conv(c1, c1, 3)
        self.res_a_proj = _conv(c0, c1, 1)
        self.blur2 = BlurPool3d(c1)
        self.lift = _conv(c1, c2, 1)
        self.res_b1, self.res_b2 = _conv(c2, c2, 1), _conv(c2, c2, 1)
        self.res_c1, self.res_c2 = _conv(c2, c2, 1), _conv(c2, c2, 1)
        self.head = _conv(c2, cd, 1)
        self.reset_parameters()

    # ---- construction --------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Kaiming init for LeakyReLU; residual branches start small; small head (initial dot products ~0)."""
        slope = self.config.negative_slope
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, a=slope, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            for branch_end in (self.res_a2, self.res_b2, self.res_c2):
                branch_end.weight.mul_(0.1)
            self.head.weight.mul_(0.1)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- the computation -----------------------------------------------------------------------------
    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.config.negative_slope)

    def _features(self, x: torch.Tensor, same: bool) -> torch.Tensor:
        """Shared body. ``same``: zero-padded convolutions (whole volumes); otherwise "valid" (17^3 crops)."""
        h = self._act(self.stem(_pad(x, 3, same)))
        h = self.blur1(h, padding=1 if same else 0)
        a = self._act(self.res_a1(_pad(h, 3, same)))
        a = self.res_a2(_pad(a, 3, same))
        skip = self.res_a_proj(h if same else h[..., 2:-2, 2:-2, 2:-2])
        h = self._act(a + skip)
        h = self.blur2(h, padding=1 if same else 0)
        h = self._act(self.lift(h))
        h = self._act(h + self.res_b2(self._act(self.res_b1(h))))
        h = self._act(h + self.res_c2(self._act(self.res_c1(h))))
        return clip_norm(self.head(h))

    def check_input(self, x: torch.Tensor, argument: str = "image") -> None:
        """Raise :class:`InputError` unless ``x`` is a finite ``(N, 1, D, H, W)`` with every axis >= 17."""
        if x.ndim != 5 or x.shape[1] != 1:
            raise InputError(argument, f"expected a (N, 1, D, H, W) tensor, got shape {tuple(x.shape)}")
        if min(x.shape[-3:]) < RECEPTIVE_FIELD:
            raise InputError(
                argument,
                f"spatial shape {tuple(x.shape[-3:])} is too small for the DISA network (stride {STRIDE}, receptive "
                f"field {RECEPTIVE_FIELD} voxels): every axis needs at least {RECEPTIVE_FIELD} voxels; "
                "use a larger field of view or a finer spacing",
            )
        if not bool(torch.isfinite(x).all()):
            raise InputError(argument, "contains NaN/Inf voxels; the DISA network needs finite intensities")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self._features(x, same=True)

    def forward_center(self, patches: torch.Tensor) -> torch.Tensor:
        """Descriptor of the centre voxel of each ``17^3`` crop: ``(N, 1, 17, 17, 17)`` -> ``(N, 16)``.

        Equal to ``forward(volume)[..., o]`` for a crop of ``volume`` centred on voxel ``4 o`` ("valid"
        convolutions, about 10x cheaper than the padded forward of the crop). No input checks (training path).
        """
        n = RECEPTIVE_FIELD
        if patches.ndim != 5 or tuple(patches.shape[1:]) != (1, n, n, n):
            raise InputError("patches", f"expected (N, 1, {n}, {n}, {n}) crops, got shape {tuple(patches.shape)}")
        return self._features(patches, same=False)[:, :, 0, 0, 0]


def clip_norm(descriptors: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Divide each descriptor (along ``dim``) by ``max(1, norm)``: norms above 1 become 1, others unchanged."""
    norm = torch.linalg.vector_norm(descriptors, dim=dim, keepdim=True)
    return descriptors / torch.clamp(norm, min=1.0)


def descriptor_grid(grid: Grid, stride: int = STRIDE) -> Grid:
    """Geometry of the descriptor volume of an input on ``grid``: voxel ``o`` is input voxel ``stride * o``."""
    shape = tuple(int(math.ceil(n / stride)) for n in grid.shape)
    affine = np.array(grid.affine) @ np.diag([stride, stride, stride, 1.0])
    return Grid(shape, affine)


# ---- 8-bit descriptors -------------------------------------------------------------------------------------
def quantize_descriptors(descriptors: torch.Tensor) -> torch.Tensor:
    """int8 copy of descriptors with components in [-1, 1]: ``round(127 x)`` (error <= 1/254 per component)."""
    return torch.round(torch.clamp(descriptors, -1.0, 1.0) * QUANT_SCALE).to(torch.int8)


def dequantize_descriptors(quantized: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Float descriptors from :func:`quantize_descriptors` output."""
    if quantized.dtype != torch.int8:
        raise InputError("quantized", f"expected an int8 tensor, got {quantized.dtype}")
    return quantized.to(dtype) / QUANT_SCALE


def quantized_dot(a: torch.Tensor, b: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Dot product of two int8 descriptor tensors along ``dim`` (integer accumulation), as float."""
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        raise InputError("quantized_dot", f"expects int8 tensors, got {a.dtype} and {b.dtype}")
    return (a.to(torch.int32) * b.to(torch.int32)).sum(dim=dim).to(torch.float32) / (QUANT_SCALE * QUANT_SCALE)


# ---- weights files -----------------------------------------------------------------------------------------
MODEL_NAME = "DISANet"
WEIGHTS_NAME = "disa_lc2.pt"
TRAIN_COMMAND = "mmreg train-disa --minutes 55 --out Resources/DISA"


def default_weights_path():
    """``Resources/DISA/disa_lc2.pt`` (its sidecar ``disa_lc2.json`` beside it)."""
    from MMRegistrationLib.resources import resources_dir

    return resources_dir() / "DISA" / WEIGHTS_NAME


def build_disa(config: dict) -> DISANet:
    """Network from a sidecar's ``config`` dictionary (unknown or invalid settings are an InputError)."""
    return DISANet(DISAConfig.from_dict(dict(config), "config"))


def save_disa(network: DISANet, path, training: dict | None = None) -> dict:
    """Write ``path`` and its JSON sidecar (config, engine version, training description, SHA-256)."""
    from MMRegistrationLib.networks.weights import save_weights

    return save_weights(network, path, MODEL_NAME, network.config.to_dict(), training)


def load_disa(path=None, device="cpu", expected_config: DISAConfig | None = None, argument: str = "weights") -> tuple:
    """Load verified DISA weights: ``(network in eval mode on device, sidecar dict)``.

    ``path=None`` uses :func:`default_weights_path`; when that file is absent the error says how to train it.
    """
    from pathlib import Path

    from MMRegistrationLib.networks.weights import load_weights

    if path is None:
        path = default_weights_path()
        if not Path(path).is_file():
            raise InputError(argument, f"no trained DISA weights at {path}; create them with '{TRAIN_COMMAND}'")
    network, meta = load_weights(
        path, MODEL_NAME, build_disa, None if expected_config is None else expected_config.to_dict(),
        map_location=device, argument=argument,
    )
    return network.to(device), meta
