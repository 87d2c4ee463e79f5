"""Batch evaluation of a cohort: one folder per case, one table row per case, summary statistics and figures.

Case folder layout: ``fixed_seg.*`` and ``moving_seg.*`` (label map in any image format or Slicer
``.seg.nrrd``), optional ``fixed_landmarks.*``/``moving_landmarks.*`` (CSV, ``.fcsv``, ``.mrk.json``),
optional transform file (``transform_name``, default ``transform.h5``; absent = identity), optional ``fixed.*``
image (figure background) and optional ``case.json`` with ``{"labels": {"1": "prostate", ...}}``.

Outputs (``out_dir``, written whole or not at all): ``cases.csv``, ``summary.csv``, ``summary.json``,
``<case>.png`` per case and ``boxplots.png``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.evaluation.case import evaluate_case
from MMRegistrationLib.evaluation.report import atomic_write_text, csv_text, json_text
from MMRegistrationLib.evaluation.summary import SUMMARY_COLUMNS, case_row, summarize, summary_rows, table_columns


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case folder (None = absent)."""

    name: str
    folder: Path
    fixed_seg: Path
    moving_seg: Path
    fixed_landmarks: Optional[Path]
    moving_landmarks: Optional[Path]
    transform: Optional[Path]
    fixed_image: Optional[Path]


def find_case_file(folder: Path, stem: str, argument: str, required: bool) -> Optional[Path]:
    """The one ``stem.*`` file of a case folder (None when absent and not ``required``); several is an error."""
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith(stem + "."))
    if len(found) > 1:
        raise InputError(argument, f"case folder {folder} has several {stem}.* files: {[p.name for p in found]}")
    if not found and required:
        raise InputError(argument, f"case folder {folder} has no {stem}.* file (e.g. {stem}.nrrd)")
    return found[0] if found else None


def case_files(folder: str | os.PathLike, transform_name: str = "transform.h5", argument: str = "--cohort") -> CaseFiles:
    """Locate the files of one case folder (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(argument, f"case folder not found: {folder}")
    transform = folder / transform_name
    return CaseFiles(
        name=folder.name,
        folder=folder,
        fixed_seg=find_case_file(folder, "fixed_seg", argument, True),
        moving_seg=find_case_file(folder, "moving_seg", argument, True),
        fixed_landmarks=find_case_file(folder, "fixed_landmarks", argument, False),
        moving_landmarks=find_case_file(folder, "moving_landmarks", argument, False),
        transform=transform if transform.is_file() else None,
        fixed_image=find_case_file(folder, "fixed", argument, False),
    )


def find_cases(case_dirs_or_dir, exclude: Optional[Path] = None, argument: str = "--cohort") -> list:
    """Case folders: the non-hidden sub-folders of one cohort folder (sorted), or an explicit list."""
    if isinstance(case_dirs_or_dir, (str, os.PathLike)):
        root = Path(case_dirs_or_dir)
        if not root.is_dir():
            raise InputError(argument, f"cohort folder not found: {root}")
        skip = exclude.resolve() if exclude is not None else None
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.resolve() != skip)
    else:
        folders = [Path(p) for p in case_dirs_or_dir]
    if not folders:
        raise InputError(argument, f"no case folder in {case_dirs_or_dir}")
    names = [p.name for p in folders]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(argument, f"case folder names must be unique (they name the rows and figures): {duplicates}")
    return folders


def _label_names(folder: Path, argument: str) -> dict:
    path = folder / "case.json"
    if not path.is_file():
        return {}
    try:
        labels = json.loads(path.read_text(encoding="utf-8")).get("labels", {})
        return {int(k): str(v) for k, v in labels.items()}
    except (ValueError, AttributeError, TypeError):
        raise InputError(argument, f"{path}: 'labels' must map label values to names") from None


def load_case(files: CaseFiles, label_channel: Optional[int] = None) -> dict:
    """Read one case: ``evaluate_case`` keyword arguments plus ``fixed_image`` (or None). ``label_channel``: the
    channel of 4-D label images to evaluate (``--label-channel``). A fixed segmentation outside the fixed image's
    field of view (when there is one) is an error."""
    from MMRegistrationLib.io import match_segmentations, read_image, read_landmarks, read_segmentation, read_transform
    from MMRegistrationLib.io.segmentations import check_on_image

    def arg(path: Path) -> str:
        return f"{files.name}/{path.name}"

    fixed_seg = read_segmentation(files.fixed_seg, arg(files.fixed_seg), label_channel)
    fixed_image = read_image(files.fixed_image, arg(files.fixed_image)) if files.fixed_image is not None else None
    if fixed_image is not None:
        check_on_image(fixed_seg.labelmap, fixed_image.grid, arg(files.fixed_seg), arg(files.fixed_image))
    fseg, mseg, names = match_segmentations(
        fixed_seg, read_segmentation(files.moving_seg, arg(files.moving_seg), label_channel),
        arg(files.fixed_seg), arg(files.moving_seg),
    )
    names = names or _label_names(files.folder, arg(files.folder / "case.json"))
    if (files.fixed_landmarks is None) != (files.moving_landmarks is None):
        present = files.fixed_landmarks or files.moving_landmarks
        raise InputError(arg(present), "landmarks must be given for both images (fixed_landmarks.* and moving_landmarks.*)")
    flm = mlm = None
    if files.fixed_landmarks is not None:
        flm = read_landmarks(files.fixed_landmarks, arg(files.fixed_landmarks))
        mlm = read_landmarks(files.moving_landmarks, arg(files.moving_landmarks))
        if len(flm) != len(mlm):
            raise InputError(arg(files.moving_landmarks), f"has {len(mlm)} landmarks but the fixed list has {len(flm)}")
    transform = read_transform(files.transform, arg(files.transform)) if files.transform is not None else None
    return {"fixed_seg": fseg, "moving_seg": mseg, "transform": transform, "label_names": names,
            "fixed_landmarks": flm, "moving_landmarks": mlm, "fixed_image": fixed_image}


def write_tables(folder: Path, rows: list, summary: dict, extra: Optional[dict] = None) -> None:
    """``cases.csv`` (``rows``), ``summary.csv`` and ``summary.json`` (``{"cases", "metrics", **extra}``) in
    ``folder``, each written to a temporary name and renamed."""
    atomic_write_text(folder / "cases.csv", csv_text(rows, table_columns(rows)))
    atomic_write_text(folder / "summary.csv", csv_text(summary_rows(summary), SUMMARY_COLUMNS))
    atomic_write_text(folder / "summary.json", json_text({"cases": len(rows), "metrics": summary, **(extra or {})}))


def evaluate_cohort(
    case_dirs_or_dir: str | os.PathLike | Sequence,
    transform_name: str = "transform.h5",
    out_dir: Optional[str | os.PathLike] = None,
    figures: bool = True,
    jacobian: bool = True,
    progress=None,
    cancel=None,
    label_channel: Optional[int] = None,
) -> tuple:
    """Evaluate every case (see the module docstring) with :func:`evaluate_case`.

    Args:
        case_dirs_or_dir: a cohort folder (its non-hidden sub-folders are the cases) or a list of case folders.
        transform_name: transform file name inside each case folder (absent = identity).
        out_dir: if given, the output folder (replaced as a whole; nothing is written if any case fails).
        figures: write ``<case>.png`` and ``boxplots.png`` (only with ``out_dir``).
        label_channel: with 4-D label images (one binary channel per structure), the channel to evaluate.

    Returns:
        ``(rows, summary)``: one dict per case (``case``, ``transform``, ``dice_<label>``, ``msd_mm_<label>``,
        ``hd95_mm_<label>``, ``hd_mm_<label>``, TRE and Jacobian columns, ``note``) and
        ``{metric: {"n", "n_missing", "mean", "sd", "mean_sd", "median", "min", "max"}}``.

    Raises:
        InputError: naming ``--cohort`` and the case for any bad case (the whole cohort fails).
    """
    monitor = Monitor.wrap(progress, cancel)
    out_path = Path(out_dir) if out_dir is not None else None
    folders = find_cases(case_dirs_or_dir, exclude=out_path)
    files = [case_files(f, transform_name) for f in folders]  # every case is checked before any work

    def run(folder: Optional[Path]) -> tuple:
        rows = []
        for n, case in enumerate(files):
            stage = monitor.stage(n / len(files), (n + 1) / len(files))
            try:
                inputs = load_case(case, label_channel)
                fixed_image = inputs.pop("fixed_image")
                inner = stage.stage(0.0, 0.9)  # one "cohort" stage for a progress display, the case's step as detail
                ev = evaluate_case(**inputs, jacobian=jacobian,
                                   progress=lambda f, m, s=inner, name=case.name: s.report(f, f"cohort: {name}: {m}"))
            except InputError as err:
                raise InputError("--cohort", f"case '{case.name}': {err}") from None
            rows.append(case_row(case.name, ev, case.transform.name if case.transform else "identity"))
            if folder is not None and figures:
                from MMRegistrationLib.visualization.evaluation_figures import evaluation_figure

                evaluation_figure(inputs["fixed_seg"], ev.warped_moving_seg, folder / f"{case.name}.png",
                                  ev.jacobian_image, fixed_image, title=f"{case.name} ({rows[-1]['transform']})")
            stage.report(1.0, f"cohort: {case.name} done")
        summary = summarize(rows)
        if folder is not None:
            write_tables(folder, rows, summary)
            if figures:
                from MMRegistrationLib.visualization.evaluation_figures import cohort_boxplots

                cohort_boxplots(rows, folder / "boxplots.png")
        return rows, summary

    if out_path is None:
        return run(None)
    from MMRegistrationLib.io.outputs import atomic_output_dir

    with atomic_output_dir(out_path) as tmp:
        return run(tmp)
