"""Device resolution, seeding, progress and cancellation."""

from __future__ import annotations

import pytest
import torch

from MMRegistrationLib.core.device import resolve_device, seed_everything
from MMRegistrationLib.core.errors import Cancelled, InputError
from MMRegistrationLib.core.progress import Monitor


def test_auto_device_prefers_accelerators():
    dev = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert dev.type == expected
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_unavailable_cuda_is_a_clear_error():
    with pytest.raises(InputError, match="--device: 'cuda' was requested"):
        resolve_device("cuda")


def test_unknown_device():
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")


def test_seed_makes_torch_repeatable():
    seed_everything(7)
    a = torch.randn(5)
    seed_everything(7)
    assert torch.equal(a, torch.randn(5))


def test_monitor_maps_stages_and_cancels():
    seen = []
    flag = {"stop": False}
    mon = Monitor(lambda f, m: seen.append((round(f, 6), m)), lambda: flag["stop"])
    child = mon.stage(0.5, 1.0).stage(0.0, 0.5)
    child.report(0.5, "half")
    assert seen == [(0.625, "half")]
    flag["stop"] = True
    with pytest.raises(Cancelled, match="during x"):
        child.report(1.0, "x")
    assert Monitor.wrap(mon) is mon
