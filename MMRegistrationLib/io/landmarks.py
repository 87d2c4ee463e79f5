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
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and not r[0].lstrip().startswith("#")]
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
        doc = json.loads(path.read_text())
        markups = doc["markups"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError(argument, f"{path} is not a Slicer markups .mrk.json file") from None
    points = []
    for markup in markups:
        system = str(markup.get("coordinateSystem", "LPS")).upper()
        for cp in markup.get("controlPoints", []):
            p = np.asarray(cp["position"], dtype=np.float64)
            points.append(ras_to_lps(p) if system == "RAS" else p)
    return np.array(points, dtype=np.float64).reshape(-1, 3)


def _read_fcsv(path: Path, argument: str) -> np.ndarray:
    system = "RAS"
    points = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            if "coordinatesystem" in line.lower().replace(" ", ""):
                value = line.split("=")[-1].strip().upper()
                system = "LPS" if value in ("LPS", "1") else "RAS"
            continue
        fields = line.split(",")
        if len(fields) >= 4:
            points.append([float(v) for v in fields[1:4]])
    pts = np.array(points, dtype=np.float64).reshape(-1, 3)
    return ras_to_lps(pts) if system == "RAS" else pts


def read_landmarks(path: str | os.PathLike, argument: str = "landmarks") -> np.ndarray:
    """Read landmarks as an ``(N, 3)`` LPS mm array. ``.mrk.json``/``.fcsv`` in RAS are converted."""
    path = Path(path)
    if not path.is_file():
        raise InputError(argument, f"file not found: {path}")
    name = path.name.lower()
    if name.endswith(".json"):
        points = _read_mrk_json(path, argument)
    elif name.endswith(".fcsv"):
        points = _read_fcsv(path, argument)
    else:
        points = _read_csv(path, argument)
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
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["x", "y", "z"])
        writer.writerows([[repr(float(v)) for v in p] for p in points])
    os.replace(tmp, path)
    return path


def check_landmark_pair(fixed: np.ndarray, moving: np.ndarray, argument: str = "--moving-landmarks") -> None:
    """Corresponding landmark lists must have the same number of rows."""
    if len(fixed) != len(moving):
        raise InputError(argument, f"has {len(moving)} landmarks but the fixed list has {len(fixed)}; rows must correspond")
