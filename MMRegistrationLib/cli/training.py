"""What the training commands (``train-net``, ``train-seg``) share: the budget and run options, their checks, the
command recorded in the sidecar, and the run's budget and checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from MMRegistrationLib.core.device import DEVICE_CHOICES

POSITIVE = ("iterations", "max_iterations", "batch_size", "validate_every", "threads", "grid_size")


def add_budget_options(p) -> None:
    """``--minutes`` | ``--iterations``, ``--max-iterations``."""
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="wall-clock budget: training stops at it (the sidecar records "
                        "the steps made); default 40 when --iterations is not given")
    budget.add_argument("--iterations", type=int, help="exact number of optimiser steps (deterministic run)")
    p.add_argument("--max-iterations", type=int, default=100000, help="upper bound with --minutes (default 100000)")


def add_run_options(p) -> None:
    """``--seed``, ``--device``, ``--threads``, ``--resume``, ``--quiet``."""
    p.add_argument("--seed", type=int, default=0, help="random seed (CPU runs are deterministic for a thread count)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="auto = cuda, then mps, then cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (record it: results depend on it)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint of an interrupted run with "
                   "the same options (OUT/.NAME.checkpoint.pt)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def recorded_command(args: argparse.Namespace, command: str, names: tuple) -> list:
    """``mmreg COMMAND`` and every option in ``names`` given or defaulted that changes the run, for the sidecar: the
    same whether it came from a shell or from ``main([...])``."""
    words = ["mmreg", command]
    for name in names:
        value = getattr(args, name)
        if value is not None and not (name == "device" and value == "auto"):
            words += [f"--{name.replace('_', '-')}", str(value)]
    return words + (["--resume"] if args.resume else [])


def check_training_args(args: argparse.Namespace) -> None:
    """Counts at least 1, a positive budget, a plain weights name (:class:`InputError` naming the option)."""
    from MMRegistrationLib.core.errors import InputError

    for name in POSITIVE:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')}", f"must be at least 1, got {value}")
    if args.minutes is not None and not args.minutes > 0:
        raise InputError("--minutes", f"must be positive, got {args.minutes}")
    if args.name is not None and (not args.name or "/" in args.name or args.name.startswith(".")):
        raise InputError("--name", f"must be a plain file name without '/', got {args.name!r}")


def output_and_checkpoint(args: argparse.Namespace, name: str) -> tuple:
    """``(out folder, checkpoint path)``; an ``--out`` that is a file, or ``--resume`` without a checkpoint, is an
    :class:`InputError`."""
    from MMRegistrationLib.core.errors import InputError

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError("--out", f"{out} exists and is not a folder")
    checkpoint = out / f".{name}.checkpoint.pt"
    if args.resume and not checkpoint.is_file():
        raise InputError("--resume", f"no checkpoint {checkpoint} to resume from")
    return out, checkpoint


def budget(args: argparse.Namespace) -> tuple:
    """``(minutes or None, iterations)``: ``--iterations`` exactly, else ``--minutes`` (default 40) up to
    ``--max-iterations``."""
    if args.iterations is not None:
        return None, args.iterations
    return (args.minutes if args.minutes is not None else 40.0), args.max_iterations


def start(args: argparse.Namespace):
    """The torch device of ``--device`` and torch's threads set to ``--threads`` (when given)."""
    import torch

    from MMRegistrationLib.core.device import resolve_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return resolve_device(args.device)
