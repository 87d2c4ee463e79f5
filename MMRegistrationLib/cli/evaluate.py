"""``mmreg evaluate``: DSC, surface distances, TRE and Jacobian of a transform, for one case or a cohort.

Definitions: :mod:`MMRegistrationLib.evaluation`. Every output is written only once everything has been
computed, through temporary names renamed at the end, so an error leaves no output behind.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from MMRegistrationLib.cli.progress import add_threads_option
from MMRegistrationLib.core.errors import InputError

SINGLE_ONLY = ("fixed_seg", "moving_seg", "transform", "fixed_landmarks", "moving_landmarks", "jacobian_out",
               "figure", "fixed_image")
IMAGE_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
API_TO_CLI = {"fixed_seg": "--fixed-seg", "moving_seg": "--moving-seg", "transform": "--transform",
              "fixed_landmarks": "--fixed-landmarks", "moving_landmarks": "--moving-landmarks"}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a registration: DSC, MSD, HD95, HD, TRE, Jacobian",
        description="One case: the moving segmentation is warped onto the fixed grid through --transform "
        "(fixed->moving; none = identity, nearest neighbour) and compared with the fixed segmentation per label. "
        "Cohort (--cohort DIR): one sub-folder per case with fixed_seg.*, moving_seg.*, optional "
        "fixed_landmarks.*/moving_landmarks.*, optional transform (--transform-name) and fixed.*; writes "
        "OUT/cases.csv, summary.csv, summary.json, <case>.png and boxplots.png. Nothing is written on error.",
    )
    p.add_argument("--fixed-seg", help="fixed segmentation: label map or Slicer .seg.nrrd")
    p.add_argument("--moving-seg", help="moving segmentation: same label values (or segment names)")
    p.add_argument("--transform", help="ITK transform file, fixed->moving (default: identity)")
    p.add_argument("--fixed-landmarks", help="fixed landmarks: CSV x,y,z (LPS mm), .mrk.json or .fcsv")
    p.add_argument("--moving-landmarks", help="moving landmarks, rows corresponding to --fixed-landmarks")
    p.add_argument("--jacobian-out", help="write the Jacobian determinant (float32, fixed grid), e.g. J.nrrd")
    p.add_argument("--figure", help="write a PNG: contours on three views and the Jacobian map")
    p.add_argument("--fixed-image", help="fixed image, background of --figure")
    p.add_argument("--no-jacobian", action="store_true", help="skip the Jacobian statistics")
    p.add_argument("--label-channel", type=int, help="with 4-D label images holding one binary channel per structure "
                   "(e.g. DeepReg, MONAI), evaluate this channel (0-based) of both segmentations (with --cohort: of "
                   "every case); refused for 3-D label maps and .seg.nrrd files")
    p.add_argument("--cohort", help="cohort folder: one sub-folder per case")
    p.add_argument("--transform-name", help="with --cohort: transform file in each case folder (default transform.h5; "
                   "absent = identity)")
    p.add_argument("--no-figures", action="store_true", help="with --cohort: no PNG figures")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_threads_option(p)
    p.add_argument("--out", help="report file (.json or .csv) for one case; output folder for --cohort (new, or an "
                   "earlier cohort result with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="with --cohort: replace an earlier cohort result in --out")
    p.set_defaults(func=run)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_suffix(path: str, suffixes, argument: str, what: str) -> None:
    name = Path(path).name.lower()
    if not any(name.endswith(s) for s in suffixes):
        raise InputError(argument, f"{what} must end with {' or '.join(suffixes)}, got '{Path(path).name}'")


def _write_all(writers: list) -> None:
    """``writers``: ``[(final_path, write(tmp_path))]``. Everything goes to temporary siblings first, then
    every file is renamed into place; on error the temporary files are removed."""
    pending = []
    try:
        for final, write in writers:
            final = Path(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            suffix = ".nii.gz" if final.name.lower().endswith(".nii.gz") else final.suffix
            tmp = final.with_name(f".{final.name[: len(final.name) - len(suffix)]}.partial-{os.getpid()}{suffix}")
            pending.append((tmp, final))
            write(tmp)
        for tmp, final in pending:
            os.replace(tmp, final)
    finally:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)


def run_single(args: argparse.Namespace, progress) -> dict:
    from MMRegistrationLib.evaluation import evaluate_case, write_report
    from MMRegistrationLib.evaluation.case import memory_step
    from MMRegistrationLib.io import match_segmentations, read_image, read_landmarks, read_segmentation, read_transform
    from MMRegistrationLib.io.images import write_image
    from MMRegistrationLib.io.landmarks import check_landmark_pair
    from MMRegistrationLib.io.segmentations import check_on_image
    from MMRegistrationLib.visualization.evaluation_figures import evaluation_figure

    for name in ("fixed_seg", "moving_seg"):
        if getattr(args, name) is None:
            raise InputError(_flag(name), "required (or give --cohort DIR)")
    for name in ("transform_name", "no_figures"):
        if getattr(args, name):
            raise InputError(_flag(name), "only applies with --cohort")
    if args.out is not None:
        _check_suffix(args.out, (".json", ".csv"), "--out", "the report file")
    if args.figure is not None:
        _check_suffix(args.figure, (".png",), "--figure", "the figure")
    if args.jacobian_out is not None:
        _check_suffix(args.jacobian_out, IMAGE_SUFFIXES, "--jacobian-out", "the Jacobian image")
        if args.no_jacobian:
            raise InputError("--jacobian-out", "cannot be combined with --no-jacobian")
    if (args.fixed_landmarks is None) != (args.moving_landmarks is None):
        missing = "--moving-landmarks" if args.moving_landmarks is None else "--fixed-landmarks"
        raise InputError(missing, "landmarks must be given for both images (--fixed-landmarks and --moving-landmarks)")

    fixed_seg = read_segmentation(args.fixed_seg, "--fixed-seg", args.label_channel)
    fixed_image = read_image(args.fixed_image, "--fixed-image") if args.fixed_image else None
    if fixed_image is not None:
        check_on_image(fixed_seg.labelmap, fixed_image.grid, "--fixed-seg", "--fixed-image")
    fseg, mseg, names = match_segmentations(fixed_seg, read_segmentation(args.moving_seg, "--moving-seg",
                                                                         args.label_channel))
    flm = mlm = None
    if args.fixed_landmarks is not None:
        flm = read_landmarks(args.fixed_landmarks, "--fixed-landmarks")
        mlm = read_landmarks(args.moving_landmarks, "--moving-landmarks")
        check_landmark_pair(flm, mlm, "--moving-landmarks")
    with memory_step(f"read --transform {args.transform}"):
        transform = read_transform(args.transform, "--transform") if args.transform else None
    try:
        ev = evaluate_case(fseg, mseg, transform, names, flm, mlm, jacobian=not args.no_jacobian, progress=progress)
    except InputError as err:
        raise InputError(API_TO_CLI.get(err.argument, err.argument), err.problem) from None

    writers = []
    if args.jacobian_out is not None:
        writers.append((args.jacobian_out, lambda tmp: write_image(ev.jacobian_image, tmp)))
    if args.figure is not None:
        title = f"mmreg evaluate ({'identity' if transform is None else Path(args.transform).name})"
        writers.append((args.figure, lambda tmp: evaluation_figure(fseg, ev.warped_moving_seg, tmp, ev.jacobian_image,
                                                                   fixed_image, title)))
    if args.out is not None:
        writers.append((args.out, lambda tmp: write_report(ev, tmp, "--out")))
    _write_all(writers)
    return ev.to_dict()


def run_cohort(args: argparse.Namespace, progress) -> dict:
    from MMRegistrationLib.evaluation import evaluate_cohort
    from MMRegistrationLib.evaluation.case import jsonable

    given = [_flag(n) for n in SINGLE_ONLY if getattr(args, n) is not None]
    if given:
        raise InputError("--cohort", f"cannot be combined with {', '.join(given)} (those describe one case)")
    if args.out is None:
        raise InputError("--out", "the cohort output folder is required with --cohort")
    from MMRegistrationLib.io.outputs import check_output_target

    check_output_target(args.out, (args.cohort,), args.overwrite)
    rows, summary = evaluate_cohort(args.cohort, args.transform_name or "transform.h5", args.out,
                                    figures=not args.no_figures, jacobian=not args.no_jacobian, progress=progress,
                                    label_channel=args.label_channel)
    return jsonable({"out": args.out, "cases": len(rows), "summary": {k: {s: v[s] for s in ("n", "mean", "sd", "median")}
                                                                      for k, v in summary.items()}})


def run(args: argparse.Namespace) -> int:
    from MMRegistrationLib.cli.progress import ProgressPrinter, close_progress
    from MMRegistrationLib.core.threads import choose_threads, engine_threads

    choice = choose_threads(args.threads)  # a bad --threads / MMREG_THREADS before any file is read
    progress = ProgressPrinter(args.quiet)
    with engine_threads(choice):
        record = run_cohort(args, progress) if args.cohort is not None else run_single(args, progress)
    close_progress()
    print(json.dumps(record, indent=1))
    return 0
