"""Landmarks: CSV (``x,y,z`` LPS mm, one row per landmark) and Slicer markups (``.mrk.json``, ``.fcsv``)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from MMRegistrationLib.core.conventions import ras_to_lps
from MMRegistrationLib.core.errors import InputError


def _read_csv(path: Path, argument: str) -> np.ndarray:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [r for r in csv.reader(fh) if any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if not rows:
        return np.zeros((0, 3))
    header = [c.strip().lower() for c in rows[0]]
    if {"x", "y", "z"} <= set(header):
        cols = [header.index(c) for c in ("x", "y", "z")]
        rows = rows[1:]
    else:
        cols = [0, 1, 2]
    try:
        points = np.array([[float(r[c]) for c in cols] for r in rows], dtype=np.float64)
    except (ValueError, IndexError):
        raise InputError(argument, f"{path}: every row needs numeric x,y,z (LPS mm)") from None
    return points.reshape(-1, 3)


def _read_mrk_json(path: Path, argument: str) -> np.ndarray:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
        markups = doc["markups"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise InputError(argument, f"{path} is not a Slicer markups .mrk.json file") from None
    if not isinstance(markups, list):
        raise InputError(argument, f"{path}: 'markups' must be a list of markups")
    points = []
    for markup in markups:
        if not isinstance(markup, dict):
            raise InputError(argument, f"{path}: every entry of 'markups' must be an object")
        system = str(markup.get("coordinateSystem", "LPS")).strip().upper()
        if system not in ("LPS", "RAS"):
            raise InputError(argument, f"{path}: unsupported coordinateSystem '{system}' (LPS or RAS expected)")
        for n, cp in enumerate(markup.get("controlPoints") or [], start=1):
            label = cp.get("label", n) if isinstance(cp, dict) else n
            if not isinstance(cp, dict) or "position" not in cp:
                raise InputError(argument, f"{path}: control point '{label}' has no position (undefined point?)")
            try:
                p = np.asarray(cp["position"], dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(argument, f"{path}: control point '{label}' has a non-numeric position") from None
            if p.shape != (3,):
                raise InputError(argument, f"{path}: control point '{label}' position must be 3 numbers, got {cp['position']}")
            points.append(ras_to_lps(p) if system == "RAS" else p)
    return np.array(points, dtype=np.float64).reshape(-1, 3)


def _read_fcsv(path: Path, argument: str) -> np.ndarray:
    # Slicer writes "# CoordinateSystem = RAS" / "= LPS"; files from before Slicer 4.11 write the enum 0 (RAS) / 1 (LPS).
    system = "RAS"
    points = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if line.startswith("#"):
            if "coordinatesystem" in line.lower().replace(" ", ""):
                value = line.split("=")[-1].strip().upper()
                if value in ("LPS", "1"):
                    system = "LPS"
                elif value in ("RAS", "0"):
                    system = "RAS"
                else:
                    raise InputError(argument, f"{path}: unsupported CoordinateSystem '{value}' (RAS or LPS expected)")
            continue
        fields = next(csv.reader([line]), [])
        if not any(f.strip() for f in fields):
            continue
        try:
            points.append([float(v) for v in fields[1:4]])
        except ValueError:
            raise InputError(argument, f"{path} line {number}: x,y,z (columns 2-4) must be numbers") from None
        if len(points[-1]) != 3:
            raise InputError(argument, f"{path} line {number}: needs at least 4 columns (id,x,y,z)")
    pts = np.array(points, dtype=np.float64).reshape(-1, 3)
    return ras_to_lps(pts) if system == "RAS" else pts


def read_landmarks(path: str | os.PathLike, argument: str = "landmarks") -> np.ndarray:
    """Read landmarks as an ``(N, 3)`` LPS mm array. ``.mrk.json``/``.fcsv`` in RAS are converted."""
    path = Path(path)
    if not path.is_file():
        raise InputError(argument, f"file not found: {path}")
    name = path.name.lower()
    try:
        if name.endswith(".json"):
            points = _read_mrk_json(path, argument)
        elif name.endswith(".fcsv"):
            points = _read_fcsv(path, argument)
        else:
            points = _read_csv(path, argument)
    except UnicodeDecodeError:
        raise InputError(argument, f"{path} is not a text landmark file (CSV, .fcsv or .mrk.json)") from None
    if len(points) == 0:
        raise InputError(argument, f"{path} contains no landmark")
    if not np.all(np.isfinite(points)):
        raise InputError(argument, f"{path} contains NaN/Inf coordinates")
    return points


def write_landmarks_csv(points: np.ndarray, path: str | os.PathLike) -> Path:
    """Write ``(N, 3)`` LPS mm points as CSV with header ``x,y,z``."""
    path = Path(path)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["x", "y", "z"])
            writer.writerows([[repr(float(v)) for v in p] for p in points])
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def check_landmark_pair(fixed: np.ndarray, moving: np.ndarray, argument: str = "--moving-landmarks") -> None:
    """Corresponding landmark lists must have the same number of rows."""
    if len(fixed) != len(moving):
        raise InputError(argument, f"has {len(moving)} landmarks but the fixed list has {len(fixed)}; rows must correspond")
