"""``mmreg register``: the CLI contract (see README)."""

from __future__ import annotations

import argparse
import json

from MMRegistrationLib.cli.progress import add_run_options, close_progress
from MMRegistrationLib.core.options import flag_of
from MMRegistrationLib.io.target_label import TARGET_LABEL_HELP
from MMRegistrationLib.registration.methods import METHODS, option_flags
from MMRegistrationLib.registration.pipeline import INITS


def add_parser(sub) -> None:
    p = sub.add_parser(
        "register",
        help="register a moving image to a fixed image",
        description="Writes OUT/transform.h5 (fixed->moving), OUT/inverse_transform.h5 when available, "
        "OUT/warped_moving.nrrd, OUT/warped_moving_seg.nrrd (with --moving-seg) and OUT/result.json; "
        "all or nothing. With --cohort DIR: the same for every case folder of DIR, into OUT/<case>/, in this "
        "process or on Dask (--workers, --scheduler), then the cohort evaluation in OUT.",
    )
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="registration method")
    p.add_argument("--fixed", help="fixed image (e.g. TRUS): NRRD, NIfTI, MHA, GIPL or a DICOM folder (required "
                   "unless --cohort)")
    p.add_argument("--moving", help="moving image (e.g. MR) (required unless --cohort)")
    p.add_argument("--fixed-seg", help="fixed segmentation: label map or Slicer .seg.nrrd; 'auto' = the gland predicted "
                   "by the TRUS segmentation network (auto:mr / auto:trus name the modality; with --cohort too)")
    p.add_argument("--moving-seg", help="moving segmentation: same label values (or segment names) as --fixed-seg; "
                   "'auto' = the gland predicted by the MR segmentation network")
    p.add_argument("--fixed-landmarks", help="fixed landmarks: CSV x,y,z (LPS mm), .mrk.json or .fcsv")
    p.add_argument("--moving-landmarks", help="moving landmarks, rows corresponding to --fixed-landmarks")
    p.add_argument("--init", choices=INITS, help="initialiser (default: the method's own, see 'mmreg methods')")
    p.add_argument("--label-channel", type=int, help="with 4-D label images holding one binary channel per structure "
                   "(e.g. DeepReg, MONAI), use this channel (0-based) of --fixed-seg and --moving-seg as the prostate "
                   "(refused for 3-D label maps and .seg.nrrd files)")
    p.add_argument("--target-label", metavar="VALUE_OR_NAME", help=TARGET_LABEL_HELP)
    p.add_argument("--initial-transform", help="linear ITK transform file (.h5/.tfm/.txt, fixed -> moving, e.g. a manual "
                   "alignment saved from Slicer) to start from; used as is (--init none, the default with it) or refined "
                   "(--init rigid-mask)")
    p.add_argument("--roi", metavar="BOX", help="region of interest in the fixed image, for methods that use one "
                   "(see 'mmreg methods'): a Slicer markups ROI file .mrk.json (RAS or LPS as its coordinateSystem "
                   "says, converted; oriented boxes allowed) or cx,cy,cz,sx,sy,sz in LPS mm (centre and edge "
                   "lengths, axis-aligned; write --roi=-10,... when it starts with a minus sign)")
    add_run_options(p)
    add_cohort_options(p)
    add_method_options(p)
    p.set_defaults(func=run)


def add_cohort_options(parser: argparse.ArgumentParser) -> None:
    """``--cohort``, ``--workers``, ``--scheduler`` (see ``MMRegistrationLib.registration.cohort``)."""
    group = parser.add_argument_group("cohort (one result folder per case in --out, then the cohort evaluation)")
    group.add_argument("--cohort", metavar="DIR", help="cohort folder: one sub-folder per case holding fixed.*, "
                       "moving.*, fixed_seg.*, moving_seg.* and optional fixed_landmarks.*/moving_landmarks.*; writes "
                       "OUT/<case>/ (the usual outputs), OUT/cases.csv, summary.csv and summary.json. A rerun into "
                       "the same --out keeps complete cases (--overwrite redoes all); a failed case does not stop "
                       "the others (exit code 1)")
    group.add_argument("--workers", type=int, metavar="N", help="with --cohort: run the cases on a local Dask "
                       "cluster of N single-threaded processes (needs pip install \"mmregistration[cohort]\")")
    group.add_argument("--scheduler", metavar="ADDRESS", help="with --cohort: run the cases on the Dask cluster "
                       "whose scheduler is at ADDRESS (e.g. tcp://host:8786; the paths must be valid on its workers)")


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per option of every method, from the configuration dataclasses' metadata. Values stay strings
    here: the method's configuration converts and checks them (errors name the flag) before any image is read."""
    group = parser.add_argument_group("method options (each applies to the methods named in brackets)")
    for flag, entries in option_flags().items():
        helps = []
        for method, opt in entries:
            text = opt.describe()
            if not helps or helps[-1][1] != text:
                helps.append(([method], text))
            else:
                helps[-1][0].append(method)
        defaults = "; ".join(f"{method}: {shown_default(method, opt)}" for method, opt in entries)
        text = " / ".join(f"[{', '.join(methods)}] {h}" for methods, h in helps)
        group.add_argument(flag, dest=f"opt_{entries[0][1].name}", default=None, metavar=_metavar(entries[0][1]),
                           help=f"{text} (default {defaults})".replace("%", "%%"))


def _metavar(opt) -> str:
    return {int: "N", float: "X", tuple: "X,Y,Z"}.get(opt.kind, "VALUE" if not opt.choices else "{" + ",".join(opt.choices) + "}")


def shown_default(method: str, opt) -> str:
    spec = METHODS[method]
    if spec.presets and opt.name != "preset":
        values = {name: preset.get(opt.name, opt.default) for name, preset in spec.presets.items()}
        if len(set(map(str, values.values()))) > 1:
            return ", ".join(f"{v} ({name})" for name, v in values.items())
    return "none" if opt.default is None else repr(opt.default) if opt.default == "" else str(opt.default)


def method_options(args: argparse.Namespace) -> dict:
    """The method options given on the command line (only those the chosen method knows)."""
    spec = METHODS[args.method]
    known = {o.name for o in spec.options}
    given = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    from MMRegistrationLib.core.errors import InputError

    unknown = sorted(set(given) - known)
    if unknown:
        raise InputError(flag_of(unknown[0]), f"--method {args.method} does not take "
                         f"{', '.join(flag_of(u) for u in unknown)}; see 'mmreg methods'")
    return given


COHORT_EXCLUDES = ("fixed", "moving", "fixed_landmarks", "moving_landmarks", "initial_transform", "roi")
"""Options that describe one case: each case folder holds its own files (``--fixed-seg``/``--moving-seg`` only as
``auto``: checked by the cohort)."""


def run(args: argparse.Namespace) -> int:
    from MMRegistrationLib.cli.progress import ProgressPrinter
    from MMRegistrationLib.core.errors import InputError
    from MMRegistrationLib.io.outputs import check_output_target
    from MMRegistrationLib.registration.pipeline import register_files

    if args.cohort is not None:
        return run_cohort(args)
    for name in ("workers", "scheduler"):
        if getattr(args, name) is not None:
            raise InputError(flag_of(name), "only applies with --cohort DIR")
    for name in ("fixed", "moving"):
        if getattr(args, name) is None:
            raise InputError(flag_of(name), "required (or give --cohort DIR to register every case of a cohort)")
    check_output_target(args.out, (args.fixed, args.moving, args.fixed_seg, args.moving_seg, args.fixed_landmarks,
                                   args.moving_landmarks, args.initial_transform, args.roi), args.overwrite)
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
        roi=args.roi,
        threads=args.threads,
        target_label=args.target_label,
        options=method_options(args),
        seed=args.seed,
        device=args.device,
        progress=ProgressPrinter(args.quiet),
    )
    summary = {"out": args.out, "method": record["method"], "wall_seconds": record["wall_seconds"]["total"]}
    summary.update({k: v for k, v in record["metrics"]["after"].items() if k != "tre_mm"})
    close_progress()
    print_warnings(record, "register")
    print(json.dumps(summary, indent=1, default=str))
    return 0


def run_cohort(args: argparse.Namespace) -> int:
    """``mmreg register --cohort``: exit code 0 when every case succeeded, 1 when some failed, 130 when stopped."""
    import sys

    from MMRegistrationLib.cli.progress import ProgressPrinter
    from MMRegistrationLib.core.errors import Cancelled, InputError
    from MMRegistrationLib.registration.cohort import register_cohort

    given = [flag_of(name) for name in COHORT_EXCLUDES if getattr(args, name) is not None]
    if given:
        raise InputError("--cohort", f"cannot be combined with {', '.join(given)} (each case folder holds its own "
                         "files)")
    options = method_options(args)

    def report(outcome) -> None:
        if outcome.failed:
            close_progress()
            print(f"mmreg register: case {outcome.name} failed: {outcome.error}", file=sys.stderr, flush=True)

    try:
        result = register_cohort(args.cohort, args.out, args.method, options, init=args.init, seed=args.seed,
                                 device=args.device, threads=args.threads, label_channel=args.label_channel,
                                 target_label=args.target_label, overwrite=args.overwrite, workers=args.workers,
                                 fixed_seg=args.fixed_seg, moving_seg=args.moving_seg,
                                 scheduler=args.scheduler, progress=ProgressPrinter(args.quiet), on_case=report)
    except (KeyboardInterrupt, Cancelled):
        close_progress()
        print(f"mmreg register: cancelled; the finished cases are kept in {args.out} (rerun the same command to "
              "resume)", file=sys.stderr)
        return 130
    close_progress()
    print(json.dumps(cohort_summary(args.out, result), indent=1, default=str))
    if result.failed:
        print(f"mmreg register: {len(result.failed)} of {len(result.outcomes)} cases failed (their errors are in "
              f"{args.out}/cases.csv and summary.json)", file=sys.stderr)
        return 1
    return 0


def cohort_summary(out: str, result) -> dict:
    """What ``mmreg register --cohort`` prints: counts, failed cases, and n/mean/sd/median per metric."""
    from MMRegistrationLib.evaluation.case import jsonable

    statuses = [o.status for o in result.outcomes]
    return jsonable({"out": out, "cases": len(statuses), "registered": statuses.count("registered"),
                     "kept": statuses.count("kept"), "failed": {o.name: o.error for o in result.failed},
                     "summary": {k: {s: v[s] for s in ("n", "mean", "sd", "median")}
                                 for k, v in result.summary.items()}})


def print_warnings(record: dict, command: str) -> None:
    """Each of ``result.json``'s ``warnings`` on stderr, one line each."""
    import sys

    for warning in record.get("warnings", ()):
        print(f"mmreg {command}: warning: {warning}", file=sys.stderr)
