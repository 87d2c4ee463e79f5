"""Time the engine of two source trees against each other on the same machine (e.g. before and after a refactor).

    python benchmarks/bench_compare_trees.py --before /path/to/old/checkout --after . --rounds 4 --out NAME

Each round runs one process per tree, alternately (before, after, before, ...), so both see the same machine state;
each process imports ``MMRegistrationLib`` from its tree (``PYTHONPATH``), warms up, then times ``run_registration``
of every method (default ``sinr`` fast and ``rigid-mask``, ``--init com``) on the sample case and the first DeepReg
pairs (``--deepreg N``; skipped with a note when ``../shared/data`` is absent). The figure per method and case is the
median over rounds; the ratio after / before is also given per round, so the spread of the machine shows. Results:
``benchmarks/results/NAME.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
METHODS = {"sinr": {"preset": "fast"}, "rigid-mask": {}}


def _load_cases(deepreg: int) -> dict:
    from MMRegistrationLib.registration.pipeline import load_inputs

    sample = REPO_ROOT / "Resources" / "SampleCase"
    cases = {"sample": load_inputs(sample / "fixed.nrrd", sample / "moving.nrrd", sample / "fixed_seg.nrrd",
                                   sample / "moving_seg.nrrd")}
    root = REPO_ROOT.parent / "shared" / "data" / "deepreg_mrus"
    if deepreg and not root.is_dir():
        print(f"note: {root} is absent; timing the sample case only", file=sys.stderr)
        return cases
    for i in range(deepreg):
        name = f"obs{i:03d}.nii.gz"
        cases[name[:6]] = load_inputs(root / "fixed_images" / name, root / "moving_images" / name,
                                      root / "fixed_labels" / name, root / "moving_labels" / name, label_channel=0)
    return cases


def inner(deepreg: int, threads: int) -> dict:
    """Run in the child process: ``{"method/case": seconds, ...}`` of the tree on ``PYTHONPATH``."""
    import torch

    torch.set_num_threads(threads)
    from MMRegistrationLib.registration.pipeline import run_registration

    cases = _load_cases(deepreg)
    out = {}
    for method, options in METHODS.items():
        run_registration(method, cases["sample"], init="com", options=options, device="cpu")  # warm-up
        for name, inputs in cases.items():
            t0 = time.perf_counter()
            run_registration(method, inputs, init="com", options=options, device="cpu")
            out[f"{method}/{name}"] = time.perf_counter() - t0
    return out


def _child(tree: Path, deepreg: int, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads))
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_compare_trees as b; "
            f"print(json.dumps(b.inner({deepreg}, {threads})))")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(before: list, after: list, args) -> str:
    keys = list(before[0])
    lines = [f"# Engine timing, two trees ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cpus)", "",
             f"Before: `{args.before}`; after: `{args.after}`. {args.rounds} rounds, processes alternating, "
             f"{args.threads} thread(s), `run_registration(..., init='com', device='cpu')` after a warm-up; median "
             "over rounds.", "", "| method / case | before (s) | after (s) | after / before |", "|---|---|---|---|"]
    totals = {}
    for key in keys:
        b, a = np.median([r[key] for r in before]), np.median([r[key] for r in after])
        method = key.split("/")[0]
        totals.setdefault(method, [0.0, 0.0])
        totals[method][0] += b
        totals[method][1] += a
        lines.append(f"| {key} | {b:.2f} | {a:.2f} | {a / b:.2f} |")
    for method, (b, a) in totals.items():
        per_round = [sum(y[k] for k in keys if k.startswith(method + "/")) /
                     sum(x[k] for k in keys if k.startswith(method + "/")) for x, y in zip(before, after)]
        lines.append(f"| **{method}, all cases** | {b:.2f} | {a:.2f} | **{a / b:.2f}** (rounds: "
                     f"{', '.join(f'{r:.2f}' for r in per_round)}) |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="source tree (checkout) timed as 'before'")
    parser.add_argument("--after", type=Path, default=REPO_ROOT, help="source tree timed as 'after' (default: this)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--deepreg", type=int, default=5, help="first N DeepReg pairs besides the sample case")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="compare_trees")
    args = parser.parse_args()
    for tree in (args.before, args.after):
        if not (tree / "MMRegistrationLib" / "__init__.py").is_file():
            parser.error(f"{tree} holds no MMRegistrationLib")
    before, after = [], []
    for r in range(args.rounds):
        before.append(_child(args.before.resolve(), args.deepreg, args.threads))
        after.append(_child(args.after.resolve(), args.deepreg, args.threads))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    text = report(before, after, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(text, encoding="utf-8")
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"before": before, "after": after}, indent=1), encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
