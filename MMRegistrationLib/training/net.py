"""Training of the registration networks (papers 004 and 003), reproducible on a CPU.

1. **Data** (:mod:`.net_data`): the folder's cases, split by name (DeepReg: obs000-059 train, obs060-069 validate,
   obs070-079 are the test part, never loaded, on which the benchmark reports), plus generated cases for training;
   each case's initial transform as the network's config says.
2. **A step**: for each pair of the batch, a random affine per image (seeded by ``(seed, step)``, so a resumed run
   draws exactly what an uninterrupted one does), the volumes sampled on the network grid
   (:mod:`~MMRegistrationLib.registration.net_geometry`), one forward pass (bfloat16 autocast on request), the
   window and (for ``svf``) scaling and squaring, the moving labels, distance maps and image warped, the weighted
   loss terms (:func:`loss_terms`), Adam.
3. **Validation** every ``validate_every`` steps on the held-out cases without augmentation: gland Dice and landmark
   TRE on the network grid; the best state (Dice, then TRE) is kept. Never the benchmark's test data.
4. **State**: a checkpoint after every validation (``--resume`` continues from it, bit for bit); a time budget stops
   the run at the deadline, and the sidecar records the command that repeats it (``--iterations`` = the steps made).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from MMRegistrationLib.core.errors import InputError, MMRegError
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.losses.functional import (
    bending_energy,
    gradient_l2,
    masked_mutual_information_loss,
    multiscale_dice_loss,
    signed_distance_msle,
    soft_dice_loss,
)
from MMRegistrationLib.networks.registration import RegistrationNet, RegNetConfig
from MMRegistrationLib.registration.net_geometry import (
    exponentiate_voxels,
    grid_window,
    network_grid,
    network_inputs,
    warp_voxels,
)
from MMRegistrationLib.spatial.affine import rotation_matrix
from MMRegistrationLib.training.net_config import NetTrainingConfig
from MMRegistrationLib.training.net_data import TrainingCase, initial_map

LOG_COLUMNS = ("iteration", "loss", "validation_dice", "validation_tre_mm", "seconds")


# ---- geometry of a sample ------------------------------------------------------------------------------------------
def case_grid(case: TrainingCase, network: RegNetConfig):
    """The network grid of ``case`` (centred as the config says) and the initial fixed -> moving matrix."""
    center = case.fixed_mask_center if network.center == "fixed-mask" else None
    return network_grid(network, case.volumes.fixed_grid, center), initial_map(case, network.init)


def random_affine(rng: np.random.Generator, center: np.ndarray, config: NetTrainingConfig) -> np.ndarray:
    """A 4x4 world -> world affine about ``center``: rotation up to ``rotation_deg`` per axis, scaling by up to
    ``scale_fraction`` per axis, shift up to ``translation_mm`` per axis."""
    angles = np.deg2rad(rng.uniform(-config.rotation_deg, config.rotation_deg, 3))
    rotation = rotation_matrix(torch.as_tensor(angles, dtype=torch.float64)).numpy()
    scale = np.diag(1.0 + rng.uniform(-config.scale_fraction, config.scale_fraction, 3))
    shift = rng.uniform(-config.translation_mm, config.translation_mm, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ scale
    matrix[:3, 3] = center - matrix[:3, :3] @ center + shift
    return matrix


PARTS = ("fixed", "moving", "fixed_labels", "moving_labels", "fixed_sdm", "moving_sdm")


def sample_pair(case: TrainingCase, network: RegNetConfig, rng: Optional[np.random.Generator],
                config: NetTrainingConfig) -> dict:
    """Every part of ``case`` on its network grid, randomly and independently moved per image when ``rng`` is given
    (validation: ``rng`` None)."""
    grid, initial = case_grid(case, network)
    center = grid.index_to_world(np.full(3, (network.grid_size - 1) / 2))
    fixed_map = random_affine(rng, center, config) if rng is not None else np.eye(4)
    moving_map = initial @ (random_affine(rng, center, config) if rng is not None else np.eye(4))
    sampled = case.volumes.on_grid(grid, fixed_map, moving_map, PARTS)
    sampled["grid"] = grid
    return sampled


def _pad_channels(tensors: list) -> torch.Tensor:
    """Stack ``(C_b, N, N, N)`` tensors with different ``C_b`` into ``(B, max C, N, N, N)`` (zeros)."""
    channels = max(t.shape[0] for t in tensors)
    out = tensors[0].new_zeros((len(tensors), channels, *tensors[0].shape[1:]))
    for index, t in enumerate(tensors):
        out[index, : t.shape[0]] = t
    return out


def collate(samples: list, net: RegistrationNet, config: NetTrainingConfig) -> dict:
    """A batch: ``inputs (B, C_in, N, N, N)`` and the loss tensors, landmark channels zero-padded with zero weight."""
    inputs = torch.stack([network_inputs(net.config, net.input_order, s) for s in samples])
    counts = [s["fixed_labels"].shape[0] for s in samples]
    weights = torch.zeros((len(samples), max(counts)))
    for index, count in enumerate(counts):
        weights[index, 0] = config.gland_weight
        weights[index, 1:count] = config.landmark_weight
    batch = {"inputs": inputs, "label_weights": weights, "counts": counts}
    for name in PARTS:
        batch[name] = _pad_channels([s[name] for s in samples])
    return batch


# ---- forward and losses -------------------------------------------------------------------------------------------
def predict_displacement(net: RegistrationNet, inputs: torch.Tensor, window: torch.Tensor, precision: str) -> tuple:
    """``(displacement, raw field)``, both ``(B, 3, N, N, N)`` float32 in grid voxels: the network's field times the
    window, exponentiated when the network outputs a velocity."""
    enabled = precision == "bfloat16"
    with torch.autocast(device_type=inputs.device.type, dtype=torch.bfloat16, enabled=enabled):
        raw = net(inputs.contiguous(memory_format=torch.channels_last_3d))
    field = raw.float().contiguous() * window
    if net.config.output == "svf":
        return exponentiate_voxels(field, net.config.squaring_steps), field
    return field, field


def loss_terms(batch: dict, displacement: torch.Tensor, config: NetTrainingConfig, spacing_mm: float) -> dict:
    """The weighted loss terms (name -> scalar, the batch mean) of a predicted displacement (grid voxels)."""
    terms = {}
    fixed_gland = batch["fixed_labels"][:, :1]
    if config.weight_mdice > 0 or config.weight_dice > 0:
        warped_labels = warp_voxels(batch["moving_labels"], displacement)
        if config.weight_mdice > 0:
            terms["mdice"] = config.weight_mdice * multiscale_dice_loss(
                fixed_gland, warped_labels[:, :1], config.mdice_sigmas).mean()
        if config.weight_dice > 0:
            terms["dice"] = config.weight_dice * soft_dice_loss(
                batch["fixed_labels"], warped_labels, batch["label_weights"].to(displacement.device)).mean()
    if config.weight_sdm > 0:
        warped_sdm = warp_voxels(batch["moving_sdm"], displacement, padding_mode="border")
        terms["sdm"] = config.weight_sdm * signed_distance_msle(batch["fixed_sdm"], warped_sdm).mean()
    if config.weight_mi > 0:
        warped_image = warp_voxels(batch["moving"], displacement)
        roi = (batch["fixed_sdm"] < config.mi_dilation_mm).to(warped_image.dtype)
        terms["mi"] = config.weight_mi * masked_mutual_information_loss(
            batch["fixed"], warped_image, roi, bins=config.mi_bins).mean()
    field_mm = displacement * spacing_mm
    spacing = (spacing_mm,) * 3
    if config.weight_bending > 0:
        terms["bending"] = config.weight_bending * bending_energy(field_mm, spacing).mean()
    if config.weight_gradient > 0:
        terms["gradient"] = config.weight_gradient * gradient_l2(field_mm, spacing).mean()
    return terms


# ---- validation ---------------------------------------------------------------------------------------------------
def _centroids(masks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``(C, 3)`` weighted centroids (mm) of ``(C, N, N, N)`` soft masks at grid ``points (N, N, N, 3)``."""
    weights = masks.flatten(1)
    return (weights @ points.reshape(-1, 3)) / weights.sum(dim=1, keepdim=True).clamp(min=1e-6)


def validate(net: RegistrationNet, cases: list, config: NetTrainingConfig, device) -> dict:
    """Mean gland Dice (binary at 0.5 on the network grid) and landmark TRE (centroids, mm) over ``cases``."""
    net.eval()
    dices, tres = [], []
    with torch.no_grad():
        for case in cases:
            sample = sample_pair(case, net.config, None, config)
            batch = collate([sample], net, config)
            window = grid_window(sample["grid"], net.config.ramp_mm, device)
            displacement, _ = predict_displacement(net, batch["inputs"].to(device), window, config.precision)
            warped = warp_voxels(batch["moving_labels"].to(device), displacement)[0]
            fixed = batch["fixed_labels"][0].to(device)
            f, w = fixed[0] > 0.5, warped[0] > 0.5
            dices.append(float(2 * (f & w).sum() / max(1, int(f.sum() + w.sum()))))
            if case.landmarks:
                points = sample["grid"].world_points_torch(device=device)
                err = _centroids(fixed[1:], points) - _centroids(warped[1:], points)
                tres.append(float(err.norm(dim=1).mean()))
    net.train()
    return {"dice": float(np.mean(dices)), "tre_mm": float(np.mean(tres)) if tres else math.nan}


def _better(metrics: dict, best: Optional[dict]) -> bool:
    if best is None:
        return True
    if metrics["dice"] != best["dice"]:
        return metrics["dice"] > best["dice"]
    return (metrics["tre_mm"] if math.isfinite(metrics["tre_mm"]) else math.inf) < best["tre_mm"]


# ---- the loop -----------------------------------------------------------------------------------------------------
@dataclass
class TrainingState:
    """What a checkpoint holds besides the network and optimiser: the next step, the log, the best state."""

    step: int = 0
    log: list = field(default_factory=list)
    best_metrics: Optional[dict] = None
    best_step: Optional[int] = None
    best_state: Optional[dict] = None
    seconds: float = 0.0
    stopped_by_budget: bool = False


def new_network(config: NetTrainingConfig) -> RegistrationNet:
    """The network with its seeded initial weights (torch's global generator is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.seed))
        return RegistrationNet(config.network)


def save_checkpoint(path: Path, net, optimiser, state: TrainingState, config: NetTrainingConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save({"config": config.to_dict(), "network": net.state_dict(), "optimiser": optimiser.state_dict(),
                "state": state.__dict__}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, net, optimiser, config: NetTrainingConfig) -> TrainingState:
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise InputError("--resume", f"cannot read the checkpoint {path} ({type(err).__name__}: {err})") from err
    if data.get("config") != config.to_dict():
        raise InputError("--resume", f"the checkpoint {path} was written by a run with other settings; start afresh "
                                     "without --resume or repeat that run's options")
    net.load_state_dict(data["network"])
    optimiser.load_state_dict(data["optimiser"])
    return TrainingState(**data["state"])


def training_fraction(step: int, iterations: int, started: float, deadline: Optional[float]) -> float:
    """How far a run is: the steps made of ``iterations``, or the time used of the budget when that is further."""
    fraction = step / max(1, iterations)
    if deadline is not None and deadline > started:
        fraction = max(fraction, (time.perf_counter() - started) / (deadline - started))
    return min(1.0, fraction)


def train_network(net: RegistrationNet, train: list, validation: list, config: NetTrainingConfig, iterations: int,
                  device, monitor: Monitor, checkpoint: Optional[Path] = None, resume: bool = False,
                  deadline: Optional[float] = None) -> TrainingState:
    """Train ``net`` in place (it ends in its best-by-validation state); see the module docstring."""
    if not train or not validation:
        raise InputError("--data", "training needs at least one training and one validation case")
    net.to(device).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    state = TrainingState()
    if resume and checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, net, optimiser, config)
    started, running = time.perf_counter() - state.seconds, []
    spacing = float(config.network.grid_spacing_mm)
    while state.step < iterations:
        monitor.check("training")
        rng = np.random.default_rng([int(config.seed), state.step])
        picks = rng.integers(0, len(train), size=int(config.batch_size))
        samples = [sample_pair(train[int(i)], net.config, rng, config) for i in picks]
        batch = collate(samples, net, config)
        batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        window = grid_window(samples[0]["grid"], net.config.ramp_mm, device)
        displacement, _ = predict_displacement(net, batch["inputs"], window, config.precision)
        terms = loss_terms(batch, displacement, config, spacing)
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            bad = [n for n, t in terms.items() if not torch.isfinite(t)]
            raise MMRegError(f"training: the {', '.join(bad)} loss became non-finite at step {state.step}; "
                             "lower --learning-rate")
        take_step(optimiser, loss, state, running)
        if end_of_step(StepContext(net, optimiser, config, state, iterations, started, deadline, checkpoint, monitor),
                       running, lambda: _validate_and_log(net, validation, config, device, state, running, started),
                       lambda e: f"validation Dice {e['validation_dice']:.3f}, TRE {e['validation_tre_mm']:.2f} mm"):
            break
    return finish(net, state)


def take_step(optimiser: torch.optim.Optimizer, loss: torch.Tensor, state: TrainingState, running: list) -> None:
    """One optimiser step on ``loss``; the loss joins ``running`` and the step is counted."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    running.append(float(loss.detach()))
    state.step += 1


@dataclass
class StepContext:
    """What :func:`end_of_step` needs of a training loop."""

    net: torch.nn.Module
    optimiser: torch.optim.Optimizer
    config: object
    state: TrainingState
    iterations: int
    started: float
    deadline: Optional[float]
    checkpoint: Optional[Path]
    monitor: Monitor


def end_of_step(loop: StepContext, running: list, validate_and_log, describe) -> bool:
    """After a step was counted: when due (every ``validate_every`` steps, the last step, the deadline) validate and
    log (``validate_and_log()``), clear ``running`` (the losses since), write the checkpoint and report progress
    (``describe(log entry)`` names the validation figures). True when the time budget is over (the run stops)."""
    state = loop.state
    out_of_time = loop.deadline is not None and time.perf_counter() > loop.deadline
    if state.step % loop.config.validate_every == 0 or state.step == loop.iterations or out_of_time:
        validate_and_log()
        running.clear()
        if loop.checkpoint is not None:
            save_checkpoint(loop.checkpoint, loop.net, loop.optimiser, state, loop.config)
        entry = state.log[-1]
        loop.monitor.report(training_fraction(state.step, loop.iterations, loop.started, loop.deadline),
                            f"training: step {state.step}/{loop.iterations}, loss {entry['loss']:.4f}, "
                            + describe(entry))
    state.stopped_by_budget = out_of_time
    return out_of_time


def finish(net: torch.nn.Module, state: TrainingState) -> TrainingState:
    """``net`` in its best-by-validation state, in eval mode; returns ``state``."""
    if state.best_state is not None:
        net.load_state_dict(state.best_state)
    net.eval()
    return state


def _validate_and_log(net, validation, config, device, state: TrainingState, running: list, started: float) -> None:
    metrics = validate(net, validation, config, device)
    state.seconds = time.perf_counter() - started
    state.log.append({"iteration": state.step, "loss": float(np.mean(running)) if running else math.nan,
                      "validation_dice": metrics["dice"], "validation_tre_mm": metrics["tre_mm"],
                      "seconds": round(state.seconds, 2)})
    if _better(metrics, state.best_metrics):
        state.best_metrics, state.best_step = metrics, state.step
        state.best_state = {k: v.detach().clone().cpu() for k, v in net.state_dict().items()}


def log_csv(state: TrainingState, columns: tuple = LOG_COLUMNS) -> str:
    rows = [",".join(columns)]
    rows += [",".join(f"{entry[c]:.6g}" if isinstance(entry[c], float) else str(entry[c]) for c in columns)
             for entry in state.log]
    return "\n".join(rows) + "\n"


PANELS = (("loss", "training loss"), ("validation_dice", "validation gland Dice"),
          ("validation_tre_mm", "validation TRE (mm)"))


def plot_log(state: TrainingState, path: Path, title: str, panels: tuple = PANELS) -> None:
    """The logged values (``panels``: (log key, title) pairs; default loss, validation Dice and TRE) against the
    step (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e["iteration"] for e in state.log]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (key, label) in zip(axes, panels):
        ax.plot(steps, [e[key] for e in state.log], marker=".")
        ax.set_xlabel("step")
        ax.set_title(label)
        if state.best_step is not None:
            ax.axvline(state.best_step, color="gray", linestyle=":", linewidth=1)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
