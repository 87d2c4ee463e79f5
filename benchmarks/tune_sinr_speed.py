"""Selection of SINR ``fast``'s speed options on tuning cases that no reported figure uses.

Cases: generated cases with seeds 100..107 (the SINR benchmark reports seeds 0..9 and the DeepReg pairs), oblique on
even seeds, deformation 2..8 mm. Each variant (``fast`` plus option overrides, JSON) runs on every case with one
thread; metrics of the gland (label 1) on the fixed grid via ``evaluate_case``: DSC, HD95, mean landmark TRE, folding.

Results: ``benchmarks/results/sinr_speed_tuning.json`` / ``.md`` (means over the cases per variant).

Usage: python benchmarks/tune_sinr_speed.py ['{"name": {"option": value}, ...}']
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results"
DEFAULT_VARIANTS = {
    "squaring 6": {"squaring_steps": 6},
    "squaring 5": {"squaring_steps": 5},
    "squaring 4": {"squaring_steps": 4},
    "velocity 5 mm": {"squaring_steps": 5, "velocity_spacing_mm": 5.0},
    "velocity 5 mm, 100 it": {"squaring_steps": 5, "velocity_spacing_mm": 5.0, "iterations": 100},
    "coarse 40": {"squaring_steps": 5, "coarse_iterations": 40},
}
SEEDS = range(100, 108)


def tuning_inputs(seed: int):
    from MMRegistrationLib.registration.base import RegistrationInputs
    from MMRegistrationLib.synthetic import SyntheticCaseConfig, generate_case

    config = SyntheticCaseConfig(seed=seed, oblique=seed % 2 == 0,
                                 deformation_mm=round(2 + 6 * (seed - SEEDS[0]) / (len(SEEDS) - 1), 3))
    case = generate_case(config)
    return RegistrationInputs(case.fixed, case.moving, case.fixed_seg, case.moving_seg, {}, case.fixed_landmarks,
                              case.moving_landmarks)


def run_variant(inputs, options: dict) -> dict:
    from MMRegistrationLib.evaluation.case import evaluate_case
    from MMRegistrationLib.registration.pipeline import run_registration

    result, record = run_registration("sinr", inputs, options={"preset": "fast", **options}, threads=1)
    wall = record["wall_seconds"]
    ev = evaluate_case(inputs.fixed_seg, inputs.moving_seg, result.transform, fixed_landmarks=inputs.fixed_landmarks,
                       moving_landmarks=inputs.moving_landmarks)
    gland = ev.row(1)
    return {"seconds": wall["init"] + wall["register"], "fit_seconds": wall.get("method_fit"),
            "iterations": record["method_info"]["iterations"], "dsc": gland["dice"], "hd95_mm": gland["hd95_mm"],
            "tre_mm": ev.tre["tre_mean_mm"], "folding": ev.jacobian["folding_fraction"]}


def main() -> int:
    variants = json.loads(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_VARIANTS
    rows = []
    for seed in SEEDS:
        inputs = tuning_inputs(seed)
        for name, options in variants.items():
            if seed == SEEDS[0]:
                run_variant(inputs, options)  # warm-up
            row = {"case": seed, "variant": name, **run_variant(inputs, options)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sinr_speed_tuning.json").write_text(json.dumps({"variants": variants, "rows": rows}, indent=1),
                                               encoding="utf-8")
    lines = [f"# SINR fast: speed options on tuning cases ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"Generated cases, seeds {SEEDS[0]}..{SEEDS[-1]} (not reported anywhere else), 1 thread; means over the "
             "cases. Time = init + register (machine may be shared: compare within the table).", "",
             "| variant | options | time (s) | fit (s) | iterations | DSC | HD95 (mm) | TRE (mm) | folding |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, options in variants.items():
        own = [r for r in rows if r["variant"] == name]
        mean = {k: float(np.mean([r[k] for r in own])) for k in ("seconds", "fit_seconds", "iterations", "dsc",
                                                                 "hd95_mm", "tre_mm", "folding")}
        lines.append(f"| {name} | `{json.dumps(options)}` | {mean['seconds']:.2f} | {mean['fit_seconds']:.2f} | "
                     f"{mean['iterations']:.0f} | {mean['dsc']:.4f} | {mean['hd95_mm']:.3f} | {mean['tre_mm']:.3f} | "
                     f"{mean['folding']:.4f} |")
    (OUT / "sinr_speed_tuning.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
