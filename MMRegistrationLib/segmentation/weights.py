"""Segmentation network weights: ``Resources/Segmentation/prostate_{mr,trus}.pt`` with their sidecars (the format
of :mod:`MMRegistrationLib.networks.weights`: config, data, split, command, sha256), saved and loaded with every
check (missing, corrupted, another model's, another modality's)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.segmentation.network import SegNetConfig, build_network

MODEL_NAME = "ProstateSegNet"
_CACHE: dict = {}


SEGMENTATION_DIR_VARIABLE = "MMREG_SEGMENTATION_DIR"
"""Environment variable naming another folder of ``prostate_{mr,trus}.pt`` (e.g. networks retrained with
``mmreg train-seg``), used by ``--fixed-seg auto``, ``mmreg segment`` and the Slicer modules."""


def segmentation_dir() -> Path:
    """The folder of the segmentation networks: ``$MMREG_SEGMENTATION_DIR`` or ``Resources/Segmentation``."""
    from MMRegistrationLib.resources import resources_dir

    override = os.environ.get(SEGMENTATION_DIR_VARIABLE, "").strip()
    return Path(override) if override else resources_dir() / "Segmentation"


def default_segmentation_weights(modality: str) -> Path:
    """The shipped network of ``modality`` (``mr`` or ``trus``)."""
    return segmentation_dir() / f"prostate_{modality}.pt"


def save_segmentation_net(network: torch.nn.Module, config: SegNetConfig, path, training: Optional[dict] = None):
    from MMRegistrationLib.networks.weights import save_weights

    return save_weights(network, path, MODEL_NAME, config.as_dict(), training)


def load_segmentation_net(modality: str, path=None, device="cpu", argument: str = "--weights") -> tuple:
    """``(network in eval mode on device, SegNetConfig, sidecar)`` for ``modality`` from ``path`` (default: the
    shipped network). :class:`InputError` naming ``argument`` when the file is missing, corrupted (SHA-256), not a
    segmentation network, or trained for the other modality. Cached by path, checksum and device."""
    from MMRegistrationLib.networks.weights import load_weights, read_sidecar

    path = Path(os.fspath(path)) if path else default_segmentation_weights(modality)
    meta = read_sidecar(path, argument)
    key = (str(path.resolve()), meta.get("sha256"), str(device), path.stat().st_mtime_ns)
    if key not in _CACHE:
        def build(config: dict) -> torch.nn.Module:
            try:
                return build_network(SegNetConfig.from_dict(config))
            except (InputError, TypeError, ValueError) as err:
                raise InputError(argument, f"{path}: its config does not build a segmentation network ({err})") from err

        network, meta = load_weights(path, MODEL_NAME, build, argument=argument)
        _CACHE.clear()
        _CACHE[key] = (network.to(device), SegNetConfig.from_dict(meta["config"]), meta)
    network, config, meta = _CACHE[key]
    if config.modality != modality:
        raise InputError(argument, f"{path} segments {config.modality.upper()} images, not {modality.upper()}: "
                                   f"give the {modality.upper()} network or the right --modality")
    return network, config, meta
