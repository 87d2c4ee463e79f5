"""Network weights files: ``NAME.pt`` (a torch state dict) plus ``NAME.json`` (the sidecar).

The sidecar makes a checkpoint rebuild its own network and proves its integrity::

    {"format": "mmreg-weights", "format_version": 1, "model": "DISANet", "config": {...},
     "sha256": "<hex of NAME.pt>", "engine_version": "0.1.0", "created": "2024-...Z",
     "num_parameters": 91320, "training": {... data description, settings, metrics ...}}

Loading checks, in order: both files exist, the sidecar is valid JSON of this format, the model name is the
expected one, the weights file's SHA-256 matches, the config builds the network (and equals ``expected_config``
when given), and the state dict matches that network key by key and shape by shape. Each failure is an
:class:`~MMRegistrationLib.core.errors.InputError` naming the file and the fix.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn

from MMRegistrationLib import __version__
from MMRegistrationLib.core.errors import InputError

FORMAT = "mmreg-weights"
FORMAT_VERSION = 1


def sidecar_path(weights_path: str | os.PathLike) -> Path:
    """``NAME.json`` beside ``NAME.pt``."""
    return Path(weights_path).with_suffix(".json")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(
    network: nn.Module,
    path: str | os.PathLike,
    model: str,
    config: dict,
    training: Optional[dict] = None,
) -> dict:
    """Write ``path`` (state dict) and its JSON sidecar; both via temporary names, then renamed.

    Args:
        network: the module whose ``state_dict`` is saved.
        path: weights file (``.pt``); the sidecar is ``path`` with ``.json``.
        model: model name checked on load (e.g. ``"DISANet"``).
        config: JSON-friendly constructor settings that rebuild the network.
        training: JSON-friendly description (data, settings, metrics) stored as is.

    Returns:
        The sidecar dictionary.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model,
        "config": dict(config),
        "engine_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "num_parameters": int(sum(p.numel() for p in network.parameters())),
        "training": training or {},
    }
    side = sidecar_path(path)
    side_tmp = side.with_name(f".{side.name}.partial")
    try:
        torch.save(state, tmp)
        meta["sha256"] = sha256_of(tmp)
        side_tmp.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        os.replace(side_tmp, side)
    except BaseException:
        tmp.unlink(missing_ok=True)
        side_tmp.unlink(missing_ok=True)
        raise
    return meta


def read_sidecar(path: str | os.PathLike, argument: str = "weights") -> dict:
    """The validated sidecar of weights file ``path`` (format, version, required keys)."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise InputError(argument, f"weights file {path} not found")
    if not side.is_file():
        raise InputError(argument, f"{side.name} (the sidecar with config and checksum) is missing beside {path}")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(argument, f"sidecar {side} is not valid JSON ({err}); the file is corrupted") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(argument, f"sidecar {side} is not an '{FORMAT}' file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(
            argument, f"sidecar {side} has format_version {meta.get('format_version')!r}; this engine reads "
            f"version {FORMAT_VERSION}: retrain or update the extension"
        )
    missing = [k for k in ("model", "config", "sha256") if k not in meta]
    if missing:
        raise InputError(argument, f"sidecar {side} lacks {', '.join(missing)}")
    return meta


def load_weights(
    path: str | os.PathLike,
    model: str,
    build: Callable[[dict], nn.Module],
    expected_config: Optional[dict] = None,
    map_location="cpu",
    argument: str = "weights",
) -> tuple:
    """Verify and load weights written by :func:`save_weights`.

    Args:
        path: the ``.pt`` file.
        model: the model name the sidecar must declare.
        build: ``config dict -> module`` (may raise :class:`InputError` for a bad config).
        expected_config: when given, the sidecar's config must equal it.
        map_location: torch device for the tensors.

    Returns:
        ``(network in eval mode, sidecar dict)``.
    """
    path = Path(path)
    meta = read_sidecar(path, argument)
    if meta["model"] != model:
        raise InputError(argument, f"{path} holds a '{meta['model']}' network, not '{model}'")
    actual = sha256_of(path)
    if actual != meta["sha256"]:
        raise InputError(
            argument, f"{path} is corrupted or was replaced: its SHA-256 {actual[:16]}... differs from "
            f"{meta['sha256'][:16]}... recorded in {sidecar_path(path).name}; re-download or retrain the weights"
        )
    if expected_config is not None and dict(meta["config"]) != dict(expected_config):
        diff = sorted(k for k in set(meta["config"]) | set(expected_config)
                      if meta["config"].get(k) != expected_config.get(k))
        raise InputError(argument, f"{path} was trained with a different network config (differs in {diff})")
    network = build(dict(meta["config"]))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a damaged archive
        raise InputError(argument, f"{path} cannot be read as a torch state dict ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict):
        raise InputError(argument, f"{path} does not hold a state dict")
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:4]}")
        if wrong:
            parts.append("shape mismatch " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:4]))
        raise InputError(argument, f"{path} does not match its config's network: {'; '.join(parts)}")
    network.load_state_dict(state, strict=True)
    return network.eval(), meta
