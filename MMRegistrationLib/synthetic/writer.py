"""``write_case``: save a :class:`SyntheticCase` as NRRD images, CSV landmarks, an ITK ``.h5`` transform and
``case.json`` — all or nothing (a temporary sibling folder renamed at the end)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io.images import write_image
from MMRegistrationLib.io.landmarks import write_landmarks_csv
from MMRegistrationLib.io.outputs import OUTPUT_MARKER, atomic_output_dir
from MMRegistrationLib.io.transforms import write_transform
from MMRegistrationLib.synthetic.generator import SyntheticCase

CASE_FILES = {
    "fixed": "fixed.nrrd",
    "moving": "moving.nrrd",
    "fixed_seg": "fixed_seg.nrrd",
    "moving_seg": "moving_seg.nrrd",
    "fixed_landmarks": "fixed_landmarks.csv",
    "moving_landmarks": "moving_landmarks.csv",
    "ground_truth": "ground_truth.h5",
    "case": "case.json",
}
"""Key -> file name of everything :func:`write_case` writes."""


def _case_json(case: SyntheticCase) -> dict:
    def grid_dict(image: Image) -> dict:
        g = image.grid
        return {
            "size_ijk": [int(n) for n in g.size_ijk],
            "spacing": [round(float(s), 9) for s in g.spacing],
            "origin": [round(float(o), 9) for o in g.origin],
            "direction": np.round(g.direction, 12).tolist(),
            "dtype": str(image.array.dtype),
        }

    gt = case.ground_truth.grid
    return {
        "description": case.description,
        "generator": "MMRegistrationLib.synthetic",
        "config": case.config.to_dict(),
        "labels": {str(k): v for k, v in case.label_names.items()},
        "files": dict(CASE_FILES),
        "coordinates": "LPS mm; ground_truth maps fixed (TRUS) points to moving (MR) points",
        "num_landmarks": int(len(case.fixed_landmarks)),
        "fixed": grid_dict(case.fixed),
        "moving": grid_dict(case.moving),
        "ground_truth_grid": {
            "size_ijk": [int(n) for n in gt.size_ijk],
            "spacing": [round(float(s), 9) for s in gt.spacing],
        },
        "probe": case.probe.to_dict(),
        "summary": case.info,
    }


def _check_replaceable(target: Path) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise InputError("out_dir", f"{target} exists and is not a folder")
    extra = sorted(p.name for p in target.iterdir() if p.name not in (*CASE_FILES.values(), OUTPUT_MARKER))
    if extra:
        raise InputError(
            "out_dir",
            f"{target} exists and holds files that are not part of a synthetic case ({', '.join(extra[:5])}); "
            "choose a new or empty folder",
        )


def write_case(case: SyntheticCase, out_dir: str | os.PathLike) -> dict:
    """Write every file of :data:`CASE_FILES` into ``out_dir``.

    The files are written into a temporary sibling folder which then replaces ``out_dir`` in one rename, so
    ``out_dir`` ends up either complete or untouched. An existing ``out_dir`` is replaced only if it is empty or
    holds nothing but case files (a previous case); otherwise :class:`InputError` is raised.

    Returns:
        ``{key: Path}`` for every key of :data:`CASE_FILES`, paths inside ``out_dir``.
    """
    target = Path(out_dir).absolute()
    _check_replaceable(target)
    with atomic_output_dir(target) as tmp:
        write_image(case.fixed, tmp / CASE_FILES["fixed"])
        write_image(case.moving, tmp / CASE_FILES["moving"])
        write_image(case.fixed_seg, tmp / CASE_FILES["fixed_seg"])
        write_image(case.moving_seg, tmp / CASE_FILES["moving_seg"])
        write_landmarks_csv(case.fixed_landmarks, tmp / CASE_FILES["fixed_landmarks"])
        write_landmarks_csv(case.moving_landmarks, tmp / CASE_FILES["moving_landmarks"])
        write_transform(case.ground_truth, tmp / CASE_FILES["ground_truth"])
        (tmp / CASE_FILES["case"]).write_text(json.dumps(_case_json(case), indent=2) + "\n", encoding="utf-8")
    return {key: target / name for key, name in CASE_FILES.items()}
