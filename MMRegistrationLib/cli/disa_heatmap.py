"""``mmreg disa-heatmap``: the similarity of one fixed point to every moving point (paper 001, Fig. 1)."""

from __future__ import annotations

import argparse
import json

from MMRegistrationLib.core.device import DEVICE_CHOICES


def add_parser(sub) -> None:
    p = sub.add_parser(
        "disa-heatmap",
        help="similarity heatmap of one fixed point against the whole moving image (DISA descriptors)",
        description="Writes OUT (e.g. heat.nrrd): the dot product between the DISA descriptor of --point in the "
        "fixed image and every descriptor of the moving image, on the moving descriptor grid (--upsample: the moving "
        "working grid; --transform: the fixed working grid, through the fixed->moving transform). Prints a JSON "
        "summary with the peak.",
    )
    p.add_argument("--fixed", required=True, help="fixed image (e.g. TRUS)")
    p.add_argument("--moving", required=True, help="moving image (e.g. MR)")
    p.add_argument("--point", required=True, nargs="+", metavar="X,Y,Z",
                   help="a point of the fixed image (LPS mm): x,y,z, or x y z (when x is negative write --point=x,y,z "
                   "or --point x y z)")
    p.add_argument("--out", required=True, help="output image file (.nrrd, .nii.gz, .mha)")
    p.add_argument("--weights", help="DISA weights file (default: the shipped Resources/DISA/disa_lc2.pt)")
    p.add_argument("--descriptors", default="disa", choices=("disa", "mind"),
                   help="disa (dot products of DISA descriptors) or mind (1 - mean squared MIND-SSC difference)")
    p.add_argument("--transform", help="fixed->moving ITK transform file: return the heatmap on the fixed grid")
    p.add_argument("--spacing-mm", type=float, default=2.0, help="isotropic working spacing (mm)")
    p.add_argument("--upsample", action="store_true", help="resample onto the moving working grid")
    p.add_argument("--fixed-fov-threshold", default="0",
                   help="fixed field of view = voxels above this value ('none' = all; 0 suits ultrasound)")
    p.add_argument("--moving-fov-threshold", default="none", help="moving field of view threshold ('none' = all)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="auto = cuda, then mps, then cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from MMRegistrationLib.core.device import resolve_device
    from MMRegistrationLib.core.errors import InputError
    from MMRegistrationLib.io.images import read_image, write_image
    from MMRegistrationLib.registration.disa_config import optional_float, parse_vector
    from MMRegistrationLib.similarity.descriptors import make_backend
    from MMRegistrationLib.similarity.heatmap import heatmap_peak, similarity_heatmap

    point = parse_vector(",".join(args.point), "--point")
    if not args.spacing_mm > 0:
        raise InputError("--spacing-mm", f"must be positive, got {args.spacing_mm}")
    if args.descriptors == "mind" and args.weights:
        raise InputError("--weights", "is only used with --descriptors disa")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise InputError("--out", f"folder {out.parent} does not exist")
    device = resolve_device(args.device)
    fixed = read_image(args.fixed, "--fixed")
    moving = read_image(args.moving, "--moving")
    transform = None
    if args.transform:
        from MMRegistrationLib.io.transforms import read_transform

        transform = read_transform(args.transform, "--transform")
    backend = make_backend(args.descriptors, args.weights, device)
    heat = similarity_heatmap(
        fixed, moving, point, transform=transform, descriptors=backend, weights=args.weights,
        spacing_mm=args.spacing_mm,
        fixed_fov_threshold=optional_float(args.fixed_fov_threshold, "--fixed-fov-threshold"),
        moving_fov_threshold=optional_float(args.moving_fov_threshold, "--moving-fov-threshold"),
        upsample=args.upsample, device=device, point_argument="--point",
    )
    write_image(heat, out)
    peak, value = heatmap_peak(heat)
    summary = {
        "out": str(out),
        "point_lps_mm": list(point),
        "grid": "fixed" if transform is not None else ("moving" if args.upsample else "moving descriptors"),
        "shape_kji": list(heat.grid.shape),
        "spacing_mm": np.round(heat.grid.spacing, 4).tolist(),
        "peak_lps_mm": np.round(peak, 3).tolist(),
        "peak_value": value,
        "min_value": float(heat.array.min()),
    }
    print(json.dumps(summary, indent=1))
    return 0
