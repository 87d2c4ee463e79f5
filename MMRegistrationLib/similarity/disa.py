"""DISA similarity (paper 001): dot products of pre-computed descriptor volumes.

The LC2 between two images is approximated voxel by voxel by ``<phi(F)[p], phi(M) o T[p]>`` where ``phi`` is the
DISA network (:mod:`MMRegistrationLib.networks.disa`) applied once to each whole image. This module holds:

- the preprocessing shared by training and registration (:func:`prepare_volume`: anti-aliased resampling to an
  isotropic spacing, field-of-view mask, intensities normalised to zero mean and unit standard deviation inside
  the field of view and 0 outside);
- :func:`compute_descriptors` (one forward pass per image, optionally 8-bit);
- the similarity and loss on descriptor volumes (:func:`descriptor_similarity`, :func:`disa_loss`) with a
  fixed-image field-of-view mask, so that the zero region around an ultrasound sector never counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image

DEFAULT_SPACING_MM = 2.0
"""Isotropic spacing the network is trained at (paper: 2 mm)."""

FOV_MARGIN_VOXELS = 4
"""Descriptors whose centre lies closer than this (voxels at the working spacing) to the edge of the fixed
field of view are left out of the similarity: their receptive field (17 voxels) sees the artificial edge."""


@dataclass(frozen=True, eq=False)
class PreparedVolume:
    """A volume ready for the network or for LC2.

    Attributes:
        array: ``(K, J, I)`` float32, zero mean / unit std inside ``mask``, 0 outside.
        mask: ``(K, J, I)`` bool field of view.
        grid: geometry (isotropic ``spacing_mm``; same direction and outer corners as the source image).
    """

    array: np.ndarray
    mask: np.ndarray
    grid: Grid

    def to_tensor(self, device=None) -> torch.Tensor:
        """``(1, 1, K, J, I)`` float32 tensor."""
        return torch.as_tensor(np.ascontiguousarray(self.array), device=device)[None, None]


@dataclass(frozen=True, eq=False)
class DescriptorVolume:
    """Descriptors of one image.

    Attributes:
        descriptors: ``(1, C, k, j, i)`` float32 (norm <= 1) or int8 (quantised, components ``round(127 x)``).
        grid: descriptor geometry (voxel ``o`` = working-grid voxel ``4 o``; see ``networks.disa.descriptor_grid``).
        mask: ``(k, j, i)`` bool, descriptors inside the field of view (eroded by :data:`FOV_MARGIN_VOXELS`).
    """

    descriptors: torch.Tensor
    grid: Grid
    mask: torch.Tensor


# ---- field of view and normalisation -----------------------------------------------------------------------
def field_of_view_mask(array: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Boolean field of view of an image ``(K, J, I)``.

    ``threshold=None``: every voxel. Otherwise the voxels ``> threshold`` (0 for ultrasound, whose outside is exactly
    0; e.g. -1500 for CT padded with -2048), closed and hole-filled so dark structures inside stay inside.
    """
    if threshold is None:
        return np.ones(array.shape, dtype=bool)
    inside = np.asarray(array) > threshold
    if not inside.any():
        return inside
    structure = ndimage.generate_binary_structure(3, 1)
    closed = ndimage.binary_closing(np.pad(inside, 2), structure, iterations=2)[2:-2, 2:-2, 2:-2]
    return ndimage.binary_fill_holes(closed | inside)


def normalize_intensities(array: np.ndarray, mask: np.ndarray | None = None, argument: str = "image") -> np.ndarray:
    """float32 ``(x - mean) / std`` over ``mask`` (default: all voxels); 0 outside the mask.

    Raises :class:`InputError` for an empty mask or a constant image (nothing to describe).
    """
    x = np.asarray(array, dtype=np.float64)
    mask = np.ones(x.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    values = x[mask]
    if values.size == 0:
        raise InputError(argument, "has an empty field of view (no voxel above the threshold)")
    std = float(values.std())
    # relative tolerance 1e-6: float32 resampling of a constant image leaves noise that must not pass for structure
    if not np.isfinite(std) or std <= 1e-6 * max(float(np.abs(values).max()), 1e-30):
        raise InputError(argument, "is constant inside its field of view; it has no structure to describe")
    out = np.where(mask, (x - float(values.mean())) / std, 0.0)
    return out.astype(np.float32)


def _smooth_for(image: Image, spacing_mm: float) -> np.ndarray:
    """Anti-alias before downsampling: Gaussian sigma ``(factor - 1) / 2`` source voxels per axis."""
    factors = spacing_mm / image.grid.spacing[::-1]  # (K, J, I) order
    sigma = np.maximum(0.0, (factors - 1.0) / 2.0)
    data = image.array.astype(np.float32)
    return ndimage.gaussian_filter(data, sigma, mode="nearest", truncate=3.0) if sigma.max() > 0 else data


def prepare_volume(
    image: Image,
    spacing_mm: float = DEFAULT_SPACING_MM,
    fov_threshold: float | None = None,
    argument: str = "image",
) -> PreparedVolume:
    """Resample ``image`` to an isotropic ``spacing_mm`` grid (same direction and field of view), anti-aliased,
    and normalise its intensities inside its field of view (see :func:`field_of_view_mask`)."""
    from MMRegistrationLib.spatial.resample import resample

    if not spacing_mm > 0:
        raise InputError("spacing_mm", f"must be positive, got {spacing_mm}")
    image.check_finite(argument)
    mask = field_of_view_mask(image.array, fov_threshold)
    grid = image.grid.resized(float(spacing_mm))
    smooth = _smooth_for(image, float(spacing_mm))
    values = resample(Image(smooth, image.grid), grid).array
    if fov_threshold is None:
        new_mask = np.ones(grid.shape, dtype=bool)
    else:
        new_mask = resample(Image(mask.astype(np.float32), image.grid), grid).array > 0.5
    return PreparedVolume(normalize_intensities(values, new_mask, argument), new_mask, grid)


# ---- descriptors ---------------------------------------------------------------------------------------------
PRECISIONS = ("auto", "float32", "bfloat16")
"""Precisions of the network's forward pass; ``auto`` = bfloat16 where the device computes it natively."""

_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bfloat16(device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it, or an x86 CPU with AVX512-BF16 or
    AMX (read from ``/proc/cpuinfo``; False where it cannot be read). Elsewhere bfloat16 is emulated and can be slower
    than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:  # pre-Ampere GPUs only emulate bfloat16
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # older torch without the argument
            return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


def resolve_precision(precision: str, device) -> str:
    """``float32`` or ``bfloat16``: ``precision`` itself, or for ``auto`` bfloat16 when :func:`native_bfloat16`."""
    if precision not in PRECISIONS:
        raise InputError("precision", f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    return precision


SLAB_VOXELS = 8_000_000
"""Volumes larger than this are described in slabs along their first axis (:func:`forward_in_slabs`): the network's
intermediate activations (16-32 channels at full and half resolution) of a 500^3 working grid would need tens of GB."""

SLAB_MARGIN = 12
"""Input voxels each slab reads beyond the rows it describes: the receptive field's radius (8) rounded up to the
stride, so every kept descriptor sees exactly what it sees in the whole volume."""


def forward_in_slabs(network, image: torch.Tensor, slab_voxels: int = SLAB_VOXELS) -> torch.Tensor:
    """``network(image)`` (float32, contiguous) computed slab by slab along the first axis when ``image`` ``(1, 1, K,
    J, I)`` holds more than ``slab_voxels``; equal to one pass (each kept descriptor's 17^3 receptive field lies
    inside its slab, and slabs start at multiples of the stride)."""
    from MMRegistrationLib.networks.disa import STRIDE

    k = int(image.shape[2])
    rows = max(STRIDE, (int(slab_voxels) // max(1, int(image[0, 0, 0].numel()))) // STRIDE * STRIDE)
    if k <= rows:
        return network(image).float().contiguous()
    parts = []
    for start in range(0, k, rows):
        stop = min(k, start + rows)
        hi = min(k, max(stop + SLAB_MARGIN, 20))  # every slab >= 17 rows (the network's minimum)
        lo = max(0, min(start - SLAB_MARGIN, (hi - 20) // STRIDE * STRIDE))
        out = network(image[:, :, lo:hi]).float()
        first = (start - lo) // STRIDE
        parts.append(out[:, :, first:first + (stop - start + STRIDE - 1) // STRIDE])
    return torch.cat(parts, dim=2).contiguous()


def compute_descriptors(
    volume: PreparedVolume,
    network,
    device=None,
    quantize: bool = False,
    fov_margin_voxels: int = FOV_MARGIN_VOXELS,
    precision: str = "float32",
) -> DescriptorVolume:
    """Descriptors of a prepared volume in one forward pass (no gradient).

    ``precision="bfloat16"`` runs the network under bfloat16 autocast (descriptors returned as float32): on a CPU
    with native bfloat16 a 128^3 volume took about 0.11 s instead of 0.37-0.5 s (2 threads, shipped network),
    components within 7e-3 of float32 (below the 8-bit quantisation step 1/127); on a CPU without it, it can be
    slower. ``auto``: bfloat16 where the
    device has it natively (:func:`resolve_precision`).

    Returns a :class:`DescriptorVolume` on the descriptor grid, with the field of view eroded by
    ``fov_margin_voxels`` and sampled at the descriptor positions as its mask.
    """
    from MMRegistrationLib.networks.disa import STRIDE, descriptor_grid, quantize_descriptors

    device = torch.device(device) if device is not None else next(network.parameters()).device
    precision = resolve_precision(precision, device)
    # channels-last input: 2x faster in bfloat16 on the CPU (the oneDNN convolutions' native layout), same values
    image = volume.to_tensor(device).to(memory_format=torch.channels_last_3d)  # (.contiguous() keeps C=1 strides)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        desc = forward_in_slabs(network, image)
    mask = volume.mask
    if fov_margin_voxels > 0 and not mask.all():
        mask = ndimage.binary_erosion(mask, iterations=int(fov_margin_voxels), border_value=1)
    desc_mask = torch.as_tensor(np.ascontiguousarray(mask[::STRIDE, ::STRIDE, ::STRIDE]), device=device)
    if quantize:
        desc = quantize_descriptors(desc)
    return DescriptorVolume(desc, descriptor_grid(volume.grid), desc_mask)


# ---- similarity and loss -------------------------------------------------------------------------------------
def _as_float(descriptors: torch.Tensor) -> torch.Tensor:
    if descriptors.dtype == torch.int8:
        from MMRegistrationLib.networks.disa import dequantize_descriptors

        return dequantize_descriptors(descriptors)
    return descriptors


def descriptor_similarity(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted mean dot product ``sum_p w(p) <fixed[p], moving[p]> / sum_p w(p)`` (maximise; approximates LC2).

    Args:
        fixed: ``(B, C, ...)`` descriptors of the fixed image.
        moving: ``(B, C, ...)`` moving descriptors sampled at the same points (e.g. warped onto the fixed
            descriptor grid); gradients flow through them.
        mask: optional bool ``(B, ...)`` or ``(...)``: the fixed field of view (e.g. ``DescriptorVolume.mask``,
            which excludes the zero region of an ultrasound volume) and/or the voxels the moving image covers.
        weights: optional non-negative ``(B, ...)`` or ``(...)`` per-point weights ``w(p)`` (Eq. 2 of the paper).

    Raises:
        InputError: shapes differ, or the mask/weights leave nothing to compare.
    """
    fixed, moving = _as_float(fixed), _as_float(moving)
    if fixed.shape != moving.shape:
        raise InputError("moving", f"descriptor shape {tuple(moving.shape)} differs from fixed {tuple(fixed.shape)}")
    dots = (fixed * moving).sum(dim=1)  # (B, ...)
    w = torch.ones_like(dots)
    for name, extra in (("mask", mask), ("weights", weights)):
        if extra is None:
            continue
        extra = torch.as_tensor(extra, device=dots.device).to(dots.dtype)
        try:
            w = w * torch.broadcast_to(extra, dots.shape)
        except RuntimeError as err:
            raise InputError(name, f"shape {tuple(extra.shape)} does not fit the descriptors {tuple(dots.shape)}") from err
    total = w.sum()
    if not bool(total > 0):
        raise InputError("mask", "leaves no descriptor to compare (empty field of view or no overlap)")
    return (w * dots).sum() / total


def disa_loss(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - descriptor_similarity`` (minimise; about ``1 - LC2``, in [0, 2]). Arguments as there."""
    return 1.0 - descriptor_similarity(fixed, moving, mask, weights)
