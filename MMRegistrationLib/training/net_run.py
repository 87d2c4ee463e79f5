"""A whole registration-network training run (what ``mmreg train-net`` calls): data, split, training, the weights
with their sidecar (config, data, split, command, versions, metrics, sha256), the log and its figure."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.networks.registration import save_registration_net
from MMRegistrationLib.training.net import (
    LOG_COLUMNS,
    PANELS,
    TrainingState,
    log_csv,
    new_network,
    plot_log,
    train_network,
)
from MMRegistrationLib.training.net_config import NetTrainingConfig
from MMRegistrationLib.training.net_data import folder_cases, generated_case, load_cases, load_folder_case


def split_names(names: list, fraction: float) -> tuple:
    """``(train, validation, test)`` of the sorted names: the last ``max(1, round(fraction * n))`` are the test cases
    (never loaded by training: figures are reported on them), the same number before them validate (model
    selection), the rest train. With fewer than three cases there is no test part."""
    names = sorted(names)
    count = max(1, int(round(fraction * len(names))))
    if len(names) < 3:
        return names[:-1], names[-1:], []
    if 2 * count >= len(names):
        count = max(1, (len(names) - 1) // 3)
    return names[: -2 * count], names[-2 * count: -count], names[-count:]


@dataclass
class RunResult:
    network: torch.nn.Module
    state: TrainingState
    config: NetTrainingConfig
    data: dict
    seconds: float


def run_training(data_dir: Path, config: NetTrainingConfig, iterations: int, minutes: Optional[float], device,
                 checkpoint: Optional[Path], resume: bool, progress=None, cancel=None) -> RunResult:
    """Load the data, train, return the best network and its record."""
    monitor = Monitor.wrap(progress, cancel)
    t0 = time.perf_counter()
    layout, names = folder_cases(data_dir)
    train_names, val_names, test_names = split_names(names, config.validation_fraction)
    loaders = [lambda n=n: load_folder_case(data_dir, layout, n) for n in train_names + val_names]
    seeds = [int(config.synthetic_seed) + k for k in range(int(config.synthetic_cases))]
    loaders += [lambda s=s: generated_case(s, config.synthetic_scale) for s in seeds]
    cases = load_cases(loaders, monitor.stage(0.0, 0.1), "loading cases")
    by_name = {c.name: c for c in cases}
    validation = [by_name[n] for n in val_names]
    train = [by_name[n] for n in train_names] + cases[len(train_names) + len(val_names):]
    net = new_network(config)
    deadline = None if minutes is None else t0 + 60.0 * float(minutes)
    state = train_network(net, train, validation, config, iterations, device, monitor.stage(0.1, 1.0), checkpoint,
                          resume, deadline)
    data = {"folder": str(data_dir), "layout": layout, "train": train_names, "validation": val_names,
            "test_not_used": test_names, "generated_seeds": seeds, "generated_scale": config.synthetic_scale}
    return RunResult(net, state, config, data, time.perf_counter() - t0)


def versions() -> dict:
    import monai
    import SimpleITK

    from MMRegistrationLib import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
            "numpy": np.__version__, "SimpleITK": SimpleITK.Version_VersionString(), "engine": __version__,
            "machine": platform.machine(), "torch_threads": torch.get_num_threads()}


OBJECTIVE = "weakly supervised MR->TRUS registration (papers 004 / 003): see the config's loss weights"


def training_record(result, command: list, objective: str = OBJECTIVE) -> dict:
    """The sidecar's ``training`` entry of a run (``result``: a :class:`RunResult` or any run result with ``state``,
    ``config``, ``data`` and ``seconds``)."""
    state = result.state
    return {
        "objective": objective,
        "config": result.config.to_dict(),
        "data": result.data,
        "split": {"train": len(result.data["train"]) + len(result.data["generated_seeds"]),
                  "validation": result.data["validation"], "test_not_used": result.data["test_not_used"],
                  "rule": "sorted case names: the last eighth is the test part (never loaded), the eighth before it "
                          "validates (model selection), the rest train, plus the generated cases"},
        "iterations_done": state.step,
        "stopped_by_time_budget": state.stopped_by_budget,
        "best": {"iteration": state.best_step, **(state.best_metrics or {})},
        "command": " ".join(command),
        "reproduce": " ".join(reproduce_command(command, state.step)),
        "versions": versions(),
        "seconds": round(result.seconds, 1),
        "log": state.log,
    }


def reproduce_command(command: list, iterations: int) -> list:
    """``command`` with ``--minutes`` and ``--resume`` removed and ``--iterations`` set to the steps made."""
    out, skip = [], False
    for index, word in enumerate(command):
        if skip:
            skip = False
            continue
        if word in ("--minutes", "--iterations"):
            skip = True
            continue
        if word.startswith(("--minutes=", "--iterations=")) or word == "--resume":
            continue
        out.append(word)
    return [*out, "--iterations", str(iterations)]


def write_run(result: RunResult, out: Path, name: str, command: list) -> list:
    """``out/NAME.pt`` + ``NAME.json`` + ``NAME_log.csv`` + ``NAME_log.png``, written whole (a folder of
    several networks keeps the others)."""
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{name}.pt"
    save_registration_net(result.network, weights, training_record(result, command))
    return [weights, weights.with_suffix(".json"),
            *write_log(result.state, out, name, f"{name}: {result.config.network.architecture}, {result.state.step} "
                                                "steps")]


def write_log(state, out: Path, name: str, title: str, columns: tuple = LOG_COLUMNS, panels: tuple = PANELS) -> list:
    """``out/NAME_log.csv`` and its figure ``NAME_log.png``, each written whole; returns their paths."""
    log = out / f"{name}_log.csv"
    tmp = log.with_name(f".{log.name}.partial")
    tmp.write_text(log_csv(state, columns), encoding="utf-8")
    tmp.replace(log)
    figure = out / f"{name}_log.png"
    tmp_png = figure.with_name(f".{name}_log.partial.png")
    plot_log(state, tmp_png, title, panels)
    tmp_png.replace(figure)
    return [log, figure]
