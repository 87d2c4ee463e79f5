"""DISA deformable benchmark: the engine's ``disa`` deformable registration (DISA / MIND / LC2 similarity) against the
published deformable peer convexAdam, from the unperturbed start, on the DISA capture benchmark's cases.

Results go to ``benchmarks/results/<out>.json`` and ``<out>.md`` (``<out>`` = ``disa_deformable``), rewritten after
every case and marked partial until the run ends.

Cases: ``--cases`` as in ``bench_disa.py`` (``sample``, ``generated N``, ``deepreg N``; default ``sample generated 5
deepreg 5``), fixed = TRUS, moving = MR. Start: the identity (the cases' own scanner/world alignment, no perturbation).

Methods (``--methods``):

* ``disa-deformable``, ``mind-deformable`` and, with ``--lc2`` (slow), ``lc2-deformable``:
  ``run_registration("disa", RegistrationInputs(fixed, moving), init="none", options=dict(mode="deformable",
  similarity=...))`` — the engine's defaults otherwise (rigid then affine from the identity, local search, then the
  velocity field: 8 mm grid, bending weight 3000, 60 L-BFGS iterations). Images only (no segmentation). Time =
  ``wall_seconds['init'] + wall_seconds['register']``.
* ``convexadam``: ``benchmarks/peers.py`` ``convex_adam_mind`` (convexadam 0.2.0, MIND-SSC, its published defaults,
  CPU; the moving image resampled onto the fixed grid). Time = that resampling + convexAdam. Skipped (with a note) when
  convexadam is not installed.

Every method runs with ``--threads`` threads (torch, the engine, SimpleITK) on the CPU. Before the timed runs, each
method runs once on the first case (discarded: imports, network loading, first-call overheads).

Metrics, all of the fixed -> moving result ``T`` on the fixed grid: landmark TRE = mean over the case's landmarks of
``|T(f_i) - m_i|`` (mm); gland Dice = DSC of label 1 between the fixed segmentation and the moving segmentation
warped onto the fixed grid through ``T`` (nearest neighbour, ``resample_labels``; the engine's evaluation
convention); folding = fraction of fixed voxels with ``det(dT/dx) <= 0`` and the minimum determinant
(``jacobian_determinant_on_grid``). The identity's TRE and Dice are reported per case as the starting point.

Usage:
    python benchmarks/bench_disa_deformable.py [--cases sample generated N deepreg N] [--methods M ...] [--lc2]
                                               [--threads 2] [--seed 0] [--out NAME]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_common  # noqa: E402

import bench_disa  # noqa: E402  (benchmarks/bench_disa.py: cases, landmark error, versions)

OUT = bench_disa.OUT
METHODS = {
    "disa-deformable": {"similarity": "disa"},
    "mind-deformable": {"similarity": "mind"},
    "lc2-deformable": {"similarity": "lc2"},
    "convexadam": {"peer": "convexadam"},
}
DEFAULT_METHODS = ("disa-deformable", "mind-deformable", "convexadam")  # + lc2-deformable with --lc2
log = bench_disa.log


# ---- runs -----------------------------------------------------------------------------------------------
def run_method(name: str, case: dict, seed: int, threads: int) -> tuple:
    """(transform fixed -> moving, seconds, info) of method ``name`` from the identity."""
    spec = METHODS[name]
    if "peer" in spec:
        import peers

        transform, seconds, info = peers.PEERS[spec["peer"]](case, threads=threads, return_info=True)
        return transform, float(seconds), {"max_displacement_mm": info.get("max_displacement_mm")}
    from MMRegistrationLib.registration.base import RegistrationInputs
    from MMRegistrationLib.registration.pipeline import run_registration

    inputs = RegistrationInputs(case["fixed"], case["moving"])
    options = dict(mode="deformable", similarity=spec["similarity"])
    result, record = run_registration("disa", inputs, init="none", options=options, seed=seed, device="cpu",
                                      threads=threads)
    wall = record["wall_seconds"]
    info = record["method_info"]
    return result.transform, float(wall["init"] + wall["register"]), {
        "final_loss": info.get("final_loss"), "stage_seconds": info.get("seconds")}


def gland_dice(case: dict, transform) -> float:
    """DSC of label 1: fixed segmentation vs the moving one warped onto the fixed grid through ``transform``
    (fixed -> moving, None = identity; nearest neighbour)."""
    from MMRegistrationLib.metrics.overlap import dice_per_label
    from MMRegistrationLib.spatial.resample import resample_labels

    warped = resample_labels(case["moving_seg"], case["fixed_seg"].grid, transform)
    return float(dice_per_label(case["fixed_seg"].array, warped.array, [1])[1])


def landmark_tre(case: dict, transform) -> float:
    """Mean landmark error (mm) of ``transform`` (fixed -> moving, None = identity); NaN without landmarks."""
    flm, mlm = case["fixed_landmarks"], case["moving_landmarks"]
    if flm is None or len(flm) == 0:
        return float("nan")
    mapped = flm if transform is None else transform.map_points_np(flm)
    return bench_disa.mean_error_points(mapped, mlm)


def folding(case: dict, transform) -> dict:
    """Fraction of fixed voxels with ``det(dT/dx) <= 0`` and the minimum determinant."""
    from MMRegistrationLib.metrics.deformation import jacobian_determinant_on_grid

    det = jacobian_determinant_on_grid(transform, case["fixed"].grid)
    return {"folding_fraction": float((det <= 0).mean()), "jacobian_min": float(det.min())}


def evaluate(case: dict, transform) -> dict:
    out = {"tre_mm": landmark_tre(case, transform), "dice": gland_dice(case, transform)}
    out.update(folding(case, transform))
    return out


def run_case(case: dict, methods: list, args) -> dict:
    out = {"case": case["name"], "dataset": case["source"],
           "landmarks": 0 if case["fixed_landmarks"] is None else int(len(case["fixed_landmarks"])),
           "identity": {"tre_mm": landmark_tre(case, None), "dice": gland_dice(case, None)}, "methods": {}}
    log(f"== {case['source']}/{case['name']}: {out['landmarks']} landmarks, identity TRE "
        f"{out['identity']['tre_mm']:.2f} mm, gland Dice {out['identity']['dice']:.3f}")
    for name in methods:
        try:
            transform, seconds, info = run_method(name, case, args.seed, args.threads)
            row = {"seconds": seconds, **evaluate(case, transform), **info}
            log(f"  {name:<16} TRE {row['tre_mm']:6.2f} mm  Dice {row['dice']:.3f}  {seconds:7.2f} s  "
                f"folding {row['folding_fraction']:.4f}")
        except Exception as err:
            row = {"error": f"{type(err).__name__}: {err}"}
            log(f"  {name}: FAILED {type(err).__name__}: {err}")
            log(traceback.format_exc(limit=3))
        out["methods"][name] = row
    return out


# ---- report ---------------------------------------------------------------------------------------------
def _stats(values) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"n": 0, "mean": None, "sd": None, "median": None}
    return {"n": int(len(v)), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "median": float(np.median(v))}


def summarize(cases: list, methods: list) -> dict:
    out = {"identity": {key: _stats([c["identity"][key] for c in cases]) for key in ("tre_mm", "dice")}}
    for name in methods:
        rows = [c["methods"].get(name, {}) for c in cases]
        ok = [r for r in rows if "error" not in r and r]
        out[name] = {key: _stats([r[key] for r in ok]) for key in ("tre_mm", "dice", "seconds", "folding_fraction")}
        out[name]["failed"] = sum("error" in r for r in rows)
    return out


def _mean_sd(stats: dict, digits: int = 2) -> str:
    if not stats or stats["mean"] is None:
        return "–"
    return f"{stats['mean']:.{digits}f} ± {stats['sd']:.{digits}f}"


def markdown(res: dict) -> str:
    s = res["summary"]
    lines = [
        f"# DISA deformable vs convexAdam ({res['date']}, {res['machine']}){' — PARTIAL' if res.get('partial') else ''}",
        "",
        f"Threads: {res['threads']} (CPU). Load average before/after: {res['load_before']} / {res['load_after']} (the "
        "machine may be shared). From the identity (no perturbation). Engine: `run_registration('disa', "
        "init='none', options=dict(mode='deformable', similarity=...))`, images only. convexAdam: convexadam "
        "0.2.0 (`benchmarks/peers.py` `convex_adam_mind`: MIND-SSC, its published defaults, the moving image "
        "resampled onto the fixed grid). TRE = mean landmark error (mm); Dice = gland (label 1), moving segmentation "
        "warped nearest-neighbour onto the fixed grid; time = registration wall time (engine: init + register; "
        "convexAdam: resampling + convexAdam), median over cases; folding = fraction of fixed voxels with "
        "det(dT/dx) <= 0. Each method was warmed up once on the first case (discarded).",
        f"Cases: {', '.join(c['case'] for c in res['cases'])}.",
        "",
        "| method | TRE (mm) | gland Dice | median time (s) | folding | failed |",
        "|---|---|---|---|---|---|",
        f"| identity (start) | {_mean_sd(s['identity']['tre_mm'])} | {_mean_sd(s['identity']['dice'], 3)} | – | – "
        "| – |",
    ]
    for name in res["methods"]:
        e = s[name]
        t = "–" if e["seconds"]["median"] is None else f"{e['seconds']['median']:.1f}"
        fold = "–" if e["folding_fraction"]["mean"] is None else f"{e['folding_fraction']['mean']:.4f}"
        lines.append(f"| {name} | {_mean_sd(e['tre_mm'])} | {_mean_sd(e['dice'], 3)} | {t} | {fold} | {e['failed']} |")
    lines += ["", "## Per case (TRE mm / Dice / seconds)", "",
              "| case | identity | " + " | ".join(res["methods"]) + " |", "|---|---|" + "---|" * len(res["methods"])]
    for c in res["cases"]:
        cells = []
        for name in res["methods"]:
            r = c["methods"].get(name, {})
            cells.append("failed" if "error" in r else "–" if not r else
                         f"{r['tre_mm']:.2f} / {r['dice']:.3f} / {r['seconds']:.1f}")
        ident = c["identity"]
        lines.append(f"| {c['case']} | {ident['tre_mm']:.2f} / {ident['dice']:.3f} | " + " | ".join(cells) + " |")
    for note in res.get("notes", []):
        lines.append(f"\nNote: {note}")
    return "\n".join(lines) + "\n"


def versions() -> dict:
    return bench_common.versions(("convexadam",))


def write(res: dict, out_name: str) -> None:
    bench_common.write_results(res, out_name, markdown, summarize)


def method_available(name: str) -> bool:
    peer = METHODS[name].get("peer")
    if peer is None:
        return True
    import peers

    return bool(peers.PEER_AVAILABLE[peer]())


# ---- main -----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["sample", "generated", "5", "deepreg", "5"],
                        help="sample | generated N | deepreg N (default: sample generated 5 deepreg 5)")
    parser.add_argument("--methods", nargs="+", default=None, choices=list(METHODS),
                        help="default: " + ", ".join(DEFAULT_METHODS) + " (+ lc2-deformable with --lc2)")
    parser.add_argument("--lc2", action="store_true", help="also run lc2-deformable (slow)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="disa_deformable", help="results name under benchmarks/results")
    args = parser.parse_args(argv)
    methods = list(args.methods or DEFAULT_METHODS)
    if args.lc2 and "lc2-deformable" not in methods:
        methods.append("lc2-deformable")
    skipped = [name for name in methods if not method_available(name)]
    methods = [name for name in methods if name not in skipped]

    import SimpleITK as sitk
    import torch

    torch.set_num_threads(args.threads)
    os.environ["MMREG_THREADS"] = str(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
        "threads": args.threads, "methods": methods, "seed": args.seed, "case_spec": args.cases,
        "versions": versions(), "load_before": [round(v, 2) for v in os.getloadavg()], "cases": [], "notes": [],
        "partial": True,
    }
    for name in skipped:
        res["notes"].append(f"{name}: its package is not installed (pip install --no-deps -r "
                            "benchmarks/requirements.txt); skipped")
    log(f"methods: {', '.join(methods)}; threads {args.threads}")
    t_start = time.perf_counter()
    warmed = False
    for case in bench_disa.case_sources(args.cases, False):
        if not warmed:
            for name in methods:
                t0 = time.perf_counter()
                try:
                    run_method(name, case, args.seed, args.threads)
                    log(f"warm-up {name} on {case['name']}: {time.perf_counter() - t0:.1f} s (discarded)")
                except Exception as err:
                    log(f"warm-up {name} failed: {type(err).__name__}: {err}")
            warmed = True
        res["cases"].append(run_case(case, methods, args))
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
