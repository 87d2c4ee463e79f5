"""``mmreg register``: the CLI contract (see README)."""

from __future__ import annotations

import argparse
import json

from MMRegistrationLib.core.device import DEVICE_CHOICES
from MMRegistrationLib.registration.methods import METHODS
from MMRegistrationLib.registration.pipeline import INITS


def add_parser(sub) -> None:
    p = sub.add_parser(
        "register",
        help="register a moving image to a fixed image",
        description="Writes OUT/transform.h5 (fixed->moving), OUT/inverse_transform.h5 when available, "
        "OUT/warped_moving.nrrd, OUT/warped_moving_seg.nrrd (with --moving-seg) and OUT/result.json; "
        "all or nothing.",
    )
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="registration method")
    p.add_argument("--fixed", required=True, help="fixed image (e.g. TRUS): NRRD, NIfTI, MHA, GIPL or a DICOM folder")
    p.add_argument("--moving", required=True, help="moving image (e.g. MR)")
    p.add_argument("--fixed-seg", help="fixed segmentation: label map or Slicer .seg.nrrd")
    p.add_argument("--moving-seg", help="moving segmentation: same label values (or segment names) as --fixed-seg")
    p.add_argument("--fixed-landmarks", help="fixed landmarks: CSV x,y,z (LPS mm), .mrk.json or .fcsv")
    p.add_argument("--moving-landmarks", help="moving landmarks, rows corresponding to --fixed-landmarks")
    p.add_argument("--init", choices=INITS, help="initialiser (default: the method's own, see 'mmreg methods')")
    p.add_argument("--label-channel", type=int, help="with 4-D label images holding one binary channel per structure "
                   "(e.g. DeepReg, MONAI), use this channel (0-based) of --fixed-seg and --moving-seg as the prostate")
    p.add_argument("--initial-transform", help="linear ITK transform file (.h5/.tfm/.txt, fixed -> moving, e.g. a manual "
                   "alignment saved from Slicer) to start from; used as is (--init none, the default with it) or refined "
                   "(--init rigid-mask)")
    p.add_argument("--seed", type=int, default=0, help="random seed (CPU runs are deterministic)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="auto = cuda, then mps, then cpu")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--out", required=True, help="output folder (replaced as a whole on success)")
    group = p.add_argument_group("method options (apply to the method that defines them)")
    by_name: dict = {}  # an option name shared by several methods is one flag; its help names each method's default
    for spec in METHODS.values():
        for opt in spec.options:
            by_name.setdefault(opt.name, []).append((spec.name, opt))
    for name, entries in by_name.items():
        first = entries[0][1]
        defaults = "; ".join(
            f"{method}: {'preset' if opt.default is None else opt.default}" for method, opt in entries
        )
        group.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"opt_{name}",
            type=first.type if first.type in (int, float, str) and all(o.type is first.type for _, o in entries) else str,
            default=None,  # the method's own type conversion and checks run before any work
            help=f"[{', '.join(m for m, _ in entries)}] {first.help} (default {defaults})",
        )
    p.set_defaults(func=run)


def method_options(args: argparse.Namespace) -> dict:
    """The method options given on the command line (only those the chosen method knows)."""
    spec = METHODS[args.method]
    known = {o.name for o in spec.options}
    given = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    from MMRegistrationLib.core.errors import InputError

    unknown = sorted(set(given) - known)
    if unknown:
        raise InputError("--method", f"'{args.method}' does not take {', '.join('--' + u.replace('_', '-') for u in unknown)}")
    return given


def run(args: argparse.Namespace) -> int:
    from MMRegistrationLib.cli.progress import ProgressPrinter
    from MMRegistrationLib.registration.pipeline import register_files

    record = register_files(
        args.method,
        args.fixed,
        args.moving,
        args.out,
        fixed_seg=args.fixed_seg,
        moving_seg=args.moving_seg,
        fixed_landmarks=args.fixed_landmarks,
        moving_landmarks=args.moving_landmarks,
        init=args.init,
        initial_transform=args.initial_transform,
        label_channel=args.label_channel,
        options=method_options(args),
        seed=args.seed,
        device=args.device,
        progress=ProgressPrinter(args.quiet),
    )
    summary = {"out": args.out, "method": record["method"], "wall_seconds": record["wall_seconds"]["total"]}
    summary.update({k: v for k, v in record["metrics"]["after"].items() if k != "tre_mm"})
    print(json.dumps(summary, indent=1, default=str))
    return 0
