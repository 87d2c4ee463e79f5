"""Writing evaluation reports: JSON (NaN -> null) or CSV (NaN -> empty cell), always atomically."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.evaluation.case import ROW_KEYS, CaseEvaluation, jsonable
from MMRegistrationLib.metrics.deformation import JACOBIAN_KEYS

REPORT_SUFFIXES = (".json", ".csv")
CSV_COLUMNS = ROW_KEYS[:-1] + ("tre_mm",) + JACOBIAN_KEYS + ("note",)


def report_format(path: str | os.PathLike, argument: str = "path") -> str:
    """``"json"`` or ``"csv"`` from the file name; anything else is an :class:`InputError`."""
    suffix = Path(path).suffix.lower()
    if suffix not in REPORT_SUFFIXES:
        raise InputError(argument, f"report file must end with .json or .csv, got '{Path(path).name}'")
    return suffix[1:]


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text to a temporary sibling, then rename it over ``path`` (no partial file on error)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def csv_text(rows: Iterable[dict], columns: Sequence[str]) -> str:
    """CSV with a header row; floats at full precision (``repr``), NaN/None as empty cells."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def report_rows(ev: CaseEvaluation) -> list:
    """Flat rows of a case report: one per label, one per landmark (``landmark_1``...), Jacobian rows."""
    rows = [dict(r) for r in ev.rows]
    if ev.tre is not None:
        rows += [{"label": f"landmark_{n}", "tre_mm": t} for n, t in enumerate(ev.tre["tre_mm"], start=1)]
    if ev.jacobian is not None:
        rows.append({"label": "jacobian", "name": "whole fixed grid", **ev.jacobian})
    if ev.jacobian_fixed_mask is not None:
        rows.append({"label": "jacobian_fixed_mask", "name": "union of the fixed labels", **ev.jacobian_fixed_mask})
    return rows


def write_report(ev: CaseEvaluation, path: str | os.PathLike, argument: str = "path") -> Path:
    """Write ``ev`` as JSON (:meth:`CaseEvaluation.to_dict`) or CSV (:func:`report_rows`), by extension.

    Written to a temporary name and renamed, so ``path`` is either the complete report or untouched.
    """
    fmt = report_format(path, argument)
    if fmt == "json":
        text = json.dumps(ev.to_dict(), indent=2, allow_nan=False) + "\n"
    else:
        text = csv_text(report_rows(ev), CSV_COLUMNS)
    return atomic_write_text(path, text)


def json_text(obj) -> str:
    """Strict JSON (NaN -> null) of any nested dict/list."""
    return json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n"
