"""DISA similarity: preprocessing (resampling, field of view, normalisation), descriptors, masked dot-product loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import expect_input_error, oblique_grid
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.networks.disa import DISANet, descriptor_grid
from MMRegistrationLib.similarity.disa import (
    compute_descriptors,
    descriptor_similarity,
    disa_loss,
    field_of_view_mask,
    normalize_intensities,
    prepare_volume,
)


def sector_image(shape=(40, 44, 48)) -> np.ndarray:
    """Ultrasound-like: speckle inside a cone (with a dark hole inside), exactly 0 outside."""
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    inside = (y > 2) & (np.abs(x - shape[2] / 2) < 0.6 * y) & (np.abs(z - shape[0] / 2) < 16)
    data = np.where(inside, 20 + rng.rayleigh(30, shape), 0.0)
    data[18:22, 30:34, 22:26] = 0.0  # anechoic structure inside the field of view
    return data.astype(np.float32), inside


def test_field_of_view_fills_dark_structures_inside():
    data, inside = sector_image()
    mask = field_of_view_mask(data, 0.0)
    assert mask[20, 32, 24] and (mask == inside).mean() > 0.99
    assert field_of_view_mask(data, None).all()


def test_normalisation_inside_the_field_of_view():
    data, inside = sector_image()
    out = normalize_intensities(data, inside)
    assert out.dtype == np.float32
    assert abs(out[inside].mean()) < 1e-5 and out[inside].std() == pytest.approx(1.0, abs=1e-5)
    assert np.all(out[~inside] == 0)
    expect_input_error(lambda: normalize_intensities(np.full((5, 5, 5), 3.0)), "image", "constant")
    # float32 interpolation noise on a constant image is not structure
    noisy = (np.full((5, 5, 5), 1000.0) + np.random.default_rng(0).normal(0, 2e-4, (5, 5, 5))).astype(np.float32)
    assert noisy.std() > 0
    expect_input_error(lambda: normalize_intensities(noisy), "image", "constant")
    expect_input_error(lambda: normalize_intensities(data, np.zeros_like(inside)), "image", "empty field of view")


def test_prepare_volume_resamples_to_isotropic_spacing_keeping_the_field_of_view():
    data, _ = sector_image()
    grid = Grid.from_geometry(data.shape, (0.5, 0.5, 1.5), (10.0, -20.0, 5.0), oblique_grid().direction)
    prepared = prepare_volume(Image(data, grid), 2.0, fov_threshold=0.0)
    np.testing.assert_allclose(prepared.grid.spacing, 2.0, atol=0.1)
    np.testing.assert_allclose(prepared.grid.direction, grid.direction, atol=1e-9)
    np.testing.assert_allclose(prepared.grid.corners_world().min(0), grid.corners_world().min(0), atol=1e-6)
    assert prepared.array.shape == (30, 11, 12) and np.isfinite(prepared.array).all()
    assert 0.2 < prepared.mask.mean() < 0.9 and np.all(prepared.array[~prepared.mask] == 0)
    bad = data.copy()
    bad[0, 0, 0] = np.nan
    expect_input_error(lambda: prepare_volume(Image(bad, grid), 2.0), "image", "NaN")


def test_descriptors_geometry_and_field_of_view_mask():
    data, _ = sector_image()
    prepared = prepare_volume(Image(data, Grid.from_geometry(data.shape, (2.0, 2.0, 2.0))), 2.0, fov_threshold=0.0)
    torch.manual_seed(0)
    result = compute_descriptors(prepared, DISANet(), fov_margin_voxels=4)
    assert result.descriptors.shape == (1, 16, 10, 11, 12)
    assert result.grid.same_as(descriptor_grid(prepared.grid))
    assert result.mask.shape == (10, 11, 12) and 0 < int(result.mask.sum()) < int(prepared.mask[::4, ::4, ::4].sum())
    quantized = compute_descriptors(prepared, DISANet(), quantize=True)
    assert quantized.descriptors.dtype == torch.int8


def test_bfloat16_descriptors_stay_close_to_float32():
    """The bfloat16 forward pass (an option for CPUs with native bfloat16) changes descriptors by far less than the
    8-bit quantisation step (1/127); an unknown precision is refused."""
    data, _ = sector_image()
    prepared = prepare_volume(Image(data, Grid.from_geometry(data.shape, (2.0, 2.0, 2.0))), 2.0, fov_threshold=0.0)
    torch.manual_seed(0)
    network = DISANet()
    full = compute_descriptors(prepared, network).descriptors
    half = compute_descriptors(prepared, network, precision="bfloat16").descriptors
    assert half.dtype == torch.float32 and full.abs().max() > 0.05
    assert float((half - full).abs().max()) < 0.5 / 127
    expect_input_error(lambda: compute_descriptors(prepared, network, precision="float8"), "precision", "float8")


def test_auto_precision_follows_native_bfloat16_support(monkeypatch):
    """``auto`` is bfloat16 exactly when the device computes it natively, float32 otherwise (same descriptors as
    asking for that precision by name)."""
    from MMRegistrationLib.similarity import disa as similarity_disa

    data, _ = sector_image()
    prepared = prepare_volume(Image(data, Grid.from_geometry(data.shape, (2.0, 2.0, 2.0))), 2.0, fov_threshold=0.0)
    torch.manual_seed(0)
    network = DISANet()
    for native, expected in ((False, "float32"), (True, "bfloat16")):
        monkeypatch.setattr(similarity_disa, "native_bfloat16", lambda device, native=native: native)
        assert similarity_disa.resolve_precision("auto", "cpu") == expected
        auto = compute_descriptors(prepared, network, precision="auto").descriptors
        named = compute_descriptors(prepared, network, precision=expected).descriptors
        assert torch.equal(auto, named)
    assert similarity_disa.resolve_precision("float32", "cpu") == "float32"
    expect_input_error(lambda: similarity_disa.resolve_precision("half", "cpu"), "precision", "half")


def test_native_bfloat16_is_false_off_cpu_and_cuda():
    from MMRegistrationLib.similarity.disa import native_bfloat16

    assert native_bfloat16("meta") is False
    assert isinstance(native_bfloat16("cpu"), bool)


def test_similarity_is_the_masked_weighted_mean_dot_product():
    gen = torch.Generator().manual_seed(0)
    fixed = torch.nn.functional.normalize(torch.randn(1, 16, 4, 5, 6, generator=gen), dim=1)
    assert float(descriptor_similarity(fixed, fixed)) == pytest.approx(1.0, abs=1e-6)
    assert float(disa_loss(fixed, fixed)) == pytest.approx(0.0, abs=1e-6)
    moving = fixed.clone()
    mask = torch.ones(4, 5, 6, dtype=torch.bool)
    mask[:, :, :2] = False  # e.g. outside the ultrasound sector
    moving[..., :2] = -fixed[..., :2]  # garbage there must not count
    assert float(descriptor_similarity(fixed, moving, mask)) == pytest.approx(1.0, abs=1e-6)
    assert float(descriptor_similarity(fixed, moving)) == pytest.approx(1.0 / 3.0, abs=1e-6)
    weights = torch.rand(1, 4, 5, 6, generator=gen)
    dots = (fixed * moving).sum(1)
    expected = float((weights * dots).sum() / weights.sum())
    assert float(descriptor_similarity(fixed, moving, weights=weights)) == pytest.approx(expected, rel=1e-6)


def test_gradients_flow_to_the_moving_descriptors_and_int8_is_accepted():
    from MMRegistrationLib.networks.disa import quantize_descriptors

    fixed = torch.nn.functional.normalize(torch.randn(1, 16, 3, 3, 3), dim=1)
    moving = torch.zeros(1, 16, 3, 3, 3, requires_grad=True)
    disa_loss(fixed, moving).backward()
    torch.testing.assert_close(moving.grad, -fixed / 27.0)
    q = quantize_descriptors(fixed)
    assert float(descriptor_similarity(q, q)) == pytest.approx(1.0, abs=0.02)


def test_similarity_errors_name_the_problem():
    a = torch.zeros(1, 16, 3, 3, 3)
    expect_input_error(lambda: descriptor_similarity(a, a[..., :2]), "moving", "differs")
    expect_input_error(lambda: descriptor_similarity(a, a, torch.zeros(3, 3, 3, dtype=torch.bool)), "mask", "no descriptor")
    expect_input_error(lambda: descriptor_similarity(a, a, torch.ones(2, 2, 2)), "mask", "does not fit")


@pytest.mark.parametrize("shape", [(61, 30, 27), (64, 20, 33), (45, 19, 18), (37, 17, 17)])
def test_descriptors_in_slabs_equal_one_pass(shape):
    """Large volumes are described slab by slab (bounded memory); every descriptor equals the one-pass value,
    including a last slab of a single row."""
    from MMRegistrationLib.networks.disa import DISANet
    from MMRegistrationLib.similarity.disa import forward_in_slabs

    torch.manual_seed(0)
    net = DISANet().eval()
    x = torch.randn(1, 1, *shape)
    with torch.no_grad():
        whole = net(x)
        slabs = forward_in_slabs(net, x, slab_voxels=8 * shape[1] * shape[2])
        one_row = forward_in_slabs(net, x, slab_voxels=1)
    assert slabs.shape == whole.shape == one_row.shape
    assert torch.equal(slabs, whole) and torch.equal(one_row, whole)
