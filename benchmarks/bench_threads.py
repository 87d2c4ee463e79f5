"""Speed in company: the engine's thread policy against torch's default thread count, quiet and under load.

Each run is a separate ``mmreg register`` process; its time is the registration itself (``wall_seconds`` init +
register of ``result.json``: no start-up, loading or writing). Workloads:

* ``sinr-fast``: ``--method sinr --preset fast`` on a DeepReg MR/TRUS pair (a generated case without shared data);
* ``disa-global``: ``--method disa --mode rigid --search global`` on an oblique 0.55 x 0.6 x 1.1 mm generated case;
* ``rigid-mask``: ``--method rigid-mask`` on the same oblique case.

Conditions: ``quiet``; ``busy`` (beside one Python process spinning on a core); ``tests`` (beside
``bash scripts/test.sh``, the project's own test suite); ``pair`` (two identical runs started together; both
times count). Thread settings: ``policy`` (the engine's default, :mod:`MMRegistrationLib.core.threads`) and
``all-cores`` (``--threads`` = the usable cores: what torch does by itself). Each cell is the median of
``--repeats`` runs after one warm-up; ``ratio`` = that median / the quiet median of the same workload and setting.

Results: ``benchmarks/results/threads.json`` and ``threads.md``.

Usage: python benchmarks/bench_threads.py [--repeats 3] [--workloads ...] [--conditions ...] [--settings ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "results"
DEEPREG = REPO.parent / "shared" / "data" / "deepreg_mrus"
WORKLOADS = ("sinr-fast", "disa-global", "rigid-mask")
CONDITIONS = ("quiet", "busy", "tests", "pair")
SETTINGS = ("policy", "all-cores")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def oblique_case(folder: Path) -> dict:
    """The oblique anisotropic generated case (fixed 182 x 167 x 91 at 0.55 x 0.6 x 1.1 mm), written once."""
    from MMRegistrationLib.synthetic import SyntheticCaseConfig, generate_case
    from MMRegistrationLib.synthetic.writer import write_case

    if not (folder / "fixed.nrrd").is_file():
        config = SyntheticCaseConfig(seed=3, oblique=True, fixed_spacing=(0.55, 0.6, 1.1), fixed_size=(182, 167, 91))
        write_case(generate_case(config), folder)
    return {name: str(folder / f"{name}.nrrd") for name in ("fixed", "moving", "fixed_seg", "moving_seg")}


def deepreg_pair(name: str = "obs000") -> dict | None:
    if not (DEEPREG / "fixed_images" / f"{name}.nii.gz").is_file():
        return None
    return {"fixed": str(DEEPREG / "fixed_images" / f"{name}.nii.gz"),
            "moving": str(DEEPREG / "moving_images" / f"{name}.nii.gz"),
            "fixed_seg": str(DEEPREG / "fixed_labels" / f"{name}.nii.gz"),
            "moving_seg": str(DEEPREG / "moving_labels" / f"{name}.nii.gz"), "extra": ["--label-channel", "0"]}


def workload_arguments(workload: str, oblique: dict, pair: dict | None) -> list:
    if workload == "sinr-fast":
        case = pair or oblique
        method = ["--method", "sinr", "--preset", "fast"]
    elif workload == "disa-global":
        case, method = oblique, ["--method", "disa", "--mode", "rigid", "--search", "global"]
    else:
        case, method = oblique, ["--method", "rigid-mask"]
    return [*method, "--fixed", case["fixed"], "--moving", case["moving"], "--fixed-seg", case["fixed_seg"],
            "--moving-seg", case["moving_seg"], *case.get("extra", [])]


def clean_environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MMREG_THREADS")}
    env["PYTHONPATH"] = str(REPO)
    return env


def start_run(arguments: list, setting: str, out: Path) -> subprocess.Popen:
    threads = [] if setting == "policy" else ["--threads", str(len(os.sched_getaffinity(0)))]
    command = [sys.executable, "-m", "MMRegistrationLib", "register", *arguments, *threads, "--quiet", "--out",
               str(out)]
    return subprocess.Popen(command, env=clean_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def finish_run(process: subprocess.Popen, out: Path) -> float:
    _, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"run failed ({process.returncode}): {err[-2000:]}")
    record = json.loads((out / "result.json").read_text(encoding="utf-8"))
    wall = record["wall_seconds"]
    return float(wall["init"] + wall["register"])


def measure(arguments: list, setting: str, condition: str, scratch: Path) -> list:
    """Seconds of one run (two for ``pair``)."""
    count = 2 if condition == "pair" else 1
    outs = [scratch / f"run{time.monotonic_ns()}_{n}" for n in range(count)]
    processes = [start_run(arguments, setting, out) for out in outs]
    return [finish_run(p, out) for p, out in zip(processes, outs)]


class Load:
    """A background load for a condition (none for quiet/pair), started before and stopped after its runs."""

    def __init__(self, condition: str):
        self.condition, self.process = condition, None

    def __enter__(self):
        if self.condition == "busy":
            self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        elif self.condition == "tests":
            self.process = subprocess.Popen(["bash", str(REPO / "scripts" / "test.sh"), "-q", "-x", "-p",
                                             "no:cacheprovider"], cwd=str(REPO), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(20)  # past the collection, into the tests themselves
        return self

    def __exit__(self, *exc):
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM) if self.condition == "tests" else self.process.kill()
            except ProcessLookupError:
                pass
            self.process.wait()
        return False


def run_benchmark(args) -> list:
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmreg_threads_") as tmp:
        scratch = Path(tmp)
        oblique = oblique_case(scratch / "oblique")
        pair = deepreg_pair()
        for condition in args.conditions:
            with Load(condition):
                for workload in args.workloads:
                    arguments = workload_arguments(workload, oblique, pair)
                    for setting in args.settings:
                        measure(arguments, setting, "quiet", scratch)  # warm-up (file caches, imports)
                        seconds = [s for _ in range(args.repeats) for s in measure(arguments, setting, condition,
                                                                                   scratch)]
                        rows.append({"workload": workload, "condition": condition, "setting": setting,
                                     "seconds": seconds, "median": statistics.median(seconds)})
                        log(f"{workload:12s} {condition:6s} {setting:9s} {statistics.median(seconds):6.2f} s "
                            f"{[round(s, 2) for s in seconds]}")
    quiet = {(r["workload"], r["setting"]): r["median"] for r in rows if r["condition"] == "quiet"}
    for r in rows:
        base = quiet.get((r["workload"], r["setting"]))
        r["ratio_to_quiet"] = r["median"] / base if base else None
    return rows


def write_results(rows: list, args, started: str, load_before) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"started": started, "machine": f"{platform.machine()} {len(os.sched_getaffinity(0))} cpus",
            "python": platform.python_version(), "repeats": args.repeats, "load_before": load_before,
            "load_after": list(os.getloadavg())}
    (OUT / "threads.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1), encoding="utf-8")
    lines = [f"# Speed in company: thread policy vs all cores ({started}, {meta['machine']})", "",
             "Registration time (init + register of result.json, separate `mmreg register` processes), median of "
             f"{args.repeats} runs after a warm-up; ratio = median / the quiet median of the same workload and "
             "setting. `policy` = the engine's default (MMRegistrationLib.core.threads); `all-cores` = `--threads` "
             "= usable cores (torch's own default). busy = beside a Python process spinning on a core; tests = "
             "beside `bash scripts/test.sh`; pair = two identical runs at once. Target: ratio <= 1.3.", "",
             "| workload | setting | " + " | ".join(args.conditions) + " | worst ratio |",
             "|---|---|" + "---|" * (len(args.conditions) + 1)]
    for workload in args.workloads:
        for setting in args.settings:
            cells, worst = [], 0.0
            for condition in args.conditions:
                row = next((r for r in rows if (r["workload"], r["setting"], r["condition"]) ==
                            (workload, setting, condition)), None)
                if row is None:
                    cells.append("–")
                    continue
                ratio = row["ratio_to_quiet"]
                worst = max(worst, ratio or 0.0)
                cells.append(f"{row['median']:.2f} s" + (f" ({ratio:.2f}x)" if condition != "quiet" else ""))
            lines.append(f"| {workload} | {setting} | " + " | ".join(cells) + f" | {worst:.2f} |")
    lines += ["", f"Load average before/after: {load_before} / {meta['load_after']}."]
    (OUT / "threads.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    load_before = list(os.getloadavg())
    rows = run_benchmark(args)
    write_results(rows, args, started, load_before)
    print((OUT / "threads.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
