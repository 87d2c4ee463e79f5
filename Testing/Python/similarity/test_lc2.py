"""LC2: vectorised box-filter implementation against brute-force per-patch least squares, invariances, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import expect_input_error
from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.similarity.lc2 import (
    PatchSearch,
    extract_patch,
    gradient_magnitude,
    lc2_map,
    lc2_similarity,
    patch_variance,
)

SHAPE = (17, 18, 19)  # every axis different: catches axis mix-ups


def brute_force(u: np.ndarray, g_source: np.ndarray, centre, radius: int, target: np.ndarray | None = None) -> tuple:
    """R^2 of lstsq u ~ [m, |grad m|, 1] on one patch, and the target variance (numpy, float64)."""
    g = np.sqrt(sum(d**2 for d in np.gradient(g_source)))  # central inside, one-sided at the border
    uu = (target if target is not None else extract_patch(u, centre, radius)).ravel()
    m = extract_patch(g_source, centre, radius).ravel()
    gg = extract_patch(g, centre, radius).ravel()
    design = np.stack([m, gg, np.ones_like(m)], axis=1)
    coef, *_ = np.linalg.lstsq(design, uu, rcond=None)
    residual = uu - design @ coef
    return 1.0 - residual.var() / uu.var(), uu.var()


def volumes(kind: str, seed: int = 0) -> tuple:
    """(fixed, moving) float64 arrays: independent noise, or structured (blobs + edge, fixed = nonlinear of moving)."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.normal(size=SHAPE), rng.normal(size=SHAPE)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=float) for n in SHAPE), indexing="ij")
    moving = np.tanh((x - 9.3) / 1.5) + 2.0 * np.exp(-((z - 8) ** 2 + (y - 6) ** 2 + (x - 12) ** 2) / 8.0)
    moving += 0.1 * ndimage.gaussian_filter(rng.normal(size=SHAPE), 1.0)
    g = gradient_magnitude(torch.tensor(moving)).numpy()
    fixed = 0.5 * moving - 1.3 * g + 0.2 * rng.normal(size=SHAPE)  # US-like: intensity and edges
    return fixed, moving


@pytest.mark.parametrize("kind", ["random", "structured"])
@pytest.mark.parametrize("radii", [(3,), (5,), (7,), (3, 5, 7)])
def test_map_equals_brute_force_least_squares(kind, radii):
    fixed, moving = volumes(kind)
    result = lc2_map(fixed, moving, radii)
    big = max(radii)
    assert result.margin == big and result.values.shape == (1, 1) + tuple(n - 2 * big for n in SHAPE)
    values, weights = result.values[0, 0].numpy(), result.weights[0, 0].numpy()
    worst = 0.0
    for q in np.ndindex(*values.shape):
        centre = tuple(c + big for c in q)
        fits = [brute_force(fixed, moving, centre, r) for r in radii]
        worst = max(worst, abs(np.mean([f[0] for f in fits]) - values[q]), abs(np.mean([f[1] for f in fits]) - weights[q]))
    assert worst < 1e-9, worst
    assert 0.0 <= values.min() and values.max() <= 1.0
    weighted = float(lc2_similarity(fixed, moving, radii))
    if kind == "structured":  # the fixed image is mostly a linear combination of m and |grad m|
        assert weighted > 0.6, weighted
    else:  # chance level of a 2-regressor fit on >= 343 voxels
        assert weighted < 0.02, weighted


def test_itself_and_affine_intensity_maps_give_one():
    _, moving = volumes("structured")
    ones = lc2_map(moving, moving).values
    torch.testing.assert_close(ones, torch.ones_like(ones), atol=1e-9, rtol=0)
    affine = lc2_map(-2.5 * moving + 7.0, moving).values
    torch.testing.assert_close(affine, torch.ones_like(affine), atol=1e-9, rtol=0)
    assert float(lc2_similarity(3.0 * moving - 1.0, moving)) == pytest.approx(1.0, abs=1e-9)


def test_invariant_to_affine_changes_of_either_image():
    fixed, moving = volumes("random", seed=3)
    base = lc2_map(fixed, moving).values
    changed = lc2_map(-0.01 * fixed + 40.0, 250.0 * moving - 3.0).values
    torch.testing.assert_close(changed, base, atol=1e-9, rtol=0)


def test_scalar_is_the_variance_weighted_mean():
    fixed, moving = volumes("structured", seed=1)
    m = lc2_map(fixed, moving)
    expected = float((m.values * m.weights).sum() / m.weights.sum())
    assert float(lc2_similarity(fixed, moving)) == pytest.approx(expected, rel=1e-12)
    assert float(lc2_similarity(fixed, moving)) != pytest.approx(float(m.values.mean()), rel=1e-3)  # weights matter


def test_constant_fixed_image_has_zero_weights_and_the_scalar_is_a_clear_error():
    _, moving = volumes("random")
    flat = np.full(SHAPE, 4.2)
    result = lc2_map(flat, moving)
    assert float(result.weights.abs().max()) == 0.0 and float(result.values.abs().max()) == 0.0
    expect_input_error(lambda: lc2_similarity(flat, moving), "fixed", "constant", "undefined")


def test_constant_moving_image_explains_nothing():
    fixed, _ = volumes("random")
    result = lc2_map(fixed, np.full(SHAPE, -1.0))
    assert float(result.values.abs().max()) == 0.0 and float(result.weights.min()) > 0.0


def test_mask_selects_centres_and_an_empty_mask_is_an_error():
    fixed, moving = volumes("structured", seed=2)
    mask = np.zeros(SHAPE, dtype=bool)
    expect_input_error(lambda: lc2_similarity(fixed, moving, mask=mask), "fixed", "empty mask")
    mask[8, 9, 9] = True  # one centre: the scalar is that voxel's LC2
    value = float(lc2_similarity(fixed, moving, mask=mask))
    assert value == pytest.approx(float(lc2_map(fixed, moving).values[0, 0, 1, 2, 2]), abs=1e-12)


def test_bad_inputs_name_the_argument():
    fixed, moving = volumes("random")
    expect_input_error(lambda: lc2_map(fixed[:12], moving[:12]), "fixed", "too small", "15")
    expect_input_error(lambda: lc2_map(fixed, moving[:-1]), "moving", "differs")
    bad = fixed.copy()
    bad[3, 3, 3] = np.nan
    expect_input_error(lambda: lc2_map(bad, moving), "fixed", "NaN")
    expect_input_error(lambda: lc2_map(fixed, moving, radii=(0,)), "radii")


def test_differentiable_with_respect_to_the_moving_image():
    rng = np.random.default_rng(5)
    fixed = torch.tensor(rng.normal(size=(7, 7, 8)))
    moving = torch.tensor(rng.normal(size=(7, 7, 8)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda m: lc2_similarity(fixed, m, radii=(2,)), (moving,), eps=1e-6, atol=1e-5)


def test_gradient_magnitude_matches_numpy_with_spacing():
    volume = np.random.default_rng(0).normal(size=(5, 6, 7))
    spacing_ijk = (0.5, 1.0, 2.0)
    dz, dy, dx = np.gradient(volume, 2.0, 1.0, 0.5)
    expected = np.sqrt(dz**2 + dy**2 + dx**2)
    np.testing.assert_allclose(gradient_magnitude(torch.tensor(volume), spacing_ijk).numpy(), expected, atol=1e-12)


def test_patch_variance_is_the_map_weight():
    fixed, moving = volumes("structured")
    torch.testing.assert_close(patch_variance(torch.tensor(fixed)), lc2_map(fixed, moving).weights[0, 0])


def test_patch_search_equals_brute_force_and_the_map():
    fixed, moving = volumes("structured", seed=4)
    big = 7
    centres = [(7, 7, 7), (8, 9, 11), (9, 10, 8)]
    patches = torch.stack([torch.tensor(extract_patch(fixed, c, big)) for c in centres])
    lc2, weight = PatchSearch(moving, dtype=torch.float64)(patches)
    assert lc2.shape == (3, 3, 4, 5)
    worst = 0.0
    for s, c in enumerate(centres):
        target = extract_patch(fixed, c, big)
        for q in np.ndindex(*lc2.shape[1:]):
            centre = tuple(v + big for v in q)
            fits = [brute_force(None, moving, centre, r, target[big - r:big + r + 1, big - r:big + r + 1, big - r:big + r + 1])
                    for r in (3, 5, 7)]
            worst = max(worst, abs(np.mean([f[0] for f in fits]) - float(lc2[s][q])))
        assert float(weight[s]) == pytest.approx(float(patch_variance(torch.tensor(target))), rel=1e-9)
    assert worst < 1e-9, worst
    # the same patch position in both images: one-vs-all equals the aligned map
    aligned = lc2_map(fixed, moving).values[0, 0]
    for s, c in enumerate(centres):
        q = tuple(v - big for v in c)
        assert float(lc2[s][q]) == pytest.approx(float(aligned[q]), abs=1e-9)
    lc2_32, _ = PatchSearch(moving, dtype=torch.float32)(patches)
    assert float((lc2_32.double() - lc2).abs().max()) < 1e-4


def test_patch_search_rejects_wrong_patch_shapes():
    _, moving = volumes("random")
    search = PatchSearch(moving)
    expect_input_error(lambda: search(torch.zeros(2, 13, 13, 13)), "patches", "(S, 15, 15, 15)")
    with pytest.raises(InputError, match="smaller than one patch"):
        PatchSearch(np.zeros((10, 20, 20)))


def test_gradients_stay_finite_where_the_moving_image_is_flat():
    """A moving image with a flat region (e.g. zero outside a field of view): the gradient magnitude's sqrt must not
    turn its zero into NaN gradients."""
    from MMRegistrationLib.similarity.lc2 import gradient_magnitude

    fixed, moving = volumes("structured")
    flat = torch.as_tensor(moving.copy())
    flat[:, :, :8] = 0.0
    flat.requires_grad_(True)
    magnitude = gradient_magnitude(flat)
    assert float(magnitude[..., 2:6].abs().max()) == 0.0
    result = lc2_map(torch.as_tensor(fixed)[None, None], flat[None, None])
    result.values.sum().backward()
    assert flat.grad is not None and bool(torch.isfinite(flat.grad).all())
    assert float(flat.grad.abs().max()) > 0
