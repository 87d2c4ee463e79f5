"""``mmreg generate``: write a synthetic MR/TRUS case with a known ground-truth deformation."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from MMRegistrationLib.cli.progress import add_output_options, add_threads_option

    p = sub.add_parser("generate", help="generate a synthetic MR (moving) / TRUS (fixed) case with known truth")
    add_output_options(p, "case")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--oblique", action=argparse.BooleanOptionalAction, default=True, help="oblique direction matrices")
    p.add_argument("--deformation-mm", type=float, default=None, help="amplitude of the smooth random deformation")
    p.add_argument("--scale", type=float, default=None, help="voxel-count factor per axis (field of view unchanged)")
    p.add_argument("--quiet", action="store_true")
    add_threads_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from MMRegistrationLib.cli.progress import ProgressPrinter
    from MMRegistrationLib.synthetic import SyntheticCaseConfig, generate_case, write_case

    kwargs = {"seed": args.seed, "oblique": args.oblique}
    if args.deformation_mm is not None:
        kwargs["deformation_mm"] = args.deformation_mm
    if args.scale is not None:
        kwargs["scale"] = args.scale
    from MMRegistrationLib.io.outputs import check_output_target

    from MMRegistrationLib.core.threads import choose_threads, engine_threads

    check_output_target(args.out, (), args.overwrite)
    with engine_threads(choose_threads(args.threads)):
        case = generate_case(SyntheticCaseConfig(**kwargs), progress=ProgressPrinter(args.quiet))
        paths = write_case(case, args.out)
    for name, path in paths.items():
        print(f"{name:18s} {path}")
    return 0
