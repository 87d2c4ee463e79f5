"""Evaluate one case: DSC, surface distances, TRE and Jacobian (definitions in :mod:`MMRegistrationLib.evaluation`)."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from MMRegistrationLib.core.errors import InputError, MMRegError
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.evaluation.checks import check_label_map, check_transform, landmark_errors
from MMRegistrationLib.io.segmentations import check_same_labels
from MMRegistrationLib.metrics.deformation import (
    gradient_magnitude_per_mm,
    jacobian_determinant_on_grid,
    jacobian_summary,
)
from MMRegistrationLib.metrics.overlap import dice_per_label
from MMRegistrationLib.metrics.surface import directed_distances_mm, summarize_surface_distances, surface_voxels
from MMRegistrationLib.spatial.base import SpatialTransform
from MMRegistrationLib.spatial.resample import resample_labels

ROW_KEYS = ("label", "name", "dice", "msd_mm", "hd95_mm", "hd_mm", "fixed_surface_points", "warped_surface_points", "note")

NOTE_WARPED_EMPTY = (
    "warped moving mask is empty on the fixed grid (mapped outside the fixed field of view, or too thin for "
    "nearest-neighbour resampling); DSC is 0 and surface distances are undefined"
)
NOTE_AT_BORDER = "{which} mask touches the fixed grid border: the field of view cuts it and the cut counts as surface"

CONVENTIONS = {
    "transform": "fixed->moving (LPS mm); none = identity",
    "warping": "moving segmentation resampled onto the fixed grid through T, nearest neighbour",
    "surface": "mask voxels with a 6-neighbour outside the mask (outside the array counts as outside)",
    "distances": "Euclidean, world mm, voxel centre to nearest surface voxel centre of the other mask",
    "msd_mm": "(sum fixed->warped + sum warped->fixed) / (surface points of both)",
    "hd95_mm": "max of the two directed 95th percentiles (numpy.percentile, linear)",
    "hd_mm": "max of the two directed maxima",
    "tre_mm": "|T(fixed landmark) - moving landmark|",
    "jacobian": "det of d T/dx on the fixed grid; folding = det <= 0; mean |grad det J| in 1/mm",
}


class NotEnoughMemory(MMRegError):
    """A step of the evaluation ran out of memory (the CLI reports it with exit code 1, without a traceback)."""


@contextmanager
def memory_step(what: str, hint: str = ""):
    """Turn a :class:`MemoryError` inside the block into :class:`NotEnoughMemory` saying "not enough memory to
    ``what``" (plus ``hint``, e.g. the option that skips the step)."""
    try:
        yield
    except MemoryError:
        raise NotEnoughMemory(f"not enough memory to {what}{'; ' + hint if hint else ''}") from None


@dataclass
class CaseEvaluation:
    """Result of :func:`evaluate_case`.

    Attributes:
        rows: one dict per label with keys ``ROW_KEYS`` (distances in mm, NaN when undefined; ``note`` is ""
            or the reason a value is undefined or needs care).
        tre: ``{"tre_mean_mm", "tre_median_mm", "tre_max_mm", "tre_mm": [...]}`` or None.
        jacobian: ``{"jacobian_min", "jacobian_max", "folding_fraction", "mean_abs_grad_jacobian_per_mm"}``
            over the whole fixed grid, or None.
        jacobian_fixed_mask: the same within the union of the fixed labels, or None.
        jacobian_image: float32 determinant map on the fixed grid, or None.
        warped_moving_seg: the moving labels resampled onto the fixed grid (nearest neighbour).
        transform: description of the transform evaluated.
        seconds: wall time per stage.
    """

    rows: list
    tre: Optional[dict]
    jacobian: Optional[dict]
    jacobian_image: Optional[Image]
    warped_moving_seg: Image
    jacobian_fixed_mask: Optional[dict] = None
    transform: str = "identity"
    seconds: dict = field(default_factory=dict)

    def row(self, label) -> dict:
        """The row of a label value or name."""
        for row in self.rows:
            if row["label"] == label or row["name"] == label:
                return row
        raise KeyError(label)

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN/Inf -> None, numpy scalars -> Python)."""
        return jsonable(
            {
                "labels": self.rows,
                "tre": self.tre,
                "jacobian": self.jacobian,
                "jacobian_fixed_mask": self.jacobian_fixed_mask,
                "transform": self.transform,
                "conventions": CONVENTIONS,
                "wall_seconds": self.seconds,
            }
        )


def jsonable(obj):
    """Recursively convert to JSON types; non-finite floats become None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _touches_border(mask: np.ndarray) -> bool:
    return bool(
        mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any() or mask[:, :, 0].any()
        or mask[:, :, -1].any()
    )


def _label_row(label: int, name: str, dice: float, fixed_mask: np.ndarray, warped_mask: np.ndarray, grid) -> dict:
    notes = []
    fixed_surface = surface_voxels(fixed_mask)
    pf = grid.index_to_world(np.argwhere(fixed_surface)[:, ::-1].astype(np.float64))
    if not warped_mask.any():
        stats = summarize_surface_distances(np.zeros(0), np.zeros(0))
        n_warped = 0
        notes.append(NOTE_WARPED_EMPTY)
    else:
        pw = grid.index_to_world(np.argwhere(surface_voxels(warped_mask))[:, ::-1].astype(np.float64))
        stats = summarize_surface_distances(directed_distances_mm(pf, pw), directed_distances_mm(pw, pf))
        n_warped = len(pw)
        for which, mask in (("fixed", fixed_mask), ("warped moving", warped_mask)):
            if _touches_border(mask):
                notes.append(NOTE_AT_BORDER.format(which=which))
    return {
        "label": int(label),
        "name": name,
        "dice": float(dice),
        "msd_mm": stats["msd_mm"],
        "hd95_mm": stats["hd95_mm"],
        "hd_mm": stats["hd_mm"],
        "fixed_surface_points": int(len(pf)),
        "warped_surface_points": int(n_warped),
        "note": "; ".join(notes),
    }


def _label_rows(fixed: Image, warped: Image, labels: list, names: dict, monitor: Monitor) -> list:
    """One row (:data:`ROW_KEYS`) per label: DSC and surface distances of the fixed and warped moving masks."""
    dice = dice_per_label(fixed.array, warped.array, labels)
    rows = []
    for n, label in enumerate(labels):
        monitor.report(n / len(labels), "surface distances")
        rows.append(_label_row(label, names.get(label, str(label)), dice[label], fixed.array == label,
                               warped.array == label, fixed.grid))
    return rows


def _jacobian_statistics(transform: Optional[SpatialTransform], fixed: Image, monitor: Monitor) -> tuple:
    """``(summary over the grid, summary within the fixed labels, float32 determinant image)``."""
    det = jacobian_determinant_on_grid(transform, fixed.grid, monitor)
    grad = gradient_magnitude_per_mm(det, fixed.grid)
    whole = jacobian_summary(det, fixed.grid, grad_magnitude=grad)
    within = jacobian_summary(det, fixed.grid, fixed.array != 0, grad_magnitude=grad)
    del grad  # freed before the float32 copy of the determinant
    return whole, within, Image(det.astype(np.float32), fixed.grid)


def evaluate_case(
    fixed_seg: Image,
    moving_seg: Image,
    transform: Optional[SpatialTransform] = None,
    label_names: Optional[dict] = None,
    fixed_landmarks=None,
    moving_landmarks=None,
    jacobian: bool = True,
    progress=None,
    cancel=None,
) -> CaseEvaluation:
    """Evaluate ``transform`` (fixed -> moving; None = identity) on one case.

    Args:
        fixed_seg: integer label map ``(K, J, I)``; its grid is where every metric is computed.
        moving_seg: integer label map (any grid), same label values for corresponding structures.
        transform: fixed -> moving :class:`SpatialTransform` (LPS mm) or None.
        label_names: label value -> name (missing names: the value as text).
        fixed_landmarks, moving_landmarks: corresponding ``(N, 3)`` LPS mm points (both or neither).
        jacobian: compute the Jacobian statistics and map.
        progress, cancel: see :mod:`MMRegistrationLib.core.progress`.

    Raises:
        InputError: naming ``fixed_seg``/``moving_seg``/``transform``/``fixed_landmarks``/``moving_landmarks``.
    """
    monitor = Monitor.wrap(progress, cancel)
    fixed = check_label_map(fixed_seg, "fixed_seg")
    moving = check_label_map(moving_seg, "moving_seg")
    labels = check_same_labels(fixed, moving)
    transform = check_transform(transform)
    tre = landmark_errors(transform, fixed_landmarks, moving_landmarks)
    try:
        names = {int(k): str(v) for k, v in (label_names or {}).items()}
    except (TypeError, ValueError, AttributeError):
        raise InputError("label_names", "must map label values (integers) to names") from None
    seconds = {}
    size = "x".join(str(n) for n in fixed.grid.size_ijk)
    t0 = time.perf_counter()
    with memory_step(f"resample the moving segmentation onto the fixed grid ({size} voxels)"):
        warped = resample_labels(moving, fixed.grid, transform, progress=monitor.stage(0.0, 0.3))
    seconds["resample"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with memory_step(f"compute the overlap and surface distances on the fixed grid ({size} voxels)"):
        rows = _label_rows(fixed, warped, labels, names, monitor.stage(0.3, 0.7))
    seconds["overlap_and_surfaces"] = time.perf_counter() - t0

    jac = jac_mask = jac_image = None
    if jacobian:
        t0 = time.perf_counter()
        with memory_step(f"compute the Jacobian determinant on the fixed grid ({size} voxels)",
                         "skip it with --no-jacobian (jacobian=False)"):
            jac, jac_mask, jac_image = _jacobian_statistics(transform, fixed, monitor.stage(0.7, 0.95))
        seconds["jacobian"] = time.perf_counter() - t0
    monitor.report(1.0, "evaluation done")
    return CaseEvaluation(
        rows=rows,
        tre=tre,
        jacobian=jac,
        jacobian_image=jac_image,
        warped_moving_seg=warped,
        jacobian_fixed_mask=jac_mask,
        transform="identity" if transform is None else repr(transform),
        seconds=seconds,
    )
