"""Shared fixtures: seeded RNG, oblique anisotropic grids, analytic phantoms with known transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def load_benchmark_module(name: str):
    """Import ``benchmarks/<name>.py`` under a private module name (``benchmarks/`` is not a package)."""
    import importlib.util
    import sys

    key = f"_mmreg_benchmarks_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPO_ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def oblique_grid(
    shape=(24, 30, 28), spacing=(1.3, 0.9, 2.1), origin=(-31.5, 17.25, 42.0), angles_deg=(17.0, -11.0, 28.0)
) -> Grid:
    """An oblique (rotated), anisotropic grid with a non-zero origin. ``shape`` is (K, J, I)."""
    direction = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    return Grid.from_geometry(shape, spacing, origin, direction)


def covering_grid(center, extent_mm: float, spacing, angles_deg, origin_shift=(0.0, 0.0, 0.0)) -> Grid:
    """An oblique grid of roughly ``extent_mm`` per side centred on ``center`` (LPS mm)."""
    spacing = np.asarray(spacing, dtype=float)
    size_ijk = np.maximum(2, np.round(extent_mm / spacing).astype(int))
    direction = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    origin = np.asarray(center) + np.asarray(origin_shift) - direction @ (spacing * (size_ijk - 1) / 2)
    return Grid.from_geometry(tuple(size_ijk[::-1]), spacing, origin, direction)


ANATOMY = (
    # label, centre (LPS mm), radii (mm) — prostate, bladder (anterior-superior), rectum (posterior)
    (1, np.array([5.0, -2.0, 10.0]), np.array([21.0, 14.0, 16.0])),
    (2, np.array([5.0, -12.0, 40.0]), np.array([16.0, 13.0, 11.0])),
    (3, np.array([5.0, 22.0, 8.0]), np.array([9.0, 7.0, 24.0])),
)


def phantom_labels(grid: Grid, world_to_anatomy=None) -> Image:
    """Label map of three ellipsoids. ``world_to_anatomy`` maps this grid's world points into the anatomy's
    frame (None = identity): a moving image of a fixed->moving transform T uses T^-1."""
    pts = grid.world_points()
    if world_to_anatomy is not None:
        pts = world_to_anatomy(pts.reshape(-1, 3)).reshape(pts.shape)
    out = np.zeros(grid.shape, dtype=np.uint8)
    for label, center, radii in ANATOMY:
        inside = (((pts - center) / radii) ** 2).sum(-1) <= 1.0
        out[inside & (out == 0)] = label
    return Image(out, grid)


def phantom_intensity(labels: Image, seed: int = 0) -> Image:
    """Smooth intensity image from a label map, with a little noise."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    lut = np.array([40.0, 120.0, 220.0, 15.0])
    img = lut[labels.array] + ndimage.gaussian_filter(rng.normal(0, 8, labels.array.shape), 1.0)
    return labels.with_array(img.astype(np.float32))


def expect_input_error(call, argument: str, *words: str) -> str:
    """Run ``call``; it must raise :class:`InputError` whose message starts with ``argument:`` and contains
    every one of ``words``. Returns the message."""
    from MMRegistrationLib.core.errors import InputError

    with pytest.raises(InputError) as err:
        call()
    message = str(err.value)
    assert message.startswith(f"{argument}: "), message
    for word in words:
        assert word in message, message
    return message


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def grid_oblique() -> Grid:
    return oblique_grid()


# ---- shared by the region (--roi) tests --------------------------------------------------------------------------
REGION_USE = "test only: records the box it receives"


@pytest.fixture
def region_method():
    """A method that uses a region (``region_use`` set), registered for one test; yields the regions it received."""
    from MMRegistrationLib.registration import methods
    from MMRegistrationLib.registration.base import RegistrationResult

    received = []

    def run(inputs, initial, config, context):
        received.append(inputs.region)
        return RegistrationResult(transform=initial, inverse=initial.inverse())

    name = "roi-test"
    assert name not in methods.METHODS
    methods.register_method(methods.MethodSpec(name, run, False, "none", "test-only method", region_use=REGION_USE))
    try:
        yield received
    finally:
        methods.METHODS.pop(name, None)


def markups_app_scene(slicer):
    """A slicer-core scene with an application logic and the colors/markups module logics registered, as markups
    storage and the markups logic need (see shared/SLICER_CORE_NOTES.md)."""
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(app_logic)
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    app_logic.SetModuleLogic("Colors", colors)
    markups = slicer.vtkSlicerMarkupsLogic()
    markups.SetMRMLScene(scene)
    markups.SetMRMLApplicationLogic(app_logic)
    app_logic.SetModuleLogic("Markups", markups)
    scene._mmreg_keep = (app_logic, colors, markups)  # keep the logics alive with the scene
    return scene


@pytest.fixture(scope="session")
def tiny_seg_dir(tmp_path_factory) -> Path:
    """A folder with ``prostate_mr.pt`` and ``prostate_trus.pt`` (+ sidecars): one tiny network trained on ball
    images (``seg_fixtures``), saved for each modality. Point ``MMREG_SEGMENTATION_DIR`` at it to use it as the
    shipped networks."""
    from seg_fixtures import save_tiny_weights, train_tiny_network

    folder = tmp_path_factory.mktemp("segmentation_networks")
    net, config = train_tiny_network("trus")
    save_tiny_weights(folder, "trus", net, config)
    from dataclasses import replace

    save_tiny_weights(folder, "mr", net, replace(config, network=replace(config.network, modality="mr")))
    return folder


@pytest.fixture
def tiny_seg_networks(tiny_seg_dir, monkeypatch) -> Path:
    """``tiny_seg_dir`` in use as the shipped segmentation networks (``MMREG_SEGMENTATION_DIR``) for one test."""
    monkeypatch.setenv("MMREG_SEGMENTATION_DIR", str(tiny_seg_dir))
    return tiny_seg_dir


def rerun_recorded_command(reproduce: str, add_parser, iterations: int, out: Path, data: Path | None = None) -> None:
    """Run a sidecar's recorded training command (``mmreg train-...``) in this process for ``iterations`` steps into
    ``out`` (``data``: another path for ``--data``), restoring torch's thread count afterwards."""
    import argparse
    import shlex

    import torch

    words = shlex.split(reproduce)[1:]
    words[words.index("--iterations") + 1] = str(iterations)
    words[words.index("--out") + 1] = str(out)
    if data is not None:
        words[words.index("--data") + 1] = str(data)
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(words + ["--quiet"])
    threads = torch.get_num_threads()
    try:
        assert args.func(args) == 0
    finally:
        torch.set_num_threads(threads)
