"""``mmreg refine``: test-time optimisation of a registration network on one case (paper 002), as a correction of an
earlier result: RSO inside ``--roi`` (step 3) or ISO over the whole fixed image without it (step 2).

``mmreg refine --from RESULT_DIR --roi BOX --out DIR`` refines an earlier ``mmreg register`` result (its images and
segmentations are read from its ``result.json`` unless given); ``--initial-transform T`` refines any fixed -> moving
transform file (e.g. one saved from Slicer). Outputs as every method's, plus the box and the loss curve.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from MMRegistrationLib.cli.progress import add_run_options, close_progress
from MMRegistrationLib.core.errors import InputError

INPUT_KEYS = ("fixed", "moving", "fixed_seg", "moving_seg", "fixed_landmarks", "moving_landmarks")


def add_parser(sub) -> None:
    from MMRegistrationLib.io.target_label import TARGET_LABEL_HELP
    from MMRegistrationLib.registration.rso_config import RefineConfig

    p = sub.add_parser(
        "refine",
        help="refine a registration inside a box (RSO) or over the whole image (ISO) by fine-tuning a network",
        description="Paper 002's test-time optimisation as a correction composed on an earlier fixed->moving "
        "result: inside --roi (region-specific, RSO) or, without --roi, over the whole fixed image (image-specific, "
        "ISO). Writes OUT/transform.h5 (fixed->moving), OUT/inverse_transform.h5, OUT/warped_moving.nrrd, "
        "OUT/warped_moving_seg.nrrd (with a moving segmentation) and OUT/result.json (with the box and the loss "
        "curve); all or nothing.",
    )
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--from", dest="from_dir", metavar="RESULT_DIR", help="an earlier result folder of mmreg "
                       "register/refine (its transform.h5 and inverse_transform.h5; its inputs unless given)")
    start.add_argument("--initial-transform", help="a fixed -> moving ITK transform file (.h5/.tfm/.txt; linear or "
                       "displacement field) to refine")
    p.add_argument("--fixed", help="fixed image (e.g. TRUS); default: the one --from used")
    p.add_argument("--moving", help="moving image (e.g. MR); default: the one --from used")
    p.add_argument("--fixed-seg", help="fixed segmentation (label map or .seg.nrrd); default: --from's")
    p.add_argument("--moving-seg", help="moving segmentation, same labels; default: --from's")
    p.add_argument("--fixed-landmarks", help="fixed landmarks for the metrics (CSV x,y,z LPS mm, .mrk.json, .fcsv)")
    p.add_argument("--moving-landmarks", help="moving landmarks, rows corresponding to --fixed-landmarks")
    p.add_argument("--label-channel", type=int, help="with 4-D label images, the channel used as the prostate "
                   "(default: --from's, when its segmentations are used)")
    p.add_argument("--target-label", metavar="VALUE_OR_NAME", help=f"{TARGET_LABEL_HELP} (default: --from's, when "
                   "its segmentations are used)")
    p.add_argument("--roi", metavar="BOX", help="the box to refine in: a Slicer markups ROI file .mrk.json or "
                   "cx,cy,cz,sx,sy,sz in LPS mm (write --roi=-10,... when it starts with a minus sign); without it "
                   "the whole fixed image (ISO)")
    add_run_options(p)
    group = p.add_argument_group("refinement options")
    for opt in RefineConfig.options():
        default = repr(opt.default) if opt.default == "" else opt.default
        group.add_argument(opt.flag, dest=f"opt_{opt.name}", default=None,
                           help=f"{opt.describe()} (default {default})".replace("%", "%%"))
    p.set_defaults(func=run)


def _earlier_result(folder: str) -> tuple:
    """``(record, transform path, inverse path or None)`` of a result folder (:class:`InputError` naming ``--from``)."""
    path = Path(folder)
    if not path.is_dir():
        raise InputError("--from", f"not a folder: {folder}")
    record_file, transform = path / "result.json", path / "transform.h5"
    if not record_file.is_file() or not transform.is_file():
        raise InputError("--from", f"{folder} is not a result folder of mmreg (it needs result.json and transform.h5)")
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError("--from", f"cannot read {record_file}: {err}") from None
    inverse = path / "inverse_transform.h5"
    return record, transform, inverse if inverse.is_file() else None


def _inputs_from(args: argparse.Namespace, record: Optional[dict]) -> dict:
    """The case's files: given on the command line, else the earlier result's."""
    earlier = (record or {}).get("inputs") or {}
    files = {key: getattr(args, key) or earlier.get(key) for key in INPUT_KEYS}
    for key in ("fixed", "moving"):
        if files[key] is None:
            raise InputError(f"--{key}", "is required (with --initial-transform, or when --from's result.json does "
                                         "not name it)")
    if args.fixed_seg is None and args.moving_seg is None:  # --from's segmentations: its label options too
        if args.label_channel is None and earlier.get("label_channel") is not None:
            args.label_channel = int(earlier["label_channel"])
        if args.target_label is None and earlier.get("target_label") is not None:
            args.target_label = str(earlier["target_label"])
    return files


def run(args: argparse.Namespace) -> int:
    from MMRegistrationLib.cli.progress import ProgressPrinter
    from MMRegistrationLib.cli.register import print_warnings
    from MMRegistrationLib.core.threads import choose_threads
    from MMRegistrationLib.io.outputs import check_output_target
    from MMRegistrationLib.io.regions import read_region
    from MMRegistrationLib.io.transforms import read_transform
    from MMRegistrationLib.registration.pipeline import load_inputs
    from MMRegistrationLib.registration.refinement import RefinementSession
    from MMRegistrationLib.registration.rso_config import RefineConfig

    options = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    config = RefineConfig.from_options(options, method="refine")  # bad options before any file is read
    box = read_region(args.roi, "--roi") if args.roi is not None else None
    choose_threads(args.threads)  # a bad --threads / MMREG_THREADS before any file is read
    record = transform_file = inverse_file = None
    if args.from_dir is not None:
        record, transform_file, inverse_file = _earlier_result(args.from_dir)
    else:
        transform_file = args.initial_transform
    files = _inputs_from(args, record)
    check_output_target(args.out, (*files.values(), args.from_dir, args.initial_transform, args.roi), args.overwrite)
    previous = read_transform(transform_file, "--from" if args.from_dir else "--initial-transform")
    inverse = read_transform(inverse_file, "--from", "moving", "fixed") if inverse_file is not None else None
    inputs = load_inputs(files["fixed"], files["moving"], files["fixed_seg"], files["moving_seg"],
                         files["fixed_landmarks"], files["moving_landmarks"], args.label_channel, region=box,
                         target_label=args.target_label)
    session = RefinementSession(inputs, args.device, args.seed, metrics=False, threads=args.threads)
    earlier = record or {}  # an earlier network result (net, or a refinement: rso) names the network it used
    weights = (earlier.get("method_info") or {}).get("weights") if earlier.get("method") in ("net", "rso") else None
    if weights and not config.weights:
        config = RefineConfig.from_options({**options, "weights": weights}, method="refine")
    session.start_from(previous, inverse, name="initial", info={"from": args.from_dir or args.initial_transform})
    progress = ProgressPrinter(args.quiet)
    step = session.refine(box, config, progress=progress)
    out = session.export(args.out, record={
        "inputs": {**{k: str(v) for k, v in {**files, "from": args.from_dir,
                                             "initial_transform": args.initial_transform, "roi": args.roi}.items()
                      if v is not None},
                   **({"label_channel": args.label_channel} if args.label_channel is not None else {}),
                   **({"target_label": args.target_label} if args.target_label is not None else {})},
        "parameters": config.as_dict(),
    })
    summary = {"out": args.out, "step": step.name, "iterations": step.iterations, "seconds": round(step.seconds, 2)}
    summary.update({k: v for k, v in out["metrics"]["after"].items() if k != "tre_mm"})
    close_progress()
    print_warnings(out, "refine")
    print(json.dumps(summary, indent=1, default=str))
    return 0
