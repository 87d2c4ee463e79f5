"""Losses: zero at identity, analytic values on anisotropic grids, batch items independent, finite gradients,
argument checks naming function and argument, module reductions, and the relation to MONAI's bending energy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MMRegistrationLib.losses import (
    BendingEnergyLoss,
    SignedDistanceLoss,
    SoftDiceLoss,
    TotalVariationLoss,
    VelocityMSELoss,
    bending_energy,
    signed_distance_loss,
    soft_dice_loss,
    total_variation,
    velocity_mse,
)

SPACING = (0.8, 1.5, 2.5)  # (s_i, s_j, s_k) mm: i along W, j along H, k along D
SHAPE = (5, 6, 7)  # (D, H, W) = (K, J, I)


def axis_coordinates(shape=SHAPE, spacing=SPACING) -> torch.Tensor:
    """``(3, D, H, W)`` float64: the position (mm) along D, H and W of every voxel (spacings s_k, s_j, s_i)."""
    s_i, s_j, s_k = spacing
    steps = (s_k, s_j, s_i)
    axes = [torch.arange(n, dtype=torch.float64) * s for n, s in zip(shape, steps)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def linear_field(gradient: torch.Tensor, shape=SHAPE, spacing=SPACING) -> torch.Tensor:
    """``(3, D, H, W)`` field ``u_c = sum_a G[c, a] x_a`` (x in mm along D, H, W)."""
    return torch.einsum("ca,a...->c...", gradient, axis_coordinates(shape, spacing))


def quadratic_field(hessians: torch.Tensor, shape=SHAPE, spacing=SPACING) -> torch.Tensor:
    """``(3, D, H, W)`` field ``u_c = x^T H_c x / 2`` (x in mm along D, H, W): second derivatives ``H_c`` everywhere."""
    x = axis_coordinates(shape, spacing)
    return 0.5 * torch.einsum("cab,a...,b...->c...", hessians, x, x)


def random_symmetric(seed: int) -> torch.Tensor:
    h = torch.randn(3, 3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (h + h.transpose(1, 2)) / 2


def random_field(batch: int = 3, shape=SHAPE, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def random_masks(shape, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64), torch.rand(shape, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------- values


def test_zero_at_identity_and_equal_inputs():
    masks = (random_masks((2, 3, 40))[0] > 0.5).double()
    torch.testing.assert_close(soft_dice_loss(masks, masks.clone()), torch.zeros(2, dtype=torch.float64))
    dist = random_masks((2, 3, 4, 5, 6))[0] * 10 - 5
    torch.testing.assert_close(signed_distance_loss(dist, dist.clone(), 5.0), torch.zeros(2, dtype=torch.float64))
    zero = torch.zeros(2, 3, *SHAPE, dtype=torch.float64)
    for loss in (velocity_mse(zero), total_variation(zero, SPACING), bending_energy(zero, SPACING)):
        assert loss.shape == (2,)
        torch.testing.assert_close(loss, torch.zeros(2, dtype=torch.float64))
    constant = zero + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)[None, :, None, None, None]
    torch.testing.assert_close(total_variation(constant, SPACING), torch.zeros(2, dtype=torch.float64))
    linear = linear_field(torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    torch.testing.assert_close(bending_energy(linear[None], SPACING), torch.zeros(1, dtype=torch.float64))


def test_dice_of_disjoint_masks_is_one_and_of_a_partial_overlap_its_definition():
    fixed = torch.zeros(1, 2, 100, dtype=torch.float64)
    warped = torch.zeros_like(fixed)
    fixed[0, :, :50] = 1.0
    warped[0, :, 50:] = 1.0
    torch.testing.assert_close(soft_dice_loss(fixed, warped), torch.ones(1, dtype=torch.float64))
    # structure 0: 50 vs 75 voxels sharing 50 (Dice 0.8); structure 1 disjoint (Dice 0); weights 3 : 1
    warped[0, 0, :75] = 1.0
    warped[0, 0, 75:] = 0.0
    expected = 0.75 * (1 - 2 * 50 / 125) + 0.25 * 1.0
    got = soft_dice_loss(fixed, warped, torch.tensor([3.0, 1.0]))
    assert float(got[0]) == pytest.approx(expected, abs=1e-8)


def test_weights_per_structure_or_per_item_are_normalised():
    fixed, warped = random_masks((2, 3, 30))
    w = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)
    for loss in (soft_dice_loss, lambda f, m, ww=None: signed_distance_loss(f, m, 2.0, ww)):
        one = loss(fixed, warped, w)
        torch.testing.assert_close(loss(fixed, warped, 10 * w), one)
        torch.testing.assert_close(loss(fixed, warped, w.expand(2, 3)), one)
        per_item = torch.stack([w, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)])
        both = loss(fixed, warped, per_item)
        torch.testing.assert_close(both[0], one[0])
        torch.testing.assert_close(both[1], loss(fixed[1:, 2:], warped[1:, 2:])[0])
        torch.testing.assert_close(loss(fixed, warped, None), loss(fixed, warped, torch.ones(3)))


def test_signed_distance_loss_of_a_constant_offset():
    fixed = random_masks((2, 2, 3, 4, 5))[0] * 8 - 4
    offset = torch.tensor([[1.0, 3.0], [2.0, 0.0]], dtype=torch.float64)  # (B, C) mm
    warped = fixed - offset[:, :, None, None, None]
    w = torch.tensor([1.0, 3.0])
    expected = ((offset / 4.0) ** 2 * torch.tensor([0.25, 0.75], dtype=torch.float64)).sum(1)
    torch.testing.assert_close(signed_distance_loss(fixed, warped, 4.0, w), expected)


def test_velocity_mse_of_a_constant_field():
    field = torch.zeros(2, 3, *SHAPE, dtype=torch.float64)
    field[0] += torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)[:, None, None, None]
    torch.testing.assert_close(velocity_mse(field), torch.tensor([9.0, 0.0], dtype=torch.float64))


def test_total_variation_of_linear_fields_on_an_anisotropic_grid():
    g = torch.Generator().manual_seed(2)
    gradients = torch.randn(2, 3, 3, generator=g, dtype=torch.float64)  # per item G[c, a], a = D, H, W
    field = torch.stack([linear_field(gr) for gr in gradients])
    expected = gradients.abs().mean(dim=1).sum(dim=1)  # sum over axes of the mean over components of |du_c/dx_a|
    torch.testing.assert_close(total_variation(field, SPACING), expected)
    # the spacing order matters: (s_i, s_j, s_k) with i along W
    assert not torch.allclose(total_variation(field, SPACING[::-1]), expected)


def test_bending_energy_of_quadratic_fields_on_an_anisotropic_grid():
    hessians = torch.stack([random_symmetric(3), random_symmetric(4)])  # per item H_c (per mm^2)
    field = torch.stack([quadratic_field(h) for h in hessians])
    expected = (hessians**2).sum(dim=(2, 3)).mean(dim=1)  # sum over ordered (a, b), mean over components
    torch.testing.assert_close(bending_energy(field, SPACING), expected)
    assert not torch.allclose(bending_energy(field, SPACING[::-1]), expected)


def test_batch_items_are_independent():
    field = random_field(batch=3)
    masks = random_masks((3, 2, 4, 5, 6))
    points = random_masks((3, 2, 50), seed=1)
    w = torch.tensor([2.0, 1.0])
    checks = [
        lambda x: velocity_mse(x[0]),
        lambda x: total_variation(x[0], SPACING),
        lambda x: bending_energy(x[0], SPACING),
    ]
    for check in checks:
        batched = check((field,))
        for b in range(3):
            torch.testing.assert_close(batched[b], check((field[b : b + 1],))[0])
    for fixed, warped in (masks, points):
        for loss in (lambda f, m: soft_dice_loss(f, m, w), lambda f, m: signed_distance_loss(f, m, 3.0, w)):
            batched = loss(fixed, warped)
            assert batched.shape == (3,)
            for b in range(3):
                torch.testing.assert_close(batched[b], loss(fixed[b : b + 1], warped[b : b + 1])[0])


def test_gradients_are_finite():
    field = random_field(batch=2).requires_grad_(True)
    fixed, warped = random_masks((2, 3, 20))
    warped.requires_grad_(True)
    total = (
        velocity_mse(field) + total_variation(field, SPACING) + bending_energy(field, SPACING)
        + soft_dice_loss(fixed, warped) + signed_distance_loss(fixed, warped, 2.0)
    ).sum()
    total.backward()
    for grad in (field.grad, warped.grad):
        assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().max()) > 0


# ---------------------------------------------------------------------------------------------------- MONAI


@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence:UserWarning")
def test_bending_energy_against_monai():
    """Relation to ``monai.losses.BendingEnergyLoss(normalize=False)`` (MONAI 1.6.1, ``monai/losses/deform.py``).

    MONAI, on a ``(B, C, D, H, W)`` field in voxel units, forms at every interior voxel (each spatial axis cropped
    to ``[1:-1]``) ``sum_a d_aa^2 + 2 sum_{a<b} d_ab^2`` with the pure second difference ``x[i+1] - 2x[i] + x[i-1]``
    and the mixed central difference ``(x[i+1,j+1] - x[i+1,j-1] - x[i-1,j+1] + x[i-1,j-1]) / 4``; ``"mean"``
    averages that over batch, channels and voxels (``"none"`` keeps ``(B, C, D-2, H-2, W-2)``). Ours sums, over the
    ordered pairs (a, b), the mean over channels and voxels of the squared forward second differences divided by
    ``s_a s_b`` (each term over its own uncropped region).

    What matches exactly:
    - a quadratic field (any constant second derivatives, plus any linear part): both stencils are exact, every
      voxel carries the same value, so the cropping does not matter. On a 1 mm grid ours == MONAI's per batch
      item (MONAI "none" averaged over C, D, H, W); with spacing 2 mm ours == MONAI / 16 (second derivatives per
      mm^2 are the voxel ones / 4). No other factor: the mixed terms count twice in both.
    - a field that varies along one axis only: mixed terms vanish in both, the pure stencil is the same and the
      field is constant along the axes MONAI crops, so again ours == MONAI.
    What does not: a general field. The mixed stencils differ (ours spans 2 voxels per axis, MONAI's 3, blind to
    a checkerboard), and the regions differ, so the values differ (checked below, so this docstring stays true).
    """
    from monai.losses import BendingEnergyLoss as MonaiBendingEnergy

    monai_none = MonaiBendingEnergy(normalize=False, reduction="none")
    shape = (7, 8, 9)
    ones = (1.0, 1.0, 1.0)
    hessians = torch.stack([random_symmetric(5), random_symmetric(6)])
    gradients = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    field = torch.stack([quadratic_field(h, shape, ones) + linear_field(gr, shape, ones)
                         for h, gr in zip(hessians, gradients)])
    theirs = monai_none(field).mean(dim=(1, 2, 3, 4))
    ours = bending_energy(field, ones)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours, (hessians**2).sum(dim=(2, 3)).mean(dim=1))
    torch.testing.assert_close(MonaiBendingEnergy(normalize=False)(field), ours.mean())
    torch.testing.assert_close(bending_energy(field, (2.0, 2.0, 2.0)), theirs / 16)

    along_d = random_field(batch=2, shape=(shape[0], 1, 1), seed=8).expand(2, 3, *shape)
    torch.testing.assert_close(bending_energy(along_d, ones), monai_none(along_d).mean(dim=(1, 2, 3, 4)))

    general = random_field(batch=2, shape=shape, seed=9)
    assert not torch.allclose(bending_energy(general, ones), monai_none(general).mean(dim=(1, 2, 3, 4)), rtol=0.05)


# ---------------------------------------------------------------------------------------------------- errors

FIELD = torch.zeros(2, 3, 4, 4, 4)
MASKS = torch.zeros(2, 3, 100)


def _bad_calls():
    cases = [
        ("soft_dice_loss", "fixed", lambda: soft_dice_loss(np.zeros((2, 3, 100)), MASKS)),
        ("soft_dice_loss", "fixed", lambda: soft_dice_loss(MASKS.long(), MASKS)),
        ("soft_dice_loss", "fixed", lambda: soft_dice_loss(torch.zeros(3, 100), torch.zeros(3, 100))),
        ("soft_dice_loss", "fixed", lambda: soft_dice_loss(torch.zeros(2, 3, 0), torch.zeros(2, 3, 0))),
        ("soft_dice_loss", "warped", lambda: soft_dice_loss(MASKS, [0.0])),
        ("soft_dice_loss", "warped", lambda: soft_dice_loss(MASKS, torch.zeros(2, 4, 100))),
        ("soft_dice_loss", "weights", lambda: soft_dice_loss(MASKS, MASKS, torch.ones(4))),
        ("soft_dice_loss", "weights", lambda: soft_dice_loss(MASKS, MASKS, torch.ones(3, 3))),
        ("soft_dice_loss", "weights", lambda: soft_dice_loss(MASKS, MASKS, [1.0, 1.0, 1.0])),
        ("soft_dice_loss", "eps", lambda: soft_dice_loss(MASKS, MASKS, eps=0.0)),
        ("signed_distance_loss", "fixed", lambda: signed_distance_loss(None, MASKS, 1.0)),
        ("signed_distance_loss", "warped", lambda: signed_distance_loss(MASKS, MASKS[:, :, :50], 1.0)),
        ("signed_distance_loss", "scale_mm", lambda: signed_distance_loss(MASKS, MASKS, 0.0)),
        ("signed_distance_loss", "scale_mm", lambda: signed_distance_loss(MASKS, MASKS, -2.0)),
        ("signed_distance_loss", "scale_mm", lambda: signed_distance_loss(MASKS, MASKS, float("inf"))),
        ("signed_distance_loss", "scale_mm", lambda: signed_distance_loss(MASKS, MASKS, float("nan"))),
        ("signed_distance_loss", "scale_mm", lambda: signed_distance_loss(MASKS, MASKS, "5")),
        ("signed_distance_loss", "weights", lambda: signed_distance_loss(MASKS, MASKS, 1.0, torch.ones(2))),
    ]
    for name, function, min_size in (("velocity_mse", velocity_mse, 1), ("total_variation", total_variation, 2),
                                     ("bending_energy", bending_energy, 3)):
        cases += [
            (name, "field", lambda f=function: f(torch.zeros(10, 10, 10, 3))),  # the old channels-last layout
            (name, "field", lambda f=function: f(torch.zeros(1, 10, 10, 10, 3))),
            (name, "field", lambda f=function: f(np.zeros((1, 3, 4, 4, 4)))),
            (name, "field", lambda f=function: f(torch.zeros(1, 3, 4, 4, 4, dtype=torch.int64))),
            (name, "field", lambda f=function, n=min_size: f(torch.zeros(1, 3, 4, n - 1, 4))),
            (name, "field", lambda f=function: f(torch.zeros(0, 3, 4, 4, 4))),
        ]
    for name, function in (("total_variation", total_variation), ("bending_energy", bending_energy)):
        for spacing in ((1.0, 1.0), (1.0, 0.0, 1.0), (1.0, -1.0, 1.0), (1.0, float("nan"), 1.0), 1.0, "111", None):
            cases.append((name, "spacing", lambda f=function, s=spacing: f(FIELD, s)))
    return cases


@pytest.mark.parametrize("function, argument, call", _bad_calls(),
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(_bad_calls())])
def test_bad_arguments_raise_naming_function_and_argument(function, argument, call):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value).startswith(f"{function}(): '{argument}' must "), str(err.value)


def test_error_messages_state_what_was_expected_and_got():
    with pytest.raises(ValueError) as err:
        soft_dice_loss(MASKS, torch.zeros(2, 4, 100))
    assert str(err.value) == "soft_dice_loss(): 'warped' must have the shape of 'fixed' (2, 3, 100), got (2, 4, 100)"
    with pytest.raises(ValueError) as err:
        bending_energy(torch.zeros(10, 10, 10, 3))
    assert str(err.value) == "bending_energy(): 'field' must be (B, 3, D, H, W), got (10, 10, 10, 3)"
    spacing_error = r"^bending_energy\(\): 'spacing' must be three positive finite numbers \(mm\), got "
    with pytest.raises(ValueError, match=spacing_error):
        bending_energy(FIELD, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match=r"at least 3 voxel"):
        bending_energy(torch.zeros(1, 3, 2, 5, 5))
    total_variation(torch.zeros(1, 3, 2, 2, 2))  # 2 voxels are enough for first differences


# ---------------------------------------------------------------------------------------------------- modules


def test_modules_reduce_the_functional_values():
    field = random_field(batch=3)
    fixed, warped = random_masks((3, 2, 30))
    w = [1.0, 3.0]
    wt = torch.tensor(w)
    pairs = [
        (lambda r: SoftDiceLoss(w, reduction=r)(fixed, warped), soft_dice_loss(fixed, warped, wt)),
        (lambda r: SignedDistanceLoss(2.0, w, reduction=r)(fixed, warped),
         signed_distance_loss(fixed, warped, 2.0, wt)),
        (lambda r: BendingEnergyLoss(SPACING, reduction=r)(field), bending_energy(field, SPACING)),
        (lambda r: TotalVariationLoss(SPACING, reduction=r)(field), total_variation(field, SPACING)),
        (lambda r: VelocityMSELoss(reduction=r)(field), velocity_mse(field)),
    ]
    for module_call, per_item in pairs:
        torch.testing.assert_close(module_call("none"), per_item)
        torch.testing.assert_close(module_call("mean"), per_item.mean())
        torch.testing.assert_close(module_call("sum"), per_item.sum())
    # default reduction is the mean; weights travel with the module and are not saved
    module = SoftDiceLoss(w).to(torch.float64)
    assert module.weights.dtype == torch.float64 and "weights" not in module.state_dict()
    torch.testing.assert_close(module(fixed, warped), soft_dice_loss(fixed, warped, wt).mean())


@pytest.mark.parametrize("make, owner, argument", [
    (lambda: SoftDiceLoss(reduction="max"), "SoftDiceLoss", "reduction"),
    (lambda: VelocityMSELoss(reduction=None), "VelocityMSELoss", "reduction"),
    (lambda: SoftDiceLoss([1.0, -1.0]), "SoftDiceLoss", "weights"),
    (lambda: SoftDiceLoss([0.0, 0.0]), "SoftDiceLoss", "weights"),
    (lambda: SoftDiceLoss([[1.0, 2.0]]), "SoftDiceLoss", "weights"),
    (lambda: SoftDiceLoss("ab"), "SoftDiceLoss", "weights"),
    (lambda: SoftDiceLoss(eps=-1.0), "SoftDiceLoss", "eps"),
    (lambda: SignedDistanceLoss(0.0), "SignedDistanceLoss", "scale_mm"),
    (lambda: SignedDistanceLoss(5.0, [1.0, float("nan")]), "SignedDistanceLoss", "weights"),
    (lambda: BendingEnergyLoss((1.0, 1.0)), "BendingEnergyLoss", "spacing"),
    (lambda: TotalVariationLoss((1.0, 1.0, float("inf"))), "TotalVariationLoss", "spacing"),
    (lambda: TotalVariationLoss(reduction="batchmean"), "TotalVariationLoss", "reduction"),
])
def test_module_constructors_check_their_parameters(make, owner, argument):
    with pytest.raises(ValueError) as err:
        make()
    assert str(err.value).startswith(f"{owner}(): '{argument}' must "), str(err.value)


def test_module_forward_checks_the_tensors():
    with pytest.raises(ValueError, match=r"^bending_energy\(\): 'field' must be \(B, 3, D, H, W\)"):
        BendingEnergyLoss()(torch.zeros(4, 4, 4, 3))
    with pytest.raises(ValueError, match=r"^soft_dice_loss\(\): 'weights' must have shape"):
        SoftDiceLoss([1.0, 1.0, 1.0])(MASKS[:, :2], MASKS[:, :2])
