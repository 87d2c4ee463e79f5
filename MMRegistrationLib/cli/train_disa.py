"""``mmreg train-disa``: train the DISA descriptor network (LC2 approximation), or validate existing weights.

``mmreg train-disa --minutes 55 --out Resources/DISA`` produces the shipped weights (``disa_lc2.pt`` with its
``disa_lc2.json`` sidecar and ``training_log.csv``); the sidecar records the exact iteration and sample counts, so
``--iterations N --samples-per-pair S --seed K --device cpu`` repeats the run bit for bit on a CPU.
"""

from __future__ import annotations

import argparse
import json

from MMRegistrationLib.core.device import DEVICE_CHOICES


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train-disa",
        help="train the DISA descriptor network (or --validate-only existing weights)",
        description="Unsupervised training on unregistered CT/MR, real TRUS and synthetic MR/TRUS pairs: the dot "
        "product of 16-D descriptors learns patch LC2. Writes OUT/disa_lc2.pt, OUT/disa_lc2.json (config, data, "
        "metrics, sha256) and OUT/training_log.csv, all or nothing.",
    )
    p.add_argument("--out", help="output folder (replaced as a whole on success), e.g. Resources/DISA")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="wall-clock budget; sample and iteration counts follow from it "
                        "(default 55 when --iterations is not given)")
    budget.add_argument("--iterations", type=int, help="exact number of optimiser steps (deterministic run)")
    p.add_argument("--samples-per-pair", type=int, help="patch pairs drawn per volume pair (default: from --minutes, "
                   "or 5000)")
    p.add_argument("--extra-spacings", help="finer spacings (mm, comma-separated, or 'none') at which every volume is "
                   "also trained, cropped to 96 voxels per axis (default 1,0.5)")
    p.add_argument("--batch-size", type=int, help="patch pairs per step (default 128)")
    p.add_argument("--synthetic-cases", type=int, help="synthetic MR/TRUS training cases (default 4)")
    p.add_argument("--synthetic-scale", type=float, help="voxel-count factor of the synthetic cases (default 1; "
                   "0.5 for quick runs)")
    p.add_argument("--data", help="data folder laid out like ../shared/data (default: $MMREG_DATA or ../shared/data); "
                   "missing sources are skipped")
    p.add_argument("--seed", type=int, default=0, help="random seed (CPU runs are deterministic)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="auto = cuda, then mps, then cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--validate-only", action="store_true",
                   help="evaluate existing weights (--weights, or OUT/disa_lc2.pt, or the shipped ones) and print JSON")
    p.add_argument("--weights", help="weights file for --validate-only")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def _changes(args: argparse.Namespace) -> dict:
    """TrainingConfig fields given on the command line."""
    names = {"samples_per_pair": "samples_per_pair", "batch_size": "batch_size", "synthetic_cases": "synthetic_cases",
             "iterations": "iterations", "synthetic_scale": "synthetic_scale"}
    changes = {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg) is not None}
    if args.extra_spacings is not None:
        changes["extra_spacings_mm"] = _spacings(args.extra_spacings)
    return changes


def _spacings(text: str) -> tuple:
    """``"1,0.5"`` -> ``(1.0, 0.5)``; ``"none"`` -> ``()``; :class:`InputError` naming ``--extra-spacings``."""
    from MMRegistrationLib.core.errors import InputError

    if text.strip().lower() in ("none", ""):
        return ()
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError("--extra-spacings", f"expected comma-separated numbers (mm) or 'none', got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from MMRegistrationLib.cli.progress import ProgressPrinter, close_progress
    from MMRegistrationLib.core.errors import InputError
    from MMRegistrationLib.training.disa_data import default_data_dir

    if args.threads is not None:
        if args.threads < 1:
            raise InputError("--threads", f"must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    for name in ("iterations", "samples_per_pair", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')}", f"must be at least 1, got {value}")
    if args.synthetic_cases is not None and args.synthetic_cases < 0:
        raise InputError("--synthetic-cases", f"must be 0 or more, got {args.synthetic_cases}")
    if args.synthetic_scale is not None and not 0.1 <= args.synthetic_scale <= 2.0:
        raise InputError("--synthetic-scale", f"must be in [0.1, 2], got {args.synthetic_scale}")
    data_dir = Path(args.data) if args.data else default_data_dir()
    if args.data and not data_dir.is_dir():
        raise InputError("--data", f"{data_dir} is not a folder")
    progress = ProgressPrinter(args.quiet)

    if args.validate_only:
        return _validate(args, data_dir, progress)
    if not args.out:
        raise InputError("--out", "is required for training (the folder that receives disa_lc2.pt)")
    from MMRegistrationLib.training.disa import run_training

    minutes = args.minutes if args.iterations is None else None
    if minutes is None and args.iterations is None:
        minutes = 55.0
    from MMRegistrationLib.training.disa_config import TrainingConfig

    try:
        config = TrainingConfig(seed=int(args.seed), **_changes(args))
    except InputError as err:
        if err.argument == "extra_spacings_mm":
            raise InputError("--extra-spacings", err.problem) from None
        raise
    result = run_training(data_dir, config, minutes=minutes, device=args.device, progress=progress,
                          samples_from_budget=args.samples_per_pair is None)
    paths = _write(result, args.out)
    val = result.metrics["validation"]["float"]
    held = (result.metrics.get("heldout_volumes") or {}).get("float") or {}
    real_us = (result.metrics.get("heldout_real_us") or {}).get("float") or {}
    close_progress()
    print(f"iterations {result.config.iterations}, {result.timings['seconds_per_iteration_measured']} s/iteration")
    print(f"validation: L2 (mse) {val['mse']:.4f}, Pearson {val['pearson']:.3f} (n={val['n']})")
    if held:
        print(f"held-out volumes: L2 (mse) {held['mse']:.4f}, Pearson {held['pearson']:.3f} (n={held['n']})")
    if real_us:
        print(f"held-out real ultrasound: L2 (mse) {real_us['mse']:.4f}, Pearson {real_us['pearson']:.3f} "
              f"(n={real_us['n']})")
    for path in paths:
        print(path)
    return 0


def _write(result, out) -> list:
    from MMRegistrationLib.io.outputs import atomic_output_dir
    from MMRegistrationLib.networks.disa import WEIGHTS_NAME, save_disa
    from MMRegistrationLib.training.disa import training_record

    with atomic_output_dir(out) as tmp:
        save_disa(result.network, tmp / WEIGHTS_NAME, training_record(result))
        (tmp / "training_log.csv").write_text(result.history.to_csv(), encoding="utf-8")
    from pathlib import Path

    out = Path(out)
    return [out / WEIGHTS_NAME, out / WEIGHTS_NAME.replace(".pt", ".json"), out / "training_log.csv"]


def _validate(args: argparse.Namespace, data_dir, progress) -> int:
    from pathlib import Path

    from MMRegistrationLib.networks.disa import WEIGHTS_NAME, default_weights_path
    from MMRegistrationLib.training.disa import validate_weights

    if args.weights:
        weights = Path(args.weights)
    elif args.out:
        weights = Path(args.out) / WEIGHTS_NAME
    else:
        weights = default_weights_path()
    report = validate_weights(weights, data_dir, _changes(args), device=args.device, progress=progress)
    print(json.dumps(report, indent=2))
    return 0
