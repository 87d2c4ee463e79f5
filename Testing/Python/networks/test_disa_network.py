"""DISA network: shapes, stride-4 geometry, 17-voxel receptive field, norm clipping, size, errors, 8-bit descriptors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import expect_input_error, oblique_grid
from MMRegistrationLib.networks.disa import (
    RECEPTIVE_FIELD,
    DISAConfig,
    DISANet,
    clip_norm,
    dequantize_descriptors,
    descriptor_grid,
    quantize_descriptors,
    quantized_dot,
)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return DISANet().eval()


def test_output_shape_is_ceil_of_a_quarter(net):
    x = torch.randn(2, 1, 17, 22, 29)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 16, 5, 6, 8)


def test_parameter_count_is_about_90k(net):
    count = net.num_parameters
    print(f"DISA parameters: {count}")
    assert 70_000 <= count <= 110_000 and count == 91_320


def test_descriptor_norms_are_clipped_at_one(net):
    with torch.no_grad():
        y = net(100.0 * torch.randn(1, 1, 20, 20, 20))  # large inputs drive norms well above 1 before clipping
    norms = torch.linalg.vector_norm(y, dim=1)
    assert float(norms.max()) <= 1.0 + 1e-6
    assert float((norms > 0.999).float().mean()) > 0.5
    small = torch.tensor([[0.3, 0.4], [3.0, 4.0]]).T[None]  # (1, 2, 2): norms 0.5 and 5
    torch.testing.assert_close(clip_norm(small), torch.tensor([[0.3, 0.6], [0.4, 0.8]])[None])


def test_stride_four_and_centre_crops_give_the_whole_volume_descriptors(net):
    """Descriptor o sits on input voxel 4 o; a 17^3 crop centred there reproduces it exactly (training path)."""
    x = torch.randn(1, 1, 33, 37, 41, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = net(x)
        for o in [(2, 2, 2), (3, 4, 5), (6, 7, 8)]:
            c = [4 * v for v in o]
            crop = x[:, :, c[0] - 8:c[0] + 9, c[1] - 8:c[1] + 9, c[2] - 8:c[2] + 9]
            torch.testing.assert_close(net.forward_center(crop)[0], whole[0, :, o[0], o[1], o[2]], atol=1e-6, rtol=1e-5)


def test_receptive_field_is_exactly_17_voxels(net):
    x = torch.randn(1, 1, 41, 41, 41, generator=torch.Generator().manual_seed(2))
    o = (5, 5, 5)  # input voxel (20, 20, 20)
    with torch.no_grad():
        base = net(x)[0, :, 5, 5, 5]
        for offset, changes in ((8, True), (9, False), (-8, True), (-9, False)):
            y = x.clone()
            y[0, 0, 20 + offset, 20, 20] += 10.0
            changed = not torch.equal(net(y)[0, :, o[0], o[1], o[2]], base)
            assert changed == changes, offset


def test_input_errors_name_the_problem(net):
    expect_input_error(lambda: net(torch.zeros(1, 1, 16, 30, 30)), "image", "too small", str(RECEPTIVE_FIELD), "stride 4")
    nan = torch.zeros(1, 1, 20, 20, 20)
    nan[0, 0, 3, 4, 5] = float("nan")
    expect_input_error(lambda: net(nan), "image", "NaN")
    expect_input_error(lambda: net(torch.zeros(1, 2, 20, 20, 20)), "image", "(N, 1, D, H, W)")
    expect_input_error(lambda: net.forward_center(torch.zeros(2, 1, 15, 15, 15)), "patches", "17")
    expect_input_error(lambda: DISAConfig(head_channels=0), "head_channels")
    expect_input_error(lambda: DISAConfig.from_dict({"depth": 3}), "config", "unknown")


def test_same_seed_same_weights():
    torch.manual_seed(7)
    a = DISANet()
    torch.manual_seed(7)
    b = DISANet()
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_descriptor_grid_scales_the_affine_by_the_stride():
    grid = oblique_grid(shape=(21, 30, 33))
    coarse = descriptor_grid(grid)
    assert coarse.shape == (6, 8, 9)
    np.testing.assert_allclose(coarse.index_to_world([1.0, 2.0, 3.0]), grid.index_to_world([4.0, 8.0, 12.0]), atol=1e-9)


def test_eight_bit_descriptors_keep_dot_products(net):
    with torch.no_grad():
        d = net(3.0 * torch.randn(1, 1, 24, 24, 24, generator=torch.Generator().manual_seed(3)))
    q = quantize_descriptors(d)
    assert q.dtype == torch.int8
    assert float((dequantize_descriptors(q) - d).abs().max()) <= 0.5 / 127 + 1e-7
    flat = d.flatten(2)[0].T  # (P, 16)
    a, b = flat[:-1], flat[1:]
    exact = (a * b).sum(1)
    approx = quantized_dot(quantize_descriptors(a), quantize_descriptors(b))
    err = (approx - exact).abs()
    # bound: (|a|_1 + |b|_1) / 254 + 16 / 254^2 <= 8 / 254 + 3e-4 for norms <= 1
    assert float(err.max()) < 8 / 254 + 3e-4 and float(err.mean()) < 0.004, (float(err.max()), float(err.mean()))
    expect_input_error(lambda: quantized_dot(a, b), "quantized_dot", "int8")
    expect_input_error(lambda: dequantize_descriptors(d), "quantized", "int8")
