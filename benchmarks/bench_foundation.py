"""Foundation benchmark (results to benchmarks/results/foundation.{json,md}).

1. Dense-field resampling of a ~128^3 image: engine (torch) vs SimpleITK's resampler with the same
   DisplacementFieldTransform, same machine, same run; reported as a time ratio plus the max difference.
2. Mask-based rigid initialisation on generated MR/TRUS cases (known truth): the engine's ``rigid-mask``
   vs a SimpleITK peer (Euler3D + mean squares on the prostate signed distance maps, moments initialiser,
   2-level pyramid). Reported: prostate Dice (SimpleITK nearest-neighbour resampling), mean error against the
   ground-truth deformation inside the fixed prostate, and wall time, with ratios.

Usage: python benchmarks/bench_foundation.py [--cases 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io.transforms import from_sitk_transform, to_sitk_transform
from MMRegistrationLib.metrics.overlap import dice_per_label
from MMRegistrationLib.registration.initializers import center_of_mass_init, rigid_mask_init
from MMRegistrationLib.spatial import DisplacementField
from MMRegistrationLib.spatial.resample import resample
from MMRegistrationLib.synthetic import SyntheticCaseConfig, generate_case

OUT = Path(__file__).resolve().parent / "results"


def timed(fn, repeats: int = 3):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return value, float(np.median(times))


def bench_resampling() -> dict:
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    direction = Rotation.from_euler("xyz", [12, -7, 20], degrees=True).as_matrix()
    grid = Grid.from_geometry((128, 128, 128), (0.8, 0.8, 1.0), (-50.0, -40.0, -60.0), direction)
    image = Image(ndimage.gaussian_filter(rng.normal(size=grid.shape), 2).astype(np.float32), grid)
    field_grid = grid.resized(2.0)
    u = np.stack([ndimage.gaussian_filter(rng.normal(size=field_grid.shape), 3) for _ in range(3)], -1) * 30
    field = DisplacementField(field_grid, u)
    sitk_img, sitk_tx = image.to_sitk(), to_sitk_transform(field)
    ours, t_ours = timed(lambda: resample(image, grid, field, "linear").array)
    theirs, t_sitk = timed(lambda: sitk.GetArrayFromImage(sitk.Resample(sitk_img, sitk_img, sitk_tx, sitk.sitkLinear, 0.0)))
    return {
        "voxels": grid.num_voxels,
        "engine_s": t_ours,
        "simpleitk_s": t_sitk,
        "engine_over_simpleitk": t_ours / t_sitk,
        "max_abs_difference": float(np.abs(ours - theirs).max()),
    }


def sdm_image(seg: Image, label: int = 1) -> sitk.Image:
    mask = sitk.Cast(seg.to_sitk() == label, sitk.sitkUInt8)
    return sitk.SignedMaurerDistanceMap(mask, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)


def simpleitk_rigid(fixed_seg: Image, moving_seg: Image):
    fixed, moving = sdm_image(fixed_seg), sdm_image(moving_seg)
    init = sitk.CenteredTransformInitializer(
        sitk.Cast(fixed_seg.to_sitk() == 1, sitk.sitkFloat32), sitk.Cast(moving_seg.to_sitk() == 1, sitk.sitkFloat32),
        sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS,
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    band = sitk.Cast(sitk.Abs(fixed) < 12.0, sitk.sitkUInt8)
    reg.SetMetricFixedMask(band)
    reg.SetOptimizerAsRegularStepGradientDescent(2.0, 1e-3, 200, relaxationFactor=0.5)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0])
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetInitialTransform(init, inPlace=False)
    return reg.Execute(fixed, moving)


def evaluate(transform_sitk: sitk.Transform, case) -> dict:
    warped = sitk.Resample(case.moving_seg.to_sitk(), case.fixed_seg.to_sitk(), transform_sitk, sitk.sitkNearestNeighbor, 0)
    dice = dice_per_label(case.fixed_seg.array, sitk.GetArrayFromImage(warped), [1])[1]
    engine_tx = from_sitk_transform(transform_sitk)
    pts = case.fixed_seg.grid.world_points()[case.fixed_seg.array == 1]
    err = np.linalg.norm(engine_tx.map_points_np(pts) - case.ground_truth.map_points_np(pts), axis=1)
    return {"dice_prostate": dice, "gt_error_mean_mm": float(err.mean())}


def bench_rigid(n_cases: int, rotation_deg: float, translation_mm: float, first_seed: int = 0) -> list:
    rows = []
    for seed in range(first_seed, first_seed + n_cases):
        cfg = SyntheticCaseConfig(
            seed=seed, oblique=seed % 2 == 0, rigid_rotation_deg=rotation_deg, rigid_translation_mm=translation_mm
        )
        case = generate_case(cfg)
        com = center_of_mass_init(case.fixed_seg, case.moving_seg)
        engine_tx, t_engine = timed(lambda: rigid_mask_init(case.fixed_seg, case.moving_seg), repeats=1)
        peer_tx, t_peer = timed(lambda: simpleitk_rigid(case.fixed_seg, case.moving_seg), repeats=1)
        row = {"seed": seed, "oblique": cfg.oblique, "rotation_deg": rotation_deg, "translation_mm": translation_mm}
        row.update({f"com_{k}": v for k, v in evaluate(to_sitk_transform(com), case).items()})
        row.update({f"engine_{k}": v for k, v in evaluate(to_sitk_transform(engine_tx), case).items()})
        row.update({f"simpleitk_{k}": v for k, v in evaluate(peer_tx, case).items()})
        row.update({"engine_s": t_engine, "simpleitk_s": t_peer, "engine_over_simpleitk_time": t_engine / t_peer})
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def markdown(res: dict) -> str:
    r = res["resampling"]
    lines = [
        f"# Foundation benchmark ({res['date']}, {res['machine']}, torch threads {res['threads']})",
        "",
        "## Dense-field resampling (128^3, oblique grid, linear)",
        "",
        "| engine (s) | SimpleITK (s) | engine / SimpleITK | max abs difference |",
        "|---|---|---|---|",
        f"| {r['engine_s']:.3f} | {r['simpleitk_s']:.3f} | {r['engine_over_simpleitk']:.2f} | {r['max_abs_difference']:.2e} |",
        "",
    ]
    for title, rows in res["rigid"].items():
        lines += rigid_table(title, rows)
    return "\n".join(lines) + "\n"


def rigid_table(title: str, rows: list) -> list:
    lines = [
        "",
        f"## Rigid initialisation on masks: {title}",
        "",
        "Prostate Dice (SimpleITK nearest-neighbour resampling) and mean error against the ground-truth deformation",
        "inside the fixed prostate. The truth also holds a smooth deformation and probe compression, so no rigid",
        "transform reaches 0 mm.",
        "",
        "| seed | oblique | Dice com | Dice engine rigid-mask | Dice SimpleITK rigid | err com (mm) | err engine (mm) | err SimpleITK (mm) | time engine (s) | time SimpleITK (s) | time ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['seed']} | {row['oblique']} | {row['com_dice_prostate']:.3f} | {row['engine_dice_prostate']:.3f} | "
            f"{row['simpleitk_dice_prostate']:.3f} | {row['com_gt_error_mean_mm']:.2f} | {row['engine_gt_error_mean_mm']:.2f} | "
            f"{row['simpleitk_gt_error_mean_mm']:.2f} | {row['engine_s']:.2f} | {row['simpleitk_s']:.2f} | {row['engine_over_simpleitk_time']:.2f} |"
        )
    if rows:
        mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
        lines.append(
            f"| **mean** | | {mean('com_dice_prostate'):.3f} | {mean('engine_dice_prostate'):.3f} | {mean('simpleitk_dice_prostate'):.3f} | "
            f"{mean('com_gt_error_mean_mm'):.2f} | {mean('engine_gt_error_mean_mm'):.2f} | {mean('simpleitk_gt_error_mean_mm'):.2f} | "
            f"{mean('engine_s'):.2f} | {mean('simpleitk_s'):.2f} | {mean('engine_over_simpleitk_time'):.2f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["MMREG_THREADS"] = str(args.threads)  # the engine's runs use them too
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    res = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {platform.processor() or ''} python {sys.version.split()[0]}".strip(),
        "threads": args.threads,
        "resampling": bench_resampling(),
    }
    print(json.dumps(res["resampling"]), flush=True)
    res["rigid"] = {
        "offsets up to 8 deg / 8 mm": bench_rigid(args.cases, 8.0, 8.0, first_seed=0),
        "offsets up to 20 deg / 10 mm": bench_rigid(max(1, args.cases // 2), 20.0, 10.0, first_seed=100),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "foundation.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    (OUT / "foundation.md").write_text(markdown(res), encoding="utf-8")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
