"""Weights files with a JSON sidecar: round trip, and a clear error for every kind of damage or mismatch."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import expect_input_error
from MMRegistrationLib import __version__
from MMRegistrationLib.networks import disa as disa_module
from MMRegistrationLib.networks.disa import DISAConfig, DISANet, load_disa, save_disa
from MMRegistrationLib.networks.weights import sha256_of, sidecar_path

SMALL = DISAConfig(stem_channels=4, mid_channels=8, head_channels=8, descriptor_channels=4)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    net = DISANet(SMALL)
    path = tmp_path / "disa.pt"
    meta = save_disa(net, path, {"data": {"volumes": ["a", "b"]}, "metrics": {"mse": 0.01}})
    return net, path, meta


def _edit_sidecar(path, **changes):
    side = sidecar_path(path)
    meta = json.loads(side.read_text(encoding="utf-8"))
    meta.update(changes)
    side.write_text(json.dumps(meta), encoding="utf-8")


def test_round_trip_rebuilds_the_network_from_its_sidecar(saved):
    net, path, meta = saved
    loaded, read = load_disa(path)
    x = torch.randn(1, 1, 17, 18, 19)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x), atol=0, rtol=0)
    assert loaded.config == SMALL and not loaded.training
    side = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    assert side["sha256"] == sha256_of(path) == read["sha256"] == meta["sha256"]
    assert side["engine_version"] == __version__ and side["model"] == "DISANet"
    assert side["config"] == SMALL.to_dict() and side["num_parameters"] == net.num_parameters
    assert side["training"]["data"]["volumes"] == ["a", "b"]
    assert not list(path.parent.glob(".*partial*"))  # no temporary files left


def test_corrupted_weights_are_detected_by_the_checksum(saved):
    _, path, _ = saved
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    expect_input_error(lambda: load_disa(path), "weights", "corrupted", "SHA-256", "retrain")


def test_unreadable_archive_with_a_matching_checksum(saved):
    _, path, _ = saved
    path.write_bytes(path.read_bytes()[:200])  # truncated, checksum updated as if it were legitimate
    _edit_sidecar(path, sha256=sha256_of(path))
    expect_input_error(lambda: load_disa(path), "weights", "cannot be read")


def test_missing_files_and_broken_sidecar(saved, tmp_path, monkeypatch):
    _, path, _ = saved
    expect_input_error(lambda: load_disa(tmp_path / "none.pt"), "weights", "not found")
    side = sidecar_path(path)
    side.write_text("{not json", encoding="utf-8")
    expect_input_error(lambda: load_disa(path), "weights", "not valid JSON")
    side.unlink()
    expect_input_error(lambda: load_disa(path), "weights", "sidecar", "missing")
    monkeypatch.setattr(disa_module, "default_weights_path", lambda: tmp_path / "absent" / "disa_lc2.pt")
    expect_input_error(lambda: load_disa(), "weights", "no trained DISA weights", "mmreg train-disa")


def test_config_mismatches(saved):
    _, path, _ = saved
    expect_input_error(lambda: load_disa(path, expected_config=DISAConfig()), "weights", "different network config")
    _edit_sidecar(path, config=dict(SMALL.to_dict(), head_channels=16))  # weights no longer fit the config
    expect_input_error(lambda: load_disa(path), "weights", "does not match", "shape mismatch")
    _edit_sidecar(path, config=dict(SMALL.to_dict(), depth=4))
    expect_input_error(lambda: load_disa(path), "config", "unknown")


def test_other_model_or_format_version(saved):
    _, path, _ = saved
    _edit_sidecar(path, model="SomethingElse")
    expect_input_error(lambda: load_disa(path), "weights", "'SomethingElse'")
    _edit_sidecar(path, model="DISANet", format_version=99)
    expect_input_error(lambda: load_disa(path), "weights", "format_version 99")
