"""``mmreg demo``: register the bundled sample case with the best available method and show the result."""

from __future__ import annotations

import argparse

import numpy as np

from MMRegistrationLib.core.device import DEVICE_CHOICES

PREFERRED_METHODS = ("sinr", "disa", "rigid-mask", "com")


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="register the bundled MR/TRUS sample case and write a figure")
    p.add_argument("--out", default="mmreg_demo_output", help="output folder (default: ./mmreg_demo_output; an earlier "
                   "demo result there is replaced)")
    p.add_argument("--case", help="a case folder laid out like Resources/SampleCase (default: the bundled case)")
    p.add_argument("--method", help="method to use (default: the best available)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def best_method() -> str:
    from MMRegistrationLib.registration.methods import METHODS

    return next(m for m in PREFERRED_METHODS if m in METHODS)


def _fmt(value) -> str:
    return "   n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:6.3f}"


def ground_truth_error_mm(ground_truth, transform, fixed_seg) -> float:
    """Mean |T(x) - T_true(x)| (mm) over the fixed prostate (label 1, or all labels) voxels."""
    labels = fixed_seg.labels()
    mask = fixed_seg.array == 1 if 1 in labels else fixed_seg.array > 0
    pts = fixed_seg.grid.world_points()[mask]
    return float(np.linalg.norm(transform.map_points_np(pts) - ground_truth.map_points_np(pts), axis=1).mean())


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import time

    from MMRegistrationLib.cli.progress import ProgressPrinter, close_progress
    from MMRegistrationLib.io.transforms import read_transform
    from MMRegistrationLib.registration.pipeline import load_inputs, run_registration, write_outputs
    from MMRegistrationLib.resources import sample_case_paths
    from MMRegistrationLib.visualization.figures import registration_figure

    from MMRegistrationLib.io.outputs import check_output_target

    t_start = time.perf_counter()
    paths = sample_case_paths(args.case)
    check_output_target(args.out, tuple(paths.values()), overwrite=True)  # the demo replaces its own earlier result
    method = args.method or best_method()
    inputs = load_inputs(
        paths["fixed"], paths["moving"], paths["fixed_seg"], paths["moving_seg"],
        paths["fixed_landmarks"], paths["moving_landmarks"],
    )
    case_json = paths["case"]
    if case_json.is_file() and not inputs.label_names:
        names = json.loads(case_json.read_text(encoding="utf-8")).get("labels", {})
        inputs = dataclasses.replace(inputs, label_names={int(k): v for k, v in names.items()})
    result, record = run_registration(method, inputs, seed=args.seed, device=args.device, progress=ProgressPrinter(args.quiet))
    if paths["ground_truth"].is_file():
        truth = read_transform(paths["ground_truth"], "ground truth")
        record["ground_truth_error_mm"] = {
            "before": ground_truth_error_mm(truth, _identity(), inputs.fixed_seg),
            "after": ground_truth_error_mm(truth, result.transform, inputs.fixed_seg),
        }

    def figure(folder, warped, warped_seg):
        registration_figure(inputs.fixed, warped, folder / "demo.png", inputs.fixed_seg, warped_seg,
                            title=f"mmreg demo: {method} (fixed = TRUS, moving = MR)")
        return {"figure": "demo.png"}

    record = write_outputs(args.out, inputs, result, record, t_start=t_start, extra_outputs=figure)
    before, after = record["metrics"]["before"], record["metrics"]["after"]
    close_progress()
    print(f"mmreg demo — method '{method}', device {record['device']}, outputs in {args.out}/")
    print(f"{'':28s} {'before':>7s} {'after':>7s}")
    for name, value in after.get("dice", {}).items():
        print(f"{'Dice ' + name:28s} {_fmt(before['dice'][name]):>7s} {_fmt(value):>7s}")
    if "tre_mean_mm" in after:
        print(f"{'landmark TRE mean (mm)':28s} {_fmt(before['tre_mean_mm']):>7s} {_fmt(after['tre_mean_mm']):>7s}")
    if "ground_truth_error_mm" in record:
        gt = record["ground_truth_error_mm"]
        print(f"{'error vs truth, gland (mm)':28s} {_fmt(gt['before']):>7s} {_fmt(gt['after']):>7s}")
    print(f"{'registration time (s)':28s} {'':>7s} {_fmt(record['wall_seconds']['init'] + record['wall_seconds']['register']):>7s}")
    print(f"figure: {args.out}/demo.png")
    return 0


def _identity():
    from MMRegistrationLib.spatial.affine import AffineTransform

    return AffineTransform.identity()
