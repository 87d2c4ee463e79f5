"""DISA working-spacing sweep on generated MR/TRUS cases of different voxel sizes and fields of view: does the
automatic working spacing (and levels) reach the error of the best hand-chosen spacing?

Cases (``--cases S:L ...``; default 0.3:50 0.5:60 0.8:80 1.0:100 1.5:120 2.0:150): ``generate_case`` with
``SyntheticCaseConfig(seed, oblique=True, rigid_translation_mm=20, rigid_rotation_deg=12)`` (rigid offset 10-20 mm,
6-12 deg; default deformation 4 mm and probe compression 5 mm) and

* TRUS (fixed): ``S`` mm isotropic, ``L`` mm field of view per axis (``round(L / S)`` voxels), sector depth ``L - 7``
  mm from the probe axis (the probe axis lies 7 mm inside the grid's posterior border) and length ``L`` mm, so the
  sector fills the grid whatever its size;
* MR (moving): ``S x S x min(2 S, 3)`` mm, ``L + 20`` mm field of view per axis, centred on the prostate.

Each grid is capped at ``--max-voxels`` (8M) voxels by coarsening its spacing (recorded, noted in the report). The
generator's anatomy has a fixed size (a prostate ~45 x 30 x 35 mm), so the smallest field of view is 50 mm, not 40:
below that the generator cannot place landmarks (its ground truth is only defined on the TRUS field of view). When
a seed cannot be generated (same reason, at the field of view's edge) the next seed is tried (``seed + 1000 k``,
up to 20; the seed used is recorded).

Runs: for each case and similarity (``--methods``, default disa mind): ``run_registration("disa", ...,
init="none", initial=identity)`` with ``mode="rigid"``, ``search="global"``, ``fixed_fov_threshold=0`` (engine
default), once with the automatic working spacing (``spacing_mm`` None, levels default) and once per hand-chosen
spacing of ``--spacings`` (default 0.3 0.5 0.75 1.0 1.5 2.0), skipping spacings finer than the finest image spacing /
1.01 and spacings at which either image's field of view would exceed ``--max-working-voxels`` (250^3) voxels. Error
= mean distance between the case's fixed landmarks (calcification centres) mapped by the estimate and the moving
landmarks. The ground truth is deformable: the lowest error any rigid map reaches is unknown, so the report gives the
best over every spacing and method, and the least-squares rigid fit of the landmarks (``rigid floor``, a lower bound
of the RMS error, close to the best reachable mean). Time = ``wall_seconds['init'] + wall_seconds['register']``.
disa and mind are warmed up once (a discarded local run at 1 mm on the first case).

Verdict per case and method: the default's error within 10 % of the best hand-chosen spacing's, or within 0.3 mm of it
(errors at the rigid floor).

Results: ``benchmarks/results/<out>.json`` and ``.md`` (default ``disa_resolution``; ``--quick``:
``disa_resolution_quick``, cases 0.8:80 and 1.5:120, spacings 1.0 2.0), rewritten after every case.

Usage:
    python benchmarks/bench_disa_resolution.py [--cases 0.3:50 ...] [--methods disa mind] [--spacings ...]
        [--threads 2] [--quick] [--out NAME]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_common  # noqa: E402

OUT = HERE / "results"
DEFAULT_CASES = ("0.3:50", "0.5:60", "0.8:80", "1.0:100", "1.5:120", "2.0:150")
QUICK_CASES = ("0.8:80", "1.5:120")
DEFAULT_SPACINGS = (0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
QUICK_SPACINGS = (1.0, 2.0)
BEHIND_PROBE_MM = 7.0  # MMRegistrationLib.synthetic.geometry.FIXED_BEHIND_PROBE_MM
MOVING_MARGIN_MM = 20.0
RATIO_TARGET = 1.10
ABSOLUTE_TARGET_MM = 0.3


def log(message: str) -> None:
    print(message, flush=True)


# ---- cases ----------------------------------------------------------------------------------------------
def parse_case(spec: str) -> tuple:
    """``"S:L"`` -> ``(S, L)`` (fixed spacing mm, field of view mm)."""
    try:
        s, fov = (float(v) for v in spec.split(":"))
    except ValueError:
        raise SystemExit(f"--cases: expected SPACING:FOV (e.g. 0.5:60), got '{spec}'") from None
    if not (s > 0 and fov >= 50):
        raise SystemExit(f"--cases: '{spec}': spacing > 0 and field of view >= 50 mm needed (the generated prostate "
                         "needs 50 mm)")
    return s, fov


def capped(spacing, extent_mm: float, max_voxels: int) -> tuple:
    """``(size_ijk, spacing_ijk, capped?)``: ``extent_mm`` per axis at ``spacing``, coarsened uniformly until the grid
    holds at most ``max_voxels`` voxels."""
    spacing = np.asarray(spacing, dtype=np.float64)
    size = np.maximum(4, np.round(extent_mm / spacing)).astype(int)
    factor = 1.0
    while np.prod(size.astype(float)) > max_voxels:
        factor *= 1.02
        size = np.maximum(4, np.round(extent_mm / (spacing * factor))).astype(int)
    out_spacing = extent_mm / size
    return tuple(int(v) for v in size), tuple(float(v) for v in out_spacing), factor > 1.0


def case_config(spacing: float, fov: float, seed: int, max_voxels: int) -> tuple:
    """``(SyntheticCaseConfig, notes)`` of the case ``spacing:fov`` (module docstring)."""
    from MMRegistrationLib.synthetic import SyntheticCaseConfig

    notes = []
    fsize, fspacing, fcap = capped((spacing,) * 3, fov, max_voxels)
    msize, mspacing, mcap = capped((spacing, spacing, min(2 * spacing, 3.0)), fov + MOVING_MARGIN_MM, max_voxels)
    if fcap:
        notes.append(f"TRUS grid capped at {max_voxels} voxels: {fspacing[0]:.3f} mm instead of {spacing:g} mm")
    if mcap:
        notes.append(f"MR grid capped at {max_voxels} voxels: {mspacing[0]:.3f} x {mspacing[2]:.3f} mm")
    cfg = SyntheticCaseConfig(seed=int(seed), oblique=True, rigid_translation_mm=20.0, rigid_rotation_deg=12.0,
                              fixed_spacing=fspacing, fixed_size=fsize, moving_spacing=mspacing, moving_size=msize,
                              sector_radius_mm=fov - BEHIND_PROBE_MM, sector_length_mm=fov)
    return cfg, notes


def make_case(spacing: float, fov: float, seed: int, max_voxels: int, tries: int = 20) -> dict:
    """Generate case ``spacing:fov`` from ``seed`` (next seeds ``seed + 1000 k`` when the generator cannot place the
    landmarks). Returns a dict with ``fixed``, ``moving``, landmarks, ``config``, ``seed``, ``notes``."""
    from MMRegistrationLib.core.errors import MMRegError
    from MMRegistrationLib.synthetic import generate_case

    last = None
    for k in range(tries):
        cfg, notes = case_config(spacing, fov, seed + 1000 * k, max_voxels)
        try:
            case = generate_case(cfg)
        except MMRegError as err:
            last = err
            continue
        if k:
            notes.append(f"seeds {', '.join(str(seed + 1000 * j) for j in range(k))} could not be generated "
                         f"({last}); used {cfg.seed}")
        return {"name": f"{spacing:g}mm_{fov:g}mm", "spacing": spacing, "fov": fov, "fixed": case.fixed,
                "moving": case.moving, "fixed_landmarks": np.asarray(case.fixed_landmarks, dtype=np.float64),
                "moving_landmarks": np.asarray(case.moving_landmarks, dtype=np.float64), "config": cfg.to_dict(),
                "seed": cfg.seed, "notes": notes}
    raise RuntimeError(f"case {spacing:g}:{fov:g}: no seed of {tries} could be generated ({last})")


# ---- errors ---------------------------------------------------------------------------------------------
def mean_error(matrix, fixed_landmarks, moving_landmarks) -> float:
    """Mean distance (mm) between the fixed landmarks mapped by the fixed -> moving ``matrix`` and the moving ones."""
    m = np.asarray(matrix, dtype=np.float64)
    mapped = np.asarray(fixed_landmarks, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]
    return float(np.linalg.norm(mapped - np.asarray(moving_landmarks, dtype=np.float64), axis=1).mean())


def rigid_fit(fixed_landmarks, moving_landmarks) -> np.ndarray:
    """Least-squares rigid fixed -> moving 4x4 of corresponding points (Kabsch)."""
    f = np.asarray(fixed_landmarks, dtype=np.float64)
    m = np.asarray(moving_landmarks, dtype=np.float64)
    fc, mc = f.mean(axis=0), m.mean(axis=0)
    u, _, vt = np.linalg.svd((f - fc).T @ (m - mc))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    out = np.eye(4)
    out[:3, :3] = r
    out[:3, 3] = mc - r @ fc
    return out


def image_spacing(case: dict) -> float:
    """The finest voxel size of the two images (mm)."""
    return float(min(case["fixed"].grid.spacing.min(), case["moving"].grid.spacing.min()))


def working_voxels(image, spacing: float) -> int:
    """Voxels of ``image``'s field of view (its whole grid) resampled to ``spacing`` (as the engine's
    ``Grid.resized``)."""
    extent = image.grid.spacing * np.array(image.grid.size_ijk, dtype=np.float64)
    return int(np.prod(np.maximum(1, np.round(extent / spacing))))


def spacings_for(case: dict, spacings, max_working_voxels: int) -> tuple:
    """``(kept, skipped)``: the hand-chosen spacings to run on ``case`` and ``{spacing: reason}`` for the others."""
    finest = image_spacing(case)
    kept, skipped = [], {}
    for s in spacings:
        if s < finest / 1.01:
            skipped[s] = f"finer than the images ({finest:.3g} mm)"
            continue
        voxels = max(working_voxels(case["fixed"], s), working_voxels(case["moving"], s))
        if voxels > max_working_voxels:
            skipped[s] = f"working grid {voxels / 1e6:.1f}M voxels > {max_working_voxels / 1e6:.1f}M"
            continue
        kept.append(s)
    return kept, skipped


# ---- runs -----------------------------------------------------------------------------------------------
def run(case: dict, similarity: str, spacing, seed: int, threads: int, search: str = "global") -> dict:
    """One rigid registration from the identity; ``spacing`` None = automatic."""
    from MMRegistrationLib.registration.base import RegistrationInputs
    from MMRegistrationLib.registration.pipeline import run_registration
    from MMRegistrationLib.spatial.affine import AffineTransform

    options = {"mode": "rigid", "search": search, "similarity": similarity}
    if spacing is not None:
        options["spacing_mm"] = float(spacing)
    try:
        result, record = run_registration("disa", RegistrationInputs(case["fixed"], case["moving"]), init="none",
                                          options=options, seed=seed, device="cpu",
                                          initial=AffineTransform.identity(), threads=threads)
    except Exception as err:  # recorded, e.g. a field of view too small for the descriptors at a coarse spacing
        return {"error": f"{type(err).__name__}: {err}", "final_mm": float("nan"), "seconds": float("nan")}
    wall = record["wall_seconds"]
    info = record.get("method_info") or {}
    levels = info.get("levels") or []
    finest = min(levels, key=lambda lv: lv["spacing_mm"]) if levels else {}
    return {"final_mm": mean_error(result.transform.matrix, case["fixed_landmarks"], case["moving_landmarks"]),
            "seconds": float(wall["init"] + wall["register"]), "working_spacing_mm": info.get("working_spacing_mm"),
            "levels": [[lv.get("spacing_mm"), lv.get("points")] for lv in levels],
            "finest_points": finest.get("points")}


def verdict(default_mm, best_mm) -> dict:
    """The default's error against the best hand-chosen spacing's (module docstring)."""
    if default_mm is None or best_mm is None or not np.isfinite(default_mm) or not np.isfinite(best_mm):
        return {"ratio": None, "difference_mm": None, "ok": False}
    ratio = default_mm / best_mm if best_mm > 0 else float("inf")
    diff = default_mm - best_mm
    return {"ratio": float(ratio), "difference_mm": float(diff),
            "ok": bool(ratio <= RATIO_TARGET or diff <= ABSOLUTE_TARGET_MM)}


def run_case(case: dict, methods: list, spacings: list, args) -> dict:
    kept, skipped = spacings_for(case, spacings, args.max_working_voxels)
    identity = mean_error(np.eye(4), case["fixed_landmarks"], case["moving_landmarks"])
    floor = mean_error(rigid_fit(case["fixed_landmarks"], case["moving_landmarks"]), case["fixed_landmarks"],
                       case["moving_landmarks"])
    fg, mg = case["fixed"].grid, case["moving"].grid
    out = {"case": case["name"], "spacing_mm": case["spacing"], "fov_mm": case["fov"], "seed": case["seed"],
           "config": case["config"], "fixed_shape": list(fg.shape), "fixed_spacing_mm": fg.spacing.tolist(),
           "moving_shape": list(mg.shape), "moving_spacing_mm": mg.spacing.tolist(),
           "fixed_fov_fraction": float(np.mean(np.asarray(case["fixed"].array) > 0)),
           "landmarks": int(len(case["fixed_landmarks"])), "identity_mm": identity, "rigid_floor_mm": floor,
           "spacings": kept, "skipped": {f"{s:g}": r for s, r in skipped.items()}, "notes": case["notes"],
           "methods": {}}
    log(f"== {case['name']} (seed {case['seed']}): TRUS {fg.shape} @ {fg.spacing.min():.3g} mm, MR {mg.shape} @ "
        f"{np.round(mg.spacing, 3).tolist()} mm, {len(case['fixed_landmarks'])} landmarks, identity {identity:.2f} mm, "
        f"rigid floor {floor:.2f} mm; spacings {kept}"
        + (f"; skipped {', '.join(f'{s:g} ({r})' for s, r in skipped.items())}" if skipped else ""))
    for method in methods:
        default = run(case, method, None, args.seed, args.threads)
        log(f"  {method:<5} default: {_cell(default)}  (spacing {_fmt(default.get('working_spacing_mm'), 'g')} mm, "
            f"levels {default.get('levels')})")
        by_spacing = {}
        for s in kept:
            by_spacing[f"{s:g}"] = r = run(case, method, s, args.seed, args.threads)
            log(f"  {method:<5} {s:>5g} mm: {_cell(r)}")
        finite = {k: v for k, v in by_spacing.items() if np.isfinite(v["final_mm"])}
        best_key = min(finite, key=lambda k: finite[k]["final_mm"]) if finite else None
        best = finite[best_key]["final_mm"] if best_key else None
        out["methods"][method] = {"default": default, "spacings": by_spacing, "best_spacing": best_key,
                                  "best_mm": best, **verdict(default["final_mm"], best)}
    finals = [r["final_mm"] for m in out["methods"].values() for r in [m["default"], *m["spacings"].values()]
              if np.isfinite(r["final_mm"])]
    out["best_any_mm"] = float(min(finals)) if finals else None
    return out


def _fmt(value, spec=".2f", missing="–"):
    return missing if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, spec)


def _cell(r: dict) -> str:
    if "error" in r:
        return "failed"
    return f"{r['final_mm']:.2f} mm, {r['seconds']:.1f} s"


# ---- report ---------------------------------------------------------------------------------------------
def markdown(res: dict) -> str:
    lines = [
        f"# DISA working spacing on generated MR/TRUS of different resolutions ({res['date']}, {res['machine']})"
        f"{' — PARTIAL' if res.get('partial') else ''}",
        "",
        f"Threads: {res['threads']}. Load average before/after: {res['load_before']} / {res['load_after']} (the machine "
        f"may be shared). Seed {res['seed']} (case i: generator seed seed + i, next seeds + 1000 k if it cannot place "
        "the landmarks). Generated cases (`generate_case`, oblique, rigid offset 10-20 mm / 6-12 deg, deformation "
        "4 mm, probe compression 5 mm): TRUS S mm isotropic over L mm per axis (sector filling the grid), MR "
        "S x S x min(2S, 3) mm over L + 20 mm. Rigid global search (`run_registration('disa', mode='rigid', "
        "search='global')`) from the identity, automatic working spacing ('default') and each hand-chosen spacing "
        "(skipped: finer than the images / 1.01, or a working grid above "
        f"{res['max_working_voxels'] / 1e6:.1f}M voxels). Error = mean landmark (calcification) error; the ground "
        "truth is deformable: 'rigid floor' = the least-squares rigid fit of the landmarks, 'best any' = the lowest "
        "error of every run on the case. Verdict: default within 10 % of the best hand-chosen spacing's error, or "
        "within 0.3 mm of it. Time = registration wall time (descriptors included).",
        "",
        "## Default against the best hand-chosen spacing",
        "",
        "| case | method | default: spacing (mm) | finest points | levels | error (mm) | time (s) | best spacing (mm) "
        "| its error (mm) | its time (s) | ratio | verdict | best any (mm) | rigid floor (mm) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in res["cases"]:
        for method, m in c["methods"].items():
            d = m["default"]
            b = m["spacings"].get(m["best_spacing"] or "", {})
            ok = "ok" if m["ok"] else "MISS"
            lines.append(
                f"| {c['case']} | {method} | {_fmt(d.get('working_spacing_mm'), 'g')} | "
                f"{_fmt(d.get('finest_points'), 'd')} | {len(d.get('levels') or [])} | {_fmt(d['final_mm'])} | "
                f"{_fmt(d['seconds'], '.1f')} | {m['best_spacing'] or '–'} | {_fmt(m['best_mm'])} | "
                f"{_fmt(b.get('seconds'), '.1f')} | {_fmt(m['ratio'])} | {ok} | {_fmt(c['best_any_mm'])} | "
                f"{c['rigid_floor_mm']:.2f} |")
    spacings = sorted({float(s) for c in res["cases"] for m in c["methods"].values() for s in m["spacings"]})
    lines += ["", "## Every run: error (mm) / time (s)", "",
              "| case | method | identity (mm) | default | " + " | ".join(f"{s:g} mm" for s in spacings) + " |",
              "|---|---|---|---|" + "---|" * len(spacings)]
    for c in res["cases"]:
        for method, m in c["methods"].items():
            cells = []
            for s in spacings:
                r = m["spacings"].get(f"{s:g}")
                cells.append("–" if r is None else "failed" if "error" in r else
                             f"{r['final_mm']:.2f} / {r['seconds']:.0f}")
            d = m["default"]
            dc = "failed" if "error" in d else f"{d['final_mm']:.2f} / {d['seconds']:.0f}"
            lines.append(f"| {c['case']} | {method} | {c['identity_mm']:.1f} | {dc} | " + " | ".join(cells) + " |")
    lines += ["", "## Cases", "", "| case | seed | TRUS grid (K, J, I) @ mm | MR grid (K, J, I) @ mm | TRUS sector "
              "fraction | landmarks | skipped spacings |", "|---|---|---|---|---|---|---|"]
    for c in res["cases"]:
        skipped = "; ".join(f"{s}: {r}" for s, r in c["skipped"].items()) or "–"
        lines.append(f"| {c['case']} | {c['seed']} | {tuple(c['fixed_shape'])} @ "
                     f"{', '.join(f'{v:.3g}' for v in c['fixed_spacing_mm'])} | {tuple(c['moving_shape'])} @ "
                     f"{', '.join(f'{v:.3g}' for v in c['moving_spacing_mm'])} | {c['fixed_fov_fraction']:.2f} | "
                     f"{c['landmarks']} | {skipped} |")
    failures = [(c["case"], method, label, r["error"]) for c in res["cases"] for method, m in c["methods"].items()
                for label, r in [("default", m["default"]), *m["spacings"].items()] if "error" in r]
    if failures:
        lines += ["", "## Failed runs", ""] + [f"- {c} {m} {s}: {e}" for c, m, s, e in failures]
    notes = list(res.get("notes", [])) + [f"{c['case']}: {n}" for c in res["cases"] for n in c["notes"]]
    for note in notes:
        lines.append(f"\nNote: {note}")
    return "\n".join(lines) + "\n"


def versions() -> dict:
    return bench_common.versions()


def write(res: dict, out_name: str) -> None:
    bench_common.write_results(res, out_name, markdown)


# ---- main -----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=None, help="SPACING:FOV pairs (mm; default "
                        + " ".join(DEFAULT_CASES) + ")")
    parser.add_argument("--methods", nargs="+", default=["disa", "mind"], choices=["disa", "mind", "lc2"])
    parser.add_argument("--spacings", nargs="+", type=float, default=None,
                        help="hand-chosen working spacings (mm; default " + " ".join(f"{s:g}" for s in DEFAULT_SPACINGS)
                        + ")")
    parser.add_argument("--max-voxels", type=int, default=8_000_000, help="cap of each generated grid")
    parser.add_argument("--max-working-voxels", type=int, default=250**3,
                        help="skip spacings whose working grid exceeds this (default 250^3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="cases " + " ".join(QUICK_CASES) + ", spacings "
                        + " ".join(f"{s:g}" for s in QUICK_SPACINGS))
    parser.add_argument("--out", default=None, help="results name under benchmarks/results")
    args = parser.parse_args(argv)
    cases = [parse_case(c) for c in (args.cases or (QUICK_CASES if args.quick else DEFAULT_CASES))]
    spacings = sorted(args.spacings or (QUICK_SPACINGS if args.quick else DEFAULT_SPACINGS))
    out_name = args.out or ("disa_resolution_quick" if args.quick else "disa_resolution")

    import SimpleITK as sitk
    import torch

    torch.set_num_threads(args.threads)
    os.environ["MMREG_THREADS"] = str(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
        "threads": args.threads, "methods": args.methods, "spacings": spacings,
        "case_specs": [f"{s:g}:{f:g}" for s, f in cases], "seed": args.seed, "max_voxels": args.max_voxels,
        "max_working_voxels": args.max_working_voxels, "quick": args.quick, "versions": versions(),
        "load_before": [round(v, 2) for v in os.getloadavg()], "cases": [], "notes": [], "partial": True,
    }
    log(f"cases {res['case_specs']}; methods {args.methods}; spacings {spacings}; threads {args.threads}")
    t_start = time.perf_counter()
    for index, (spacing, fov) in enumerate(cases):
        t0 = time.perf_counter()
        case = make_case(spacing, fov, args.seed + index, args.max_voxels)
        log(f"generated {case['name']} in {time.perf_counter() - t0:.1f} s")
        if index == 0:
            for method in args.methods:
                t0 = time.perf_counter()
                r = run(case, method, 1.0, args.seed, args.threads, search="local")
                log(f"warm-up {method}: {time.perf_counter() - t0:.1f} s (discarded{', ' + r['error'] if 'error' in r else ''})")
        res["cases"].append(run_case(case, args.methods, spacings, args))
        del case
        res["total_seconds"] = time.perf_counter() - t_start
        write(res, out_name)
    res["partial"] = False
    res["total_seconds"] = time.perf_counter() - t_start
    write(res, out_name)
    log(markdown(res))
    log(f"wrote {OUT / (out_name + '.json')} and {OUT / (out_name + '.md')} ({res['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
