"""Benchmark cases as uniform dicts.

Every loader yields dicts with the keys

``name`` (str), ``fixed`` / ``moving`` (engine :class:`Image`; fixed = TRUS, moving = MR),
``fixed_seg`` / ``moving_seg`` (integer label maps, label 1 = gland/prostate, other labels where the source has
them, same values for corresponding structures), ``label_names`` (value -> name), ``fixed_landmarks`` /
``moving_landmarks`` (corresponding ``(N, 3)`` LPS mm points, or None), ``ground_truth`` (fixed -> moving
transform, or None), ``source`` (dataset name) and ``notes`` (list of str: anything skipped or odd).

Loaders:

* :func:`sample_case` — ``Resources/SampleCase`` (the bundled synthetic case; labels from ``case.json``).
* :func:`generated_cases` — ``generate_case`` with seeds ``0..n-1``, oblique grids on even seeds, smooth
  deformation amplitude spread evenly over 2..8 mm; landmarks = calcification centres.
* :func:`deepreg_cases` — ``../shared/data/deepreg_mrus`` (80 MR/TRUS pairs, 4-D label NIfTI: channel 0 =
  gland, channels 1.. = landmark blobs; landmarks = blob centroids in world LPS mm).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import SimpleITK as sitk

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io import read_image, read_landmarks, read_transform
from MMRegistrationLib.io.segmentations import match_segmentations, read_segmentation
from MMRegistrationLib.resources import sample_case_paths

REPO_ROOT = Path(__file__).resolve().parents[1]
DEEPREG_ROOT = REPO_ROOT.parent / "shared" / "data" / "deepreg_mrus"


def _case(name, source, fixed, moving, fixed_seg, moving_seg, label_names, flm=None, mlm=None, gt=None, notes=None):
    return {
        "name": name,
        "source": source,
        "fixed": fixed,
        "moving": moving,
        "fixed_seg": fixed_seg,
        "moving_seg": moving_seg,
        "label_names": {int(k): str(v) for k, v in label_names.items()},
        "fixed_landmarks": None if flm is None else np.asarray(flm, dtype=np.float64).reshape(-1, 3),
        "moving_landmarks": None if mlm is None else np.asarray(mlm, dtype=np.float64).reshape(-1, 3),
        "ground_truth": gt,
        "notes": list(notes or []),
    }


# ---- bundled sample case --------------------------------------------------------------------------------
def sample_case(case_dir: Optional[Path] = None) -> dict:
    """The bundled sample case (or any folder laid out like it)."""
    paths = sample_case_paths(case_dir)
    fseg, mseg, names = match_segmentations(
        read_segmentation(paths["fixed_seg"], "fixed_seg"), read_segmentation(paths["moving_seg"], "moving_seg")
    )
    label_names = dict(names)
    case_json = paths.get("case")
    if case_json is not None and Path(case_json).is_file():
        label_names.update({int(k): v for k, v in json.loads(Path(case_json).read_text())["labels"].items()})
    gt_path = paths.get("ground_truth")
    gt = read_transform(gt_path) if gt_path is not None and Path(gt_path).is_file() else None
    return _case(
        "sample",
        "sample",
        read_image(paths["fixed"], "fixed"),
        read_image(paths["moving"], "moving"),
        fseg,
        mseg,
        label_names,
        read_landmarks(paths["fixed_landmarks"], "fixed_landmarks"),
        read_landmarks(paths["moving_landmarks"], "moving_landmarks"),
        gt,
    )


# ---- generated cases ------------------------------------------------------------------------------------
def generated_config(seed: int, n: int):
    """The configuration of generated case ``seed`` of ``n``: oblique on even seeds, deformation 2..8 mm."""
    from MMRegistrationLib.synthetic import SyntheticCaseConfig

    deformation = 2.0 + 6.0 * seed / max(1, n - 1)
    return SyntheticCaseConfig(seed=seed, oblique=seed % 2 == 0, deformation_mm=round(deformation, 3))


def generated_cases(n: int = 10, first: int = 0) -> Iterator[dict]:
    """Generated cases for seeds ``first .. n-1`` (the configuration depends on ``n``, see :func:`generated_config`);
    yielded one at a time (each takes a few seconds to generate)."""
    from MMRegistrationLib.synthetic import generate_case

    for seed in range(first, n):
        cfg = generated_config(seed, n)
        case = generate_case(cfg)
        yield _case(
            f"gen{seed:02d}",
            "generated",
            case.fixed,
            case.moving,
            case.fixed_seg,
            case.moving_seg,
            case.label_names,
            case.fixed_landmarks,
            case.moving_landmarks,
            case.ground_truth,
            [f"oblique={cfg.oblique} deformation_mm={cfg.deformation_mm}"],
        )


# ---- DeepReg MR/TRUS -------------------------------------------------------------------------------------
def _read_label_channels(path: Path, reference: Grid) -> np.ndarray:
    """4-D label NIfTI -> boolean ``(C, K, J, I)`` channels (> 0.5), checked against the image's grid."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)  # SimpleITK: (C, Z, Y, X) for a 4-D scalar image
    if image.GetDimension() == 3:
        array = array[None]
    elif image.GetDimension() != 4 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: expected a 4-D scalar label image, got {image.GetDimension()}-D "
                         f"with {image.GetNumberOfComponentsPerPixel()} components")
    if tuple(array.shape[1:]) != reference.shape:
        raise ValueError(f"{path}: label grid {array.shape[1:]} differs from the image grid {reference.shape}")
    dim = image.GetDimension()
    direction = np.array(image.GetDirection()).reshape(dim, dim)[:3, :3]
    grid = Grid.from_geometry(reference.shape, image.GetSpacing()[:3], image.GetOrigin()[:3], direction)
    if not grid.same_as(reference, tol=1e-4):
        raise ValueError(f"{path}: label geometry differs from the image geometry")
    return array > 0.5


def _centroid_world(mask: np.ndarray, grid: Grid) -> np.ndarray:
    ijk = np.argwhere(mask)[:, ::-1].astype(np.float64).mean(axis=0)
    return grid.index_to_world(ijk)


def deepreg_case(root: Path, stem: str) -> dict:
    """One DeepReg pair (``stem`` like ``obs000``)."""
    root = Path(root)
    fixed = read_image(root / "fixed_images" / f"{stem}.nii.gz", "fixed")
    moving = read_image(root / "moving_images" / f"{stem}.nii.gz", "moving")
    fch = _read_label_channels(root / "fixed_labels" / f"{stem}.nii.gz", fixed.grid)
    mch = _read_label_channels(root / "moving_labels" / f"{stem}.nii.gz", moving.grid)
    notes = []
    if len(fch) != len(mch):
        notes.append(f"fixed has {len(fch)} label channels, moving {len(mch)}; using the first {min(len(fch), len(mch))}")
    n = min(len(fch), len(mch))
    flm, mlm = [], []
    for c in range(1, n):
        if not fch[c].any() or not mch[c].any():
            notes.append(f"landmark channel {c} empty in {'fixed' if not fch[c].any() else 'moving'}; skipped")
            continue
        flm.append(_centroid_world(fch[c], fixed.grid))
        mlm.append(_centroid_world(mch[c], moving.grid))
    fseg = Image(fch[0].astype(np.uint8), fixed.grid)
    mseg = Image(mch[0].astype(np.uint8), moving.grid)
    return _case(
        stem,
        "deepreg",
        fixed,
        moving,
        fseg,
        mseg,
        {1: "prostate"},
        np.array(flm) if flm else None,
        np.array(mlm) if mlm else None,
        None,
        notes,
    )


def deepreg_cases(root: Optional[Path] = None, limit: Optional[int] = None) -> Iterator[dict]:
    """DeepReg MR(moving)/TRUS(fixed) pairs in name order (``limit`` first ones). Yields nothing, with a message
    on stderr, when the folder is absent."""
    root = Path(root) if root is not None else DEEPREG_ROOT
    folder = root / "fixed_images"
    if not folder.is_dir():
        print(f"deepreg_cases: {root} is absent (shared data not available); skipping the DeepReg cases",
              file=sys.stderr, flush=True)
        return
    stems = sorted(p.name[: -len(".nii.gz")] for p in folder.glob("*.nii.gz"))
    if limit is not None:
        stems = stems[: int(limit)]
    for stem in stems:
        yield deepreg_case(root, stem)


def deepreg_available(root: Optional[Path] = None) -> bool:
    return ((Path(root) if root is not None else DEEPREG_ROOT) / "fixed_images").is_dir()
