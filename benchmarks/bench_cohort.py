"""Cohort throughput: ``mmreg register --cohort`` in one process against ``--workers N`` (a local Dask cluster).

The cohorts: the first ``--cases`` (one or more sizes) DeepReg MR/TRUS pairs (``../shared/data/deepreg_mrus``;
generated cases without shared data), written once as case folders (``fixed.nii.gz``, ``moving.nii.gz``, gland label
maps, landmark CSVs). Each setting is one ``mmreg register --cohort`` process timed from start to exit (Python
start-up, the cluster's start and shut-down, the cohort evaluation included): cases per hour = cases / wall time.
The settings run in the same run, one after the other, ``--repeats`` times alternating; every run's results are
compared with the first serial run's: transforms by their numbers, warped images byte for byte.

Results: ``benchmarks/results/cohort.json`` and ``cohort.md``.

Usage: python benchmarks/bench_cohort.py [--cases 8 [24 ...]] [--workers 2] [--repeats 1] [--method-args ...]
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
DEFAULT_METHOD = ["--method", "sinr", "--preset", "fast"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_cohort(root: Path, n: int) -> str:
    """``n`` case folders in ``root`` (DeepReg pairs, else generated cases); returns the data's name."""
    sys.path.insert(0, str(HERE))
    import datasets
    from MMRegistrationLib.io import write_image, write_landmarks_csv

    source = "deepreg" if datasets.deepreg_available() else "generated"
    cases = datasets.deepreg_cases(limit=n) if source == "deepreg" else datasets.generated_cases(n)
    for case in cases:
        folder = root / case["name"]
        folder.mkdir(parents=True)
        write_image(case["fixed"], folder / "fixed.nii.gz")
        write_image(case["moving"], folder / "moving.nii.gz")
        write_image(case["fixed_seg"], folder / "fixed_seg.nii.gz")
        write_image(case["moving_seg"], folder / "moving_seg.nii.gz")
        if case["fixed_landmarks"] is not None:
            write_landmarks_csv(case["fixed_landmarks"], folder / "fixed_landmarks.csv")
            write_landmarks_csv(case["moving_landmarks"], folder / "moving_landmarks.csv")
    return source


def run_cohort(cohort: Path, out: Path, method_args: list, workers: int | None) -> float:
    """Wall seconds of one ``mmreg register --cohort`` process (it must exit 0)."""
    command = [sys.executable, "-m", "MMRegistrationLib", "register", "--cohort", str(cohort), *method_args,
               "--out", str(out), "--quiet"] + (["--workers", str(workers)] if workers else [])
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds


def case_seconds(out: Path) -> list:
    """Each case's ``wall_seconds.total`` (loading, registration, writing) from its ``result.json``."""
    return [json.loads(p.read_text(encoding="utf-8"))["wall_seconds"]["total"] for p in sorted(out.glob("*/result.json"))]


def transform_numbers(path: Path) -> list:
    """Every number of an ITK transform file (HDF5 files hold their write time, so their bytes always differ)."""
    import numpy as np
    import SimpleITK as sitk

    transform = sitk.ReadTransform(str(path))
    parts = ([transform.GetNthTransform(i) for i in range(transform.GetNumberOfTransforms())]
             if isinstance(transform, sitk.CompositeTransform) else [transform])
    return [np.array(t.GetFixedParameters() + t.GetParameters()) for t in parts]


def same_results(a: Path, b: Path) -> bool:
    """Bit-identical transforms (their numbers) and warped images (their bytes) in two cohort results."""
    import numpy as np

    transforms = sorted(p.relative_to(a) for p in a.glob("*/*transform.h5"))
    images = sorted(p.relative_to(a) for p in a.glob("*/warped_*.nrrd"))
    same_transforms = all(len(x) == len(y) and all(np.array_equal(u, v) for u, v in zip(x, y))
                          for x, y in ((transform_numbers(a / n), transform_numbers(b / n)) for n in transforms))
    same_images = all((a / n).read_bytes() == (b / n).read_bytes() for n in images)
    return bool(transforms) and same_transforms and same_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[8], help="cohort sizes (the first N pairs)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--method-args", nargs=argparse.REMAINDER, default=DEFAULT_METHOD,
                        help="mmreg register method arguments (default: --method sinr --preset fast)")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_before = list(os.getloadavg())
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_cohort_") as tmp:
        for n in args.cases:
            cohort = Path(tmp) / f"cohort_{n}"
            source = write_cohort(cohort, n)
            reference = None
            for repeat in range(args.repeats):
                for workers in (None, args.workers):
                    runs.append(timed_run(cohort, Path(tmp) / f"out_{n}_{repeat}_{workers or 0}", args.method_args,
                                          workers, repeat, reference))
                    reference = reference or Path(tmp) / f"out_{n}_0_0"
    meta = {"started": started, "machine": f"{platform.machine()} {len(os.sched_getaffinity(0))} cpus",
            "python": platform.python_version(), "data": source, "method_args": args.method_args,
            "load_before": load_before, "load_after": list(os.getloadavg())}
    write_results(runs, meta)


def timed_run(cohort: Path, out: Path, method_args: list, workers: int | None, repeat: int,
              reference: Path | None) -> dict:
    """One timed cohort run, compared with the first serial run of the same cohort (``reference``)."""
    setting = "serial" if workers is None else f"{workers} workers"
    seconds = run_cohort(cohort, out, method_args, workers)
    per_case = case_seconds(out)
    run = {"setting": setting, "cases": len(per_case), "repeat": repeat, "wall_s": seconds,
           "cases_per_hour": 3600.0 * len(per_case) / seconds, "case_s_mean": statistics.mean(per_case),
           "identical_to_serial": same_results(reference, out) if reference is not None else True}
    log(f"{len(per_case):3d} cases {setting:10s} {seconds:7.1f} s  {run['cases_per_hour']:7.0f} cases/h  "
        f"case {run['case_s_mean']:.2f} s  identical {run['identical_to_serial']}")
    return run


def write_results(runs: list, meta: dict) -> None:
    OUT.mkdir(exist_ok=True)
    (OUT / "cohort.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n", encoding="utf-8")
    lines = [f"# Cohort throughput ({meta['started']}, {meta['machine']}, Python {meta['python']})", "",
             f"{meta['data']} cases, `mmreg register --cohort {' '.join(meta['method_args'])}`; wall time of the "
             "whole command (start-up, the cluster's start and shut-down, the cohort evaluation included); case time "
             "= mean `wall_seconds.total` of the cases' result.json (load, register, write); identical = transforms "
             "(their numbers) and warped images (their bytes) equal to the first serial run's.", "",
             "| cases | setting | run | wall (s) | cases per hour | speed-up vs serial | case time (s) | identical |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        serial = statistics.median(x["wall_s"] for x in runs if x["setting"] == "serial" and x["cases"] == r["cases"])
        lines.append(f"| {r['cases']} | {r['setting']} | {r['repeat'] + 1} | {r['wall_s']:.1f} | "
                     f"{r['cases_per_hour']:.0f} | {serial / r['wall_s']:.2f} | {r['case_s_mean']:.2f} | "
                     f"{r['identical_to_serial']} |")
    lines += ["", f"Load average before/after: {meta['load_before']} / {meta['load_after']}."]
    (OUT / "cohort.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
