"""Resample images and label maps into any reference geometry through a ``reference -> image`` transform."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image, unique_values
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.spatial.base import SpatialTransform
from MMRegistrationLib.spatial.sampling import sample_at_world

INTERPOLATIONS = ("linear", "nearest", "label-nearest", "label-linear")


def _mapped_points(reference: Grid, transform: Optional[SpatialTransform], k_range, device) -> torch.Tensor:
    pts = reference.world_points_torch(device=device, dtype=torch.float32, k_range=k_range)
    return pts if transform is None else transform.map_points(pts)


def resample(
    image: Image,
    reference: Grid,
    transform: Optional[SpatialTransform] = None,
    interpolation: str = "linear",
    default_value: float = 0.0,
    device=None,
    chunk_voxels: int = 2**21,
    progress=None,
    cancel=None,
) -> Image:
    """Resample ``image`` onto ``reference``: ``out(x) = image(T(x))`` for each reference voxel centre ``x``.

    Args:
        image: the image to resample (e.g. the moving image).
        reference: output geometry (e.g. the fixed grid).
        transform: maps reference world points to ``image`` world points (e.g. fixed -> moving); None = identity.
        interpolation: ``linear`` (trilinear), ``nearest``, ``label-nearest`` (nearest, integer output) or
            ``label-linear`` (each label's one-hot channel interpolated linearly, then argmax: smoother label
            boundaries than nearest neighbour).
        default_value: value outside ``image`` (ITK rule: beyond half a voxel from the border).
        progress, cancel: progress callback and cancel check (see :mod:`MMRegistrationLib.core.progress`).

    Returns:
        A new :class:`Image` on ``reference``; label interpolations keep the input's integer dtype, ``linear``
        returns float32.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"resample: 'interpolation' must be one of {INTERPOLATIONS}, got '{interpolation}'")
    monitor = Monitor.wrap(progress, cancel)
    device = torch.device(device) if device is not None else torch.device("cpu")
    is_label = interpolation.startswith("label")
    if is_label and not np.issubdtype(image.array.dtype, np.integer) and image.array.dtype != np.bool_:
        raise ValueError("resample: label interpolation needs an integer label map")

    if interpolation == "label-linear":
        labels = unique_values(image.array)
        # channel c is the indicator of labels[c]; background (if present) competes like any label
        volume = torch.stack(
            [torch.as_tensor(image.array == lab, dtype=torch.float32, device=device) for lab in labels]
        )
        out_dtype = image.array.dtype
    else:
        volume = torch.as_tensor(np.ascontiguousarray(image.array), dtype=torch.float32).to(device)[None]
        out_dtype = image.array.dtype if is_label else np.float32

    mode = "bilinear" if interpolation in ("linear", "label-linear") else "nearest"
    k_chunk = max(1, chunk_voxels // (reference.shape[1] * reference.shape[2]))
    out = np.empty(reference.shape, dtype=out_dtype)
    for k0 in range(0, reference.shape[0], k_chunk):
        k1 = min(reference.shape[0], k0 + k_chunk)
        pts = _mapped_points(reference, transform, (k0, k1), device)
        if interpolation == "label-linear":
            probs = sample_at_world(volume, image.grid, pts, mode="bilinear", outside_value=0.0)
            inside = probs.sum(-1) > 0
            values = torch.as_tensor(labels, device=device)[probs.argmax(-1)]
            fill = torch.as_tensor(default_value, dtype=values.dtype, device=device)
            out[k0:k1] = torch.where(inside, values, fill).cpu().numpy().astype(out_dtype)
        else:
            values = sample_at_world(volume, image.grid, pts, mode=mode, outside_value=default_value)[..., 0]
            if is_label:
                values = torch.round(values)
            out[k0:k1] = values.cpu().numpy().astype(out_dtype)
        monitor.report(k1 / reference.shape[0], "resampling")
    return Image(out, reference)


def resample_labels(image: Image, reference: Grid, transform: Optional[SpatialTransform] = None, **kwargs) -> Image:
    """Label-map resampling with nearest neighbour (the evaluation convention)."""
    return resample(image, reference, transform, interpolation="label-nearest", **kwargs)
