"""Segmentation benchmark (issue 13, paper 003): the shipped prostate segmentation networks, and the fully automatic
MR -> TRUS pipeline (predicted segmentations -> registration) against the same pipeline given the segmentations.

1. **Segmentation accuracy** per modality (TRUS = fixed images, MR = moving images): gland Dice and HD95 of the
   predicted mask (cleaned, on the image's own grid) against the given label, and the volume error, on
   * DeepReg ``obs070-079``: never loaded by training (model selection used ``obs060-069``);
   * generated cases of seeds ``9000+`` (training used ``6000-6015``), oblique on even seeds;
   * the real TRUS volumes of ``trus_real/`` (no labels): the predicted volume and the quality warnings only.
2. **Fully automatic pipeline** on DeepReg ``obs070-079``: each method run twice on the same pair, with the given
   gland segmentations and with the predicted ones (what ``--fixed-seg auto --moving-seg auto`` does); both
   evaluated against the **given** labels (gland DSC, HD95) and the landmark centroids (TRE). Methods:
   ``rigid-mask``; ``net-srml`` (paper 003: rigid alignment on the masks, then the dual-stream network on the
   images); ``net-both_masks`` (both masks as network inputs); ``sinr-fast``. The ratio row = automatic TRE /
   manual TRE per method (target <= 1.2) and the automatic DSC (target >= 0.85).

Results: ``benchmarks/results/<out>.json`` and ``.md``. Every method runs once before timing (discarded).

Usage:
    python benchmarks/bench_segment.py [--threads 1] [--generated 10] [--out segment]
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

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_net  # noqa: E402
import bench_sinr  # noqa: E402
import datasets  # noqa: E402

OUT = HERE / "results"
TEST_NAMES = tuple(f"obs{n:03d}" for n in range(70, 80))
PIPELINES = ("rigid-mask", "net-srml", "net-both_masks", "sinr-fast")
GENERATED_FIRST_SEED = 9000
TARGET_DICE = 0.88
TARGET_AUTO_DSC = 0.85
TARGET_TRE_RATIO = 1.2


def log(message: str) -> None:
    print(message, flush=True)


# ---- segmentation accuracy ---------------------------------------------------------------------------------------
def predict(image, modality: str) -> tuple:
    """``(mask Image, warnings, seconds)`` with the shipped network (prediction + resampling + cleaning)."""
    from MMRegistrationLib.segmentation.predict import predict_gland
    from MMRegistrationLib.segmentation.weights import load_segmentation_net

    network, config, _ = load_segmentation_net(modality)
    t0 = time.perf_counter()
    predicted = predict_gland(network, config, image)
    return predicted.mask, predicted.warnings, time.perf_counter() - t0


def mask_scores(truth, predicted) -> dict:
    """Dice, HD95 (mm) and volumes (ml) of a predicted gland against the given one (same grid)."""
    from MMRegistrationLib.evaluation.case import evaluate_case
    from MMRegistrationLib.segmentation.postprocess import volume_ml

    row = evaluate_case(truth, predicted, None, {1: "prostate"}).row(1)
    given, found = volume_ml(truth.array > 0, truth.grid), volume_ml(predicted.array > 0, predicted.grid)
    return {"dice": row["dice"], "hd95_mm": row["hd95_mm"], "volume_ml": found, "given_volume_ml": given,
            "volume_error_percent": 100.0 * (found - given) / given}


def segmentation_rows(cases, dataset: str) -> list:
    rows = []
    for case in cases:
        for modality, side in (("trus", "fixed"), ("mr", "moving")):
            mask, warnings, seconds = predict(case[side], modality)
            seg = case[f"{side}_seg"]
            gland = seg.with_array((seg.array == 1).astype(np.uint8))  # label 1 is the gland in every source
            row = {"dataset": dataset, "case": case["name"], "modality": modality, "seconds": seconds,
                   "warnings": warnings, **mask_scores(gland, mask)}
            rows.append(row)
            log(f"  {dataset} {case['name']} {modality:4s} Dice {row['dice']:.3f} HD95 {row['hd95_mm']:.2f} mm "
                f"volume {row['volume_ml']:.1f}/{row['given_volume_ml']:.1f} ml {seconds:.2f} s "
                f"{'; '.join(warnings)}")
    return rows


def real_trus_rows(folder: Path) -> list:
    from MMRegistrationLib.io.images import read_image
    from MMRegistrationLib.segmentation.postprocess import volume_ml

    rows = []
    for path in sorted(folder.glob("*.nrrd")):
        image = read_image(path)
        mask, warnings, seconds = predict(image, "trus")
        rows.append({"case": path.name, "volume_ml": volume_ml(mask.array > 0, mask.grid), "seconds": seconds,
                     "warnings": warnings, "grid": str(image.grid)})
        log(f"  real {path.name}: {rows[-1]['volume_ml']:.1f} ml, {seconds:.2f} s, {'; '.join(warnings) or 'no warning'}")
    return rows


def generated_cases(count: int):
    """Generated cases of seeds ``GENERATED_FIRST_SEED ...`` (full resolution, oblique on even seeds)."""
    from MMRegistrationLib.synthetic import SyntheticCaseConfig, generate_case

    for seed in range(GENERATED_FIRST_SEED, GENERATED_FIRST_SEED + count):
        case = generate_case(SyntheticCaseConfig(seed=seed, oblique=seed % 2 == 0))
        yield {"name": f"gen{seed}", "fixed": case.fixed, "moving": case.moving, "fixed_seg": case.fixed_seg,
               "moving_seg": case.moving_seg}


# ---- the automatic pipeline ----------------------------------------------------------------------------------------
def pipeline_runners() -> dict:
    runners = bench_sinr.resolve_methods(["rigid-mask", "sinr-fast"])
    for name in ("net-srml", "net-both_masks"):
        weights, segs = bench_net.NETWORKS[name]
        runners[name] = bench_net.net_runner(weights, segs)
    return {name: runners[name] for name in PIPELINES if name in runners}


def with_predicted_segmentations(case: dict) -> tuple:
    """The case with its segmentations replaced by the predicted glands (label 1), and the seconds it took."""
    fixed_mask, _, t_fixed = predict(case["fixed"], "trus")
    moving_mask, _, t_moving = predict(case["moving"], "mr")
    return dict(case, fixed_seg=fixed_mask, moving_seg=moving_mask), t_fixed + t_moving


def pipeline_rows(cases: list, runners: dict, threads: int) -> list:
    rows = []
    for case in cases:
        auto, seg_seconds = with_predicted_segmentations(case)
        for name, run in runners.items():
            for mode, given in (("manual", case), ("automatic", auto)):
                transform, seconds, _ = run(given, threads, "cpu")
                scores = bench_sinr.evaluate(case, transform)  # always against the given labels
                rows.append({"case": case["name"], "method": name, "segmentations": mode, "seconds": seconds,
                             "segmentation_seconds": seg_seconds if mode == "automatic" else 0.0,
                             **{k: scores[k] for k in ("dice", "hd95_mm", "tre_mean_mm")}})
                log(f"  {case['name']} {name:15s} {mode:9s} DSC {scores['dice']:.3f} TRE {scores['tre_mean_mm']:.2f} mm "
                    f"{seconds:.2f} s")
    return rows


# ---- report --------------------------------------------------------------------------------------------------------
def _values(rows, key) -> np.ndarray:
    return np.array([r[key] for r in rows], dtype=float)


def markdown(res: dict) -> str:
    ms = bench_sinr.mean_sd
    lines = [f"# Segmentation benchmark ({res['date']}, {res['machine']})", "",
             f"Threads: {res['threads']}; device cpu. Versions: "
             + ", ".join(f"{k} {v}" for k, v in res["versions"].items()) + ".", "",
             f"Networks: {', '.join(f'{m} {w}' for m, w in res['networks'].items())}.", "",
             "## Segmentation accuracy (predicted gland against the given label, on the image's own grid)", "",
             "| data | modality | n | Dice | HD95 (mm) | volume error (%) | time (s) | cases with a warning |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset in dict.fromkeys(r["dataset"] for r in res["segmentation"]):
        for modality in ("trus", "mr"):
            rows = [r for r in res["segmentation"] if r["dataset"] == dataset and r["modality"] == modality]
            if rows:
                lines.append(f"| {dataset} | {modality.upper()} | {len(rows)} | {ms(_values(rows, 'dice'), 3)} | "
                             f"{ms(_values(rows, 'hd95_mm'))} | {ms(_values(rows, 'volume_error_percent'), 1)} | "
                             f"{ms(_values(rows, 'seconds'))} | {sum(bool(r['warnings']) for r in rows)} |")
    lines += ["", f"Target: Dice >= {TARGET_DICE} per modality (paper 003: 0.886 MR, 0.904 TRUS on mu-RegPro).", ""]
    if res.get("real_trus"):
        lines += ["Real TRUS (no labels): " + "; ".join(
            f"{r['case']} {r['volume_ml']:.1f} ml ({', '.join(r['warnings']) or 'no warning'})"
            for r in res["real_trus"]) + ".", ""]
    if res.get("pipeline"):
        lines += ["## Fully automatic pipeline (DeepReg obs070-079; DSC against the given labels, TRE of landmarks)", "",
                  "| method | segmentations | n | DSC | HD95 (mm) | TRE (mm) | registration (s) | + segmentation (s) |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in dict.fromkeys(r["method"] for r in res["pipeline"]):
            for mode in ("manual", "automatic"):
                rows = [r for r in res["pipeline"] if r["method"] == name and r["segmentations"] == mode]
                lines.append(f"| {name} | {mode} | {len(rows)} | {ms(_values(rows, 'dice'), 3)} | "
                             f"{ms(_values(rows, 'hd95_mm'))} | {ms(_values(rows, 'tre_mean_mm'))} | "
                             f"{ms(_values(rows, 'seconds'))} | {ms(_values(rows, 'segmentation_seconds'))} |")
        lines += ["", "| method | automatic DSC | TRE automatic / manual | targets met |", "|---|---|---|---|"]
        for name, s in res["pipeline_summary"].items():
            lines.append(f"| {name} | {s['automatic_dice']:.3f} | {s['tre_ratio']:.2f} | "
                         f"{'yes' if s['targets_met'] else 'no'} |")
        lines += ["", f"Targets: automatic gland DSC >= {TARGET_AUTO_DSC} (paper 003: 0.859) and TRE <= "
                      f"{TARGET_TRE_RATIO}x the manual pipeline's (mean over the cases)."]
    return "\n".join(lines) + "\n"


def pipeline_summary(rows: list) -> dict:
    out = {}
    for name in dict.fromkeys(r["method"] for r in rows):
        manual = [r for r in rows if r["method"] == name and r["segmentations"] == "manual"]
        auto = [r for r in rows if r["method"] == name and r["segmentations"] == "automatic"]
        dice = float(np.mean(_values(auto, "dice")))
        ratio = float(np.mean(_values(auto, "tre_mean_mm")) / np.mean(_values(manual, "tre_mean_mm")))
        out[name] = {"automatic_dice": dice, "manual_dice": float(np.mean(_values(manual, "dice"))),
                     "tre_ratio": ratio, "targets_met": dice >= TARGET_AUTO_DSC and ratio <= TARGET_TRE_RATIO}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--generated", type=int, default=10, help=f"generated cases (seeds {GENERATED_FIRST_SEED}+)")
    parser.add_argument("--deepreg-root", type=Path, default=None)
    parser.add_argument("--no-pipeline", action="store_true", help="segmentation accuracy only")
    parser.add_argument("--out", default="segment")
    args = parser.parse_args(argv)

    import SimpleITK as sitk
    import torch

    from MMRegistrationLib.evaluation.case import jsonable
    from MMRegistrationLib.segmentation.weights import default_segmentation_weights

    torch.set_num_threads(args.threads)
    os.environ["MMREG_THREADS"] = str(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    t0 = time.perf_counter()
    networks = {m: json.loads(default_segmentation_weights(m).with_suffix(".json").read_text())["sha256"][:12]
                for m in ("trus", "mr")}
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()} {os.cpu_count()} cpus",
           "threads": args.threads, "versions": bench_sinr.versions(), "networks": networks, "segmentation": []}
    deepreg = []
    if datasets.deepreg_available(args.deepreg_root):
        deepreg = [datasets.deepreg_case(args.deepreg_root or datasets.DEEPREG_ROOT, n) for n in TEST_NAMES]
        predict(deepreg[0]["fixed"], "trus")  # warm-up
        predict(deepreg[0]["moving"], "mr")
        res["segmentation"] += segmentation_rows(deepreg, "deepreg test")
    else:
        log("note: DeepReg data not found; generated cases only")
    if args.generated > 0:
        res["segmentation"] += segmentation_rows(generated_cases(args.generated), "generated")
    real = (args.deepreg_root or datasets.DEEPREG_ROOT).parent / "trus_real"
    if real.is_dir():
        res["real_trus"] = real_trus_rows(real)
    if deepreg and not args.no_pipeline:
        runners = pipeline_runners()
        for name, run in runners.items():  # warm-up
            run(deepreg[0], args.threads, "cpu")
        res["pipeline"] = pipeline_rows(deepreg, runners, args.threads)
        res["pipeline_summary"] = pipeline_summary(res["pipeline"])
    res["total_seconds"] = time.perf_counter() - t0
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.out}.json").write_text(json.dumps(jsonable(res), indent=1), encoding="utf-8")
    (OUT / f"{args.out}.md").write_text(markdown(res), encoding="utf-8")
    log(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
