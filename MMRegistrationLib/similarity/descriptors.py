"""Descriptor backends shared by DISA registration and the similarity heatmap.

A backend turns a :class:`~MMRegistrationLib.similarity.disa.PreparedVolume` into a
:class:`~MMRegistrationLib.similarity.disa.DescriptorVolume` (descriptors ``(1, C, k, j, i)`` on a strided grid, with
a field-of-view mask) and says how two descriptors are compared:

- ``kind == "dot"``: similarity ``<f, g>`` (DISA, paper 001: approximates LC2, larger is better);
- ``kind == "mse"``: dissimilarity ``mean_c (f_c - g_c)^2`` (MIND-SSC, smaller is better).

:class:`NetworkDescriptors` wraps any descriptor CNN (the trained DISA network, or a randomly initialised one in
tests); :class:`MINDDescriptors` computes MIND-SSC on the working grid. Both are computed once per image, without
gradients: registration differentiates only the sampling of the moving descriptors.

Also here: :func:`interpolated` (descriptors also between their positions, trilinear), :func:`halve` (one coarser
pyramid level: ``[1, 2, 1]`` blur, keep even indices, exact geometry) and
:func:`variance_weights` (the LC2 weight ``w(p)``, local intensity variance inside the field of view, at the
descriptor positions).
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.similarity.disa import DescriptorVolume, PreparedVolume, compute_descriptors, resolve_precision


class DescriptorBackend:
    """Base class. Subclasses set ``name``, ``kind`` (``"dot"`` or ``"mse"``) and ``min_voxels`` (the smallest
    working-grid size per axis they accept) and implement :meth:`describe`."""

    name = "descriptors"
    kind = "dot"
    min_voxels = 1

    def check_size(self, volume: PreparedVolume, argument: str) -> None:
        """Raise :class:`InputError` naming ``argument`` when an axis of the working grid is too short."""
        shape = volume.array.shape
        if min(shape) < self.min_voxels:
            spacing = float(np.min(volume.grid.spacing))
            raise InputError(
                argument,
                f"is too small for {self.name} descriptors: at {spacing:g} mm it has {tuple(shape)} voxels (K, J, I), "
                f"but every axis needs at least {self.min_voxels} ({self.min_voxels * spacing:g} mm); use a larger "
                "image or a finer spacing_mm",
            )

    def describe(self, volume: PreparedVolume, argument: str = "image") -> DescriptorVolume:
        raise NotImplementedError

    def __call__(self, volume: PreparedVolume, argument: str = "image") -> DescriptorVolume:
        self.check_size(volume, argument)
        return self.describe(volume, argument)


class NetworkDescriptors(DescriptorBackend):
    """Descriptors from a CNN such as :class:`~MMRegistrationLib.networks.disa.DISANet` (stride 4).

    Args:
        network: module mapping ``(1, 1, D, H, W)`` to ``(1, C, ceil(D/4), ceil(H/4), ceil(W/4))``.
        device: where to run it (default: the network's device).
        normalize: divide every descriptor by its norm (cosine similarity). The trained DISA network needs no
            normalisation (its dot products approximate LC2); a randomly initialised network does, so that a
            descriptor is most similar to itself.
        quantize: use 8-bit descriptors (paper 001), dequantised for the dot products.
        precision: ``auto``, ``float32`` or ``bfloat16`` (autocast for the forward pass; see ``compute_descriptors``).
    """

    name = "DISA"
    kind = "dot"

    def __init__(self, network, device=None, normalize: bool = False, quantize: bool = False,
                 precision: str = "auto"):
        from MMRegistrationLib.networks.disa import RECEPTIVE_FIELD

        # a channels-last copy (the caller's network is left as it is): ~25 % faster float32 convolutions on the CPU
        self.network = copy.deepcopy(network).to(memory_format=torch.channels_last_3d)
        self.device = device
        self.normalize = bool(normalize)
        self.quantize = bool(quantize)
        self.precision = precision
        self.resolved_precision = resolve_precision(precision, device if device is not None else
                                                    next(network.parameters()).device)
        self.min_voxels = RECEPTIVE_FIELD

    def describe(self, volume: PreparedVolume, argument: str = "image") -> DescriptorVolume:
        result = compute_descriptors(volume, self.network, self.device, quantize=self.quantize,
                                     precision=self.resolved_precision)
        desc = result.descriptors
        if desc.dtype == torch.int8:
            from MMRegistrationLib.networks.disa import dequantize_descriptors

            desc = dequantize_descriptors(desc)
        if self.normalize:
            desc = F.normalize(desc, dim=1, eps=1e-8)
        if not bool(torch.isfinite(desc).all()):
            raise InputError(argument, "gave non-finite descriptors; check the image and the weights")
        return DescriptorVolume(desc, result.grid, result.mask)


class MINDDescriptors(DescriptorBackend):
    """MIND-SSC descriptors (12 channels, :func:`~MMRegistrationLib.similarity.mind.mind_ssc`) on the working grid,
    blurred and subsampled by ``stride`` (a power of 2; voxel ``o`` sits on working voxel ``stride * o``).

    The field of view is eroded by ``radius + dilation`` voxels (descriptors there see the artificial edge).
    """

    name = "MIND-SSC"
    kind = "mse"

    def __init__(self, radius: int = 1, dilation: int = 2, stride: int = 2, device=None):
        if int(stride) < 1 or int(stride) & (int(stride) - 1):
            raise InputError("stride", f"must be a power of 2, got {stride}")
        self.radius, self.dilation, self.stride = int(radius), int(dilation), int(stride)
        self.device = device
        self.min_voxels = 2 * (self.radius + self.dilation) + 2 * self.stride

    def describe(self, volume: PreparedVolume, argument: str = "image") -> DescriptorVolume:
        from MMRegistrationLib.similarity.mind import mind_ssc

        device = torch.device(self.device) if self.device is not None else torch.device("cpu")
        with torch.no_grad():
            desc = mind_ssc(volume.to_tensor(device), self.radius, self.dilation)
        mask = volume.mask
        margin = self.radius + self.dilation
        if not mask.all():
            mask = ndimage.binary_erosion(mask, iterations=margin, border_value=1)
        result = DescriptorVolume(desc, volume.grid, torch.as_tensor(np.ascontiguousarray(mask), device=device))
        for _ in range(int(np.log2(self.stride))):
            result = halve(result)
        return result


# ---- pyramid ------------------------------------------------------------------------------------------------
def make_backend(similarity: str, weights=None, device=None, precision: str = "auto",
                 argument: str = "--weights") -> DescriptorBackend:
    """The one place a descriptor backend is built: ``disa`` (the network from ``weights``, None = the shipped
    ``Resources/DISA/disa_lc2.pt``, forward pass in ``precision``) or ``mind`` (MIND-SSC), on ``device``.

    Raises:
        InputError: an unknown similarity, or missing/damaged weights (named ``argument``).
    """
    if similarity == "mind":
        return MINDDescriptors(device=device)
    if similarity != "disa":
        raise InputError("--similarity", f"'{similarity}' has no descriptors; choose disa or mind")
    from MMRegistrationLib.networks.disa import load_disa

    network, _ = load_disa(weights, device=device, argument=argument)
    return NetworkDescriptors(network, device=device, precision=precision)


def halve(volume: DescriptorVolume) -> DescriptorVolume:
    """One coarser level: ``[1, 2, 1]^3 / 64`` blur (edges replicated), keep the even indices.

    Voxel ``o`` of the result sits exactly on voxel ``2 o`` of the input (affine ``@ diag(2, 2, 2, 1)``), shape
    ``ceil(n / 2)``; the mask keeps a voxel when its 3x3x3 neighbourhood lies inside the input mask.
    """
    desc = volume.descriptors.float()
    channels = desc.shape[1]
    taps = torch.tensor([1.0, 2.0, 1.0], dtype=desc.dtype, device=desc.device)
    kernel = (taps[:, None, None] * taps[None, :, None] * taps[None, None, :]) / 64.0
    kernel = kernel.expand(channels, 1, 3, 3, 3).contiguous()
    blurred = F.conv3d(F.pad(desc, (1,) * 6, mode="replicate"), kernel, stride=2, groups=channels)
    mask = volume.mask.detach().cpu().numpy().astype(bool)
    if not mask.all():
        mask = ndimage.binary_erosion(mask, iterations=1, border_value=1)
    coarse_mask = torch.as_tensor(np.ascontiguousarray(mask[::2, ::2, ::2]), device=volume.mask.device)
    grid = Grid(tuple(blurred.shape[-3:]), np.array(volume.grid.affine) @ np.diag([2.0, 2.0, 2.0, 1.0]))
    return DescriptorVolume(blurred, grid, coarse_mask)


def interpolated(volume: DescriptorVolume) -> DescriptorVolume:
    """The descriptors also halfway between their positions: trilinear interpolation onto the grid of half the
    spacing (voxel ``o`` on input voxel ``o / 2``, shape ``2 n - 1``; 8x the positions). A position is kept in the
    mask when every descriptor it is interpolated from is."""
    desc = volume.descriptors.float()
    size = tuple(2 * n - 1 for n in desc.shape[-3:])
    values = F.interpolate(desc, size=size, mode="trilinear", align_corners=True)
    inside = volume.mask.to(torch.float32)[None, None]
    mask = F.interpolate(inside, size=size, mode="trilinear", align_corners=True)[0, 0] > 1.0 - 1e-6
    grid = Grid(size, np.array(volume.grid.affine) @ np.diag([0.5, 0.5, 0.5, 1.0]))
    return DescriptorVolume(values, grid, mask.to(volume.mask.device))


def pyramid(volume: DescriptorVolume, levels: int, min_size: int = 4) -> list:
    """``levels`` descriptor volumes, coarsest first and ``volume`` last; a level is dropped when an axis would
    fall below ``min_size`` voxels."""
    out = [volume]
    while len(out) < int(levels) and min(out[0].descriptors.shape[-3:]) >= 2 * min_size:
        out.insert(0, halve(out[0]))
    return out


# ---- LC2-style weights ----------------------------------------------------------------------------------------
def _box_sums(integral: np.ndarray, lo: list, hi: list) -> np.ndarray:
    """Sums of boxes ``[lo, hi)`` (per axis index arrays) from a zero-padded 3-D integral image."""
    k0, j0, i0 = np.ix_(*lo)
    k1, j1, i1 = np.ix_(*hi)
    return (
        integral[k1, j1, i1] - integral[k0, j1, i1] - integral[k1, j0, i1] - integral[k1, j1, i0]
        + integral[k0, j0, i1] + integral[k0, j1, i0] + integral[k1, j0, i0] - integral[k0, j0, i0]
    )


def variance_weights(volume: PreparedVolume, grid: Grid, radii: Sequence[int] = (3, 5, 7),
                     min_coverage: float = 0.25) -> np.ndarray:
    """LC2's weight ``w(p)`` at the voxel centres of ``grid`` (a strided sub-grid of the working grid, such as a
    descriptor grid): the variance of the working-grid intensities in the ``(2r+1)^3`` cube around ``p``, counting
    only voxels inside the field of view, averaged over ``radii``.

    Returns a ``grid.shape`` float64 array (0 where less than ``min_coverage`` of a cube lies in the field of view).
    """
    x = np.where(volume.mask, volume.array, 0.0).astype(np.float64)
    m = volume.mask.astype(np.float64)
    index = volume.grid.world_to_index(grid.index_to_world(np.zeros((1, 3))))[0]
    step = np.linalg.inv(volume.grid.affine)[:3, :3] @ np.array(grid.affine)[:3, :3]
    stride = np.round(np.diag(step)).astype(int)
    start = np.round(index).astype(int)
    if not np.allclose(step, np.diag(stride), atol=1e-4) or not np.allclose(index, start, atol=1e-4):
        raise ValueError("variance_weights: 'grid' must be a strided sub-grid of the working grid")
    centres = [start[2 - a] + stride[2 - a] * np.arange(grid.shape[a]) for a in range(3)]  # k, j, i
    integrals = []
    for values in (x, x * x, m):
        integral = np.zeros(tuple(n + 1 for n in values.shape))
        integral[1:, 1:, 1:] = values.cumsum(0).cumsum(1).cumsum(2)
        integrals.append(integral)
    total = np.zeros(grid.shape)
    for r in radii:
        lo = [np.clip(c - r, 0, n) for c, n in zip(centres, x.shape)]
        hi = [np.clip(c + r + 1, 0, n) for c, n in zip(centres, x.shape)]
        s1, s2, count = (_box_sums(integral, lo, hi) for integral in integrals)
        safe = np.maximum(count, 1.0)
        var = np.maximum(s2 / safe - (s1 / safe) ** 2, 0.0)
        total += np.where(count >= min_coverage * (2 * r + 1) ** 3, var, 0.0)
    return total / len(radii)


# ---- pictures -----------------------------------------------------------------------------------------------
def descriptor_colours(volumes: Sequence[DescriptorVolume], components: int = 3) -> list:
    """RGB pictures of descriptor volumes in one shared colour space, for looking at descriptors.

    The colours are the first ``components`` principal components of the descriptors of all ``volumes`` together
    (inside their fields of view), each mapped from its 1st to its 99th percentile onto 0-255. With one basis for
    every volume, corresponding anatomy takes the same colour in two images exactly as far as their descriptors agree
    (what the DISA dot product measures): a quick visual check of a modality pair.

    Returns:
        per volume, ``(k, j, i, components)`` uint8, 0 outside its field of view.

    Raises:
        InputError: no descriptor inside any field of view.
    """
    flat = []
    for volume in volumes:
        desc = volume.descriptors[0].float().detach().cpu().numpy()  # (C, k, j, i)
        mask = volume.mask.detach().cpu().numpy().astype(bool)
        flat.append(desc[:, mask].T)  # (N, C)
    samples = np.concatenate(flat).astype(np.float64)
    if len(samples) < 2:
        raise InputError("descriptors", "no descriptor lies inside the field of view; nothing to picture")
    mean = samples.mean(axis=0)
    _, _, vt = np.linalg.svd(samples - mean, full_matrices=False)
    basis = vt[: int(components)]  # (components, C)
    projected = (samples - mean) @ basis.T
    lo, hi = np.percentile(projected, 1.0, axis=0), np.percentile(projected, 99.0, axis=0)
    scale = np.where(hi > lo, hi - lo, 1.0)
    out = []
    for volume in volumes:
        desc = volume.descriptors[0].float().detach().cpu().numpy()
        values = np.tensordot(basis, desc - mean[:, None, None, None], axes=(1, 0))  # (components, k, j, i)
        scaled = np.clip((values - lo[:, None, None, None]) / scale[:, None, None, None], 0.0, 1.0)
        picture = np.round(255.0 * np.moveaxis(scaled, 0, -1)).astype(np.uint8)
        picture[~volume.mask.detach().cpu().numpy().astype(bool)] = 0
        out.append(picture)
    return out
