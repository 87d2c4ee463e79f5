"""Registration-network benchmark: the trained networks (papers 004 / 003) against SINR, ANTs SyN on signed distance
maps, rigid-mask and COM, on the DeepReg test pairs (obs070-079: never loaded by training, whose model selection used
obs060-069) and on generated cases, everything in one run.

Methods:

* ``net-mix_plus``: ``--method net --weights mix_plus`` given the images and the MR (moving) gland mask only — no
  TRUS segmentation at inference (paper 004's MIX+).
* ``net-both_masks``: ``--weights both_masks`` given both gland masks as inputs.
* ``net-srml``: ``--weights srml`` (paper 003: dual stream + CMSA, images only after ``rigid-mask`` on both masks).
* ``sinr-fast``, ``rigid-mask``, ``com`` (engine), ``ants-syn-sdm`` (``benchmarks/peers.py``).
* ``ablation-<preset>``: weights ``<ablation-dir>/ablation_<preset>.pt`` (``--ablations``), trained for the same
  number of steps, each given the inputs its weights take.

Metrics (``evaluate_case`` on the fixed grid): gland DSC / MSD / HD95, mean landmark TRE, folding fraction, min det
J, mean |grad det J| (1/mm; paper 004's smoothness figure), time (init + registration; for the networks also the
forward pass alone). Results: ``benchmarks/results/<out>.json`` and ``.md``.

Usage:
    python benchmarks/bench_net.py [--methods ...] [--generated 10] [--threads 2] [--ablations DIR] [--out net]
"""

from __future__ import annotations

import argparse
import json
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

import bench_sinr  # noqa: E402  (benchmarks/bench_sinr.py: evaluation and formatting helpers)
import datasets  # noqa: E402

OUT = HERE / "results"
NETWORKS = {"net-mix_plus": ("mix_plus", "moving"), "net-both_masks": ("both_masks", "both"),
            "net-srml": ("srml", "both")}
DEFAULT_METHODS = ("net-mix_plus", "net-both_masks", "net-srml", "sinr-fast", "ants-syn-sdm", "rigid-mask", "com")
TEST_NAMES = tuple(f"obs{n:03d}" for n in range(70, 80))
METRICS = ("seconds", "forward_seconds", "dice", "msd_mm", "hd95_mm", "tre_mean_mm", "folding_fraction",
           "jacobian_min", "grad_det_j_per_mm")


def log(message: str) -> None:
    print(message, flush=True)


def net_runner(weights: str, segmentations: str):
    """A runner giving the network the segmentations its benchmark row says (``moving`` or ``both``)."""
    from MMRegistrationLib.registration.base import RegistrationInputs
    from MMRegistrationLib.registration.pipeline import run_registration

    def run(case: dict, threads: int, device: str):
        fixed_seg = case["fixed_seg"] if segmentations == "both" else None
        inputs = RegistrationInputs(case["fixed"], case["moving"], fixed_seg, case["moving_seg"], case["label_names"])
        result, record = run_registration("net", inputs, options={"weights": weights}, seed=0, device=device)
        wall = record["wall_seconds"]
        return result.transform, float(wall["init"] + wall["register"]), {
            "init": record["init"], "forward_seconds": float(wall["method_forward"]),
            "precision": record["method_info"]["precision"]}

    return run


def runners_for(names: list, ablations: Path | None) -> dict:
    runners = {}
    for name in names:
        if name in NETWORKS:
            weights, segs = NETWORKS[name]
            from MMRegistrationLib.networks.registration import resolve_weights_path

            if not resolve_weights_path(weights).is_file():
                log(f"note: skipping {name}: no shipped weights '{weights}'")
                continue
            runners[name] = net_runner(weights, segs)
        elif name.startswith("ablation-"):
            continue
        else:
            runners.update(bench_sinr.resolve_methods([name]))
    if ablations is not None:
        for path in sorted(Path(ablations).glob("ablation_*.pt")):
            preset = path.stem[len("ablation_"):]
            meta = json.loads(path.with_suffix(".json").read_text())
            segs = "both" if ("fixed_mask" in meta["config"]["inputs"] or meta["config"]["init"] != "center") else "moving"
            runners[f"ablation-{preset}"] = net_runner(str(path), segs)
    return runners


def evaluate(case: dict, transform) -> dict:
    from MMRegistrationLib.evaluation.case import evaluate_case

    out = bench_sinr.evaluate(case, transform)
    ev = evaluate_case(case["fixed_seg"], case["moving_seg"], transform, case["label_names"], jacobian=True)
    out["grad_det_j_per_mm"] = ev.jacobian["mean_abs_grad_jacobian_per_mm"] if ev.jacobian else float("nan")
    return out


def run_case(case: dict, runners: dict, args) -> list:
    base = {"dataset": case["source"], "case": case["name"]}
    rows = [dict(base, method="identity", reference=True, seconds=float("nan"), **evaluate(case, None))]
    for name, run in runners.items():
        row = dict(base, method=name, reference=False)
        try:
            transform, seconds, info = run(case, args.threads, args.device)
            row.update(seconds=seconds, forward_seconds=info.get("forward_seconds", float("nan")),
                       **evaluate(case, transform), info=info)
        except Exception as err:  # one failing case must not lose the others
            row.update(seconds=float("nan"), error=f"{type(err).__name__}: {err}")
            log(traceback.format_exc(limit=3))
        rows.append(row)
        if "error" not in row:
            log(f"  {case['name']} {name:<24} t={row['seconds']:6.2f}s DSC={row['dice']:.3f} TRE={row['tre_mean_mm']:.2f} "
                f"HD95={row['hd95_mm']:.2f} |grad detJ|={row['grad_det_j_per_mm']:.4f} fold={row['folding_fraction']:.1e}")
    return rows


def summarize(rows: list, methods: list) -> dict:
    out: dict = {}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        drows = [r for r in rows if r["dataset"] == dataset]
        ref = {r["case"]: r["seconds"] for r in drows if r["method"] == "ants-syn-sdm" and "error" not in r}
        out[dataset] = {}
        for method in ["identity", *methods]:
            ok = [r for r in drows if r["method"] == method and "error" not in r]
            failed = sum(1 for r in drows if r["method"] == method and "error" in r)
            if not ok and not failed:
                continue
            entry = {"n": len(ok), "failed": failed, "values": {k: [r.get(k) for r in ok] for k in METRICS}}
            paired = [(r["seconds"], ref[r["case"]]) for r in ok if r["case"] in ref and method != "identity"]
            if paired:
                t, tref = np.array(paired).T
                entry["time_ratio_to_ants"] = float(t.sum() / tref.sum())
            out[dataset][method] = entry
    return out


def markdown(res: dict) -> str:
    ms = bench_sinr.mean_sd
    lines = [f"# Registration-network benchmark ({res['date']}, {res['machine']})", "",
             f"Threads: {res['threads']}; device {res['device']}. Load average before/after: {res['load_before']} / "
             f"{res['load_after']}. Versions: {', '.join(f'{k} {v}' for k, v in res['versions'].items())}.", "",
             "DeepReg rows: the test pairs obs070-079 (never loaded by training; model selection used obs060-069). "
             "Time = init + registration (s); `fwd` = the network's forward pass alone; `/ANTs` = total time over the "
             "cases divided by ANTs SyN's in this run. DSC/MSD/HD95 of the gland, TRE = mean landmark-centroid "
             "error, |grad det J| = mean over the fixed grid (1/mm), folding = fraction of det J <= 0."]
    for note in res.get("notes", []):
        lines += ["", f"Note: {note}"]
    if res.get("timing"):
        lines += ["", "## End to end: `register_files` (read, register, metrics, write), median of 3 after a warm-up",
                  "", "| case | fixed grid | moving grid | --method none (s) | --method net (s) | net - none (s) | "
                  "forward pass (s) |", "|---|---|---|---|---|---|---|"]
        for t in res["timing"]:
            lines.append(f"| {t['case']} | {'x'.join(map(str, t['fixed_shape']))} | "
                         f"{'x'.join(map(str, t['moving_shape']))} | {t['none_s']:.2f} | {t['net_s']:.2f} | "
                         f"{t['net_minus_none_s']:.2f} | {t['forward_s']:.3f} |")
    if res.get("ablation_logs"):
        lines += ["", "## Ablations: validation (obs060-069) at the last step of equal-length runs", "",
                  "| preset | steps | validation DSC | validation TRE (mm) | training time (s) |", "|---|---|---|---|---|"]
        for a in res["ablation_logs"]:
            lines.append(f"| {a['preset']} | {a['iterations']} | {a['validation_dice']:.3f} | "
                         f"{a['validation_tre_mm']:.2f} | {a['seconds']:.0f} |")
    for dataset, methods in res["summary"].items():
        lines += ["", f"## {dataset}", "",
                  "| method | n | time (s) | fwd (s) | /ANTs | DSC | MSD (mm) | HD95 (mm) | TRE (mm) | |grad det J| | folding |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for method, e in methods.items():
            v = e["values"]
            ratio = e.get("time_ratio_to_ants")
            failed = f" ({e['failed']} failed)" if e["failed"] else ""
            lines.append(
                f"| {method} | {e['n']}{failed} | "
                f"{ms(v['seconds'], 2)} | {ms(v['forward_seconds'], 3)} | {'–' if ratio is None else f'{ratio:.3f}'} | "
                f"{ms(v['dice'], 3)} | {ms(v['msd_mm'])} | {ms(v['hd95_mm'])} | {ms(v['tre_mean_mm'])} | "
                f"{ms(v['grad_det_j_per_mm'], 4)} | {ms(v['folding_fraction'], 5)} |")
    return "\n".join(lines) + "\n"


def write_case(case: dict, folder: Path) -> dict:
    """The images and the moving gland mask of a benchmark case as files (what a user gives the CLI)."""
    from MMRegistrationLib.io import write_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key in ("fixed", "moving", "moving_seg"):
        paths[key] = str(folder / f"{key}.nrrd")
        write_image(case[key], paths[key])
    return paths


def end_to_end_timing(cases: list, repeats: int = 3) -> list:
    """Per case: median wall time of ``register_files`` (read, register, metrics, write) with ``--method none``
    (init center) and ``--method net`` (mix_plus), both after a warm-up, and the network's forward pass alone."""
    import tempfile

    from MMRegistrationLib.registration.pipeline import register_files

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            paths = write_case(case, Path(tmp) / case["name"])
            times = {"none": [], "net": []}
            forward = []
            for index in range(repeats + 1):
                for method in ("none", "net"):
                    target = Path(tmp) / f"out_{method}_{index}"
                    t0 = time.perf_counter()
                    record = register_files(method, paths["fixed"], paths["moving"], out=target,
                                            moving_seg=paths["moving_seg"], init="center", device="cpu")
                    if index:  # the first round warms up
                        times[method].append(time.perf_counter() - t0)
                        if method == "net":
                            forward.append(record["wall_seconds"]["method_forward"])
            med = {k: float(np.median(v)) for k, v in times.items()}
            out.append({"case": case["name"], "fixed_shape": list(case["fixed"].grid.shape),
                        "moving_shape": list(case["moving"].grid.shape), "none_s": med["none"], "net_s": med["net"],
                        "net_minus_none_s": med["net"] - med["none"], "forward_s": float(np.median(forward))})
            log(f"timing {case['name']}: none {med['none']:.2f} s, net {med['net']:.2f} s, forward "
                f"{out[-1]['forward_s']:.3f} s")
    return out


def ablation_logs(folder: Path) -> list:
    """Per ablation weights: preset, steps, and the validation figures of its last logged step (obs060-069)."""
    out = []
    for path in sorted(Path(folder).glob("ablation_*.json")):
        training = json.loads(path.read_text())["training"]
        last = training["log"][-1]
        out.append({"preset": path.stem[len("ablation_"):], "iterations": training["iterations_done"],
                    "validation_dice": last["validation_dice"], "validation_tre_mm": last["validation_tre_mm"],
                    "seconds": training["seconds"]})
    return out


def deepreg_test_cases(root):
    for name in TEST_NAMES:
        yield datasets.deepreg_case(root or datasets.DEEPREG_ROOT, name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--generated", type=int, default=10, help="generated cases (seeds 0..N-1; training used 5000+)")
    parser.add_argument("--deepreg-root", type=Path, default=None)
    parser.add_argument("--ablations", type=Path, default=None, help="folder of ablation_<preset>.pt weights")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="net")
    parser.add_argument("--no-timing", action="store_true", help="skip the end-to-end timing against --method none")
    args = parser.parse_args(argv)

    import SimpleITK as sitk
    import torch

    from MMRegistrationLib.evaluation.case import jsonable

    torch.set_num_threads(args.threads)

    os.environ["MMREG_THREADS"] = str(args.threads)  # the engine's runs use them too
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    load_before = [round(v, 2) for v in os.getloadavg()]
    runners = runners_for(args.methods, args.ablations)
    log(f"methods: {', '.join(runners)}")
    sources = []
    if datasets.deepreg_available(args.deepreg_root):
        sources.append(deepreg_test_cases(args.deepreg_root))
    else:
        log("note: DeepReg data not found; only generated cases")
    if args.generated > 0:
        sources.append(datasets.generated_cases(args.generated))
    rows, warmed, t0 = [], False, time.perf_counter()
    for cases in sources:
        for case in cases:
            if not warmed:  # one discarded run of every method first
                for name, run in runners.items():
                    try:
                        run(case, args.threads, args.device)
                    except Exception as err:
                        log(f"warm-up {name} failed: {type(err).__name__}: {err}")
                warmed = True
            rows.extend(run_case(case, runners, args))
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()} {os.cpu_count()} cpus",
           "threads": args.threads, "device": args.device, "methods": list(runners),
           "versions": bench_sinr.versions(), "load_before": load_before,
           "load_after": [round(v, 2) for v in os.getloadavg()], "total_seconds": time.perf_counter() - t0,
           "notes": [f"not available: {m}" for m in args.methods if m not in runners]}
    if "net-mix_plus" in runners and not args.no_timing:
        timing_cases = [datasets.deepreg_case(args.deepreg_root or datasets.DEEPREG_ROOT, TEST_NAMES[0])] if \
            datasets.deepreg_available(args.deepreg_root) else []
        timing_cases.append(datasets.sample_case())
        res["timing"] = end_to_end_timing(timing_cases)
    if args.ablations is not None:
        res["ablation_logs"] = ablation_logs(args.ablations)
    res["summary"] = summarize(rows, list(runners))
    res["rows"] = rows
    OUT.mkdir(exist_ok=True)
    (OUT / f"{args.out}.json").write_text(json.dumps(jsonable(res), indent=2), encoding="utf-8")
    text = markdown(res)
    (OUT / f"{args.out}.md").write_text(text, encoding="utf-8")
    log(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
