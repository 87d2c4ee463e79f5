"""Similarity heatmaps (paper 001, Fig. 1): how similar one point of the fixed image is to every point of the moving
image, in descriptor space.

For a point ``x`` of the fixed image (LPS mm) the fixed descriptor ``f = phi(F)[x']`` at the descriptor position
``x'`` nearest to ``x`` is compared with every moving descriptor ``phi(M)[q]``. (A descriptor interpolated between
positions is a blend of up to 8 different patches; at fine working spacings such a blend resembled the descriptors
of flat regions more than any real patch: MIND-SSC's heatmap of the sample TRUS against itself peaked 40 mm from the
point at 1.6 mm, 1.7 mm with the nearest descriptor.)

- DISA (``kind == "dot"``): ``h(q) = <f, phi(M)[q]>``, an approximation of the LC2 of the two patches;
- MIND-SSC (``kind == "mse"``): ``h(q) = 1 - mean_c (f_c - phi(M)[q]_c)^2`` (1 = identical descriptors).

Moving descriptors outside the moving field of view get 0. A sharp single peak means an unambiguous match.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.similarity.descriptors import DescriptorBackend, make_backend
from MMRegistrationLib.similarity.disa import DEFAULT_SPACING_MM, prepare_volume
from MMRegistrationLib.spatial.base import SpatialTransform


def similarity_heatmap(
    fixed_image: Image,
    moving_image: Image,
    point_lps,
    transform: Optional[SpatialTransform] = None,
    descriptors: Optional[DescriptorBackend] = None,
    weights=None,
    spacing_mm: float = DEFAULT_SPACING_MM,
    fixed_fov_threshold: Optional[float] = 0.0,
    moving_fov_threshold: Optional[float] = None,
    upsample: bool = False,
    device=None,
    point_argument: str = "point_lps",
    precision: str = "auto",
) -> Image:
    """Similarity of the fixed descriptor at ``point_lps`` to every moving descriptor (module docstring).

    Args:
        fixed_image, moving_image: the images (e.g. TRUS and MR).
        point_lps: ``(3,)`` point of the fixed image (LPS mm); it must lie inside the fixed field of view.
        transform: optional fixed -> moving transform (e.g. a registration result). Given, the heatmap is returned on
            the fixed working grid, ``h(T(y))`` at each fixed voxel ``y``: after a good registration its peak sits on
            ``point_lps`` itself.
        descriptors: descriptor backend (default: the DISA network from ``weights``, None = the shipped weights).
        spacing_mm: isotropic working spacing of both images.
        fixed_fov_threshold, moving_fov_threshold: field-of-view thresholds (see ``prepare_volume``).
        upsample: without ``transform``, return the heatmap trilinearly resampled onto the moving working grid
            instead of the (4x coarser for DISA) moving descriptor grid.
        point_argument: the argument name used in errors about the point (``--point`` from the CLI).
        precision: forward pass of the default network (``auto``, ``float32``, ``bfloat16``).

    Returns:
        float32 :class:`Image` on the moving descriptor grid, the moving working grid (``upsample``) or the fixed
        working grid (``transform``).

    Raises:
        InputError: a point that is not three finite numbers or lies outside the fixed field of view, bad images,
            missing or damaged weights.
    """
    from MMRegistrationLib.spatial.resample import resample

    point = np.asarray(point_lps, dtype=np.float64).reshape(-1)
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise InputError(point_argument, f"expected three finite numbers x,y,z (LPS mm), got {point_lps!r}")
    if descriptors is None:
        descriptors = make_backend("disa", weights, device or "cpu", precision)
    fp = prepare_volume(fixed_image, spacing_mm, fixed_fov_threshold, "--fixed")
    mp = prepare_volume(moving_image, spacing_mm, moving_fov_threshold, "--moving")
    index = fp.grid.world_to_index(point)
    size = np.array(fp.grid.size_ijk)
    nearest = np.clip(np.round(index).astype(int), 0, size - 1)
    if np.any(index < -0.5) or np.any(index > size - 0.5) or not fp.mask[nearest[2], nearest[1], nearest[0]]:
        raise InputError(point_argument, f"{point.tolist()} (LPS mm) lies outside the fixed image's field of view")
    fixed_desc = descriptors(fp, "--fixed")
    moving_desc = descriptors(mp, "--moving")
    f = fixed_desc.descriptors[0].float()
    i, j, k = np.clip(np.round(fixed_desc.grid.world_to_index(point)).astype(int), 0,
                      np.array(fixed_desc.grid.size_ijk) - 1)
    feature = f[:, k, j, i]  # (C,)
    m = moving_desc.descriptors[0].float()
    if descriptors.kind == "dot":
        heat = (m * feature[:, None, None, None]).sum(0)
    else:
        heat = 1.0 - ((m - feature[:, None, None, None]) ** 2).mean(0)
    heat = torch.where(moving_desc.mask.to(heat.device), heat, torch.zeros_like(heat))
    result = Image(heat.detach().cpu().numpy().astype(np.float32), moving_desc.grid)
    if transform is not None:
        return resample(result, fp.grid, transform)
    if upsample:
        return resample(result, mp.grid)
    return result


def heatmap_peak(heatmap: Image) -> tuple:
    """``(point (3,) LPS mm, value)`` of the heatmap's maximum (the first one in array order on ties)."""
    flat = int(np.argmax(heatmap.array))
    k, j, i = np.unravel_index(flat, heatmap.array.shape)
    return heatmap.grid.index_to_world(np.array([i, j, k], dtype=np.float64)), float(heatmap.array[k, j, i])
