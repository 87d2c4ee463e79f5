"""A region of interest (``--roi``): a Slicer markups ROI file or ``cx,cy,cz,sx,sy,sz`` in LPS mm.

A region is an :class:`~MMRegistrationLib.core.box.OrientedBox` in the fixed image's world space (LPS mm). It comes
from

- a Slicer markups ROI file (``.mrk.json``): the first markup of type ``ROI``; its ``center``, ``size`` and
  ``orientation`` (9 numbers, row-major 3x3, one *column* per box axis: ``[o[0], o[3], o[6]]`` is the box's x axis,
  as Slicer's markups schema states) in the file's ``coordinateSystem`` (Slicer writes ``RAS`` or ``LPS``; ``LPS``
  when the key is absent, as Slicer reads it), converted to LPS. A file holds the ROI in its node's coordinates:
  a parent transform of the ROI node is not in it (harden it before saving);
- six comma-separated numbers ``cx,cy,cz,sx,sy,sz``: an axis-aligned box with that centre and those edge lengths,
  in LPS mm.

:func:`check_region` then checks the box against the fixed image.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from MMRegistrationLib.core.box import OrientedBox
from MMRegistrationLib.core.conventions import LPS_FROM_RAS
from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.image import Image

NUMBERS_FORM = "cx,cy,cz,sx,sy,sz (centre and edge lengths, LPS mm)"


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in np.asarray(values, dtype=np.float64).reshape(-1)) + ")"


def describe_box(box: OrientedBox, coordinates: str = "LPS") -> str:
    """``centre (x, y, z), size (sx, sy, sz) mm[, axes ...] (LPS mm)`` — or in RAS with ``coordinates='RAS'``."""
    flip = LPS_FROM_RAS if coordinates == "RAS" else np.eye(3)
    text = f"centre {_fmt(flip @ box.center)}, size {_fmt(box.size)}"
    axes = flip @ box.axes
    if not np.allclose(np.abs(axes), np.eye(3), atol=1e-6):
        text += ", axes (columns) " + ", ".join(_fmt(axes[:, n]) for n in range(3))
    return f"{text} ({coordinates} mm)"


def describe_extent(image: Image, coordinates: str = "LPS") -> str:
    """The fixed image's physical extent (outer voxel faces) as per-axis ranges, ``coordinates`` LPS or RAS."""
    corners = image.grid.corners_world()
    if coordinates == "RAS":
        corners = corners @ LPS_FROM_RAS
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    ranges = ", ".join(f"{'xyz'[n]} [{lo[n]:.4g}, {hi[n]:.4g}]" for n in range(3))
    direction = image.grid.direction
    oblique = not np.allclose(np.abs(direction), np.eye(3), atol=1e-6)
    return f"{ranges} ({coordinates} mm" + ("; its bounding box, the grid is oblique)" if oblique else ")")


# ---- reading ---------------------------------------------------------------------------------------------
def _numbers(value, what: str, count: int, source: str, argument: str) -> np.ndarray:
    try:
        numbers = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(argument, f"{source}: {what} must be {count} numbers, got {value!r}") from None
    if numbers.shape != (count,):
        raise InputError(argument, f"{source}: {what} must be {count} numbers, got {value!r}")
    if not np.all(np.isfinite(numbers)):
        raise InputError(argument, f"{source}: {what} must be finite numbers, got {value!r}")
    return numbers


def _checked_size(size: np.ndarray, source: str, argument: str) -> np.ndarray:
    if np.any(size <= 0):
        raise InputError(argument, f"{source}: the box size must be positive along every axis, got {_fmt(size)} mm")
    return size


def _box(center, axes, size, source: str, argument: str) -> OrientedBox:
    try:
        return OrientedBox(center, axes, size / 2.0)
    except ValueError as err:
        raise InputError(argument, f"{source}: {err}") from None


def _read_numbers(text: str, argument: str) -> OrientedBox:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 6:
        raise InputError(argument, f"'{text}': expected 6 comma-separated numbers {NUMBERS_FORM} or a Slicer "
                                   f"markups ROI file (.mrk.json), got {len(parts)} value(s)")
    try:
        numbers = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        raise InputError(argument, f"'{text}': every value of {NUMBERS_FORM} must be a number") from None
    if not np.all(np.isfinite(numbers)):
        raise InputError(argument, f"'{text}': every value of {NUMBERS_FORM} must be finite")
    source = f"'{text}'"
    return _box(numbers[:3], np.eye(3), _checked_size(numbers[3:], source, argument), source, argument)


def _units(markup: dict, source: str, argument: str) -> None:
    units = markup.get("coordinateUnits", "mm")
    if isinstance(units, (list, tuple)) and units:
        units = units[0]
    if str(units).strip() != "mm":
        raise InputError(argument, f"{source}: coordinateUnits '{units}' is not supported (mm expected)")


def _read_markups_file(path: Path, argument: str) -> OrientedBox:
    source = str(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(argument, f"{source} is not a Slicer markups ROI file (.mrk.json): not JSON") from None
    except OSError as err:
        raise InputError(argument, f"{source} cannot be read: {err.strerror or err}") from None
    markups = doc.get("markups") if isinstance(doc, dict) else None
    if not isinstance(markups, list):
        raise InputError(argument, f"{source} is not a Slicer markups file: it has no 'markups' list")
    types = [str(m.get("type", "?")) if isinstance(m, dict) else "?" for m in markups]
    rois = [m for m, t in zip(markups, types) if t == "ROI"]
    if not rois:
        found = ", ".join(sorted(set(types))) or "nothing"
        raise InputError(argument, f"{source} holds no ROI markup (found: {found}); save a markups ROI (box) "
                                   "from Slicer, not a point list")
    roi = rois[0]  # only the first ROI is used
    system = str(roi.get("coordinateSystem", "LPS")).strip().upper()  # Slicer reads a file without it as LPS
    if system not in ("LPS", "RAS"):
        raise InputError(argument, f"{source}: unsupported coordinateSystem '{system}' (LPS or RAS expected)")
    _units(roi, source, argument)
    if roi.get("insideOut"):
        raise InputError(argument, f"{source}: the ROI is inside-out (it selects the outside of the box); "
                                   "a box region is needed")
    for key in ("center", "size"):
        if key not in roi:
            raise InputError(argument, f"{source}: the ROI has no '{key}'")
    center = _numbers(roi["center"], "the ROI's 'center'", 3, source, argument)
    size = _checked_size(_numbers(roi["size"], "the ROI's 'size'", 3, source, argument), source, argument)
    orientation = np.eye(3)
    if roi.get("orientation") is not None:  # row-major 3x3, one column per box axis (Slicer's markups schema)
        orientation = _numbers(roi["orientation"], "the ROI's 'orientation'", 9, source, argument).reshape(3, 3)
    if system == "RAS":
        center, orientation = LPS_FROM_RAS @ center, LPS_FROM_RAS @ orientation
    return _box(center, orientation, size, source, argument)


def read_region(value: str | os.PathLike, argument: str = "--roi") -> OrientedBox:
    """A region (LPS mm) from a Slicer markups ROI file (``.mrk.json``) or ``cx,cy,cz,sx,sy,sz`` (LPS mm).

    Raises:
        InputError: naming ``argument``: a missing or unreadable file, a file without an ROI, malformed or
            non-finite numbers, a size that is not positive, axes that are not orthonormal.
    """
    if isinstance(value, OrientedBox):
        return value
    text = os.fspath(value).strip() if isinstance(value, (str, os.PathLike)) else str(value)
    if not text:
        raise InputError(argument, f"is empty; give a Slicer markups ROI file (.mrk.json) or {NUMBERS_FORM}")
    path = Path(text)
    if path.is_file():
        return _read_markups_file(path, argument)
    if path.is_dir():
        raise InputError(argument, f"{text} is a folder; give a Slicer markups ROI file (.mrk.json) or {NUMBERS_FORM}")
    if "," in text and not text.lower().endswith(".json"):
        return _read_numbers(text, argument)
    raise InputError(argument, f"file not found: {text} (give a Slicer markups ROI file (.mrk.json) or {NUMBERS_FORM})")


# ---- checking against the fixed image -------------------------------------------------------------------
def _separated(a: np.ndarray, b: np.ndarray, edges_a: np.ndarray, edges_b: np.ndarray) -> bool:
    """True when the convex parallelepipeds with corners ``a``/``b`` (8, 3) and edge directions ``edges_*``
    (3 columns each) are disjoint (a separating axis exists; touching counts as overlapping)."""
    candidates = [*edges_a.T, *edges_b.T]
    for edges in (edges_a, edges_b):
        candidates += [np.cross(edges[:, 0], edges[:, 1]), np.cross(edges[:, 1], edges[:, 2]),
                       np.cross(edges[:, 2], edges[:, 0])]
    candidates += [np.cross(u, v) for u in edges_a.T for v in edges_b.T]
    scale = max(np.abs(a).max(), np.abs(b).max(), 1.0)
    for axis in candidates:
        norm = np.linalg.norm(axis)
        if norm < 1e-9:
            continue
        axis = axis / norm
        pa, pb = a @ axis, b @ axis
        if pa.max() < pb.min() - 1e-9 * scale or pb.max() < pa.min() - 1e-9 * scale:
            return True
    return False


def _holds_voxel_centre(box: OrientedBox, image: Image, chunk: int = 1 << 20) -> bool:
    """True when at least one voxel centre of ``image`` lies in ``box`` (early exit; slab by slab)."""
    grid = image.grid
    size = np.array(grid.size_ijk)
    index = grid.world_to_index(box.corners())
    lo = np.maximum(np.floor(index.min(axis=0) - 1e-6), 0).astype(int)
    hi = np.minimum(np.ceil(index.max(axis=0) + 1e-6), size - 1).astype(int)
    if np.any(hi < lo):
        return False
    i = np.arange(lo[0], hi[0] + 1, dtype=np.float64)
    j = np.arange(lo[1], hi[1] + 1, dtype=np.float64)
    per_k = max(1, chunk // (len(i) * len(j)))
    jj, ii = np.meshgrid(j, i, indexing="ij")
    plane = np.stack([ii, jj, np.zeros_like(ii)], axis=-1).reshape(-1, 3)
    for k0 in range(lo[2], hi[2] + 1, per_k):
        ks = np.arange(k0, min(k0 + per_k, hi[2] + 1), dtype=np.float64)
        indices = np.repeat(plane[None], len(ks), axis=0)
        indices[..., 2] = ks[:, None]
        if box.contains(grid.index_to_world(indices.reshape(-1, 3))).any():
            return True
    return False


def check_region(box: OrientedBox, fixed: Image, argument: str = "--roi", coordinates: str = "LPS") -> OrientedBox:
    """Refuse a region that cannot select part of the fixed image; returns ``box``.

    Raises ``InputError(argument, ...)`` for a size that is zero, negative or not finite, a box entirely outside
    the fixed image, or a box that holds no fixed-image voxel centre. Messages state the box and the fixed
    image's extent in ``coordinates`` (``LPS``, the engine's; ``RAS`` for Slicer's users).
    """
    if not isinstance(box, OrientedBox):
        raise InputError(argument, f"expected an OrientedBox, got {type(box).__name__}")
    half = np.asarray(box.half_size, dtype=np.float64)
    if not (np.all(np.isfinite(half)) and np.all(half > 0)):
        raise InputError(argument, f"the box size must be positive and finite along every axis, got "
                                   f"{_fmt(2 * half)} mm")
    grid = fixed.grid
    where = f"the fixed image covers {describe_extent(fixed, coordinates)}"
    if _separated(box.corners(), grid.corners_world(), box.axes, grid.affine[:3, :3]):
        raise InputError(argument, f"the box ({describe_box(box, coordinates)}) is entirely outside the fixed "
                                   f"image; {where}")
    if not _holds_voxel_centre(box, fixed):
        spacing = ", ".join(f"{s:.4g}" for s in grid.spacing)
        raise InputError(argument, f"the box ({describe_box(box, coordinates)}) holds no voxel centre of the fixed "
                                   f"image (spacing {spacing} mm); make it larger or move it inside; {where}")
    return box


__all__ = ["check_region", "describe_box", "describe_extent", "read_region"]
