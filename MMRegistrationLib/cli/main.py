"""``mmreg``: the command line of the engine. Subcommands: register, refine, demo, generate, evaluate, train-disa, train-net,
train-seg, segment, disa-heatmap, methods."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from MMRegistrationLib import __version__
from MMRegistrationLib.cli.progress import close_progress
from MMRegistrationLib.core.errors import Cancelled, InputError, MMRegError


def build_parser() -> argparse.ArgumentParser:
    from MMRegistrationLib.cli import (demo, disa_heatmap, evaluate, generate, refine, register, segment,
                                       train_disa, train_net, train_seg)

    parser = argparse.ArgumentParser(
        prog="mmreg",
        description="Multimodal (MR -> TRUS) image registration. World coordinates are LPS mm; every "
        "transform written is fixed->moving (ITK convention).",
    )
    parser.add_argument("--version", action="version", version=f"mmreg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register.add_parser(sub)
    refine.add_parser(sub)
    demo.add_parser(sub)
    generate.add_parser(sub)
    evaluate.add_parser(sub)
    train_disa.add_parser(sub)
    train_net.add_parser(sub)
    train_seg.add_parser(sub)
    segment.add_parser(sub)
    disa_heatmap.add_parser(sub)
    methods = sub.add_parser("methods", help="list registration methods and their options")
    methods.set_defaults(func=_list_methods)
    return parser


def _list_methods(args: argparse.Namespace) -> int:
    from MMRegistrationLib.cli.register import shown_default
    from MMRegistrationLib.registration.methods import METHODS

    for spec in METHODS.values():
        init = "the one its options imply" if spec.init_for is not None else spec.default_init
        print(f"{spec.name:12s} {spec.description} (default --init: {init})")
        if spec.region_use:
            print(f"    --roi: {spec.region_use}")
        for opt in spec.options:
            print(f"    {opt.flag:26s} default {shown_default(spec.name, opt)}: {opt.describe()}")
    from MMRegistrationLib.registration.rso_config import RefineConfig

    print("mmreg refine: test-time optimisation of a registration network (paper 002) as a correction of an earlier "
          "result, inside --roi (RSO) or over the whole fixed image (ISO)")
    for opt in RefineConfig.options():
        default = "auto" if opt.default is None else repr(opt.default) if opt.default == "" else opt.default
        print(f"    {opt.flag:26s} default {default}: {opt.describe()}")
    return 0


def _interrupt_on_sigterm() -> None:
    """SIGTERM (what ``timeout``, schedulers and process managers send) stops a run like Ctrl-C: the partial output
    is removed and the exit code is 130 (only in the main thread; elsewhere the default handling stays)."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def main(argv: Optional[Sequence[str]] = None) -> int:
    _interrupt_on_sigterm()
    command = "COMMAND"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command = args.command
        return int(args.func(args) or 0)
    except InputError as err:
        return _fail(command, f"error: {err}", 2)
    except (Cancelled, KeyboardInterrupt):
        return _fail(command, "cancelled; no output was written", 130)
    except MMRegError as err:
        return _fail(command, f"error: {err}", 1)
    finally:
        close_progress()


def _fail(command: str, message: str, code: int) -> int:
    """End any progress bar, print ``mmreg COMMAND: message`` on stderr, return the exit code."""
    close_progress()
    print(f"mmreg {command}: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
