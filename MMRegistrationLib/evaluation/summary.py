"""Cohort tables: one wide row per case, and per-metric summary statistics over the cases."""

from __future__ import annotations

import math
import re

import numpy as np

from MMRegistrationLib.evaluation.case import CaseEvaluation
from MMRegistrationLib.metrics.deformation import JACOBIAN_KEYS

LABEL_METRICS = ("dice", "msd_mm", "hd95_mm", "hd_mm")
TRE_KEYS = ("tre_mean_mm", "tre_median_mm", "tre_max_mm")
TEXT_COLUMNS = ("case", "transform", "note")
SUMMARY_COLUMNS = ("metric", "n", "n_missing", "mean", "sd", "mean_sd", "median", "min", "max")


def column_name(metric: str, label_name: str) -> str:
    """``dice_prostate``, ``msd_mm_prostate``...: metric then the label name (whitespace -> ``_``)."""
    return f"{metric}_{re.sub(r'[^0-9A-Za-z_.-]+', '_', label_name.strip())}"


def case_row(case: str, ev: CaseEvaluation, transform: str) -> dict:
    """One wide row: per-label DSC/MSD/HD95/HD, TRE mean/median/max, Jacobian statistics and the notes."""
    row: dict = {"case": case, "transform": transform}
    names = [r["name"] for r in ev.rows]
    notes = []
    for r in ev.rows:
        name = r["name"] if names.count(r["name"]) == 1 else f"{r['name']}_{r['label']}"
        for metric in LABEL_METRICS:
            row[column_name(metric, name)] = r[metric]
        if r["note"]:
            notes.append(f"{name}: {r['note']}")
    if ev.tre is not None:
        row.update({k: ev.tre[k] for k in TRE_KEYS})
        row["n_landmarks"] = len(ev.tre["tre_mm"])
    if ev.jacobian is not None:
        row.update({k: ev.jacobian[k] for k in JACOBIAN_KEYS})
    if ev.jacobian_fixed_mask is not None:
        row.update({f"{k}_fixed_mask": ev.jacobian_fixed_mask[k] for k in JACOBIAN_KEYS})
    row["note"] = " | ".join(notes)
    return row


def table_columns(rows: list) -> list:
    """Union of the rows' keys in order of first appearance, ``note`` last."""
    columns: list = []
    for row in rows:
        columns += [k for k in row if k not in columns and k != "note"]
    return columns + ["note"]


def describe(values) -> dict:
    """``n`` finite values, ``mean``, ``sd`` (sample, ddof = 1; NaN if n < 2), ``median``, ``min``, ``max``.

    Non-finite values (undefined distances) are not used; ``n_missing`` counts them.
    """
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    n = int(finite.size)
    nan = math.nan
    stats = {
        "n": n,
        "n_missing": int(arr.size - n),
        "mean": float(finite.mean()) if n else nan,
        "sd": float(finite.std(ddof=1)) if n > 1 else nan,
        "median": float(np.median(finite)) if n else nan,
        "min": float(finite.min()) if n else nan,
        "max": float(finite.max()) if n else nan,
    }
    sd_text = f"{stats['sd']:.4g}" if n > 1 else "n/a"
    stats["mean_sd"] = f"{stats['mean']:.4g} ± {sd_text}" if n else ""
    return stats


def summarize(rows: list) -> dict:
    """``{metric: describe(values over cases)}`` for every numeric column (a case lacking it counts missing)."""
    summary: dict = {}
    for column in table_columns(rows):
        if column in TEXT_COLUMNS:
            continue
        summary[column] = describe([row.get(column, math.nan) for row in rows])
    return summary


def summary_rows(summary: dict) -> list:
    """``summary.csv`` rows: one per metric with ``SUMMARY_COLUMNS``."""
    return [{"metric": metric, **stats} for metric, stats in summary.items()]
