"""Small, seeded segmentation material for tests: ball "glands" on varied grids, and a tiny segmentation network
trained on them with the real trainer (a few seconds on one thread), saved with its sidecar like shipped weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.segmentation.network import SegNetConfig
from MMRegistrationLib.segmentation.weights import save_segmentation_net
from MMRegistrationLib.training.seg import new_network, train_segmentation
from MMRegistrationLib.training.seg_config import SegTrainingConfig
from MMRegistrationLib.training.seg_data import make_seg_case

TINY = SegNetConfig(channels=(8, 16), strides=(2,), grid_size=16, grid_spacing_mm=6.0)
"""A 16^3 grid of 6 mm (96 mm across): the network of the tests."""


def ball_image(seed: int, spacing=(1.5, 1.5, 1.5), angles_deg=(0.0, 0.0, 0.0), extent_mm: float = 90.0,
               radius_mm: float = 20.0, center=(10.0, -30.0, 40.0)) -> tuple:
    """``(image, gland)``: a bright ball of ``radius_mm`` (with speckle-like noise, seeded) near the centre of a
    grid of ``spacing`` rotated by ``angles_deg`` about ``center`` (LPS mm)."""
    rng = np.random.default_rng(seed)
    spacing = np.asarray(spacing, dtype=float)
    size = np.maximum(4, np.round(extent_mm / spacing).astype(int))
    direction = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    origin = np.asarray(center) - direction @ (spacing * (size - 1) / 2)
    grid = Grid.from_geometry(tuple(size[::-1]), spacing, origin, direction)
    gland_center = np.asarray(center) + rng.uniform(-6.0, 6.0, 3)
    gland = np.linalg.norm(grid.world_points() - gland_center, axis=-1) <= radius_mm
    values = np.where(gland, 150.0, 40.0) + rng.normal(0.0, 12.0, gland.shape)
    return Image(values.astype(np.float32), grid), gland


def train_tiny_network(modality: str, steps: int = 120, seed: int = 0) -> tuple:
    """``(network, config)`` trained on ball images of several geometries for ``steps`` steps (float32)."""
    torch.set_num_threads(1)
    config = SegTrainingConfig(network=replace(TINY, modality=modality), iterations=steps, batch_size=2,
                               learning_rate=5e-3, validate_every=steps, rotation_deg=10.0, translation_mm=6.0,
                               precision="float32", seed=seed)
    geometries = [((1.5, 1.5, 1.5), (0, 0, 0)), ((1.0, 1.2, 2.5), (10, -5, 20)), ((2.0, 2.0, 2.0), (0, 0, 90))]
    train = [make_seg_case(f"ball{k}", *ball_image(k, *geometries[k % 3]), "test") for k in range(6)]
    validation = [make_seg_case("ball_val", *ball_image(100, (1.2, 1.2, 1.8), (5, 5, -10)), "test")]
    net = new_network(config)
    train_segmentation(net, train, validation, config, steps, "cpu", Monitor.wrap(None))
    return net, config


def save_tiny_weights(folder: Path, modality: str, net=None, config=None) -> Path:
    """The tiny network (trained unless given) saved as ``folder/prostate_MODALITY.pt`` + sidecar."""
    if net is None:
        net, config = train_tiny_network(modality)
    path = Path(folder) / f"prostate_{modality}.pt"
    save_segmentation_net(net, config.network, path, {"note": "test network trained on ball images"})
    return path


def silenced(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``net`` whose output logits are all very negative (it finds no gland anywhere)."""
    import copy

    quiet = copy.deepcopy(net)
    last = [m for m in quiet.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-50.0)
    return quiet
