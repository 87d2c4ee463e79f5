"""Pieces every DISA benchmark shares: package versions, thread settings, the run header and the result files."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"


def versions(extra: tuple = ()) -> dict:
    """Python and the versions of the packages that decide the figures (``extra``: more distribution names)."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in ("mmregistration", "torch", "SimpleITK", "numpy", "scipy") + tuple(extra):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def set_threads(threads: int) -> None:
    """torch, SimpleITK and the engine's own runs (``MMREG_THREADS``) on ``threads`` threads."""
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(threads)
    os.environ["MMREG_THREADS"] = str(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def run_header(threads: int, **fields) -> dict:
    """The start of a result record: date, machine, threads, versions, load average, empty cases/notes, partial."""
    return {"date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
            "threads": threads, **fields, "load_before": [round(v, 2) for v in os.getloadavg()], "cases": [],
            "notes": [], "partial": True}


def write_results(res: dict, out_name: str, markdown, summarize=None) -> None:
    """``res`` (with ``load_after``, and ``summary`` from ``summarize(cases, methods)`` when given) to
    ``results/<out_name>.json`` and its ``markdown(res)`` to ``results/<out_name>.md``."""
    from MMRegistrationLib.evaluation.case import jsonable

    res["load_after"] = [round(v, 2) for v in os.getloadavg()]
    if summarize is not None:
        res["summary"] = summarize(res["cases"], res["methods"])
    OUT.mkdir(exist_ok=True)
    (OUT / f"{out_name}.json").write_text(json.dumps(jsonable(res), indent=2), encoding="utf-8")
    (OUT / f"{out_name}.md").write_text(markdown(res), encoding="utf-8")
