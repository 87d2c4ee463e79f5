"""DISA capture-range benchmark (the DISA paper's Table 3): rigid registration from perturbed starts, binned by
the initial landmark error.

Results go to ``benchmarks/results/<out>.json`` (every run) and ``<out>.md`` (converged % per bin, median time per
method, time per similarity evaluation DISA vs LC2); ``<out>`` is ``disa_capture`` (``disa_capture_quick`` with
``--quick``). Both files are rewritten after every case (marked partial) so an interrupted run leaves something.

Start poses. Reference alignment ``R`` (fixed -> moving) = the identity for every case: the sample and generated
cases are roughly aligned by construction (landmark error ~5 mm; their ground truth is deformable, the identity is
close to its rigid best fit), the DeepReg pairs are in scanner coordinates (~20 mm). A perturbation ``P`` is a rigid
map of the fixed space: rotation about the fixed landmarks' centroid ``c`` (axis uniform on the sphere, angle uniform
in ``[0, --max-rotation-deg]``) plus a translation (direction uniform, length uniform in a range set by the bin).
The initial transform is ``R o P`` (``x -> R(P(x))``; matrix ``R.matrix @ P.matrix``, ``P.then(R)``): the fixed
points are moved first, then mapped by the reference. Initial error = mean over the landmarks of
``|R(P(f_i)) - m_i|``. Poses are drawn (seeded, per case and bin) until ``--starts-per-bin`` land in each of the
bins 0-25, 25-50, 50-75, 75-100 mm (rejection sampling).

Methods (``--methods``), all ``run_registration("disa", ..., init="none", initial=R o P)`` with ``mode="rigid"``:
``disa-local``, ``disa-global``, ``lc2-local``, ``mind-local``, ``mind-global``, ``mi-local`` (similarity-search;
engine defaults otherwise: 2 levels, 40 L-BFGS iterations, global search 500 starts within +-40 deg / +-150 mm of
the initial transform). Time = ``wall_seconds['init'] + wall_seconds['register']`` (descriptors included). Each
method runs once on the first case from the reference start before timing (discarded).

``convexadam`` — the published deformable peer convexAdam (``benchmarks/peers.py``: ``convex_adam_mind``, MIND-SSC,
convexadam 0.2.0 with its defaults, CPU) in this rigid benchmark. It takes no initial transform, so the moving image
is first resampled (linear) onto the fixed grid through the start ``S = R o P``, convexAdam registers the fixed image
to that, and the final transform is ``x -> S(x + u(x))`` (its field first, then the start). Its final error is the
mean landmark error of that composed, deformable transform (:func:`mean_error_points`); it can go below what any
rigid transform reaches, so it is left out of ``best_ref``. Time = that resampling + convexAdam (``--threads`` torch
threads). Also in ``--quick``. Skipped (with a note) when convexadam is not installed. The deformable comparison from
the unperturbed start (engine ``disa`` deformable vs convexAdam, TRE and gland Dice) is
``benchmarks/bench_disa_deformable.py``.

Convergence. Every method is also run from the reference start itself; ``best_ref`` = the lowest final landmark
error over the rigid methods from there (what rigid alignment can reach on this case; ``convexadam`` is left out
unless it is the only method). A run converged if its final mean landmark error < ``max(5 mm, 1.5 x best_ref)``
(5 mm on the roughly aligned synthetic cases; larger on DeepReg, where even the best rigid alignment leaves several
mm). A run that fails (error raised) counts as not converged.

Time per similarity evaluation (``--eval-repeats``): loss + gradient of the rigid objective at the identity pose on
one level, measured through the engine's internals (``disa._levels`` / ``pose_models.PoseModel``), warmed
up 3 times, then the median of the repeats; both similarities at the same working spacing (2 mm, one level) and at the
spacing the registration picks by default. The descriptor computation (DISA: once per image pair) is reported
separately; LC2 recomputes its statistics at every evaluation.

Usage:
    python benchmarks/bench_disa.py [--cases sample generated N deepreg N] [--methods M ...] [--starts-per-bin 20]
                                    [--threads 2] [--quick] [--out NAME]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_common  # noqa: E402

OUT = HERE / "results"
BINS = ((0.0, 25.0), (25.0, 50.0), (50.0, 75.0), (75.0, 100.0))
METHODS = {
    "disa-local": {"similarity": "disa", "search": "local"},
    "disa-global": {"similarity": "disa", "search": "global"},
    "lc2-local": {"similarity": "lc2", "search": "local"},
    "mind-local": {"similarity": "mind", "search": "local"},
    "mind-global": {"similarity": "mind", "search": "global"},
    "mi-local": {"similarity": "mi", "search": "local"},
    # the deformable peer (benchmarks/peers.py), run from the same starts (see the module docstring)
    "convexadam": {"peer": "convexadam"},
}
DEFORMABLE_METHODS = ("convexadam",)  # left out of best_ref (the rigid reference error)
QUICK_METHODS = ("disa-local", "disa-global", "mind-local", "mind-global", "mi-local", "convexadam")
CONVERGED_MIN_MM = 5.0
CONVERGED_FACTOR = 1.5


def log(message: str) -> None:
    print(message, flush=True)


# ---- start poses ----------------------------------------------------------------------------------------
def mean_error(matrix: np.ndarray, fixed_landmarks: np.ndarray, moving_landmarks: np.ndarray) -> float:
    """Mean distance (mm) between the fixed landmarks mapped by the fixed -> moving ``matrix`` and the moving ones."""
    m = np.asarray(matrix, dtype=np.float64)
    mapped = np.asarray(fixed_landmarks, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]
    return float(np.linalg.norm(mapped - np.asarray(moving_landmarks, dtype=np.float64), axis=1).mean())


def mean_error_points(mapped_fixed_landmarks: np.ndarray, moving_landmarks: np.ndarray) -> float:
    """Mean distance (mm) between the fixed landmarks already mapped to moving space (by any fixed -> moving
    transform, e.g. ``transform.map_points_np(fixed_landmarks)``) and the moving ones."""
    mapped = np.asarray(mapped_fixed_landmarks, dtype=np.float64)
    return float(np.linalg.norm(mapped - np.asarray(moving_landmarks, dtype=np.float64), axis=1).mean())


def perturbation(rotation_vector, translation, centre):
    """Rigid map of the fixed space: rotation (axis-angle, radians) about ``centre``, then + ``translation``."""
    from MMRegistrationLib.spatial.affine import AffineTransform

    return AffineTransform.from_rigid(rotation_vector, translation, centre, "fixed", "fixed")


def initial_pose(reference, perturb):
    """``reference o perturb`` (fixed -> moving): the fixed point is perturbed first, then mapped by the reference."""
    return perturb.then(reference)


def _unit(rng) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def sample_starts(reference, fixed_landmarks, moving_landmarks, per_bin: int, seed, bins=BINS,
                  max_rotation_deg: float = 30.0, max_tries: int = 100000) -> list:
    """``per_bin`` seeded start poses per initial-error bin ``[lo, hi)`` (rejection sampling; see module docstring).

    ``seed`` is an int or a sequence of ints (e.g. ``[seed, case index]``); each bin has its own stream, so the
    poses of one bin do not depend on the other bins or on ``per_bin`` of the others. Returns dicts with ``bin``
    (index), ``bin_mm``, ``matrix`` (4x4 fixed -> moving), ``initial_mm``, ``rotation_deg``, ``translation_mm``.
    Raises RuntimeError when a bin cannot be filled in ``max_tries`` draws.
    """
    flm = np.asarray(fixed_landmarks, dtype=np.float64)
    mlm = np.asarray(moving_landmarks, dtype=np.float64)
    centre = flm.mean(axis=0)
    base = [int(s) for s in np.atleast_1d(seed)]
    out = []
    for b, (lo, hi) in enumerate(bins):
        rng = np.random.default_rng(base + [b])
        found = 0
        tries = 0
        while found < per_bin:
            tries += 1
            if tries > max_tries:
                raise RuntimeError(f"sample_starts: only {found} of {per_bin} poses in [{lo}, {hi}) mm after "
                                   f"{max_tries} draws")
            angle = rng.uniform(0.0, np.radians(max_rotation_deg))
            length = rng.uniform(max(0.0, lo - 30.0), hi + 10.0)
            rotvec = angle * _unit(rng)
            translation = length * _unit(rng)
            pose = initial_pose(reference, perturbation(rotvec, translation, centre))
            err = mean_error(pose.matrix, flm, mlm)
            if lo <= err < hi:
                out.append({"bin": b, "bin_mm": [lo, hi], "matrix": pose.matrix.tolist(), "initial_mm": err,
                            "rotation_deg": float(np.degrees(angle)), "translation_mm": float(length)})
                found += 1
    return out


# ---- runs -----------------------------------------------------------------------------------------------
def run_peer(name: str, case: dict, matrix, threads: int | None = None) -> tuple:
    """A peer of ``benchmarks/peers.py`` from the fixed -> moving start ``matrix`` (module docstring: the moving image
    resampled through the start, the result ``x -> start(x + u(x))``): (final mean landmark error, seconds, info)."""
    import peers
    import torch

    from MMRegistrationLib.spatial.affine import AffineTransform

    threads = torch.get_num_threads() if threads is None else int(threads)
    start = AffineTransform(np.asarray(matrix, dtype=np.float64))
    transform, seconds, info = peers.PEERS[name](case, threads=threads, return_info=True, initial=start)
    final = mean_error_points(transform.map_points_np(case["fixed_landmarks"]), case["moving_landmarks"])
    return final, float(seconds), {"evaluations": None, "final_loss": None,
                                   "max_displacement_mm": info.get("max_displacement_mm")}


def method_available(name: str) -> bool:
    """Engine methods always; a peer when its package is installed."""
    peer = METHODS[name].get("peer")
    if peer is None:
        return True
    import peers

    return bool(peers.PEER_AVAILABLE[peer]())


def run_method(name: str, case: dict, matrix, seed: int, extra: dict, threads: int | None = None) -> tuple:
    """(final mean landmark error, seconds, info) of method ``name`` from the fixed -> moving ``matrix``."""
    from MMRegistrationLib.registration.base import RegistrationInputs
    from MMRegistrationLib.registration.pipeline import run_registration
    from MMRegistrationLib.spatial.affine import AffineTransform

    if "peer" in METHODS[name]:
        return run_peer(METHODS[name]["peer"], case, matrix, threads)
    inputs = RegistrationInputs(case["fixed"], case["moving"])
    options = dict(mode="rigid", **METHODS[name], **extra)
    result, record = run_registration("disa", inputs, init="none", options=options, seed=seed, device="cpu",
                                      initial=AffineTransform(np.asarray(matrix)))
    wall = record["wall_seconds"]
    final = mean_error(result.transform.matrix, case["fixed_landmarks"], case["moving_landmarks"])
    info = record["method_info"]
    return final, float(wall["init"] + wall["register"]), {"evaluations": info.get("evaluations"),
                                                          "final_loss": info.get("final_loss")}


def run_case(case: dict, index: int, methods: list, args) -> dict:
    from MMRegistrationLib.spatial.affine import AffineTransform

    reference = AffineTransform.identity()
    flm, mlm = case["fixed_landmarks"], case["moving_landmarks"]
    ref_mm = mean_error(reference.matrix, flm, mlm)
    log(f"== {case['source']}/{case['name']}: {len(flm)} landmarks, reference (identity) error {ref_mm:.2f} mm")
    starts = sample_starts(reference, flm, mlm, args.starts_per_bin, [args.seed, index],
                           max_rotation_deg=args.max_rotation_deg)
    out = {"case": case["name"], "dataset": case["source"], "landmarks": int(len(flm)), "reference_mm": ref_mm,
           "from_reference": {}, "runs": []}
    for name in methods:
        try:
            final, seconds, info = run_method(name, case, reference.matrix, args.seed, args.extra, args.threads)
            out["from_reference"][name] = {"final_mm": final, "seconds": seconds, **info}
            log(f"  reference start {name:<12} {ref_mm:6.2f} -> {final:6.2f} mm  {seconds:6.2f} s")
        except Exception as err:
            out["from_reference"][name] = {"error": f"{type(err).__name__}: {err}"}
            log(f"  reference start {name}: FAILED {type(err).__name__}: {err}")
    rigid = [n for n in methods if n not in DEFORMABLE_METHODS] or list(methods)
    finals = [out["from_reference"][n]["final_mm"] for n in rigid if "final_mm" in out["from_reference"].get(n, {})]
    out["best_ref_mm"] = float(min(finals)) if finals else float("nan")
    out["threshold_mm"] = float(max(CONVERGED_MIN_MM, CONVERGED_FACTOR * out["best_ref_mm"])) if finals \
        else CONVERGED_MIN_MM
    log(f"  converged if final < {out['threshold_mm']:.2f} mm (best from reference {out['best_ref_mm']:.2f} mm)")
    for k, start in enumerate(starts):
        for name in methods:
            row = {"method": name, "start": k, "bin": start["bin"], "initial_mm": start["initial_mm"],
                   "rotation_deg": start["rotation_deg"], "translation_mm": start["translation_mm"]}
            try:
                final, seconds, info = run_method(name, case, start["matrix"], args.seed, args.extra, args.threads)
                row.update(final_mm=final, seconds=seconds, converged=bool(final < out["threshold_mm"]), **info)
            except Exception as err:  # a failure is a non-converged run
                row.update(final_mm=float("nan"), seconds=float("nan"), converged=False,
                           error=f"{type(err).__name__}: {err}")
            out["runs"].append(row)
        done = [r for r in out["runs"] if r["start"] == k]
        log(f"  start {k:3d} bin {start['bin']} initial {start['initial_mm']:6.2f} mm: " + "  ".join(
            f"{r['method']}={'ERR' if 'error' in r else format(r['final_mm'], '.1f')}{'*' if r['converged'] else ''}"
            for r in done))
    return out


# ---- evaluation timing ----------------------------------------------------------------------------------
def time_evaluations(case: dict, repeats: int) -> list:
    """Seconds per evaluation of DISA and LC2 on the same working grid (module docstring); engine internals.

    Two regimes: loss + gradient at the identity pose (local optimisation; median of ``repeats`` after 3 warm-ups)
    and the loss alone for a batch of poses (global search; DISA: 500 poses in the engine's batches, LC2: 8 poses one
    at a time as the engine does; seconds per pose, median of 3 after a warm-up)."""
    import torch

    from MMRegistrationLib.registration import disa as D
    from MMRegistrationLib.registration.global_search import evaluate_in_batches, sample_poses
    from MMRegistrationLib.registration.pose_models import PoseModel

    rows = []
    default = D.working_spacing(case["fixed"], case["moving"], D.disa_config(mode="rigid"))
    for label, spacing in (("2 mm", 2.0), ("default", default)):
        for similarity in ("disa", "lc2"):
            config = D.disa_config(mode="rigid", similarity=similarity, spacing_mm=spacing, levels=1)
            backend = None if similarity == "lc2" else D._backend(config, None, torch.device("cpu"))
            levels, describe_s, _ = D._levels(case["fixed"], case["moving"], config, backend, None, None,
                                              torch.device("cpu"))
            level = levels[-1]
            centre = level.points.detach().to(torch.float64).mean(0).numpy()
            model = PoseModel("rigid", centre, np.eye(4))
            params = torch.zeros(6, dtype=torch.float64, requires_grad=True)

            def once():
                params.grad = None
                loss = level.evaluate(model.map(params[None], level.points))[0][0]
                loss.backward()

            for _ in range(3):
                once()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                once()
                times.append(time.perf_counter() - t0)
            poses = sample_poses(500 if similarity == "disa" else 8, 10.0, -10.0 * np.ones(3), 10.0 * np.ones(3), 0)

            def batch():
                evaluate_in_batches(lambda p: level.evaluate(model.map(p, level.points)), poses, level.batch_size())

            batch()
            batch_times = []
            for _ in range(3):
                t0 = time.perf_counter()
                batch()
                batch_times.append((time.perf_counter() - t0) / len(poses))
            rows.append({"similarity": similarity, "spacing": label, "working_spacing_mm": float(spacing),
                         "points": int(level.count), "seconds_per_evaluation": float(np.median(times)),
                         "seconds_per_pose_batched": float(np.median(batch_times)),
                         "describe_seconds": float(describe_s) if similarity == "disa" else None})
            log(f"  eval timing {similarity} at {spacing:g} mm: {level.count} points, "
                f"{1e3 * np.median(times):.2f} ms per loss+gradient, {1e3 * np.median(batch_times):.3f} ms per pose "
                "in a batch")
    return rows


def time_descriptors(repeats: int = 5, size: int = 128) -> list:
    """Seconds to describe a ``size^3`` volume (2 mm, smoothed noise, no field-of-view edge) with the shipped
    network, per precision (median of ``repeats`` after one warm-up), and the largest descriptor difference to
    float32."""
    from scipy import ndimage

    from MMRegistrationLib.core.grid import Grid
    from MMRegistrationLib.core.image import Image
    from MMRegistrationLib.networks.disa import load_disa
    from MMRegistrationLib.similarity.descriptors import NetworkDescriptors
    from MMRegistrationLib.similarity.disa import native_bfloat16, prepare_volume

    network, _ = load_disa(None, device="cpu")
    rng = np.random.default_rng(0)
    data = ndimage.gaussian_filter(rng.normal(size=(size,) * 3), 2.0).astype(np.float32)
    prepared = prepare_volume(Image(data, Grid.from_geometry(data.shape, (2.0, 2.0, 2.0))), 2.0)
    rows, reference = [], None
    for precision in ("float32", "bfloat16"):
        backend = NetworkDescriptors(network, device="cpu", precision=precision)  # what registration uses
        backend(prepared)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = backend(prepared).descriptors
            times.append(time.perf_counter() - t0)
        reference = out if reference is None else reference
        rows.append({"precision": precision, "size": size, "seconds": float(np.median(times)),
                     "max_abs_difference_to_float32": float((out - reference).abs().max()),
                     "native_bfloat16": native_bfloat16("cpu")})
        log(f"  descriptors {size}^3 {precision}: {rows[-1]['seconds']:.3f} s")
    return rows


# ---- report ---------------------------------------------------------------------------------------------
def summarize(cases: list, methods: list) -> dict:
    runs = [dict(r, case=c["case"]) for c in cases for r in c["runs"]]
    out = {}
    for name in methods:
        mr = [r for r in runs if r["method"] == name]
        per_bin = []
        for b in range(len(BINS)):
            br = [r for r in mr if r["bin"] == b]
            per_bin.append({"n": len(br), "converged": sum(r["converged"] for r in br),
                            "failed": sum("error" in r for r in br)})
        secs = [r["seconds"] for r in mr if np.isfinite(r["seconds"])]
        out[name] = {"bins": per_bin, "n": len(mr), "converged": sum(r["converged"] for r in mr),
                     "median_seconds": float(np.median(secs)) if secs else None}
    return out


def markdown(res: dict) -> str:
    bins = [f"{lo:g}-{hi:g} mm" for lo, hi in BINS]
    lines = [
        f"# DISA capture range ({res['date']}, {res['machine']}){' — PARTIAL' if res.get('partial') else ''}",
        "",
        f"Threads: {res['threads']}. Load average before/after: {res['load_before']} / {res['load_after']} (the "
        "machine may be shared). Rigid registration (`run_registration('disa', mode='rigid', init='none')`) from "
        f"{res['starts_per_bin']} seeded starts per initial-error bin and case; reference start = identity; starts = "
        f"reference o P, P = rotation about the fixed landmarks' centroid (0-{res['max_rotation_deg']:g} deg) + "
        "translation, drawn until the initial mean landmark error falls in the bin. Converged: final mean landmark "
        f"error < max({CONVERGED_MIN_MM:g} mm, {CONVERGED_FACTOR:g} x the best final error of any rigid method from "
        "the reference start) on that case; failures count as not converged. Time = registration wall time "
        "(descriptors included), median over every run.",
        f"Cases: {', '.join(c['case'] for c in res['cases'])}.",
        "",
        "| method | " + " | ".join(bins) + " | all | median time (s) |",
        "|---|" + "---|" * (len(bins) + 2),
    ]
    for name, e in res["summary"].items():
        cells = []
        for b in e["bins"]:
            pct = 100.0 * b["converged"] / b["n"] if b["n"] else float("nan")
            cells.append(f"{pct:.0f}% ({b['converged']}/{b['n']}{', ' + str(b['failed']) + ' failed' if b['failed'] else ''})")
        allpct = 100.0 * e["converged"] / e["n"] if e["n"] else float("nan")
        t = "–" if e["median_seconds"] is None else f"{e['median_seconds']:.2f}"
        label = f"{name} (deformable peer)" if name in DEFORMABLE_METHODS else name
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {allpct:.0f}% ({e['converged']}/{e['n']}) | {t} |")
    lines += ["", "## Per case: from the reference start", "",
              "| case | reference error (mm) | threshold (mm) | " + " | ".join(res["methods"]) + " |",
              "|---|---|---|" + "---|" * len(res["methods"])]
    for c in res["cases"]:
        cells = []
        for name in res["methods"]:
            r = c["from_reference"].get(name, {})
            cells.append("failed" if "error" in r else f"{r['final_mm']:.2f} mm, {r['seconds']:.2f} s" if r else "–")
        lines.append(f"| {c['case']} | {c['reference_mm']:.2f} | {c['threshold_mm']:.2f} | " + " | ".join(cells) + " |")
    if res.get("evaluation_timing"):
        lines += ["", "## Time per similarity evaluation (rigid, one level, same working grid)", "",
                  f"Case {res['evaluation_timing_case']}; engine internals (`disa._levels`, `PoseModel`). 'loss + "
                  f"gradient': at the identity pose, median of {res['eval_repeats']} after 3 warm-ups (local "
                  "optimisation). 'per pose, batched': loss only, DISA 500 poses in the engine's batches, LC2 8 poses "
                  "(global search), median of 3. Both similarities on the same working grid; DISA evaluates its "
                  "descriptors (stride 4) at fewer points than LC2 (every fixed voxel in the field of view); the "
                  "descriptors are computed once per image pair (column 'describe').", "",
                  "| spacing | similarity | working spacing (mm) | points | ms / loss + gradient | LC2 / DISA | "
                  "ms / pose, batched | LC2 / DISA | describe (s) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        et = res["evaluation_timing"]
        for r in et:
            disa_row = next(x for x in et if x["spacing"] == r["spacing"] and x["similarity"] == "disa")
            ratio = r["seconds_per_evaluation"] / disa_row["seconds_per_evaluation"]
            batched = r.get("seconds_per_pose_batched")
            bratio = "–" if batched is None else f"{batched / disa_row['seconds_per_pose_batched']:.0f}"
            bcell = "–" if batched is None else f"{1e3 * batched:.3f}"
            desc = "–" if r["describe_seconds"] is None else f"{r['describe_seconds']:.2f}"
            lines.append(f"| {r['spacing']} | {r['similarity']} | {r['working_spacing_mm']:g} | {r['points']} | "
                         f"{1e3 * r['seconds_per_evaluation']:.2f} | {ratio:.1f} | {bcell} | {bratio} | {desc} |")
    if res.get("descriptor_timing"):
        native = res["descriptor_timing"][0]["native_bfloat16"]
        lines += ["", "## Descriptors of a 128^3 volume (shipped network, 2 mm, one forward pass)", "",
                  f"Median of 5 after a warm-up; this CPU {'has' if native else 'lacks'} native bfloat16 (the default "
                  f"`--precision auto` picks {'bfloat16' if native else 'float32'} here).", "",
                  "| precision | seconds | max difference to float32 |", "|---|---|---|"]
        for r in res["descriptor_timing"]:
            lines.append(f"| {r['precision']} | {r['seconds']:.3f} | {r['max_abs_difference_to_float32']:.1e} |")
    for note in res.get("notes", []):
        lines.append(f"\nNote: {note}")
    return "\n".join(lines) + "\n"


def versions() -> dict:
    return bench_common.versions()


def write(res: dict, out_name: str) -> None:
    bench_common.write_results(res, out_name, markdown, summarize)


def case_sources(spec: list, quick: bool):
    """``--cases`` words (``sample``, ``generated N``, ``deepreg N``) -> iterator of cases with landmarks."""
    import datasets

    words = list(spec)
    i = 0
    while i < len(words):
        word = words[i]
        n = None
        if i + 1 < len(words) and words[i + 1].isdigit():
            n = int(words[i + 1])
            i += 1
        i += 1
        if word == "sample":
            yield datasets.sample_case()
        elif word == "generated":
            yield from datasets.generated_cases(n if n is not None else 5)
        elif word == "deepreg":
            yield from datasets.deepreg_cases(limit=n if n is not None else 5)
        else:
            raise SystemExit(f"--cases: unknown word '{word}' (sample, generated N, deepreg N)")


# ---- main -----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["sample", "generated", "5", "deepreg", "5"],
                        help="sample | generated N | deepreg N (default: sample generated 5 deepreg 5)")
    parser.add_argument("--methods", nargs="+", default=None, choices=list(METHODS))
    parser.add_argument("--starts-per-bin", type=int, default=20)
    parser.add_argument("--max-rotation-deg", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true",
                        help="1 case (sample), 3 starts per bin, methods " + ", ".join(QUICK_METHODS))
    parser.add_argument("--out", default=None, help="results name under benchmarks/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases = ["sample"]
        args.starts_per_bin = min(args.starts_per_bin, 3)
        args.methods = args.methods or list(QUICK_METHODS)
    methods = args.methods or list(METHODS)
    skipped = [name for name in methods if not method_available(name)]
    methods = [name for name in methods if name not in skipped]
    args.extra = {}
    out_name = args.out or ("disa_capture_quick" if args.quick else "disa_capture")

    import SimpleITK as sitk
    import torch

    torch.set_num_threads(args.threads)

    os.environ["MMREG_THREADS"] = str(args.threads)  # the engine's runs use them too
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
        "threads": args.threads, "methods": methods, "starts_per_bin": args.starts_per_bin,
        "max_rotation_deg": args.max_rotation_deg, "seed": args.seed, "bins_mm": [list(b) for b in BINS],
        "quick": args.quick, "versions": versions(), "load_before": [round(v, 2) for v in os.getloadavg()],
        "cases": [], "notes": [], "partial": True, "eval_repeats": args.eval_repeats,
    }
    for name in skipped:
        res["notes"].append(f"{name}: its package is not installed (pip install --no-deps -r "
                            "benchmarks/requirements.txt); skipped")
    if any(name in DEFORMABLE_METHODS for name in methods):
        res["notes"].append("convexadam is the deformable peer in this rigid benchmark (convexAdam 0.2.0, MIND-SSC, "
                            "its published defaults, CPU): the moving image is resampled through the start pose, "
                            "convexAdam registers it, and its error is that of the deformable result start o (id + u) "
                            "— it can beat any rigid alignment, so it is left out of the convergence threshold's best "
                            "reference error. Its time = resampling + convexAdam.")
    if args.quick:
        res["notes"].append("--quick: sample case only, 3 starts per bin, lc2-local left out (slow reference; its "
                            "per-evaluation time is still measured)")
    log(f"methods: {', '.join(methods)}; threads {args.threads}; {args.starts_per_bin} starts per bin")
    t_start = time.perf_counter()
    warmed = False
    for index, case in enumerate(case_sources(args.cases, args.quick)):
        if case["fixed_landmarks"] is None or len(case["fixed_landmarks"]) == 0:
            res["notes"].append(f"{case['name']}: no landmarks; skipped")
            continue
        if not warmed:
            for name in methods:
                t0 = time.perf_counter()
                try:
                    run_method(name, case, np.eye(4), args.seed, args.extra, args.threads)
                    log(f"warm-up {name} on {case['name']}: {time.perf_counter() - t0:.1f} s (discarded)")
                except Exception as err:
                    log(f"warm-up {name} failed: {type(err).__name__}: {err}")
            log("time to describe a 128^3 volume:")
            try:
                res["descriptor_timing"] = time_descriptors()
            except Exception as err:
                res["notes"].append(f"descriptor timing failed: {type(err).__name__}: {err}")
            log("time per similarity evaluation (DISA vs LC2):")
            try:
                res["evaluation_timing"] = time_evaluations(case, args.eval_repeats)
                res["evaluation_timing_case"] = case["name"]
            except Exception as err:
                res["notes"].append(f"evaluation timing failed: {type(err).__name__}: {err}")
                log(traceback.format_exc(limit=3))
            warmed = True
        res["cases"].append(run_case(case, index, methods, args))
        res["total_seconds"] = time.perf_counter() - t_start
        write(res, out_name)
    res["partial"] = False
    res["total_seconds"] = time.perf_counter() - t_start
    write(res, out_name)
    log(markdown(res))
    log(f"wrote {OUT / (out_name + '.json')} and {OUT / (out_name + '.md')} ({res['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
