"""DISA on real ultrasound appearance: rigid US-US registration of real intra-operative brain ultrasound volumes to
a resampled, re-gridded, cropped and re-speckled copy of themselves with a known rigid offset.

Data: ``REPO/../shared/data/us_brain_real/resect_us_caseNN.nrrd`` (16 volumes, 0.5 mm, oblique, 0 outside the
ultrasound field of view); the script exits with a message when the folder is absent.

Geometry (per case, all seeded by ``[--seed, case index]``):

* fixed = the volume as stored. Field of view (FOV) = voxels > 0, closed and hole-filled (dark speckle inside the
  sector is not outside it); ``c`` = the FOV's centroid.
* ``T_true`` (fixed -> moving world map, LPS mm) = rotation by 3-12 deg about a random axis through ``c``, then a
  translation of 5-20 mm in a random direction.
* moving grid: isotropic spacing uniform in 0.6-0.8 mm, direction = the fixed direction turned by 20-60 deg about a
  random axis; a box, in the moving grid's axes, of 70-85 % (per axis) of the extent of ``T_true(FOV)``, shifted at
  random inside that extent (so the two fields of view differ).
* moving = fixed resampled (linear) onto that grid through ``T_true^-1`` (``moving(T_true(x)) = fixed(x)``; 0 outside
  the source volume, so 0 outside the sector stays 0), times independent multiplicative gamma noise of mean 1 and
  coefficient of variation ``--noise-cv`` (speckle-like; zeros stay zero).
* landmarks: ``--landmarks`` (15) seeded virtual points inside the fixed FOV eroded by 5 mm whose ``T_true`` image
  lies inside the moving box shrunk by 2 mm.

Starts: ``--starts`` (6) per case. ``P`` = a rigid map of the fixed space: rotation of 0-12 deg about a random axis
through ``c`` plus a translation (random direction, length uniform in 0-35 mm), drawn until the initial error
``mean |P(x_i) - x_i|`` lies in [10, 25] mm. Initial transform = ``T_true o P`` (``x -> T_true(P(x))``). Error of a
fixed -> moving estimate ``T`` = mean over the landmarks of ``|T(x_i) - T_true(x_i)|`` (mm).

Methods (``--methods``; all ``run_registration("disa", ..., init="none", initial=T_true o P)`` with
``mode="rigid"``, ``fixed_fov_threshold=0`` and ``moving_fov_threshold=--moving-fov-threshold`` (0: the moving is
ultrasound too)): ``disa-global`` / ``mind-global`` (engine defaults: automatic working spacing and levels, global
search), ``disa-global@S`` / ``mind-global@S`` (the same at the working spacing ``S`` mm; ``--spacings S ...`` adds
them for each of disa-global/mind-global in ``--methods``), ``lc2-local`` (LC2, local search from the start at
``--lc2-spacing`` mm; slow: only on the first ``--lc2-cases`` cases and ``--lc2-starts`` starts; not run unless named).
The ``@S`` variants run from the first ``--spacing-starts`` (2) starts of each case only. A run succeeds when
its final error is below 3 mm. Time = ``wall_seconds['init'] + wall_seconds['register']`` (descriptors included).
Each similarity is warmed up once (a discarded run of disa-global / mind-global on the first case) before timing.

Results: ``benchmarks/results/<out>.json`` and ``.md`` (default ``disa_realus``), rewritten after every case (marked
partial until the end).

Volumes (``--volumes``): ``heldout`` (default) = the real brain US volumes the shipped DISA network never trained on
(its sidecar's ``heldout_real_us``, 4 of 16), ``training`` = the others (settings are chosen on these, figures
reported on the held-out ones), ``all``; ``--cases N`` keeps the first N. A volume's case (truth, moving grid, noise,
landmarks, starts) is seeded by its index in the sorted list of all 16, whatever the selection.

Default run: the 4 held-out volumes x 6 starts of disa-global and mind-global, plus disa-global@0.5/@1 and
mind-global@0.5/@1 from 2 starts per case.

Usage:
    python benchmarks/bench_disa_realus.py [--volumes heldout|training|all] [--cases N] [--starts 6] [--methods disa-global mind-global lc2-local ...]
        [--spacings 0.5 1.0] [--spacing-starts 2] [--threads 2] [--max-minutes M] [--out NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_common  # noqa: E402
from MMRegistrationLib.synthetic.geometry import rotation_from_vector as rotation  # noqa: E402
DATA = REPO.parent / "shared" / "data" / "us_brain_real"
OUT = HERE / "results"

BASE_METHODS = {
    "disa-global": {"similarity": "disa", "search": "global"},
    "mind-global": {"similarity": "mind", "search": "global"},
    "lc2-local": {"similarity": "lc2", "search": "local"},
}
DEFAULT_METHODS = ("disa-global", "mind-global")
DEFAULT_SPACINGS = (0.5, 1.0)
SUCCESS_MM = 3.0
ROTATION_DEG = (3.0, 12.0)  # T_true
TRANSLATION_MM = (5.0, 20.0)  # T_true
MOVING_SPACING_MM = (0.6, 0.8)
MOVING_TURN_DEG = (20.0, 60.0)
MOVING_FRACTION = (0.70, 0.85)
START_ERROR_MM = (10.0, 25.0)
START_ROTATION_DEG = 12.0
START_TRANSLATION_MM = 35.0
LANDMARK_EROSION_MM = 5.0
MOVING_MARGIN_MM = 2.0


def log(message: str) -> None:
    print(message, flush=True)


# ---- geometry helpers -----------------------------------------------------------------------------------
def rigid_matrix(rotation_vector, translation, centre) -> np.ndarray:
    """4x4 of ``x -> R (x - c) + c + t``."""
    r = rotation(rotation_vector)
    c = np.asarray(centre, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + np.asarray(translation, dtype=np.float64)
    return m


def apply(matrix, points) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]


def unit(rng) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def fov_mask(image, threshold: float = 0.0) -> np.ndarray:
    """The ultrasound field of view: voxels above ``threshold``, closed (2 voxels) and hole-filled."""
    from scipy import ndimage

    mask = np.asarray(image.array) > threshold
    mask = ndimage.binary_closing(mask, iterations=2, border_value=0) | mask
    return ndimage.binary_fill_holes(mask)


def mask_points(grid, mask: np.ndarray) -> np.ndarray:
    """World coordinates (LPS mm) of the voxels of ``mask``, ``(N, 3)``."""
    kji = np.argwhere(mask)
    return grid.index_to_world(kji[:, ::-1].astype(np.float64))


def true_transform(rng, centre, rotation_deg=ROTATION_DEG, translation_mm=TRANSLATION_MM) -> np.ndarray:
    """Seeded fixed -> moving rigid map: rotation (random axis through ``centre``) + translation (module docstring)."""
    angle = np.radians(rng.uniform(*rotation_deg))
    axis = unit(rng)
    length = rng.uniform(*translation_mm)
    return rigid_matrix(angle * axis, length * unit(rng), centre)


def moving_grid(fov_world: np.ndarray, t_true: np.ndarray, spacing: float, direction: np.ndarray, fraction,
                shift) -> "object":
    """Grid (isotropic ``spacing``, ``direction``) covering ``fraction`` (per axis, of the moving grid) of the extent of
    ``T_true(fov_world)``; ``shift`` in [-1, 1] per axis moves the box within that extent."""
    from MMRegistrationLib.core.grid import Grid

    direction = np.asarray(direction, dtype=np.float64)
    u = apply(t_true, fov_world) @ direction  # coordinates along the moving grid's axes
    lo, hi = u.min(axis=0), u.max(axis=0)
    extent = hi - lo
    fraction = np.broadcast_to(np.asarray(fraction, dtype=np.float64), (3,))
    box = fraction * extent
    centre_u = (lo + hi) / 2.0 + np.asarray(shift, dtype=np.float64) * (extent - box) / 2.0
    size = np.maximum(4, np.ceil(box / spacing).astype(int) + 1)
    origin = direction @ (centre_u - spacing * (size - 1) / 2.0)
    return Grid.from_geometry(tuple(int(s) for s in size[::-1]), (spacing,) * 3, origin, direction)


def make_moving(fixed, t_true: np.ndarray, grid, rng=None, noise_cv: float = 0.0):
    """``fixed`` resampled (linear, 0 outside) onto ``grid`` so that ``moving(T_true(x)) = fixed(x)``, times mean-1
    gamma noise of coefficient of variation ``noise_cv`` (none when 0)."""
    from MMRegistrationLib.core.image import Image
    from MMRegistrationLib.spatial.affine import AffineTransform
    from MMRegistrationLib.spatial.resample import resample

    source = Image(np.asarray(fixed.array, dtype=np.float32), fixed.grid)
    inverse = AffineTransform(np.linalg.inv(t_true), "moving", "fixed")
    out = resample(source, grid, inverse, interpolation="linear", default_value=0.0).array
    if noise_cv > 0:
        shape = 1.0 / noise_cv**2
        out = out * rng.gamma(shape, 1.0 / shape, size=out.shape).astype(np.float32)
    return Image(out.astype(np.float32), grid)


def virtual_landmarks(fixed, mask: np.ndarray, rng, count: int, t_true=None, moving=None,
                      erosion_mm: float = LANDMARK_EROSION_MM, margin_mm: float = MOVING_MARGIN_MM) -> np.ndarray:
    """``count`` seeded points (LPS mm) inside ``mask`` eroded by ``erosion_mm`` (and, given ``moving``, whose
    ``T_true`` image lies inside the moving grid shrunk by ``margin_mm``); voxel centres jittered within a voxel."""
    from scipy import ndimage

    padded = np.pad(mask, 1)
    depth = ndimage.distance_transform_edt(padded, sampling=fixed.grid.spacing[::-1])[1:-1, 1:-1, 1:-1]
    inner = depth > erosion_mm
    if not inner.any():
        raise ValueError("virtual_landmarks: the field of view eroded by %.1f mm is empty" % erosion_mm)
    kji = np.argwhere(inner).astype(np.float64)
    ijk = kji[:, ::-1]
    points = fixed.grid.index_to_world(ijk)
    if moving is not None:
        idx = moving.grid.world_to_index(apply(t_true, points))
        margin = margin_mm / moving.grid.spacing
        size = np.array(moving.grid.size_ijk, dtype=np.float64)
        keep = np.all((idx >= margin) & (idx <= size - 1 - margin), axis=1)
        if keep.sum() >= count:
            ijk = ijk[keep]
    pick = rng.choice(len(ijk), size=min(count, len(ijk)), replace=False)
    jitter = rng.uniform(-0.4, 0.4, size=(len(pick), 3))
    return fixed.grid.index_to_world(ijk[pick] + jitter)


def landmark_error(t_est, t_true, landmarks) -> float:
    """Mean distance (mm) between ``T_est(x_i)`` and ``T_true(x_i)`` over the landmarks (4x4 fixed -> moving)."""
    return float(np.linalg.norm(apply(t_est, landmarks) - apply(t_true, landmarks), axis=1).mean())


def sample_starts(t_true: np.ndarray, landmarks: np.ndarray, centre, count: int, rng, error_mm=START_ERROR_MM,
                  max_rotation_deg: float = START_ROTATION_DEG, max_translation_mm: float = START_TRANSLATION_MM,
                  max_tries: int = 100000) -> list:
    """``count`` start transforms ``T_true o P`` whose initial error lies in ``error_mm`` (module docstring).

    Returns dicts with ``matrix`` (4x4 fixed -> moving), ``initial_mm``, ``rotation_deg``, ``translation_mm``."""
    lo, hi = error_mm
    out = []
    for _ in range(max_tries):
        angle = rng.uniform(0.0, np.radians(max_rotation_deg))
        length = rng.uniform(0.0, max_translation_mm)
        p = rigid_matrix(angle * unit(rng), length * unit(rng), centre)
        start = np.asarray(t_true) @ p
        err = landmark_error(start, t_true, landmarks)
        if lo <= err <= hi:
            out.append({"matrix": start, "initial_mm": err, "rotation_deg": float(np.degrees(angle)),
                        "translation_mm": float(length)})
            if len(out) == count:
                return out
    raise RuntimeError(f"sample_starts: only {len(out)} of {count} starts in [{lo}, {hi}] mm after {max_tries} draws")


def build_case(fixed, seed, noise_cv: float = 0.3, n_landmarks: int = 15, n_starts: int = 6) -> dict:
    """The moving image, ``T_true``, landmarks and starts of one real volume (module docstring), seeded by ``seed``
    (an int or a list of ints)."""
    rng = np.random.default_rng(seed)
    mask = fov_mask(fixed)
    fov_world = mask_points(fixed.grid, mask)
    centre = fov_world.mean(axis=0)
    t_true = true_transform(rng, centre)
    spacing = float(rng.uniform(*MOVING_SPACING_MM))
    turn = rotation(np.radians(rng.uniform(*MOVING_TURN_DEG)) * unit(rng))
    direction = turn @ fixed.grid.direction
    fraction = rng.uniform(*MOVING_FRACTION, size=3)
    shift = rng.uniform(-1.0, 1.0, size=3)
    grid = moving_grid(fov_world[:: max(1, len(fov_world) // 200000)], t_true, spacing, direction, fraction, shift)
    moving = make_moving(fixed, t_true, grid, rng, noise_cv)
    landmarks = virtual_landmarks(fixed, mask, rng, n_landmarks, t_true, moving)
    starts = sample_starts(t_true, landmarks, centre, n_starts, rng)
    return {"moving": moving, "t_true": t_true, "landmarks": landmarks, "starts": starts, "centre": centre,
            "moving_spacing_mm": spacing, "moving_fraction": fraction.tolist(),
            "fov_cm3": float(mask.sum() * fixed.grid.voxel_volume / 1000.0)}


# ---- methods --------------------------------------------------------------------------------------------
def parse_method(name: str, lc2_spacing: float) -> dict:
    """Options of ``name`` (``disa-global``, ``mind-global``, ``lc2-local``, ``disa-global@S``, ``mind-global@S``;
    a ``+interpolated`` / ``+descriptors`` suffix sets ``finest_points``, e.g. ``disa-global+interpolated``)."""
    name, _, points = name.partition("+")
    if points and points not in ("interpolated", "descriptors"):
        raise SystemExit(f"--methods: unknown suffix '+{points}' (+interpolated, +descriptors)")
    base, _, spacing = name.partition("@")
    if base not in BASE_METHODS or (spacing and base == "lc2-local"):
        raise SystemExit(f"--methods: unknown method '{name}' (disa-global, mind-global, lc2-local, "
                         "disa-global@S, mind-global@S)")
    options = dict(mode="rigid", **BASE_METHODS[base])
    if points:
        options["finest_points"] = points
    if spacing:
        options["spacing_mm"] = float(spacing)
    elif base == "lc2-local":
        options["spacing_mm"] = float(lc2_spacing)
    return options


def expand_methods(methods, spacings) -> list:
    out = list(dict.fromkeys(methods))
    for s in spacings or ():
        for base in ("disa-global", "mind-global"):
            if base in methods:
                name = f"{base}@{s:g}"
                if name not in out:
                    out.append(name)
    return out


def run_method(fixed, moving, matrix, options: dict, seed: int, threads: int) -> tuple:
    """``(estimate 4x4, seconds, info)`` of one rigid registration from the fixed -> moving ``matrix``."""
    from MMRegistrationLib.registration.base import RegistrationInputs
    from MMRegistrationLib.registration.pipeline import run_registration
    from MMRegistrationLib.spatial.affine import AffineTransform

    result, record = run_registration("disa", RegistrationInputs(fixed, moving), init="none", options=options,
                                      seed=seed, device="cpu", initial=AffineTransform(np.asarray(matrix)),
                                      threads=threads)
    wall = record["wall_seconds"]
    info = record.get("method_info") or {}
    levels = info.get("levels") or []
    finest = min(levels, key=lambda lv: lv["spacing_mm"]) if levels else {}
    return np.asarray(result.transform.matrix), float(wall["init"] + wall["register"]), {
        "working_spacing_mm": info.get("working_spacing_mm"),
        "levels": [[lv.get("spacing_mm"), lv.get("points")] for lv in levels],
        "finest_points": finest.get("points"),
    }


# ---- report ---------------------------------------------------------------------------------------------
def _median(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(values)) if values else None


def summarize(cases: list, methods: list) -> dict:
    out = {}
    for name in methods:
        runs = [r for c in cases for r in c["runs"] if r["method"] == name]
        finals = [r["final_mm"] for r in runs if np.isfinite(r["final_mm"])]
        out[name] = {
            "n": len(runs), "within_3mm": sum(bool(r["final_mm"] < SUCCESS_MM) for r in runs),
            "failed": sum("error" in r for r in runs),
            "mean_mm": float(np.mean(finals)) if finals else None,
            "median_mm": float(np.median(finals)) if finals else None,
            "median_seconds": _median([r["seconds"] for r in runs]),
            "working_spacing_mm": sorted({round(r["working_spacing_mm"], 3) for r in runs
                                          if r.get("working_spacing_mm") is not None}),
            "median_finest_points": _median([r.get("finest_points") for r in runs]),
        }
    return out


def _fmt(value, spec=".2f", missing="–"):
    return missing if value is None else format(value, spec)


def markdown(res: dict) -> str:
    lines = [
        f"# DISA on real ultrasound appearance: US-US rigid ({res['date']}, {res['machine']})"
        f"{' — PARTIAL' if res.get('partial') else ''}",
        "",
        f"Threads: {res['threads']}. Load average before/after: {res['load_before']} / {res['load_after']} (the "
        f"machine may be shared). Seed {res['seed']}. {len(res['cases'])} real brain US volumes "
        "(`shared/data/us_brain_real`), each registered to a copy of itself resampled through a known rigid "
        f"`T_true` (3-12 deg, 5-20 mm) onto a different oblique grid (0.6-0.8 mm isotropic), cropped to 70-85 % of "
        f"the field of view's extent per axis, with multiplicative gamma noise (CV {res['noise_cv']:g}). "
        f"{res['starts']} starts per case: `T_true o P`, P a rigid perturbation (<= 12 deg about the field-of-view "
        f"centre + translation) with an initial error of 10-25 mm. Error = mean over {res['landmarks']} virtual "
        "landmarks (inside the fixed field of view eroded by 5 mm) of |T_est(x) - T_true(x)|. Success: final "
        f"error < {SUCCESS_MM:g} mm. Rigid, `fixed_fov_threshold` 0, `moving_fov_threshold` "
        f"{res['moving_fov_threshold']}; default spacing/levels unless `@S` (working spacing S mm). "
        "Time: registration wall time (descriptors included), median over the runs."
        + ("" if res.get("spacing_starts") is None else
           f" The `@S` variants run from the first {res['spacing_starts']} starts of each case only.")
        + ("" if not any(m == "lc2-local" for m in res["methods"]) else
           f" lc2-local: LC2 at {res['lc2']['spacing_mm']:g} mm, local search, first {res['lc2']['cases']} cases x "
           f"{res['lc2']['starts']} starts."),
        "",
        "| method | runs | within 3 mm | mean error (mm) | median error (mm) | median time (s) | working spacing (mm) "
        "| finest-level points (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in res["summary"].items():
        pct = 100.0 * e["within_3mm"] / e["n"] if e["n"] else float("nan")
        spacing = ", ".join(f"{s:g}" for s in e["working_spacing_mm"]) or "–"
        failed = f", {e['failed']} failed" if e["failed"] else ""
        lines.append(f"| {name} | {e['n']} | {e['within_3mm']} ({pct:.0f}%{failed}) | {_fmt(e['mean_mm'])} | "
                     f"{_fmt(e['median_mm'])} | {_fmt(e['median_seconds'], '.1f')} | {spacing} | "
                     f"{_fmt(e['median_finest_points'], '.0f')} |")
    lines += ["", "## Per case (within 3 mm / runs, median final error mm)", "",
              "| case | moving spacing (mm) | FOV (cm^3) | median initial (mm) | " + " | ".join(res["methods"]) + " |",
              "|---|---|---|---|" + "---|" * len(res["methods"])]
    for c in res["cases"]:
        cells = []
        for name in res["methods"]:
            runs = [r for r in c["runs"] if r["method"] == name]
            if not runs:
                cells.append("–")
                continue
            ok = sum(bool(r["final_mm"] < SUCCESS_MM) for r in runs)
            cells.append(f"{ok}/{len(runs)}, {_fmt(_median([r['final_mm'] for r in runs]))}")
        initial = _median([s["initial_mm"] for s in c["starts"]])
        lines.append(f"| {c['case']} | {c['moving_spacing_mm']:.2f} | {c['fov_cm3']:.0f} | {initial:.1f} | "
                     + " | ".join(cells) + " |")
    for note in res.get("notes", []):
        lines.append(f"\nNote: {note}")
    return "\n".join(lines) + "\n"


def versions() -> dict:
    return bench_common.versions()


def write(res: dict, out_name: str) -> None:
    bench_common.write_results(res, out_name, markdown, summarize)


def set_threads(threads: int) -> None:
    bench_common.set_threads(threads)


def heldout_names(weights_sidecar: Path = REPO / "Resources" / "DISA" / "disa_lc2.json") -> list:
    """The real brain ultrasound volumes the shipped DISA network never trained on (its sidecar's
    ``training.data.heldout_real_us``; empty when the sidecar does not list them)."""
    try:
        meta = json.loads(Path(weights_sidecar).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return list(((meta.get("training") or {}).get("data") or {}).get("heldout_real_us") or [])


def case_paths(data: Path, count, volumes: str = "all", heldout=None) -> list:
    """``(index in the sorted list, path)`` of the volumes to run: ``all``, ``heldout`` (never trained on by the
    shipped network) or ``training``; the first ``count`` of them. The index seeds the case, so a volume gets the
    same case whatever the selection."""
    paths = list(enumerate(sorted(Path(data).glob("resect_us_case*.nrrd"))))
    held = set(heldout_names() if heldout is None else heldout)
    if volumes == "heldout":
        paths = [(i, p) for i, p in paths if p.name.split(".")[0] in held]
    elif volumes == "training":
        paths = [(i, p) for i, p in paths if p.name.split(".")[0] not in held]
    return paths if count is None else paths[: int(count)]


# ---- main -----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=None, help="the first N of the selected volumes (default all)")
    parser.add_argument("--volumes", choices=("heldout", "training", "all"), default="heldout",
                        help="heldout (default): the volumes the shipped DISA network never trained on (its sidecar's "
                        "heldout_real_us); training: the others (for choosing settings); all")
    parser.add_argument("--starts", type=int, default=6, help="starts per case (default 6)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help="disa-global, mind-global, lc2-local, disa-global@S, mind-global@S")
    parser.add_argument("--spacings", nargs="*", type=float, default=list(DEFAULT_SPACINGS),
                        help="adds disa-global@S / mind-global@S for each S (default 0.5 1.0; none: no flag values)")
    parser.add_argument("--spacing-starts", type=int, default=2,
                        help="the @S variants run from the first N starts of each case only (default 2; they are "
                        "slow at fine spacings); -1: every start")
    parser.add_argument("--max-minutes", type=float, default=0.0,
                        help="start no new case after this many minutes (0: no limit); the results say so")
    parser.add_argument("--lc2-spacing", type=float, default=1.0, help="lc2-local working spacing (mm)")
    parser.add_argument("--lc2-cases", type=int, default=2, help="lc2-local runs on the first K cases only")
    parser.add_argument("--lc2-starts", type=int, default=1, help="lc2-local runs from the first N starts only")
    parser.add_argument("--landmarks", type=int, default=15)
    parser.add_argument("--noise-cv", type=float, default=0.3, help="coefficient of variation of the moving's "
                        "multiplicative gamma noise")
    parser.add_argument("--moving-fov-threshold", default="0", help="passed to the engine (default 0: the moving is "
                        "ultrasound; 'none' = every voxel)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=str(DATA), help="folder of resect_us_caseNN.nrrd")
    parser.add_argument("--out", default="disa_realus", help="results name under benchmarks/results")
    args = parser.parse_args(argv)

    data = Path(args.data)
    paths = case_paths(data, args.cases, args.volumes)
    if not paths:
        log(f"bench_disa_realus: no resect_us_case*.nrrd under {data} (shared data not available); nothing to do")
        return 0
    if args.spacing_starts is not None and args.spacing_starts < 0:
        args.spacing_starts = None
    methods = expand_methods(args.methods, args.spacings)
    threshold = None if str(args.moving_fov_threshold).lower() in ("none", "all") else float(args.moving_fov_threshold)
    options = {name: dict(parse_method(name, args.lc2_spacing), fixed_fov_threshold=0.0,
                          moving_fov_threshold=threshold) for name in methods}
    set_threads(args.threads)

    from MMRegistrationLib.io import read_image

    res = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
        "threads": args.threads, "volumes": args.volumes, "heldout_volumes": heldout_names(), "methods": methods,
        "options": options, "starts": args.starts,
        "landmarks": args.landmarks, "noise_cv": args.noise_cv, "moving_fov_threshold": threshold,
        "lc2": {"spacing_mm": args.lc2_spacing, "cases": args.lc2_cases, "starts": args.lc2_starts},
        "spacing_starts": args.spacing_starts,
        "seed": args.seed, "seeds": "case i: numpy default_rng([seed, i]) draws T_true, the moving grid, noise, "
        "landmarks and starts in that order; registration seed = seed",
        "versions": versions(), "load_before": [round(v, 2) for v in os.getloadavg()], "cases": [], "notes": [],
        "partial": True,
    }
    log(f"methods: {', '.join(methods)}; {len(paths)} cases x {args.starts} starts; threads {args.threads}")
    t_start = time.perf_counter()
    for position, (index, path) in enumerate(paths):
        if args.max_minutes > 0 and time.perf_counter() - t_start > 60.0 * args.max_minutes:
            res["notes"].append(f"stopped after {len(res['cases'])} of {len(paths)} cases: --max-minutes "
                                f"{args.max_minutes:g} reached")
            log(res["notes"][-1])
            break
        fixed = read_image(path, "fixed")
        t0 = time.perf_counter()
        case = build_case(fixed, [args.seed, index], args.noise_cv, args.landmarks, args.starts)
        moving = case["moving"]
        log(f"== {path.stem}: fixed {fixed.grid.shape} @ {fixed.grid.spacing.mean():.2f} mm, moving "
            f"{moving.grid.shape} @ {case['moving_spacing_mm']:.2f} mm, FOV {case['fov_cm3']:.0f} cm^3, built in "
            f"{time.perf_counter() - t0:.1f} s; initial errors "
            + " ".join(f"{s['initial_mm']:.1f}" for s in case["starts"]))
        if position == 0:  # warm-up: one discarded run per similarity
            for name in methods:
                if "@" in name or name == "lc2-local":
                    continue
                t0 = time.perf_counter()
                try:
                    run_method(fixed, moving, case["starts"][0]["matrix"], options[name], args.seed, args.threads)
                    log(f"warm-up {name}: {time.perf_counter() - t0:.1f} s (discarded)")
                except Exception as err:
                    log(f"warm-up {name} failed: {type(err).__name__}: {err}")
        out = {"case": path.stem, "fixed_shape": list(fixed.grid.shape), "moving_shape": list(moving.grid.shape),
               "moving_spacing_mm": case["moving_spacing_mm"], "moving_fraction": case["moving_fraction"],
               "fov_cm3": case["fov_cm3"], "t_true": case["t_true"].tolist(),
               "landmarks_mm": case["landmarks"].tolist(),
               "starts": [dict(s, matrix=s["matrix"].tolist()) for s in case["starts"]], "runs": []}
        for k, start in enumerate(case["starts"]):
            line = []
            for name in methods:
                if name == "lc2-local" and (position >= args.lc2_cases or k >= args.lc2_starts):
                    continue
                if "@" in name and args.spacing_starts is not None and k >= args.spacing_starts:
                    continue
                row = {"method": name, "start": k, "initial_mm": start["initial_mm"]}
                try:
                    est, seconds, info = run_method(fixed, moving, start["matrix"], options[name], args.seed,
                                                    args.threads)
                    row.update(final_mm=landmark_error(est, case["t_true"], case["landmarks"]), seconds=seconds,
                               **info)
                except Exception as err:  # a failure counts as not within 3 mm
                    row.update(final_mm=float("nan"), seconds=float("nan"), error=f"{type(err).__name__}: {err}")
                out["runs"].append(row)
                line.append(f"{name}={'ERR' if 'error' in row else format(row['final_mm'], '.2f')}"
                            f"({_fmt(row.get('seconds'), '.0f')}s)")
            log(f"  start {k} initial {start['initial_mm']:5.1f} mm: " + "  ".join(line))
        res["cases"].append(out)
        res["total_seconds"] = time.perf_counter() - t_start
        write(res, args.out)
    res["partial"] = False
    res["total_seconds"] = time.perf_counter() - t_start
    write(res, args.out)
    log(markdown(res))
    log(f"wrote {OUT / (args.out + '.json')} and {OUT / (args.out + '.md')} ({res['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
