"""``mmreg train-net``: train a registration network (papers 004 / 003) and write its weights with the sidecar.

``mmreg train-net --preset mix_plus --minutes 40 --threads 2 --out Resources/Networks`` produced the shipped default;
the sidecar's ``training.reproduce`` holds the command (``--iterations N`` = the steps made) that repeats the run bit
for bit on a CPU with the same thread count.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from MMRegistrationLib.cli import training
from MMRegistrationLib.cli.training import add_budget_options, add_run_options


def add_parser(sub) -> None:
    from MMRegistrationLib.training.net_config import PRESETS

    p = sub.add_parser(
        "train-net",
        help="train a registration network (weakly supervised MR->TRUS; papers 004 and 003)",
        description="Weakly supervised training on paired MR/TRUS cases with gland (and landmark) labels: a folder "
        "in the DeepReg/MONAI layout (fixed_images/ fixed_labels/ moving_images/ moving_labels/) or a cohort folder "
        "(case folders with fixed.*, moving.*, fixed_seg.*, moving_seg.*), plus generated cases. Writes OUT/NAME.pt, "
        "OUT/NAME.json (config, data, split, command, versions, metrics, sha256), OUT/NAME_log.csv and "
        "OUT/NAME_log.png. The best state by validation gland Dice (then TRE) is saved.",
    )
    p.add_argument("--preset", default="mix_plus", choices=tuple(PRESETS),
                   help="network and losses: mix_plus/mix/mdsc/sdm (paper 004), both_masks, srml and its ablations "
                        "(paper 003) (default mix_plus)")
    p.add_argument("--data", help="training folder (default: ../shared/data/deepreg_mrus or $MMREG_DATA/deepreg_mrus)")
    p.add_argument("--out", required=True, help="folder receiving NAME.pt and its sidecar (created if needed)")
    p.add_argument("--name", help="weights name (default: the preset)")
    add_budget_options(p)
    p.add_argument("--batch-size", type=int, help="pairs per step (default 2)")
    p.add_argument("--learning-rate", type=float, help="Adam learning rate (default 1e-3)")
    p.add_argument("--validate-every", type=int, help="steps between validations (default 200)")
    p.add_argument("--synthetic-cases", type=int, help="generated training cases (default 12)")
    p.add_argument("--grid-size", type=int, help="network grid voxels per side (default 48)")
    p.add_argument("--grid-spacing-mm", type=float, help="network grid spacing (default 2)")
    p.add_argument("--output", choices=("svf", "ddf"), help="velocity (default) or displacement output")
    p.add_argument("--precision", choices=("bfloat16", "float32"), help="training arithmetic (default bfloat16)")
    add_run_options(p)
    p.set_defaults(func=run)


def _changes(args: argparse.Namespace) -> tuple:
    """(training config changes, network changes) given on the command line."""
    train = {"batch_size": args.batch_size, "learning_rate": args.learning_rate, "validate_every": args.validate_every,
             "synthetic_cases": args.synthetic_cases, "precision": args.precision, "seed": args.seed}
    network = {"grid_size": args.grid_size, "grid_spacing_mm": args.grid_spacing_mm, "output": args.output}
    return ({k: v for k, v in train.items() if v is not None}, {k: v for k, v in network.items() if v is not None})


RECORDED = ("preset", "data", "out", "name", "minutes", "iterations", "batch_size", "learning_rate", "validate_every",
            "synthetic_cases", "grid_size", "grid_spacing_mm", "output", "precision", "seed", "device", "threads")


def recorded_command(args: argparse.Namespace) -> list:
    """The command as parsed, for the sidecar (see :func:`MMRegistrationLib.cli.training.recorded_command`)."""
    return training.recorded_command(args, "train-net", RECORDED)


def run(args: argparse.Namespace) -> int:
    from MMRegistrationLib.cli.progress import ProgressPrinter, close_progress
    from MMRegistrationLib.training.net_config import preset_config
    from MMRegistrationLib.training.net_data import default_data_dir, folder_cases
    from MMRegistrationLib.training.net_run import run_training, write_run

    training.check_training_args(args)
    train_changes, network_changes = _changes(args)
    config = preset_config(args.preset, network=network_changes, **train_changes)
    name = args.name or args.preset
    out, checkpoint = training.output_and_checkpoint(args, name)
    data_dir = Path(args.data) if args.data else default_data_dir()
    folder_cases(data_dir)  # checked before any work
    device = training.start(args)
    minutes, iterations = training.budget(args)
    result = run_training(data_dir, config, iterations, minutes, device, checkpoint, args.resume,
                          ProgressPrinter(args.quiet))
    paths = write_run(result, out, name, recorded_command(args))
    checkpoint.unlink(missing_ok=True)
    best = result.state.best_metrics or {}
    close_progress()
    print(f"{result.state.step} steps in {result.seconds:.0f} s; best validation (step {result.state.best_step}): "
          f"gland Dice {best.get('dice', float('nan')):.3f}, TRE {best.get('tre_mm', float('nan')):.2f} mm")
    for path in paths:
        print(path)
    return 0
