"""MIND-SSC: modality independent neighbourhood descriptor with self-similarity context (Heinrich et al. 2013).

For every voxel ``x`` and each of the 12 pairs ``(a, b)`` of six-neighbourhood offsets at distance ``dilation``
that are not opposite each other (``|a - b| = dilation * sqrt(2)``), the patch distance

    ``D_ab(x) = mean over the (2 radius + 1)^3 cube q of (I(x + a + q) - I(x + b + q))^2``

is turned into ``exp(-D_ab(x) / V(x))`` with ``V(x)`` the mean of the 12 distances, and each descriptor is divided
by its largest channel (so its maximum is 1). The descriptor compares an image with itself only, so it is
invariant to any affine intensity change ``a I + b`` (``a != 0``) and can be compared across modalities with a
plain squared difference. Borders replicate the edge voxels; output has the input's shape.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.similarity.lc2 import as_volume_batch

SIX_NEIGHBOURHOOD = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
"""Unit offsets ``(dz, dy, dx)`` of the six-neighbourhood."""


def ssc_pairs() -> list:
    """The 12 pairs of six-neighbourhood offsets that are not opposite (distance sqrt(2)), in a fixed order."""
    pairs = []
    for a, b in itertools.combinations(SIX_NEIGHBOURHOOD, 2):
        if sum((p - q) ** 2 for p, q in zip(a, b)) == 2:
            pairs.append((a, b))
    return pairs


def _shifted(padded: torch.Tensor, offset, pad: int, shape) -> torch.Tensor:
    """``I(x + offset)`` for every ``x`` of the unpadded ``shape`` (``padded`` has ``pad`` extra voxels per side)."""
    dz, dy, dx = offset
    d, h, w = shape
    return padded[..., pad + dz: pad + dz + d, pad + dy: pad + dy + h, pad + dx: pad + dx + w]


def mind_ssc(image, radius: int = 1, dilation: int = 2, eps: float = 1e-3) -> torch.Tensor:
    """MIND-SSC descriptors.

    Args:
        image: ``(D, H, W)`` or ``(B, 1, D, H, W)`` volume (any intensity scale).
        radius: half-size (voxels) of the cube over which squared differences are averaged.
        dilation: distance (voxels) of the six neighbours from the centre.
        eps: ``V`` is clamped below at ``eps`` times its mean over the image (flat regions), so a constant image
            gives finite descriptors (all 1).

    Returns:
        ``(B, 12, D, H, W)`` descriptors in ``(0, 1]`` with a maximum of 1 per voxel; differentiable.
    """
    if int(radius) < 0 or int(dilation) < 1:
        raise InputError("mind_ssc", f"radius must be >= 0 and dilation >= 1, got radius={radius}, dilation={dilation}")
    x = as_volume_batch(image, "image")
    radius, dilation = int(radius), int(dilation)
    shape = tuple(x.shape[-3:])
    pad = dilation + radius
    padded = F.pad(x, (pad,) * 6, mode="replicate")
    inner_shape = tuple(n + 2 * radius for n in shape)  # squared differences over x + q, |q| <= radius
    distances = []
    for a, b in ssc_pairs():
        sa = _shifted(padded, tuple(dilation * v for v in a), dilation, inner_shape)
        sb = _shifted(padded, tuple(dilation * v for v in b), dilation, inner_shape)
        diff2 = (sa - sb) ** 2
        distances.append(F.avg_pool3d(diff2, kernel_size=2 * radius + 1, stride=1) if radius else diff2)
    dist = torch.cat(distances, dim=1)  # (B, 12, D, H, W)
    variance = dist.mean(dim=1, keepdim=True)
    floor = eps * variance.mean(dim=(-3, -2, -1), keepdim=True)
    variance = torch.maximum(variance, floor).clamp_min(torch.finfo(dist.dtype).tiny)
    descriptor = torch.exp(-dist / variance)
    return descriptor / descriptor.amax(dim=1, keepdim=True)


def mind_loss(fixed_descriptors: torch.Tensor, moving_descriptors: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference of MIND descriptors (minimise; 0 for identical structure).

    Args:
        fixed_descriptors, moving_descriptors: ``(B, C, D, H, W)`` on the same grid (e.g. from :func:`mind_ssc`,
            the moving one warped onto the fixed grid).
        mask: optional ``(B, 1, D, H, W)`` or ``(D, H, W)`` weights/booleans selecting the voxels that count.
    """
    if fixed_descriptors.shape != moving_descriptors.shape:
        raise InputError(
            "moving_descriptors",
            f"shape {tuple(moving_descriptors.shape)} differs from fixed {tuple(fixed_descriptors.shape)}",
        )
    sq = ((fixed_descriptors - moving_descriptors) ** 2).mean(dim=1, keepdim=True)
    if mask is None:
        return sq.mean()
    weights = as_volume_batch(torch.as_tensor(mask).to(sq.dtype), "mask").to(sq.device)
    total = weights.sum() * 1.0
    if not bool(total > 0):
        raise InputError("mask", "selects no voxel")
    return (sq * weights).sum() / total
