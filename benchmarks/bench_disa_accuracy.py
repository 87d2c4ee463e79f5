"""DISA's accuracy against the LC2 it approximates and MIND-SSC, at one working resolution (issue 14's target:
DISA's landmark error within 15 % of LC2's at the same resolution, and no worse than MIND-SSC).

Every method runs a rigid *local* search (one level) from the same small starts, at the same working spacing: the
engine's automatic DISA spacing for the case (``registration/disa_resolution.py``), or ``--spacing``. Local search
from near the truth separates the accuracy of the similarity from its capture range (LC2 has little: see
``bench_disa.py``) and keeps LC2, which recomputes its statistics at every fixed voxel and evaluation, affordable.

Cases:

- ``us``: the real brain ultrasound volumes the shipped DISA network never trained on (``bench_disa_realus.py``'s
  held-out selection and case construction: the volume against itself resampled onto another oblique grid through a
  known rigid ``T_true``, cropped, with multiplicative noise; 15 virtual landmarks inside the field of view); error =
  mean ``|T(x_i) - T_true(x_i)|``.
- ``generated``: generated MR/TRUS pairs (``bench_disa_resolution.py``'s geometry, ``--generated S:L ...``, seeds
  500+ so that no other DISA figure uses them); reference = the least-squares rigid fit of the calcification
  landmarks (their truth is deformable); error = mean landmark error (its floor is the rigid fit's).

Starts (``--starts`` per case, seeded): the reference composed with a rigid perturbation (rotation <= 3 deg about the
landmarks' centre, translation) whose initial error lies in 2-4 mm.

Results: ``benchmarks/results/<out>.json`` / ``.md`` (default ``disa_accuracy``), rewritten after every case.

Usage:
    python benchmarks/bench_disa_accuracy.py [--us N] [--generated 0.5:60 1.0:100] [--starts 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_common  # noqa: E402
import bench_disa_realus as realus  # noqa: E402
import bench_disa_resolution as sweep  # noqa: E402

METHODS = ("disa", "lc2", "mind")
START_ERROR_MM = (2.0, 4.0)
START_ROTATION_DEG = 3.0
START_TRANSLATION_MM = 5.0
GENERATED_SEED = 500


def log(message: str) -> None:
    print(message, flush=True)


def automatic_spacing(fixed, moving, moving_fov_threshold) -> float:
    from MMRegistrationLib.registration.disa_resolution import plan_resolution

    return plan_resolution(fixed, moving, "disa", moving_fov_threshold=moving_fov_threshold).spacing_mm


def run_local(fixed, moving, matrix, similarity: str, spacing: float, moving_fov_threshold, seed: int,
              threads: int) -> tuple:
    """``(estimate 4x4, seconds)`` of a one-level rigid local search of ``similarity`` at ``spacing``."""
    options = {"mode": "rigid", "search": "local", "similarity": similarity, "spacing_mm": spacing, "levels": 1,
               "fixed_fov_threshold": 0.0, "moving_fov_threshold": moving_fov_threshold}
    estimate, seconds, _ = realus.run_method(fixed, moving, matrix, options, seed, threads)
    return estimate, seconds


def us_cases(count, seed: int):
    """Held-out real ultrasound cases as ``(name, fixed, moving, reference, landmarks, error_fn, threshold)``."""
    from MMRegistrationLib.io import read_image

    for index, path in realus.case_paths(realus.DATA, count, "heldout"):
        fixed = read_image(path, "fixed")
        case = realus.build_case(fixed, [seed, index], n_starts=1)
        t_true, landmarks = case["t_true"], case["landmarks"]
        yield {"name": path.stem, "kind": "us", "fixed": fixed, "moving": case["moving"], "reference": t_true,
               "landmarks": landmarks, "centre": case["centre"], "moving_fov_threshold": 0.0,
               "error": lambda m, t=t_true, x=landmarks: realus.landmark_error(m, t, x), "floor_mm": 0.0}


def generated_cases(specs, max_voxels: int):
    for k, spec in enumerate(specs):
        spacing, fov = sweep.parse_case(spec)
        case = sweep.make_case(spacing, fov, GENERATED_SEED + k, max_voxels)
        flm, mlm = case["fixed_landmarks"], case["moving_landmarks"]
        reference = sweep.rigid_fit(flm, mlm)
        yield {"name": f"generated_{case['name']}", "kind": "generated", "fixed": case["fixed"],
               "moving": case["moving"], "reference": reference, "landmarks": flm, "centre": flm.mean(axis=0),
               "moving_fov_threshold": None, "seed": case["seed"],
               "error": lambda m, f=flm, g=mlm: sweep.mean_error(m, f, g),
               "floor_mm": sweep.mean_error(reference, flm, mlm)}


def run_case(case: dict, args, index: int) -> dict:
    rng = np.random.default_rng([args.seed, 77, index])
    starts = realus.sample_starts(case["reference"], case["landmarks"], case["centre"], args.starts, rng,
                                  error_mm=START_ERROR_MM, max_rotation_deg=START_ROTATION_DEG,
                                  max_translation_mm=START_TRANSLATION_MM)
    spacing = args.spacing or automatic_spacing(case["fixed"], case["moving"], case["moving_fov_threshold"])
    out = {"case": case["name"], "kind": case["kind"], "spacing_mm": spacing, "floor_mm": case["floor_mm"],
           "runs": []}
    log(f"== {case['name']}: working spacing {spacing:g} mm, error floor {case['floor_mm']:.2f} mm, starts "
        + " ".join(f"{s['initial_mm']:.1f}" for s in starts))
    for k, start in enumerate(starts):
        for similarity in args.methods:
            row = {"method": similarity, "start": k, "initial_mm": start["initial_mm"]}
            try:
                estimate, seconds = run_local(case["fixed"], case["moving"], start["matrix"], similarity, spacing,
                                              case["moving_fov_threshold"], args.seed, args.threads)
                row.update(final_mm=case["error"](estimate), seconds=seconds)
            except Exception as err:  # recorded, counted as missing
                row.update(final_mm=float("nan"), seconds=float("nan"), error=f"{type(err).__name__}: {err}")
            out["runs"].append(row)
            log(f"  start {k} {similarity:<5} {start['initial_mm']:5.2f} -> {row['final_mm']:5.2f} mm "
                f"({row['seconds']:.1f} s)")
    return out


def summarize(cases: list, methods) -> dict:
    out = {}
    for kind in sorted({c["kind"] for c in cases}) + ["all"]:
        chosen = [c for c in cases if kind in ("all", c["kind"])]
        out[kind] = {}
        for name in methods:
            runs = [r for c in chosen for r in c["runs"] if r["method"] == name]
            finals = [r["final_mm"] for r in runs if np.isfinite(r["final_mm"])]
            out[kind][name] = {"runs": len(runs), "failed": len(runs) - len(finals),
                               "mean_mm": float(np.mean(finals)) if finals else None,
                               "median_s": float(np.median([r["seconds"] for r in runs if np.isfinite(r["seconds"])]))
                               if finals else None}
        disa, lc2, mind = (out[kind].get(m, {}).get("mean_mm") for m in METHODS)
        out[kind]["disa_over_lc2"] = disa / lc2 if disa and lc2 else None
        out[kind]["disa_over_mind"] = disa / mind if disa and mind else None
    return out


def markdown(res: dict) -> str:
    lines = [f"# DISA accuracy at one resolution ({res['date']})", "",
             f"{res['machine']}, {res['threads']} threads, load before {res['load_before']}; rigid local search, one "
             f"level, every method at the same working spacing (the engine's automatic DISA spacing per case); "
             f"{res['starts']} starts per case with initial error 2-4 mm. Error floor: 0 on the US cases (known rigid "
             "truth), the landmarks' rigid fit on the generated ones.", "",
             "| case | spacing (mm) | floor (mm) | " + " | ".join(f"{m} (mm, s)" for m in res["methods"]) + " |",
             "|---|---|---|" + "---|" * len(res["methods"])]
    for c in res["cases"]:
        cells = []
        for m in res["methods"]:
            runs = [r for r in c["runs"] if r["method"] == m]
            errs = [r["final_mm"] for r in runs]
            secs = [r["seconds"] for r in runs if np.isfinite(r["seconds"])]
            cells.append(" / ".join(f"{e:.2f}" for e in errs) + (f" ({np.median(secs):.1f} s)" if secs else ""))
        lines.append(f"| {c['case']} | {c['spacing_mm']:g} | {c['floor_mm']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "| cases | " + " | ".join(f"{m} mean (mm)" for m in res["methods"]) + " | DISA / LC2 | DISA / MIND |",
              "|---|" + "---|" * (len(res["methods"]) + 2)]
    for kind, row in res.get("summary", {}).items():
        cells = [f"{row[m]['mean_mm']:.2f}" if row[m]["mean_mm"] is not None else "–" for m in res["methods"]]
        ratios = [f"{row[k]:.2f}" if row.get(k) else "–" for k in ("disa_over_lc2", "disa_over_mind")]
        lines.append(f"| {kind} | " + " | ".join(cells + ratios) + " |")
    if res["partial"]:
        lines += ["", "**Partial results** (the run has not finished)."]
    return "\n".join(lines) + "\n"


def write(res: dict, out_name: str) -> None:
    bench_common.write_results(res, out_name, markdown, summarize)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--us", type=int, default=None, help="held-out real US volumes (default: all 4)")
    parser.add_argument("--generated", nargs="*", default=["0.5:60", "1.0:100"], help="S:L generated cases")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--starts", type=int, default=2)
    parser.add_argument("--spacing", type=float, default=None, help="working spacing for every case (default: the "
                        "engine's automatic DISA spacing of each case)")
    parser.add_argument("--max-voxels", type=int, default=8_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="disa_accuracy")
    args = parser.parse_args(argv)
    bench_common.set_threads(args.threads)
    res = bench_common.run_header(args.threads, methods=list(args.methods), starts=args.starts, seed=args.seed,
                                  versions=bench_common.versions(), heldout_us=realus.heldout_names())
    cases = list(us_cases(args.us, args.seed)) if args.us != 0 else []
    cases += list(generated_cases(args.generated, args.max_voxels))
    if cases:  # warm-up: one discarded run per similarity on the first case
        first = cases[0]
        for similarity in args.methods:
            run_local(first["fixed"], first["moving"], first["reference"], similarity, 2.0,
                      first["moving_fov_threshold"], args.seed, args.threads)
    for index, case in enumerate(cases):
        res["cases"].append(run_case(case, args, index))
        write(res, args.out)
    res["partial"] = False
    write(res, args.out)
    log(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
