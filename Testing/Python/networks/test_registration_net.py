"""The registration networks (papers 004/003): configuration checks, shapes, the near-identity start, CMSA, and the
weights round trip with every way a weights file can be wrong."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import expect_input_error
from MMRegistrationLib.networks.registration import (
    CrossModalAttention,
    RegistrationNet,
    RegNetConfig,
    load_registration_net,
    save_registration_net,
)

SMALL = dict(channels=(2, 4, 4), grid_size=16, grid_spacing_mm=4.0)


def _net(**changes) -> RegistrationNet:
    torch.manual_seed(0)
    return RegistrationNet(RegNetConfig(**{**SMALL, **changes}))


@pytest.mark.parametrize("changes, argument, words", [
    (dict(grid_size=18), "grid_size", ["multiple of 4"]),
    (dict(inputs=("fixed",)), "inputs", ["'moving'"]),
    (dict(inputs=("fixed", "moving", "labels")), "inputs", ["optionally"]),
    (dict(architecture="transformer"), "architecture", ["unet, dual-stream"]),
    (dict(output="affine"), "output", ["svf, ddf"]),
    (dict(center="fixed-mask", init="center"), "center", ["'com' or 'rigid-mask'"]),
    (dict(channels=(4,)), "channels", ["two or more"]),
    (dict(grid_spacing_mm=0), "grid_spacing_mm", ["positive"]),
])
def test_a_bad_config_names_the_setting(changes, argument, words):
    expect_input_error(lambda: RegNetConfig(**{**SMALL, **changes}), argument, *words)


@pytest.mark.parametrize("architecture, inputs, cmsa", [
    ("unet", ("fixed", "moving"), True),
    ("unet", ("fixed", "moving", "moving_mask", "fixed_mask"), True),
    ("dual-stream", ("fixed", "moving"), True),
    ("dual-stream", ("fixed", "moving", "moving_mask"), False),
])
def test_every_architecture_maps_inputs_to_a_three_channel_field_near_zero_at_the_start(architecture, inputs, cmsa):
    net = _net(architecture=architecture, inputs=inputs, cmsa=cmsa)
    x = torch.rand(2, len(inputs), 16, 16, 16)
    out = net(x)
    assert out.shape == (2, 3, 16, 16, 16)
    assert out.dtype == torch.float32
    assert float(out.detach().abs().max()) < 0.05  # heads start near zero: an untrained network is almost the identity
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net(x).dtype == torch.float32  # the heads stay in float32 under autocast
    with pytest.raises(ValueError, match="input must be"):
        net(torch.rand(1, len(inputs) + 1, 16, 16, 16))


def test_the_dual_stream_keeps_the_fixed_inputs_first():
    net = _net(architecture="dual-stream", inputs=("moving", "moving_mask", "fixed"))
    assert net.input_order == ("fixed", "moving", "moving_mask")


def test_cross_modal_attention_scales_each_voxel_of_its_own_stream_by_a_sigmoid_of_both():
    torch.manual_seed(1)
    attention = CrossModalAttention(4)
    own, other = torch.rand(1, 4, 5, 5, 5), torch.rand(1, 4, 5, 5, 5)
    with torch.no_grad():
        out = attention(own, other)
    ratio = out / own
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-6)  # one map shared by the channels
    assert float(ratio.min()) > 0 and float(ratio.max()) < 1
    with torch.no_grad():
        changed = attention(own, other + 1.0)
    assert not torch.allclose(changed, out)  # the other stream steers the attention


def test_weights_round_trip_rebuilds_the_same_network_from_the_sidecar(tmp_path):
    net = _net(architecture="dual-stream", inputs=("fixed", "moving"))
    for head in net.decoder.heads:
        torch.nn.init.normal_(head.weight, std=0.1)
    path = tmp_path / "w.pt"
    save_registration_net(net, path, {"note": "test"})
    loaded, meta = load_registration_net(path, "cpu")
    assert meta["training"] == {"note": "test"} and meta["config"] == net.config.to_dict()
    x = torch.rand(1, 2, 16, 16, 16)
    assert torch.equal(loaded(x), net.eval()(x))


def test_corrupted_missing_and_mismatched_weights_are_input_errors_naming_the_file(tmp_path):
    net = _net()
    path = tmp_path / "w.pt"
    save_registration_net(net, path)
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())

    blob = bytearray(path.read_bytes())
    blob[-20] ^= 0xFF
    path.write_bytes(bytes(blob))
    expect_input_error(lambda: load_registration_net(path), "--weights", "corrupted")

    save_registration_net(net, path)
    side.write_text(json.dumps({**meta, "sha256": json.loads(side.read_text())["sha256"],
                                "config": {k: v for k, v in meta["config"].items() if k != "output_scale"}}))
    expect_input_error(lambda: load_registration_net(path), "--weights", "missing keys", "output_scale")

    side.unlink()
    expect_input_error(lambda: load_registration_net(path), "--weights", "sidecar")
    expect_input_error(lambda: load_registration_net(tmp_path / "none.pt"), "--weights", "not found")
