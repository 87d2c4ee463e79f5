"""Slicer on Apple Silicon: device "auto" picks MPS, which has no float64. The engine keeps double precision on the
CPU and CUDA and uses float32 on MPS (``core.device.float_dtype_for``), and never makes a float64 tensor on a device
that may be MPS (checked over the engine's source). Without an MPS machine, an MPS run is imitated by making
``float_dtype_for`` answer float32 for the CPU."""

from __future__ import annotations

import ast

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from MMRegistrationLib.core import device as device_module
from MMRegistrationLib.core.device import float_dtype_for, move


def test_float_dtype_per_device():
    assert float_dtype_for("cpu") is torch.float64 and float_dtype_for(torch.device("cpu")) is torch.float64
    assert float_dtype_for("cuda") is torch.float64 and float_dtype_for("cuda:1") is torch.float64
    assert float_dtype_for("mps") is torch.float32 and float_dtype_for(torch.device("mps")) is torch.float32


def test_move_changes_dtype_and_device_and_keeps_gradients():
    x = torch.linspace(0, 1, 5, dtype=torch.float64, requires_grad=True)
    y = move(x, "cpu", torch.float32)
    assert y.dtype is torch.float32 and y.device.type == "cpu"
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(5, dtype=torch.float64))
    assert move(x, None, None) is x  # nothing to change


def _is_float64(node) -> bool:
    return ast.unparse(node) in ("torch.float64", "torch.double")


def _converts_to_float64(node) -> bool:
    """``x.to(torch.float64)`` (dtype only) or ``x.double()``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    if node.func.attr == "double":
        return True
    return node.func.attr == "to" and len(node.args) == 1 and _is_float64(node.args[0]) and not node.keywords


def _non_cpu(device) -> bool:
    return device is not None and not (isinstance(device, ast.Constant) and device.value == "cpu")


def _float64_on_a_device(tree) -> list:
    """Calls that make float64 on a device that may be MPS: a float64 dtype together with a device other than
    "cpu" (``device=`` or ``.to(device, float64)``), and a conversion to float64 before the move to the CPU
    (``x.to(torch.float64).cpu()``: ``x`` is on the device). (Whether a plain ``x.to(torch.float64)`` runs on the
    CPU cannot be read from the source; these are the forms that can.)"""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        arguments = list(node.args) + [k.value for k in node.keywords]
        device = next((k.value for k in node.keywords if k.arg == "device"), None)
        if isinstance(node.func, ast.Attribute) and node.func.attr == "to" and len(node.args) == 2:
            device = node.args[0]
        if any(_is_float64(a) for a in arguments) and _non_cpu(device):
            found.append(node)
        elif (isinstance(node.func, ast.Attribute) and node.func.attr == "cpu"
              and _converts_to_float64(node.func.value)):
            found.append(node)
    return found


def test_the_engine_makes_no_float64_on_a_possibly_non_cpu_device():
    offending = []
    for path in sorted((REPO_ROOT / "MMRegistrationLib").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offending += [f"{path.relative_to(REPO_ROOT)}:{n.lineno}: {ast.unparse(n)}" for n in _float64_on_a_device(tree)]
    assert not offending, "float64 on a device that may be MPS (use core.device.float_dtype_for / move):\n" + \
        "\n".join(offending)


def test_the_check_finds_what_it_is_for():
    code = ("w = torch.as_tensor(a, dtype=torch.float64, device=device)\n"
            "v = field.on(grid).to(torch.float64).cpu()\n"
            "u = points.to(points.device, torch.float64)\n"
            "t = x.double().cpu()\n"
            "ok = x.detach().cpu().to(torch.float64)\n"
            "ok2 = torch.zeros(3, dtype=torch.float64)\n"
            "ok3 = w.to(device='cpu', dtype=torch.float64)\n")
    assert sorted(n.lineno for n in _float64_on_a_device(ast.parse(code))) == [1, 2, 3, 4]


@pytest.fixture
def as_on_mps(monkeypatch):
    """Every engine module that picks its wide dtype per device answers float32, as on MPS."""
    from MMRegistrationLib.similarity import lc2, objectives

    def float32(device):
        return torch.float32

    for module in (device_module, objectives, lc2):
        monkeypatch.setattr(module, "float_dtype_for", float32)


def _descriptor_volume(seed: int, shape=(6, 7, 8), channels: int = 4):
    from MMRegistrationLib.core.grid import Grid
    from MMRegistrationLib.similarity.disa import DescriptorVolume

    rng = np.random.default_rng(seed)
    grid = Grid.from_geometry(shape, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    desc = torch.nn.functional.normalize(torch.as_tensor(rng.normal(size=(1, channels, *shape)), dtype=torch.float32),
                                         dim=1)
    return DescriptorVolume(desc, grid, torch.ones(shape, dtype=torch.bool))


def test_descriptor_objective_computes_in_float64_on_the_cpu_and_float32_on_mps(as_on_mps):
    from MMRegistrationLib.similarity.objectives import DescriptorObjective

    fixed, moving = _descriptor_volume(0), _descriptor_volume(1)
    weights = np.random.default_rng(2).uniform(0.5, 1.0, fixed.grid.shape)
    objective = DescriptorObjective(fixed, moving, "dot", weights, device="cpu")
    loss, overlap = objective.evaluate(objective.points[None].to(torch.float64))
    assert objective.weights.dtype is torch.float32 and loss.dtype is torch.float32 and overlap.dtype is torch.float32


def test_descriptor_objective_keeps_float64_on_the_cpu():
    from MMRegistrationLib.similarity.objectives import DescriptorObjective

    fixed = _descriptor_volume(0)
    weights = np.random.default_rng(2).uniform(0.5, 1.0, fixed.grid.shape)
    objective = DescriptorObjective(fixed, fixed, "dot", weights, device="cpu")  # a volume against itself
    loss, overlap = objective.evaluate(objective.points[None])
    assert objective.weights.dtype is torch.float64 and loss.dtype is torch.float64
    assert float(overlap[0]) == pytest.approx(1.0) and float(loss[0]) == pytest.approx(0.0, abs=1e-6)


def test_lc2_statistics_follow_the_device(as_on_mps):
    from MMRegistrationLib.similarity.lc2 import lc2_map, patch_variance

    rng = np.random.default_rng(3)
    volume = torch.as_tensor(rng.normal(size=(12, 12, 12)), dtype=torch.float32)
    result = lc2_map(volume, volume * 2 + 1, radii=(2,))
    assert result.values.dtype is torch.float32 and torch.isfinite(result.values).all()
    assert patch_variance(volume, radii=(2,)).dtype is torch.float32
