"""SINR end to end on a fine oblique anisotropic grid: what ``mmreg register --method sinr`` costs beyond
``--method none`` (same loading, metrics and writing of the outputs), with ANTs SyN-on-SDM in the same run.

Case: the generated case with the fixed (TRUS) grid 182 x 167 x 91 at 0.55 x 0.6 x 1.1 mm, oblique (seed 3). Each
repeat runs, alternating, ``mmreg register --method none`` and ``--method sinr --preset fast`` as separate processes
with the engine's default threads; a process's time is its whole wall time, and the stage times come from its
``result.json``. The peers (``benchmarks/peers.py``: ANTs with the project's settings and with antspy's SyN
defaults) run in this process with one thread; their time is their registration. Accuracy: gland DSC / HD95 and the
landmark TRE of each result (``evaluate_case``).

Results: ``benchmarks/results/sinr_oblique.json`` / ``.md``. Usage: python benchmarks/bench_sinr_oblique.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "results"
sys.path.insert(0, str(HERE))

import bench_threads  # noqa: E402  (the oblique case)
import peers  # noqa: E402


def run_cli(case: dict, method: list, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MMREG_THREADS")}
    env["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-m", "MMRegistrationLib", "register", *method, "--fixed", case["fixed"], "--moving",
               case["moving"], "--fixed-seg", case["fixed_seg"], "--moving-seg", case["moving_seg"],
               "--fixed-landmarks", case["fixed_landmarks"], "--moving-landmarks", case["moving_landmarks"],
               "--quiet", "--out", str(out)]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    record = json.loads((out / "result.json").read_text(encoding="utf-8"))
    after = record["metrics"]["after"]
    gland = next(iter(after["dice"]))
    return {"process_seconds": wall, "stages": record["wall_seconds"], "dsc": after["dice"][gland],
            "hd95_mm": after["hd95_mm"][gland], "tre_mm": after.get("tre_mean_mm")}


def peer_rows(folder: Path) -> list:
    from MMRegistrationLib.evaluation.case import evaluate_case
    from MMRegistrationLib.io import read_image, read_landmarks
    from MMRegistrationLib.io.segmentations import read_segmentation

    case = {"fixed": read_image(folder / "fixed.nrrd"), "moving": read_image(folder / "moving.nrrd"),
            "fixed_seg": read_segmentation(folder / "fixed_seg.nrrd").labelmap,
            "moving_seg": read_segmentation(folder / "moving_seg.nrrd").labelmap}
    flm, mlm = read_landmarks(folder / "fixed_landmarks.csv"), read_landmarks(folder / "moving_landmarks.csv")
    rows = []
    for name in ("ants-syn-sdm-default", "ants-syn-sdm"):
        if not peers.PEER_AVAILABLE[name]():
            continue
        transform, seconds = peers.PEERS[name](case, threads=1)
        ev = evaluate_case(case["fixed_seg"], case["moving_seg"], transform, fixed_landmarks=flm,
                           moving_landmarks=mlm, jacobian=False)
        rows.append({"method": name, "seconds": seconds, "dsc": ev.row(1)["dice"], "hd95_mm": ev.row(1)["hd95_mm"],
                     "tre_mm": ev.tre["tre_mean_mm"]})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    started, load_before = time.strftime("%Y-%m-%d %H:%M"), list(os.getloadavg())
    runs = {"none": [], "sinr": []}
    with tempfile.TemporaryDirectory(prefix="mmreg_oblique_") as tmp:
        folder = Path(tmp) / "case"
        paths = bench_threads.oblique_case(folder)
        case = {**paths, "fixed_landmarks": str(folder / "fixed_landmarks.csv"),
                "moving_landmarks": str(folder / "moving_landmarks.csv")}
        methods = {"none": ["--method", "none"], "sinr": ["--method", "sinr", "--preset", "fast"]}
        for name, method in methods.items():  # warm-up
            run_cli(case, method, Path(tmp) / f"warm_{name}")
        for r in range(args.repeats):
            for name, method in methods.items():
                runs[name].append(run_cli(case, method, Path(tmp) / f"{name}_{r}"))
        peer = peer_rows(folder)
    median = {name: statistics.median(r["process_seconds"] for r in rows) for name, rows in runs.items()}
    stages = {name: {k: statistics.median(r["stages"][k] for r in rows) for k in rows[0]["stages"]}
              for name, rows in runs.items()}
    beyond = median["sinr"] - median["none"]
    OUT.mkdir(parents=True, exist_ok=True)
    result = {"started": started, "machine": f"{platform.machine()} {os.cpu_count()} cpus", "load_before": load_before,
              "load_after": list(os.getloadavg()), "runs": runs, "median_process_seconds": median,
              "median_stage_seconds": stages, "sinr_beyond_none_seconds": beyond, "peers": peer}
    (OUT / "sinr_oblique.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    last = runs["sinr"][-1]
    lines = [f"# SINR fast end to end on a fine oblique grid ({started}, {result['machine']})", "",
             "Fixed 182 x 167 x 91 at 0.55 x 0.6 x 1.1 mm (oblique, generated seed 3); separate `mmreg register` "
             f"processes, default threads, median of {args.repeats} after a warm-up. Peers in one process, 1 "
             "thread, registration time only.", "",
             "| run | time (s) | stages (median s) | gland DSC | HD95 (mm) | TRE (mm) |", "|---|---|---|---|---|---|"]
    for name, rows in runs.items():
        stage_text = ", ".join(f"{k} {v:.2f}" for k, v in stages[name].items() if k != "total")
        lines.append(f"| mmreg register --method {name} | {median[name]:.2f} | {stage_text} | {rows[-1]['dsc']:.3f} | "
                     f"{rows[-1]['hd95_mm']:.2f} | {rows[-1]['tre_mm']:.2f} |")
    for row in peer:
        lines.append(f"| {row['method']} (registration only) | {row['seconds']:.2f} | – | {row['dsc']:.3f} | "
                     f"{row['hd95_mm']:.2f} | {row['tre_mm']:.2f} |")
    lines += ["", f"SINR beyond `--method none`: **{beyond:.2f} s** (target <= 3 s). SINR: DSC {last['dsc']:.3f}.",
              f"Load average before/after: {load_before} / {result['load_after']}."]
    (OUT / "sinr_oblique.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
