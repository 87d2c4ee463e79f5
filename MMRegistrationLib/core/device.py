"""Device choice and seeded determinism. Never hard-code a device: call :func:`resolve_device`."""

from __future__ import annotations

import random

import numpy as np
import torch

from MMRegistrationLib.core.errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto", argument: str = "--device") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is not available is an error."""
    name = (name or "auto").lower()
    cuda_ok = torch.cuda.is_available()
    mps_ok = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda_ok else "mps" if mps_ok else "cpu")
    if name.startswith("cuda"):
        if not cuda_ok:
            raise InputError(argument, f"'{name}' was requested but no CUDA device is available; use auto or cpu")
        return torch.device(name)
    if name == "mps":
        if not mps_ok:
            raise InputError(argument, "'mps' was requested but Metal is not available; use auto or cpu")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(argument, f"unknown device '{name}'; choose one of {', '.join(DEVICE_CHOICES)}")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so CPU runs are bit-for-bit repeatable."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def float_dtype_for(device) -> torch.dtype:
    """The widest floating dtype a device computes in: float64 on the CPU and CUDA, float32 on Apple's MPS (Metal
    has no float64). Use it for every double-precision tensor that may live on a non-CPU device, so a CPU run keeps
    its float64 (and its exact results) and an MPS run does not fail."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def move(tensor: torch.Tensor, device=None, dtype=None) -> torch.Tensor:
    """``tensor.to(device, dtype)`` with the dtype changed on the side that has it: before moving onto a device,
    after moving off one (MPS cannot hold the float64 on the way)."""
    device = tensor.device if device is None else torch.device(device)
    dtype = tensor.dtype if dtype is None else dtype
    if device.type == "cpu":
        return tensor.to(device).to(dtype)
    return tensor.to(dtype).to(device)
