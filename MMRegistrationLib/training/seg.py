"""Training of the prostate segmentation networks (paper 003, section 2.1), reproducible on a CPU.

1. **Data** (:mod:`.seg_data`): the folder's images of one modality, split by case name as the registration
   networks are (DeepReg: obs000-059 train, obs060-069 validate, obs070-079 never loaded - the benchmark reports on
   them), plus generated images for training.
2. **A step**: per image of the batch, the network grid (:func:`~MMRegistrationLib.segmentation.network.
   segmentation_grid`) moved by a random affine about the image's centre, an optional left-right flip and a random
   gamma (all drawn from ``(seed, step)``, so a resumed run draws what an uninterrupted one does); image (trilinear)
   and gland (trilinear, a soft target) sampled on it; MONAI's ``DiceCELoss`` on the logits; Adam.
3. **Validation** every ``validate_every`` steps through the inference path (:func:`~MMRegistrationLib.
   segmentation.predict.predict_gland`: the prediction on each validation image's own grid, cleaned): the mean
   gland Dice; the best state is kept.
4. **State**: a checkpoint after every validation (``--resume`` continues bit for bit), a time budget, the log.
"""

from __future__ import annotations

import math
import time
from typing import Optional

import numpy as np
import torch

from MMRegistrationLib.core.errors import InputError, MMRegError
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.metrics.overlap import dice_per_label
from MMRegistrationLib.registration.net_geometry import grid_points, sample_volume
from MMRegistrationLib.segmentation.network import build_network, segmentation_grid
from MMRegistrationLib.segmentation.predict import predict_gland
from MMRegistrationLib.training.net import (
    StepContext,
    TrainingState,
    end_of_step,
    finish,
    load_checkpoint,
    random_affine,
    take_step,
)
from MMRegistrationLib.training.seg_config import SegTrainingConfig
from MMRegistrationLib.training.seg_data import SegCase

LOG_COLUMNS = ("iteration", "loss", "validation_dice", "seconds")
PANELS = (("loss", "training loss (Dice + cross-entropy)"), ("validation_dice", "validation gland Dice"))


def left_right_flip(center: np.ndarray) -> np.ndarray:
    """4x4 world map mirroring the L axis (x, LPS) about ``center``."""
    matrix = np.diag([-1.0, 1.0, 1.0, 1.0])
    matrix[0, 3] = 2.0 * float(center[0])
    return matrix


def sample_image(case: SegCase, config: SegTrainingConfig, rng: Optional[np.random.Generator]) -> tuple:
    """``(input (1, N, N, N), target (1, N, N, N))`` of ``case`` on its network grid, randomly moved, flipped and
    gamma-changed when ``rng`` is given."""
    grid = segmentation_grid(config.network, case.grid)
    world_map = np.eye(4)
    gamma = 1.0
    if rng is not None:
        center = np.asarray(case.grid.center, dtype=np.float64)
        world_map = random_affine(rng, center, config)
        if rng.random() < config.flip_probability:
            world_map = left_right_flip(center) @ world_map
        gamma = float(np.exp(rng.uniform(*np.log(config.gamma_range))))
    points = grid_points(grid)
    image = sample_volume(case.volume, case.grid, points, world_map, 0.0)
    target = sample_volume(case.mask, case.grid, points, world_map, 0.0)
    return image.clamp(min=0.0) ** gamma, target


def new_network(config: SegTrainingConfig) -> torch.nn.Module:
    """The network with its seeded initial weights (torch's global generator is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.seed))
        return build_network(config.network)


def validate(net: torch.nn.Module, cases: list, config: SegTrainingConfig, device) -> dict:
    """Mean gland Dice of the cleaned predictions on the validation images' own grids."""
    scores = []
    for case in cases:
        predicted = predict_gland(net, config.network, case.image, device)
        reference = (case.mask[0].numpy() > 0.5).astype(np.uint8)
        scores.append(dice_per_label(reference, predicted.mask.array.astype(np.uint8), [1])[1])
    net.train()
    return {"dice": float(np.nanmean(scores)) if scores else math.nan}


def _logits(net: torch.nn.Module, inputs: torch.Tensor, precision: str) -> torch.Tensor:
    with torch.autocast(device_type=inputs.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        return net(inputs).float()


def train_segmentation(net: torch.nn.Module, train: list, validation: list, config: SegTrainingConfig,
                       iterations: int, device, monitor: Monitor, checkpoint=None, resume: bool = False,
                       deadline: Optional[float] = None) -> TrainingState:
    """Train ``net`` in place (it ends in its best-by-validation state); see the module docstring."""
    from monai.losses import DiceCELoss

    if not train or not validation:
        raise InputError("--data", "training needs at least one training and one validation image")
    net.to(device).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    loss_function = DiceCELoss(sigmoid=True)
    state = TrainingState()
    if resume and checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, net, optimiser, config)
    started, running = time.perf_counter() - state.seconds, []
    while state.step < iterations:
        monitor.check("training")
        rng = np.random.default_rng([int(config.seed), state.step])
        picks = rng.integers(0, len(train), size=int(config.batch_size))
        pairs = [sample_image(train[int(i)], config, rng) for i in picks]
        inputs = torch.stack([p[0] for p in pairs]).to(device)
        targets = torch.stack([p[1] for p in pairs]).to(device)
        loss = loss_function(_logits(net, inputs, config.precision), targets)
        if not torch.isfinite(loss):
            raise MMRegError(f"training: the loss became non-finite at step {state.step}; lower --learning-rate or "
                             "train with --precision float32")
        take_step(optimiser, loss, state, running)
        if end_of_step(StepContext(net, optimiser, config, state, iterations, started, deadline, checkpoint, monitor),
                       running, lambda: _validate_and_log(net, validation, config, device, state, running, started),
                       lambda entry: f"validation Dice {entry['validation_dice']:.3f}"):
            break
    return finish(net, state)


def _validate_and_log(net, validation, config, device, state: TrainingState, running: list, started: float) -> None:
    metrics = validate(net, validation, config, device)
    state.seconds = time.perf_counter() - started
    state.log.append({"iteration": state.step, "loss": float(np.mean(running)) if running else math.nan,
                      "validation_dice": metrics["dice"], "seconds": round(state.seconds, 2)})
    if state.best_metrics is None or metrics["dice"] > state.best_metrics["dice"]:
        state.best_metrics, state.best_step = metrics, state.step
        state.best_state = {k: v.detach().clone().cpu() for k, v in net.state_dict().items()}
