"""``mmreg segment``: the prostate gland of one MR or TRUS image with the shipped segmentation network (paper 003),
written as a label map (1 = prostate) or a Slicer ``.seg.nrrd`` with a ``prostate`` segment."""

from __future__ import annotations

import argparse
import json

from MMRegistrationLib.core.device import DEVICE_CHOICES

OUTPUT_SUFFIXES = (".seg.nrrd", ".nrrd", ".nii.gz", ".nii", ".mha", ".mhd")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "segment",
        help="segment the prostate gland on an MR or TRUS image (segmentation network, paper 003)",
        description="Predicts the gland with the shipped network of --modality on the network's own grid "
        "(48^3 voxels of 2 mm for the shipped networks; any image orientation, spacing or origin), resampled onto the image's grid, largest part kept and holes filled. "
        "Writes --out (label 1 = prostate; a .seg.nrrd holds one segment named 'prostate', ready for Slicer's "
        "Segment Editor) and prints the volume and any quality warnings (a volume outside 10-250 ml, several large "
        "parts, a gland touching the field-of-view border, an irregular shape). No gland found: exit 2. The network "
        "sees 96 mm around the image's centre (MR: crop a large pelvic field of view around the prostate first).",
    )
    p.add_argument("--image", required=True, help="the image: NRRD, NIfTI, MHA or a DICOM folder")
    p.add_argument("--modality", required=True, choices=("mr", "trus"), help="what the image is")
    p.add_argument("--out", required=True, help="output file: .seg.nrrd (Slicer segmentation) or a label map "
                   f"({', '.join(OUTPUT_SUFFIXES[1:])})")
    p.add_argument("--weights", help="segmentation network weights (.pt with its .json sidecar; default: the "
                   "shipped network of --modality)")
    p.add_argument("--probability", metavar="FILE", help="also write the network's gland probability (float, on the "
                   "image's grid) to FILE")
    p.add_argument("--overwrite", action="store_true", help="replace --out (and --probability) if it exists")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="auto = cuda, then mps, then cpu")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    from MMRegistrationLib.cli.progress import add_threads_option

    add_threads_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from MMRegistrationLib.cli.progress import ProgressPrinter, close_progress
    from MMRegistrationLib.core.device import resolve_device
    from MMRegistrationLib.core.threads import choose_threads, engine_threads
    from MMRegistrationLib.io.images import read_image, write_image
    from MMRegistrationLib.io.outputs import check_output_file
    from MMRegistrationLib.io.segmentations import write_segmentation
    from MMRegistrationLib.segmentation.predict import PROSTATE, prediction_record, segment_image
    from MMRegistrationLib.segmentation.weights import load_segmentation_net

    choice = choose_threads(args.threads)
    check_output_file(args.out, (args.image, args.weights), args.overwrite, OUTPUT_SUFFIXES)
    if args.probability is not None:
        check_output_file(args.probability, (args.image, args.weights, args.out), args.overwrite,
                          OUTPUT_SUFFIXES[1:], "--probability")
    device = resolve_device(args.device)
    load_segmentation_net(args.modality, args.weights, device, "--weights")  # checked before the image is read
    for path in (args.out, args.probability):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    with engine_threads(choice):
        image = read_image(args.image, "--image")
        predicted = segment_image(image, args.modality, args.weights, device, progress=ProgressPrinter(args.quiet))
        write_segmentation(predicted.mask, {1: PROSTATE}, args.out)
        if args.probability is not None:
            write_image(predicted.probability, args.probability)
    close_progress()
    for warning in predicted.warnings:
        print(f"mmreg segment: warning: {warning}", file=sys.stderr)
    record = prediction_record(predicted, args.modality, args.weights)
    print(json.dumps({"out": args.out, **record}, indent=1))
    return 0
