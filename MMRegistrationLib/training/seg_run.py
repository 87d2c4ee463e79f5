"""A whole segmentation training run (what ``mmreg train-seg`` calls): data, split, training, the weights with
their sidecar (config, data, split, command, versions, metrics, sha256), the log and its figure."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.segmentation.weights import save_segmentation_net
from MMRegistrationLib.training.net import TrainingState
from MMRegistrationLib.training.net_data import folder_cases, load_cases
from MMRegistrationLib.training.net_run import split_names, training_record, write_log
from MMRegistrationLib.training.seg import LOG_COLUMNS, PANELS, new_network, train_segmentation
from MMRegistrationLib.training.seg_config import SegTrainingConfig
from MMRegistrationLib.training.seg_data import generated_image, load_folder_image


@dataclass
class SegRunResult:
    network: torch.nn.Module
    state: TrainingState
    config: SegTrainingConfig
    data: dict
    seconds: float


def run_seg_training(data_dir: Path, config: SegTrainingConfig, iterations: int, minutes: Optional[float], device,
                     checkpoint: Optional[Path], resume: bool, progress=None, cancel=None) -> SegRunResult:
    """Load the images of the config's modality, train, return the best network and its record."""
    monitor = Monitor.wrap(progress, cancel)
    t0 = time.perf_counter()
    modality = config.network.modality
    layout, names = folder_cases(data_dir)
    train_names, val_names, test_names = split_names(names, config.validation_fraction)
    loaders = [lambda n=n: load_folder_image(data_dir, layout, n, modality) for n in train_names + val_names]
    seeds = [int(config.synthetic_seed) + k for k in range(int(config.synthetic_cases))]
    loaders += [lambda s=s: generated_image(s, config.synthetic_scale, modality) for s in seeds]
    cases = load_cases(loaders, monitor.stage(0.0, 0.1), "loading images")
    validation = cases[len(train_names): len(train_names) + len(val_names)]
    train = cases[: len(train_names)] + cases[len(train_names) + len(val_names):]
    net = new_network(config)
    deadline = None if minutes is None else t0 + 60.0 * float(minutes)
    state = train_segmentation(net, train, validation, config, iterations, device, monitor.stage(0.1, 1.0),
                               checkpoint, resume, deadline)
    data = {"folder": str(data_dir), "layout": layout, "modality": modality, "train": train_names,
            "validation": val_names, "test_not_used": test_names, "generated_seeds": seeds,
            "generated_scale": config.synthetic_scale}
    return SegRunResult(net, state, config, data, time.perf_counter() - t0)


def write_seg_run(result: SegRunResult, out: Path, name: str, command: list) -> list:
    """``out/NAME.pt`` + ``NAME.json`` + ``NAME_log.csv`` + ``NAME_log.png``, each written whole."""
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{name}.pt"
    objective = (f"prostate gland segmentation on {result.config.network.modality.upper()} (paper 003, 2.1): MONAI "
                 "DiceCELoss on the network grid, best state by validation Dice")
    save_segmentation_net(result.network, result.config.network, weights,
                          training_record(result, command, objective))
    title = f"{name}: {result.config.network.modality.upper()} gland, {result.state.step} steps"
    return [weights, weights.with_suffix(".json"), *write_log(result.state, out, name, title, LOG_COLUMNS, PANELS)]
