"""``mmreg train-seg``: train a prostate segmentation network for MR or TRUS (paper 003) and write its weights with
the sidecar.

``mmreg train-seg --modality trus --minutes 40 --threads 1 --out Resources/Segmentation`` produced the shipped TRUS
network (and ``--modality mr`` the MR one); the sidecar's ``training.reproduce`` holds the command (``--iterations N``
= the steps made) that repeats the run bit for bit on a CPU with the same thread count.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from MMRegistrationLib.cli import training
from MMRegistrationLib.cli.training import add_budget_options, add_run_options


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train-seg",
        help="train a prostate segmentation network for MR or TRUS (paper 003)",
        description="Supervised training on images with gland labels of one modality: a DeepReg/MONAI paired folder "
        "(TRUS = fixed_images + channel 0 of fixed_labels, MR = moving_images + channel 0 of moving_labels) or a "
        "cohort folder (case folders with fixed.*/fixed_seg.* for TRUS, moving.*/moving_seg.* for MR), plus "
        "generated images. Writes OUT/NAME.pt, OUT/NAME.json (config, data, split, command, versions, metrics, "
        "sha256), OUT/NAME_log.csv and OUT/NAME_log.png; the best state by validation Dice is saved.",
    )
    p.add_argument("--modality", required=True, choices=("mr", "trus"), help="which images to segment")
    p.add_argument("--data", help="training folder (default: ../shared/data/deepreg_mrus or $MMREG_DATA/deepreg_mrus)")
    p.add_argument("--out", required=True, help="folder receiving NAME.pt and its sidecar (created if needed)")
    p.add_argument("--name", help="weights name (default: prostate_MODALITY)")
    add_budget_options(p)
    p.add_argument("--batch-size", type=int, help="images per step (default 2)")
    p.add_argument("--learning-rate", type=float, help="Adam learning rate (default 1e-3)")
    p.add_argument("--validate-every", type=int, help="steps between validations (default 100)")
    p.add_argument("--synthetic-cases", type=int, help="generated training images (default 16)")
    p.add_argument("--grid-size", type=int, help="network grid voxels per side, a multiple of 8 (default 48)")
    p.add_argument("--grid-spacing-mm", type=float, help="network grid spacing (default 2)")
    p.add_argument("--precision", choices=("bfloat16", "float32"), help="training arithmetic (default bfloat16)")
    add_run_options(p)
    p.set_defaults(func=run)


RECORDED = ("modality", "data", "out", "name", "minutes", "iterations", "batch_size", "learning_rate",
            "validate_every", "synthetic_cases", "grid_size", "grid_spacing_mm", "precision", "seed", "device",
            "threads")


def recorded_command(args: argparse.Namespace) -> list:
    """The command as parsed, for the sidecar (see :func:`MMRegistrationLib.cli.training.recorded_command`)."""
    return training.recorded_command(args, "train-seg", RECORDED)


def training_config(args: argparse.Namespace):
    """The :class:`SegTrainingConfig` of the command line (checked: :class:`InputError` naming the option)."""
    from dataclasses import replace

    from MMRegistrationLib.core.errors import InputError
    from MMRegistrationLib.segmentation.network import SegNetConfig
    from MMRegistrationLib.training.seg_config import SegTrainingConfig

    network = {"modality": args.modality, "grid_size": args.grid_size, "grid_spacing_mm": args.grid_spacing_mm}
    if args.grid_size is not None and args.grid_size % 8:
        raise InputError("--grid-size", f"must be a multiple of 8, got {args.grid_size}")
    if args.grid_spacing_mm is not None and not args.grid_spacing_mm > 0:
        raise InputError("--grid-spacing-mm", f"must be positive, got {args.grid_spacing_mm}")
    network = replace(SegNetConfig(), **{k: v for k, v in network.items() if v is not None})
    train = {"batch_size": args.batch_size, "learning_rate": args.learning_rate, "validate_every": args.validate_every,
             "synthetic_cases": args.synthetic_cases, "precision": args.precision, "seed": args.seed}
    return SegTrainingConfig(network=network, **{k: v for k, v in train.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    from MMRegistrationLib.cli.progress import ProgressPrinter, close_progress
    from MMRegistrationLib.training.net_data import default_data_dir, folder_cases
    from MMRegistrationLib.training.seg_run import run_seg_training, write_seg_run

    training.check_training_args(args)
    config = training_config(args)
    name = args.name or f"prostate_{args.modality}"
    out, checkpoint = training.output_and_checkpoint(args, name)
    data_dir = Path(args.data) if args.data else default_data_dir()
    folder_cases(data_dir)  # checked before any work
    device = training.start(args)
    minutes, iterations = training.budget(args)
    result = run_seg_training(data_dir, config, iterations, minutes, device, checkpoint, args.resume,
                              ProgressPrinter(args.quiet))
    paths = write_seg_run(result, out, name, recorded_command(args))
    checkpoint.unlink(missing_ok=True)
    best = result.state.best_metrics or {}
    close_progress()
    print(f"{result.state.step} steps in {result.seconds:.0f} s; best validation (step {result.state.best_step}): "
          f"gland Dice {best.get('dice', float('nan')):.3f}")
    for path in paths:
        print(path)
    return 0
