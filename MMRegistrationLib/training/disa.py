"""Unsupervised training of the DISA network to approximate LC2 (paper 001), reproducible on a CPU.

The steps (1 in :mod:`.disa_data`, 2-3 in :mod:`.disa_patches`, the configuration in :mod:`.disa_config`, 4-6 here):

1. **Data** — volumes from three sources, each resampled to an isotropic ``spacing_mm`` (default 2 mm, as the
   paper), anti-aliased, normalised inside its field of view (:func:`~MMRegistrationLib.similarity.disa.prepare_volume`):
   real CT and MR (``ct_mr_unregistered/``: every usable CT paired with every MR, never registered), real TRUS
   (``trus_real/``, each paired with the MR of a synthetic case) and synthetic MR/TRUS cases from
   :func:`MMRegistrationLib.synthetic.generate_case` (TRUS paired with its own MR; further seeds are held out).
2. **Patch-pair sampler** — for each volume pair, repeatedly: pick the *target* volume (the ultrasound when there is
   one, otherwise either at random: the other one supplies intensity and gradient magnitude); draw a target patch
   centre with probability proportional to the LC2 weight ``w(p)`` (patch variance); compute the LC2 of that patch
   against every patch of a region of the other volume (:class:`~MMRegistrationLib.similarity.lc2.PatchSearch`);
   draw ``t ~ U[0, 1]`` and keep the patch whose LC2 is closest to ``t``. Patch centres are restricted to voxels
   whose ``17^3`` neighbourhood lies inside the volume and its field of view.
3. **Augmentation** — the same random rotation for both ``17^3`` network inputs of a pair (uniform on SO(3), from a
   ``29^3`` crop, trilinear), then an independent random sign and linear intensity change per patch; LC2 is
   invariant to the latter exactly and to the former approximately, so the target is unchanged.
4. **Training loop** — L2 loss between ``<phi(a), phi(b)>`` (centre descriptors, :meth:`DISANet.forward_center`)
   and the LC2 target, Adam with a cosine learning-rate decay, progress and cancel through
   :class:`~MMRegistrationLib.core.progress.Monitor`, bit-for-bit repeatable on a CPU for a seed and an iteration
   count.
5. **Evaluation** — mean squared error (the paper's "patch-wise L2 error") and Pearson correlation between dot
   products and LC2 on held-out pairs, with float and with 8-bit descriptors.
6. **Run** — :func:`run_training` (what ``mmreg train-disa`` calls) and :func:`validate_weights`.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np
import torch

from MMRegistrationLib.core.errors import InputError, MMRegError
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.networks.disa import (
    DISANet,
    quantize_descriptors,
    quantized_dot,
)
from MMRegistrationLib.training.disa_config import (
    TrainingConfig,
    samples_per_pair_for_budget,
)
from MMRegistrationLib.training.disa_data import (
    load_training_data,
)
from MMRegistrationLib.training.disa_patches import (
    PatchBatcher,
    PatchPairs,
    PatchPairSampler,
)


# =============================================================================================================
# 4. Training loop
# =============================================================================================================
@dataclass
class TrainingHistory:
    """Per logged step: iteration, mean loss since the previous log, learning rate, elapsed seconds."""

    iteration: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    learning_rate: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    stopped_at: Optional[int] = None
    """Set when a deadline ended the run before the planned iterations (steps actually made)."""

    def to_csv(self) -> str:
        rows = ["iteration,loss,learning_rate,seconds"]
        rows += [f"{i},{l:.6g},{r:.6g},{s:.2f}" for i, l, r, s in zip(self.iteration, self.loss, self.learning_rate, self.seconds)]
        return "\n".join(rows) + "\n"


def learning_rate_at(step: int, config: TrainingConfig, total: int) -> float:
    """Linear warm-up, then cosine decay from ``learning_rate`` to ``learning_rate * final_lr_fraction``."""
    base = config.learning_rate
    warm = min(config.warmup_iterations, max(1, total // 10))
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    low = base * config.final_lr_fraction
    return low + 0.5 * (base - low) * (1 + math.cos(math.pi * min(1.0, progress)))


def pair_loss(network: DISANet, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between ``<phi(a), phi(b)>`` and the LC2 target (the paper's L2 loss)."""
    desc = network.forward_center(inputs)
    b = target.shape[0]
    dots = (desc[:b] * desc[b:]).sum(dim=1)
    return ((dots - target) ** 2).mean()


def train_network(
    network: DISANet,
    batcher: PatchBatcher,
    train: PatchPairs,
    config: TrainingConfig,
    iterations: int,
    device=None,
    rng: np.random.Generator | None = None,
    progress=None,
    cancel=None,
    log_every: int = 50,
    deadline: float | None = None,
) -> TrainingHistory:
    """Optimise ``network`` in place for ``iterations`` steps of ``batch_size`` pairs (epoch-wise shuffling).

    Deterministic on a CPU for the same network state, pairs, ``rng`` and batcher generator. ``deadline``
    (``time.perf_counter()`` value) is a safety net for time budgets: past it the loop stops early and
    ``history.stopped_at`` records the steps made.
    """
    if len(train) == 0:
        raise MMRegError("train_network: no training pairs")
    monitor = Monitor.wrap(progress, cancel)
    device = torch.device(device) if device is not None else torch.device("cpu")
    rng = rng if rng is not None else np.random.default_rng(0)
    network.to(device).train()
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    history = TrainingHistory()
    order, cursor = rng.permutation(len(train)), 0
    running, seen, start = 0.0, 0, time.perf_counter()
    batch = min(int(config.batch_size), len(train))
    for step in range(int(iterations)):
        monitor.check("training")
        if deadline is not None and time.perf_counter() > deadline:
            history.stopped_at = step
            if seen:  # steps made since the last log entry
                history.iteration.append(step)
                history.loss.append(running / seen)
                history.learning_rate.append(optimiser.param_groups[0]["lr"])
                history.seconds.append(time.perf_counter() - start)
            break
        if cursor + batch > len(order):
            order, cursor = rng.permutation(len(train)), 0
        rows = order[cursor:cursor + batch]
        cursor += batch
        pairs = train.subset(rows)
        inputs = batcher.inputs(pairs, augment=True).to(device)
        target = torch.as_tensor(pairs.target, device=device)
        lr = learning_rate_at(step, config, int(iterations))
        for group in optimiser.param_groups:
            group["lr"] = lr
        loss = pair_loss(network, inputs, target)
        if not torch.isfinite(loss):
            raise MMRegError(f"train_network: the loss became {loss.item()} at iteration {step}; lower the learning rate")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        running += float(loss.detach())
        seen += 1
        if (step + 1) % log_every == 0 or step + 1 == iterations or (
            deadline is not None and time.perf_counter() > deadline
        ):
            history.iteration.append(step + 1)
            history.loss.append(running / seen)
            history.learning_rate.append(lr)
            history.seconds.append(time.perf_counter() - start)
            monitor.report((step + 1) / iterations, f"training: step {step + 1}/{iterations}, loss {running / seen:.4f}")
            running, seen = 0.0, 0
    network.eval()
    return history


def seconds_per_iteration(network: DISANet, batcher: PatchBatcher, train: PatchPairs, config: TrainingConfig,
                          device=None, repeats: int = 8) -> float:
    """Median wall time of one training step, measured on copies (the network, its RNG streams untouched)."""
    net = copy.deepcopy(network).to(device or "cpu").train()
    probe = PatchBatcher(batcher.volumes, config, torch.Generator().manual_seed(12345))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-4)
    rows = np.random.default_rng(12345).integers(0, len(train), size=min(config.batch_size, len(train)))
    pairs = train.subset(rows)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss = pair_loss(net, probe.inputs(pairs, augment=True).to(device or "cpu"),
                         torch.as_tensor(pairs.target, device=device or "cpu"))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:] if len(times) > 2 else times))


# =============================================================================================================
# 5. Evaluation
# =============================================================================================================
def predict(network: DISANet, batcher: PatchBatcher, pairs: PatchPairs, device=None, batch_size: int = 256,
            quantized: bool = False) -> np.ndarray:
    """``(N,)`` descriptor dot products of the pairs (plain centre crops; 8-bit descriptors if ``quantized``)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    network.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            part = pairs.subset(np.arange(start, min(len(pairs), start + batch_size)))
            desc = network.forward_center(batcher.inputs(part, augment=False).to(device))
            b = len(part)
            if quantized:
                q = quantize_descriptors(desc)
                out.append(quantized_dot(q[:b], q[b:]).cpu().numpy())
            else:
                out.append((desc[:b] * desc[b:]).sum(dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def agreement(prediction: np.ndarray, target: np.ndarray) -> dict:
    """``mse`` (the paper's patch-wise L2 error), ``rmse``, ``mae``, Pearson ``r`` and ``n``."""
    prediction = np.asarray(prediction, np.float64)
    target = np.asarray(target, np.float64)
    if prediction.size < 2:
        return {"n": int(prediction.size), "mse": None, "rmse": None, "mae": None, "pearson": None}
    err = prediction - target
    with np.errstate(invalid="ignore", divide="ignore"):
        r = float(np.corrcoef(prediction, target)[0, 1]) if prediction.std() > 0 and target.std() > 0 else float("nan")
    return {"n": int(prediction.size), "mse": float(np.mean(err**2)), "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))), "pearson": r}


def evaluate(network: DISANet, batcher: PatchBatcher, pairs: PatchPairs, device=None) -> dict:
    """:func:`agreement` of float and 8-bit descriptors on ``pairs`` (``{"float": ..., "int8": ...}``), and of the
    float descriptors per working spacing of the pairs' volumes (``by_spacing_mm``)."""
    prediction = predict(network, batcher, pairs, device)
    spacing = np.array([float(batcher.volumes[v].source.get("spacing_mm", np.mean(batcher.volumes[v].volume.grid.spacing)))
                        for v in pairs.volume_a])
    return {
        "float": agreement(prediction, pairs.target),
        "int8": agreement(predict(network, batcher, pairs, device, quantized=True), pairs.target),
        "by_spacing_mm": {f"{s:g}": agreement(prediction[np.isclose(spacing, s, atol=0.02)],
                                              pairs.target[np.isclose(spacing, s, atol=0.02)])
                          for s in sorted({round(float(v), 2) for v in spacing})},
        "target_histogram": pairs.histogram(),
    }


def evaluate_groups(network: DISANet, batcher: PatchBatcher, data: "SampledData", device=None) -> dict:
    """The held-out metrics: ``heldout_volumes`` (held-out synthetic pairs) and ``heldout_real_us`` (held-out real
    brain ultrasound volumes), each None when there are none."""
    return {name: evaluate(network, batcher, pairs, device) if len(pairs) else None
            for name, pairs in (("heldout_volumes", data.heldout), ("heldout_real_us", data.heldout_real_us))}


# =============================================================================================================
# 6. Run
# =============================================================================================================
@dataclass
class SampledData:
    """Everything sampled for one run: volumes, pairs and the four patch-pair sets."""

    volumes: list
    pairs: list
    description: dict
    train: PatchPairs
    validation: PatchPairs
    heldout: PatchPairs
    heldout_real_us: PatchPairs
    seconds: float


def sample_data(volumes, pairs, config: TrainingConfig, rng: np.random.Generator, progress=None, cancel=None) -> tuple:
    """``(train, validation, heldout, heldout_real_us)`` patch pairs: ``samples_per_pair`` from each pair, the
    training pairs' samples split by ``validation_fraction``; held-out pairs are evaluation only."""
    monitor = Monitor.wrap(progress, cancel)
    sampler = PatchPairSampler(volumes, config.radii, config.search_size, config.targets_per_round, rng)
    train_parts, val_parts = [], []
    held_parts: dict = {"heldout": [], "heldout_real_us": []}
    for index, pair in enumerate(pairs):
        part = sampler.sample(index, pair, int(config.samples_per_pair),
                              monitor.stage(index / len(pairs), (index + 1) / len(pairs)))
        if pair.split in held_parts:
            held_parts[pair.split].append(part)
            continue
        perm = rng.permutation(len(part))
        n_val = int(round(config.validation_fraction * len(part)))
        val_parts.append(part.subset(np.sort(perm[:n_val])))
        train_parts.append(part.subset(np.sort(perm[n_val:])))
    return tuple(PatchPairs.concatenate(p) for p in (train_parts, val_parts, held_parts["heldout"],
                                                     held_parts["heldout_real_us"]))


def prepare_run(data_dir, config: TrainingConfig, progress=None, cancel=None) -> SampledData:
    """Load the data and sample the patch pairs (deterministic for ``config.seed``)."""
    monitor = Monitor.wrap(progress, cancel)
    t0 = time.perf_counter()
    volumes, pairs, description = load_training_data(data_dir, config, monitor.stage(0.0, 0.25))
    rng = np.random.default_rng([int(config.seed), 1])
    train, validation, heldout, heldout_us = sample_data(volumes, pairs, config, rng, monitor.stage(0.25, 1.0))
    description["samples"] = {
        "per_pair": int(config.samples_per_pair),
        "train": len(train), "validation": len(validation), "heldout": len(heldout),
        "heldout_real_us": len(heldout_us),
        "train_target_histogram_10_bins": train.histogram(),
    }
    return SampledData(volumes, pairs, description, train, validation, heldout, heldout_us, time.perf_counter() - t0)


@dataclass
class TrainingResult:
    """A trained network with its account: history, metrics, data description, timings and settings."""

    network: DISANet
    config: TrainingConfig
    history: TrainingHistory
    metrics: dict
    description: dict
    timings: dict


def run_training(
    data_dir=None,
    config: TrainingConfig | None = None,
    minutes: float | None = None,
    device="cpu",
    progress=None,
    cancel=None,
    samples_from_budget: bool = True,
) -> TrainingResult:
    """Train a DISA network from scratch.

    Args:
        data_dir: folder laid out like ``../shared/data`` (None: synthetic data only).
        config: settings; with ``minutes`` its ``samples_per_pair`` comes from
            :func:`samples_per_pair_for_budget` and its ``iterations`` from the measured step time so that the
            whole run fits ``minutes`` (the chosen counts are recorded: ``config`` of the result reproduces the
            run bit for bit on a CPU).
        minutes: wall-clock budget, or None to run ``config.iterations``.
        samples_from_budget: with ``minutes``, take ``samples_per_pair`` from the budget (False: keep the config's).
        device: torch device for the network (sampling runs on the CPU).
        progress, cancel: see :mod:`MMRegistrationLib.core.progress`.
    """
    from MMRegistrationLib.core.device import resolve_device

    t_start = time.perf_counter()
    config = config or TrainingConfig()
    if minutes is not None:
        if not minutes > 0:
            raise InputError("--minutes", f"must be positive, got {minutes}")
        if samples_from_budget:
            config = replace(config, samples_per_pair=samples_per_pair_for_budget(
                minutes, 1 + len(config.extra_spacings_mm)))
    device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    monitor = Monitor.wrap(progress, cancel)
    data = prepare_run(data_dir, config, monitor.stage(0.0, 0.3))
    torch.manual_seed(int(config.seed))
    network = DISANet(config.network).to(device)
    batcher = PatchBatcher(data.volumes, config, torch.Generator().manual_seed(int(config.seed) + 1))
    step_seconds = seconds_per_iteration(network, batcher, data.train, config, device)
    deadline = None
    if minutes is not None:
        reserve = min(30.0, 6.0 * minutes) + 0.02 * 60.0 * minutes  # evaluation and saving
        deadline = t_start + 60.0 * minutes - reserve
        left = deadline - time.perf_counter()
        iterations = int(max(1, left // (1.05 * step_seconds)))  # 5 % margin for a machine that slows down
        config = replace(config, iterations=iterations)
    t_train = time.perf_counter()
    history = train_network(network, batcher, data.train, config, config.iterations, device,
                            np.random.default_rng([int(config.seed), 2]), monitor.stage(0.3, 0.97),
                            deadline=deadline)
    train_seconds = time.perf_counter() - t_train
    monitor.report(0.97, "training: evaluating")
    metrics = {
        "validation": evaluate(network, batcher, data.validation, device),
        **evaluate_groups(network, batcher, data, device),
        "final_training_loss": history.loss[-1] if history.loss else None,
        "iterations_run": history.stopped_at if history.stopped_at is not None else config.iterations,
    }
    timings = {
        "data_and_sampling_s": round(data.seconds, 1),
        "seconds_per_iteration_measured": round(step_seconds, 4),
        "training_s": round(train_seconds, 1),
        "total_s": round(time.perf_counter() - t_start, 1),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    monitor.report(1.0, "training: done")
    return TrainingResult(network.cpu(), config, history, metrics, data.description, timings)


def reproduce_command(config: TrainingConfig) -> str:
    """The ``mmreg train-disa`` line that repeats a run with ``config`` exactly (on a CPU)."""
    default = TrainingConfig()
    parts = [f"mmreg train-disa --iterations {config.iterations}",
             f"--samples-per-pair {config.samples_per_pair} --seed {config.seed}"]
    for name, flag in (("batch_size", "--batch-size"), ("synthetic_cases", "--synthetic-cases"),
                       ("synthetic_scale", "--synthetic-scale")):
        if getattr(config, name) != getattr(default, name):
            parts.append(f"{flag} {getattr(config, name)}")
    if config.extra_spacings_mm != default.extra_spacings_mm:
        parts.append("--extra-spacings " + (",".join(f"{v:g}" for v in config.extra_spacings_mm) or "none"))
    return " ".join(parts) + " --device cpu --out DIR"


def training_record(result: TrainingResult, command: str | None = None) -> dict:
    """The ``training`` block of the weights sidecar."""
    reproduce = command or reproduce_command(result.config)
    if result.history.stopped_at is not None:
        reproduce = (f"(the time budget stopped this run after {result.history.stopped_at} of "
                     f"{result.config.iterations} planned iterations; this repeats the planned run) {reproduce}")
    return {
        "objective": "L2 between descriptor dot products and patch LC2 (mean over radii), paper 001",
        "config": result.config.to_dict(),
        "reproduce": reproduce,
        "data": result.description,
        "metrics": result.metrics,
        "timings": result.timings,
    }


def validate_weights(weights_path, data_dir=None, overrides: dict | None = None, device="cpu",
                     progress=None, cancel=None) -> dict:
    """Evaluate saved weights on freshly sampled pairs (a different seed from training) and held-out volumes.

    The data settings are the ones stored in the sidecar (``samples_per_pair`` capped at 300 for speed), then
    ``overrides`` (``TrainingConfig`` field -> value). Returns ``{"weights", "sha256", "samples_per_pair",
    "fresh_pairs": metrics, "heldout_volumes": metrics, "heldout_real_us": metrics}`` (see :func:`evaluate`).
    """
    from MMRegistrationLib.core.device import resolve_device
    from MMRegistrationLib.networks.disa import load_disa

    device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    network, meta = load_disa(weights_path, device=device)
    stored = (meta.get("training") or {}).get("config")
    try:
        config = TrainingConfig.from_dict(stored) if stored else TrainingConfig()
    except TypeError as err:
        raise InputError("--weights", f"the training config in the sidecar of {weights_path} is not readable ({err})") from err
    config = replace(config, samples_per_pair=min(config.samples_per_pair, 300))
    config = replace(config, **dict(overrides or {}))
    config = replace(config, seed=int(config.seed) + 7919, validation_fraction=0.0)
    data = prepare_run(data_dir, config, progress, cancel)
    batcher = PatchBatcher(data.volumes, config)
    return {
        "weights": str(weights_path),
        "sha256": meta["sha256"],
        "samples_per_pair": config.samples_per_pair,
        "fresh_pairs": evaluate(network, batcher, data.train, device),
        **evaluate_groups(network, batcher, data, device),
    }
