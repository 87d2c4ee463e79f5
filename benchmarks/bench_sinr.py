"""SINR benchmark: engine methods vs classic peers on the sample case, generated cases and the DeepReg MR/TRUS pairs.

Results go to ``benchmarks/results/<out>.json`` (every row) and ``<out>.md`` (per-dataset mean +- sd per method,
each method's time as a ratio to ``ants-syn-sdm`` measured in the same run, and the per-case rows of the sample
and generated cases); ``<out>`` is ``sinr`` (``sinr_quick`` with ``--quick``).

Methods (``--methods``):

* engine: ``sinr-fast`` = method ``sinr`` with ``{"preset": "fast"}``, ``sinr-accurate`` = ``sinr`` with
  ``{"preset": "accurate"}``, ``sinr-fast-image`` = ``fast`` plus the DISA image term (``weight_image`` 1),
  ``rigid-mask``, or any other name in ``MMRegistrationLib.registration.methods.METHODS``
  (default options). A method that is not registered is skipped with a note. Time = ``wall_seconds['init'] +
  wall_seconds['register']`` of :func:`run_registration` (the registration only: no I/O, no evaluation).
* peers (``benchmarks/peers.py``): ``ants-syn-sdm`` (ANTs rigid/affine/SyN on the gland's signed distance maps),
  ``elastix-bspline-mi`` (elastix rigid + B-spline, Mattes MI on the images). Time = what each peer's docstring
  states (its registration, not the conversion of its output into an engine transform).

Every method runs once on the first case before timing (discarded). torch, SimpleITK and the peers use
``--threads`` threads (default 2). Reference rows (not timed): ``identity`` (no registration) and, where the case
has one, ``ground-truth``.

Metrics (``MMRegistrationLib.evaluation.evaluate_case`` on the fixed grid): DSC, MSD and HD95 of label 1 (gland),
mean TRE over the case's landmarks, folding fraction (det J <= 0) and min det J of the transform on the fixed grid.

Usage:
    python benchmarks/bench_sinr.py [--methods M ...] [--datasets sample generated deepreg]
                                    [--generated 10] [--deepreg-limit N] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from MMRegistrationLib.evaluation.case import jsonable

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import datasets  # noqa: E402  (benchmarks/datasets.py)
import peers  # noqa: E402  (benchmarks/peers.py)

OUT = HERE / "results"
DEFAULT_METHODS = ("sinr-fast", "sinr-accurate", "rigid-mask", "ants-syn-sdm", "elastix-bspline-mi")
ENGINE_ALIASES = {
    "sinr-fast": ("sinr", {"preset": "fast"}),
    "sinr-accurate": ("sinr", {"preset": "accurate"}),
    "sinr-fast-image": ("sinr", {"preset": "fast", "weight_image": 1.0}),
}
REFERENCE = "ants-syn-sdm"
METRICS = ("seconds", "dice", "msd_mm", "hd95_mm", "tre_mean_mm", "folding_fraction", "jacobian_min")


def log(message: str) -> None:
    print(message, flush=True)


# ---- methods --------------------------------------------------------------------------------------------
def engine_methods() -> dict:
    """The engine's registry, after trying to import modules that register further methods."""
    for module in ("MMRegistrationLib.registration.sinr",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            pass
        except Exception as err:  # a half-written module must not stop the peers
            log(f"note: importing {module} failed ({type(err).__name__}: {err}); its methods are unavailable")
    from MMRegistrationLib.registration.methods import METHODS

    return METHODS


def resolve_methods(names: list) -> dict:
    """name -> callable(case) -> (transform, seconds, info); unknown/unavailable ones are skipped with a note."""
    registry = engine_methods()
    runners = {}
    for name in names:
        if name in peers.PEERS:
            if not peers.PEER_AVAILABLE[name]():
                log(f"note: skipping {name}: its package is not installed (pip install --no-deps -r benchmarks/requirements.txt)")
                continue
            runners[name] = peer_runner(name)
            continue
        method, options = ENGINE_ALIASES.get(name, (name, {}))
        if method not in registry:
            log(f"note: skipping {name}: engine method '{method}' is not registered "
                f"(available: {', '.join(sorted(registry))})")
            continue
        try:
            registry[method].build_config(options)
        except Exception as err:  # e.g. an option (preset) the method does not have (yet)
            log(f"note: skipping {name}: method '{method}' refuses options {options} ({err})")
            continue
        runners[name] = engine_runner(method, options)
    return runners


def engine_runner(method: str, options: dict):
    from MMRegistrationLib.registration.base import RegistrationInputs
    from MMRegistrationLib.registration.pipeline import run_registration

    def run(case: dict, threads: int, device: str):
        inputs = RegistrationInputs(case["fixed"], case["moving"], case["fixed_seg"], case["moving_seg"],
                                    case["label_names"], case["fixed_landmarks"], case["moving_landmarks"])
        result, record = run_registration(method, inputs, options=dict(options), seed=0, device=device,
                                          threads=threads)
        wall = record["wall_seconds"]
        return result.transform, float(wall["init"] + wall["register"]), {"init": record["init"],
                                                                          "device": record["device"]}

    return run


def peer_runner(name: str):
    fn = peers.PEERS[name]

    def run(case: dict, threads: int, device: str):
        transform, seconds, info = fn(case, threads=threads, return_info=True)
        return transform, float(seconds), info

    return run


# ---- evaluation -----------------------------------------------------------------------------------------
def evaluate(case: dict, transform) -> dict:
    from MMRegistrationLib.evaluation.case import evaluate_case

    ev = evaluate_case(case["fixed_seg"], case["moving_seg"], transform, case["label_names"],
                       case["fixed_landmarks"], case["moving_landmarks"])
    gland = ev.row(1)
    out = {"dice": gland["dice"], "msd_mm": gland["msd_mm"], "hd95_mm": gland["hd95_mm"]}
    out["tre_mean_mm"] = ev.tre["tre_mean_mm"] if ev.tre else float("nan")
    out["tre_max_mm"] = ev.tre["tre_max_mm"] if ev.tre else float("nan")
    out["folding_fraction"] = ev.jacobian["folding_fraction"] if ev.jacobian else float("nan")
    out["jacobian_min"] = ev.jacobian["jacobian_min"] if ev.jacobian else float("nan")
    out["labels"] = {row["name"]: {"dice": row["dice"], "hd95_mm": row["hd95_mm"]} for row in ev.rows}
    return out


def case_sources(args) -> list:
    """(dataset name, iterator of cases) in run order."""
    out = []
    if "sample" in args.datasets:
        out.append(("sample", iter([datasets.sample_case()])))
    if "generated" in args.datasets and args.generated > 0:
        out.append(("generated", datasets.generated_cases(args.generated)))
    if "deepreg" in args.datasets:
        if datasets.deepreg_available(args.deepreg_root):
            out.append(("deepreg", datasets.deepreg_cases(args.deepreg_root, args.deepreg_limit)))
        else:
            log(f"note: DeepReg data not found at {args.deepreg_root or datasets.DEEPREG_ROOT}; skipping it")
    return out


def run_case(case: dict, runners: dict, args) -> list:
    rows = []
    base = {"dataset": case["source"], "case": case["name"],
            "landmarks": 0 if case["fixed_landmarks"] is None else int(len(case["fixed_landmarks"]))}
    references = [("identity", None)]
    if case.get("ground_truth") is not None:
        references.append(("ground-truth", case["ground_truth"]))
    for name, transform in references:
        row = dict(base, method=name, reference=True, seconds=float("nan"), **evaluate(case, transform))
        rows.append(row)
        log(summary_line(row))
    for name, run in runners.items():
        row = dict(base, method=name, reference=False)
        try:
            transform, seconds, info = run(case, args.threads, args.device)
            row.update(seconds=seconds, **evaluate(case, transform), info=info)
        except Exception as err:  # keep going: one failing case must not lose the others
            row.update(seconds=float("nan"), error=f"{type(err).__name__}: {err}")
            log(traceback.format_exc(limit=3))
        rows.append(row)
        log(summary_line(row))
    return rows


def summary_line(row: dict) -> str:
    if "error" in row:
        return f"  {row['dataset']}/{row['case']} {row['method']}: FAILED {row['error']}"
    return (f"  {row['dataset']}/{row['case']} {row['method']:<20} t={row['seconds']:7.2f}s DSC={row['dice']:.3f} "
            f"MSD={row['msd_mm']:.2f} HD95={row['hd95_mm']:.2f} TRE={row['tre_mean_mm']:.2f} "
            f"fold={row['folding_fraction']:.2e}")


# ---- report ---------------------------------------------------------------------------------------------
def _finite(values) -> np.ndarray:
    arr = np.array([v for v in values if v is not None], dtype=np.float64)
    return arr[np.isfinite(arr)]


def mean_sd(values, digits: int = 2) -> str:
    arr = _finite(values)
    if arr.size == 0:
        return "–"
    if arr.size == 1:
        return f"{arr[0]:.{digits}f}"
    return f"{arr.mean():.{digits}f} ± {arr.std(ddof=1):.{digits}f}"


def summarize(rows: list, methods: list) -> dict:
    """dataset -> method -> {n, failed, metric: [values], time_ratio_to_reference}."""
    out: dict = {}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        drows = [r for r in rows if r["dataset"] == dataset]
        ref_time = {r["case"]: r["seconds"] for r in drows if r["method"] == REFERENCE and "error" not in r}
        out[dataset] = {}
        for method in ["identity", "ground-truth"] + list(methods):
            mrows = [r for r in drows if r["method"] == method]
            if not mrows:
                continue
            ok = [r for r in mrows if "error" not in r]
            entry = {"n": len(ok), "failed": len(mrows) - len(ok), "reference": bool(mrows[0].get("reference"))}
            entry["mean"], entry["sd"] = {}, {}
            for key in METRICS:
                entry[key] = [r.get(key) for r in ok]
                arr = _finite(entry[key])
                entry["mean"][key] = float(arr.mean()) if arr.size else None
                entry["sd"][key] = float(arr.std(ddof=1)) if arr.size > 1 else None
            paired = [(r["seconds"], ref_time[r["case"]]) for r in ok if r["case"] in ref_time]
            if paired and not entry["reference"]:
                t, tref = np.array(paired).T
                entry["time_ratio_to_reference"] = float(t.sum() / tref.sum())
            out[dataset][method] = entry
    return out


def markdown(res: dict) -> str:
    lines = [
        f"# SINR benchmark ({res['date']}, {res['machine']})",
        "",
        f"Threads: {res['threads']} (torch, SimpleITK, ANTs, elastix); device {res['device']}. "
        f"Load average before/after: {res['load_before']} / {res['load_after']} (the machine may be shared: "
        "absolute times vary, ratios are taken within this run).",
        f"Versions: {', '.join(f'{k} {v}' for k, v in res['versions'].items())}.",
        "",
        "Time = registration only (engine: init + register; peers: see benchmarks/peers.py). Metrics on the fixed grid "
        "via evaluate_case: DSC / MSD / HD95 of the gland (label 1, moving labels warped nearest-neighbour), mean TRE "
        "over the case's landmarks, folding = fraction of fixed voxels with det J <= 0. `time / ANTs` = total time of "
        f"the method over the cases divided by that of `{REFERENCE}` on the same cases. `identity` and "
        "`ground-truth` are reference rows (no registration / the exact synthetic truth).",
    ]
    for note in res.get("notes", []):
        lines.append(f"\nNote: {note}")
    for dataset, methods in res["summary"].items():
        lines += ["", f"## {dataset}", "",
                  "| method | n | time (s) | time / ANTs | DSC | MSD (mm) | HD95 (mm) | TRE mean (mm) | folding | min det J |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for method, e in methods.items():
            ratio = e.get("time_ratio_to_reference")
            failed = f" ({e['failed']} failed)" if e["failed"] else ""
            lines.append(
                f"| {method} | {e['n']}{failed} | {'–' if e['reference'] else mean_sd(e['seconds'], 1)} | "
                f"{'–' if ratio is None else f'{ratio:.2f}'} | {mean_sd(e['dice'], 3)} | {mean_sd(e['msd_mm'])} | "
                f"{mean_sd(e['hd95_mm'])} | {mean_sd(e['tre_mean_mm'])} | {mean_sd(e['folding_fraction'], 4)} | "
                f"{mean_sd(e['jacobian_min'])} |"
            )
    case_rows = [r for r in res["rows"] if r["dataset"] in ("sample", "generated")]
    if case_rows:
        lines += ["", "## Per case (sample and generated)", "",
                  "| case | method | time (s) | DSC | MSD (mm) | HD95 (mm) | TRE mean (mm) | folding | min det J |",
                  "|---|---|---|---|---|---|---|---|---|"]
        fmt = lambda v, d=2: "–" if v is None or not np.isfinite(v) else f"{v:.{d}f}"  # noqa: E731
        for r in case_rows:
            if "error" in r:
                lines.append(f"| {r['case']} | {r['method']} | failed: {r['error'][:80]} | | | | | | |")
                continue
            lines.append(
                f"| {r['case']} | {r['method']} | {fmt(r['seconds'], 1)} | {fmt(r['dice'], 3)} | {fmt(r['msd_mm'])} | "
                f"{fmt(r['hd95_mm'])} | {fmt(r['tre_mean_mm'])} | {fmt(r['folding_fraction'], 4)} | "
                f"{fmt(r['jacobian_min'])} |"
            )
    return "\n".join(lines) + "\n"


def versions() -> dict:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in ("mmregistration", "torch", "SimpleITK", "antspyx", "itk-elastix", "itk"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out



# ---- main -----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--datasets", nargs="+", default=["sample", "generated", "deepreg"],
                        choices=["sample", "generated", "deepreg"])
    parser.add_argument("--generated", type=int, default=10, help="number of generated cases (seeds 0..N-1)")
    parser.add_argument("--deepreg-limit", type=int, default=None, help="first N DeepReg cases (default: all)")
    parser.add_argument("--deepreg-root", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="engine device (default cpu, like the peers)")
    parser.add_argument("--quick", action="store_true", help="smoke run: sample + 2 generated + 3 DeepReg cases")
    parser.add_argument("--out", default=None, help="results name under benchmarks/results (default sinr / sinr_quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.generated = min(args.generated, 2)
        args.deepreg_limit = 3 if args.deepreg_limit is None else min(args.deepreg_limit, 3)
    out_name = args.out or ("sinr_quick" if args.quick else "sinr")

    import SimpleITK as sitk
    import torch

    torch.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    load_before = [round(v, 2) for v in os.getloadavg()]
    runners = resolve_methods(args.methods)
    if not runners:
        log("nothing to run: none of the requested methods is available")
        return 1
    methods = list(runners)
    log(f"methods: {', '.join(methods)}; threads {args.threads}; device {args.device}")

    sources = case_sources(args)
    rows: list = []
    warmed = False
    t_start = time.perf_counter()
    for dataset, cases in sources:
        log(f"== {dataset}")
        for case in cases:
            if not warmed:  # one untimed run of every method (imports, JIT/lazy loading, allocator warm-up)
                for name, run in runners.items():
                    t0 = time.perf_counter()
                    try:
                        run(case, args.threads, args.device)
                        log(f"warm-up {name} on {case['name']}: {time.perf_counter() - t0:.1f} s (discarded)")
                    except Exception as err:
                        log(f"warm-up {name} on {case['name']} failed: {type(err).__name__}: {err}")
                warmed = True
            for note in case["notes"]:
                log(f"  {case['name']}: {note}")
            rows.extend(run_case(case, runners, args))
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
        "threads": args.threads,
        "device": args.device,
        "methods": methods,
        "requested_methods": args.methods,
        "skipped_methods": [m for m in args.methods if m not in runners],
        "datasets": [d for d, _ in sources],
        "quick": args.quick,
        "versions": versions(),
        "load_before": load_before,
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "total_seconds": time.perf_counter() - t_start,
        "notes": [],
    }
    if res["skipped_methods"]:
        res["notes"].append(f"skipped (not available): {', '.join(res['skipped_methods'])}")
    res["summary"] = summarize(rows, methods)
    res["rows"] = rows
    OUT.mkdir(exist_ok=True)
    (OUT / f"{out_name}.json").write_text(json.dumps(jsonable(res), indent=2), encoding="utf-8")
    text = markdown(res)
    (OUT / f"{out_name}.md").write_text(text, encoding="utf-8")
    log(text)
    log(f"wrote {OUT / (out_name + '.json')} and {OUT / (out_name + '.md')} ({res['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
