"""SINR: surface-driven implicit neural stationary velocity field registration (paper 000).

An MLP over the (normalised) coordinates of a box around the structures gives a stationary velocity field
``v``; the fixed -> moving transform is ``T(x) = A(x + u(x))`` with ``u = exp(v) - id`` (scaling and squaring)
and ``A`` the initial affine transform. The network is fitted per case with Adam on a soft Dice loss between
the fixed masks and the moving masks warped through ``T``, plus velocity MSE and total variation (paper 000),
optionally bending energy (004). ``v`` is multiplied by a smooth window that vanishes on the box border, so
``u`` is continuous everywhere (0 outside the box) and the transform stays diffeomorphic; the inverse
``T^-1(y) = exp(-v)(A^-1 y)`` comes from the same fit.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Optional, Sequence

import numpy as np
import torch
from scipy import ndimage

from MMRegistrationLib.core.errors import InputError, MMRegError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.losses.functional import (
    bending_energy,
    signed_distance_loss,
    soft_dice_loss,
    total_variation,
    velocity_mse,
)
from MMRegistrationLib.networks.implicit import FourierFeatureMLP
from MMRegistrationLib.registration.base import RegistrationResult
from MMRegistrationLib.registration.initializers import sdm_stack, signed_distance_mm
from MMRegistrationLib.spatial.affine import AffineTransform
from MMRegistrationLib.spatial.composite import ComposedTransform
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.spatial.jacobian import jacobian_determinant
from MMRegistrationLib.spatial.resample import resample
from MMRegistrationLib.spatial.sampling import sample_normalized, world_to_normalized_matrix
from MMRegistrationLib.spatial.velocity import border_window, exponentiate


@dataclass(frozen=True)
class SINRConfig:
    """Parameters of :func:`sinr_register` (all reachable from Python, the CLI and the Slicer module).

    Attributes:
        margin_mm: box = bounding box of the fixed structures grown by this margin (mm).
        velocity_spacing_mm: spacing of the grid on which the MLP is evaluated and ``exp(v)`` computed.
        loss_spacing_mm: spacing of the points where the Dice loss is evaluated.
        mask_smoothing_mm: Gaussian sigma applied to the moving masks (wider capture, smoother gradients).
        band_mm: the losses are evaluated at loss points inside a fixed structure or within this distance of its
            surface (elsewhere the masks are constant for any displacement smaller than the band).
        weight_sdm / sdm_clip_mm: weight of the signed-distance loss (mean squared difference of the fixed and
            warped moving signed distance maps, clipped at ``sdm_clip_mm`` and divided by it; cf. paper 004). It
            also drives the interior of the structures, which Dice leaves to the regulariser.
        iterations: maximum Adam iterations; learning_rate: Adam step.
        patience / min_improvement: early stop when the loss has not improved by ``min_improvement``
            (relative) for ``patience`` iterations.
        weight_mse, weight_tv, weight_bending: regularisation weights (velocity MSE in mm^2, TV per mm,
            bending energy per mm^2).
        context_weight: Dice weight of structures other than the prostate (label 1, weight 1).
        num_frequencies, frequency_scale, hidden, depth: the Fourier-feature MLP.
        velocity_scale_mm: the network output is multiplied by this (mm), so its weights stay O(1).
        squaring_steps: scaling-and-squaring steps during the fit.
        output_spacing_mm: the fitted (continuous) velocity is exponentiated on a grid this fine for the outputs.
        weight_image: weight of the optional image term (0 = off): the DISA similarity (paper 001, learned LC2) of
            the fixed and warped moving images at the fixed descriptor positions inside the box, ``1 - sum_p w(p)
            <phi(F)[p], phi(M)[T(p)]>``, counted from its value at the start; needs the images. It adds what the
            images show inside and around the structures to the surface terms.
        image_weights: DISA weights file of the image term ('' = the shipped network).
    """

    margin_mm: float = 15.0
    velocity_spacing_mm: float = 4.0
    loss_spacing_mm: float = 2.5
    mask_smoothing_mm: float = 1.0
    band_mm: float = 10.0
    weight_sdm: float = 1.0
    sdm_clip_mm: float = 10.0
    iterations: int = 80
    learning_rate: float = 5e-3
    patience: int = 15
    min_improvement: float = 1e-3
    weight_mse: float = 1e-4
    weight_tv: float = 0.0
    weight_bending: float = 30.0
    context_weight: float = 0.5
    num_frequencies: int = 32
    frequency_scale: float = 1.5
    hidden: int = 64
    depth: int = 2
    velocity_scale_mm: float = 1.0
    squaring_steps: int = 6
    output_spacing_mm: float = 2.0
    weight_image: float = 0.0
    image_weights: str = ""


OPTION_HELP = {
    "margin_mm": "margin (mm) around the fixed structures' bounding box; the field is 0 outside it",
    "velocity_spacing_mm": "spacing (mm) of the velocity grid (MLP evaluation and scaling and squaring)",
    "loss_spacing_mm": "spacing (mm) of the points where the losses are evaluated",
    "mask_smoothing_mm": "Gaussian sigma (mm) applied to the moving masks",
    "band_mm": "losses are evaluated inside the fixed structures and within this distance (mm) of their surfaces",
    "weight_sdm": "weight of the signed-distance-map loss (0 = Dice only)",
    "sdm_clip_mm": "signed distances are clipped at this distance (mm)",
    "iterations": "maximum Adam iterations",
    "learning_rate": "Adam learning rate",
    "patience": "stop when the loss has not improved for this many iterations",
    "min_improvement": "relative loss decrease that counts as an improvement",
    "weight_mse": "weight of the velocity MSE (mm^2)",
    "weight_tv": "weight of the velocity total variation",
    "weight_bending": "weight of the velocity bending energy",
    "context_weight": "loss weight of structures other than the prostate (label 1, weight 1)",
    "num_frequencies": "Fourier features of the MLP input",
    "frequency_scale": "standard deviation of the Fourier feature frequencies (box coordinates in [-1, 1])",
    "hidden": "MLP hidden width",
    "depth": "MLP hidden layers",
    "velocity_scale_mm": "the MLP output is multiplied by this (mm)",
    "squaring_steps": "scaling-and-squaring steps during the fit (one more for the output)",
    "output_spacing_mm": "spacing (mm) of the output displacement fields (the fitted field is continuous)",
    "weight_image": "weight of the optional DISA image term (learned LC2 of the fixed and warped moving images inside "
                    "the box, relative to the surface terms); 0 = off",
    "image_weights": "DISA weights file of the image term (default: the shipped network)",
}


def option_help(name: str) -> str:
    """One-line help of a :class:`SINRConfig` field (CLI ``--help`` and the Slicer module's tooltips)."""
    return OPTION_HELP[name]


PRESETS = {
    "fast": SINRConfig(),
    "accurate": SINRConfig(
        velocity_spacing_mm=3.0, loss_spacing_mm=2.0, iterations=200, learning_rate=3e-3, patience=30,
        min_improvement=2e-4, weight_bending=20.0, output_spacing_mm=1.5,
        hidden=128, num_frequencies=48, frequency_scale=2.0, squaring_steps=7,
    ),
}


def sinr_config(preset: str = "fast", **overrides) -> SINRConfig:
    """A preset with some fields overridden; unknown names are an error naming the option."""
    if preset not in PRESETS:
        raise InputError("--preset", f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    known = set(asdict(PRESETS[preset]))
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError("sinr options", f"unknown option(s) {unknown}")
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


def _box_grid(fixed_seg: Image, labels: Sequence[int], margin_mm: float) -> Grid:
    """Sub-grid of the fixed grid around its structures, grown by ``margin_mm`` (may extend past the image)."""
    k, j, i = np.nonzero(np.isin(fixed_seg.array, labels))
    grow = np.ceil(margin_mm / fixed_seg.grid.spacing).astype(int)
    lo = np.array([i.min(), j.min(), k.min()]) - grow
    hi = np.array([i.max(), j.max(), k.max()]) + 1 + grow
    return fixed_seg.grid.cropped(lo, hi)


def _soft_masks(seg: Image, labels: Sequence[int], smoothing_mm: float) -> np.ndarray:
    """``(C, K, J, I)`` float32 indicator of each label, Gaussian-smoothed by ``smoothing_mm``."""
    sigma = smoothing_mm / seg.grid.spacing[::-1] if smoothing_mm > 0 else None
    out = []
    for lab in labels:
        m = (seg.array == lab).astype(np.float32)
        out.append(ndimage.gaussian_filter(m, sigma) if sigma is not None else m)
    return np.stack(out)


def sinr_register(
    fixed_seg: Image,
    moving_seg: Image,
    initial: AffineTransform,
    config: SINRConfig = SINRConfig(),
    labels: Optional[Sequence[int]] = None,
    seed: int = 0,
    device=None,
    progress=None,
    cancel=None,
    fixed_image: Optional[Image] = None,
    moving_image: Optional[Image] = None,
) -> RegistrationResult:
    """Fit the SINR velocity field; returns fixed -> moving and moving -> fixed transforms.

    Args:
        fixed_seg, moving_seg: label maps with corresponding label values.
        initial: fixed -> moving affine start (``--init``).
        labels: structures to use (default: all shared labels).
        fixed_image, moving_image: the images, needed only for ``config.weight_image > 0`` (the fixed field of view
            is the voxels above 0, as for ultrasound; the whole moving image counts).

    Raises:
        InputError: no shared label, masks that do not overlap after ``initial``, an image term without images
            or without a fixed descriptor inside the box, bad images or weights.
        MMRegError: the loss became NaN/Inf.
    """
    monitor = Monitor.wrap(progress, cancel)
    device = torch.device(device) if device is not None else torch.device("cpu")
    t0 = time.perf_counter()
    common = sorted(set(fixed_seg.labels()) & set(moving_seg.labels()))
    labels = list(labels) if labels is not None else common
    if not labels:
        raise InputError("segmentations", "fixed and moving segmentations share no label")
    dtype = torch.float32
    box = _box_grid(fixed_seg, labels, config.margin_mm)
    vel_grid = box.resized(config.velocity_spacing_mm)
    loss_grid = box.resized(min(config.loss_spacing_mm, config.velocity_spacing_mm))

    fixed_masks = np.stack([
        resample(fixed_seg.with_array((fixed_seg.array == lab).astype(np.float32)), loss_grid).array for lab in labels
    ])  # (C, K, J, I) in [0, 1]
    # the losses are evaluated where they can change: inside a structure or within band_mm of its surface
    fixed_sdm = np.stack([signed_distance_mm(mask > 0.5, loss_grid) for mask in fixed_masks])  # (C, K, J, I)
    band = np.any(fixed_sdm < config.band_mm, axis=0)
    fixed_soft = torch.as_tensor(fixed_masks[:, band], dtype=dtype, device=device)  # (C, P)
    moving_soft = torch.as_tensor(_soft_masks(moving_seg, labels, config.mask_smoothing_mm), dtype=dtype, device=device)
    loss_points = loss_grid.world_points_torch(device=device, dtype=dtype)[torch.as_tensor(band, device=device)]  # (P, 3)
    clip = config.sdm_clip_mm
    if config.weight_sdm > 0:
        fixed_dist = torch.as_tensor(np.clip(fixed_sdm[:, band], -clip, clip), dtype=dtype, device=device)  # (C, P)
        moving_sdm, sdm_grid = sdm_stack(moving_seg, labels, config.loss_spacing_mm, clip)
        moving_dist = torch.as_tensor(moving_sdm, dtype=dtype, device=device)  # (C, K', J', I')
    # every sampling below goes through grid_sample coordinates precomputed once (linear maps folded together)
    def _to(matrix: np.ndarray) -> tuple:
        m = torch.as_tensor(matrix, dtype=dtype, device=device)
        return m[:3, :3], loss_points @ m[:3, :3].T + m[:3, 3]  # (3, 3), (P, 3)

    u_at_points = _to(world_to_normalized_matrix(vel_grid))[1]  # loss points in the velocity grid
    moving_linear, moving_base = _to(world_to_normalized_matrix(moving_seg.grid) @ initial.matrix)
    if config.weight_sdm > 0:
        sdm_linear, sdm_base = _to(world_to_normalized_matrix(sdm_grid) @ initial.matrix)

    def warp_moving(displacement_at_loss: torch.Tensor) -> torch.Tensor:
        """Moving soft masks at ``A(p + u(p))`` -> ``(C, P)`` (0 outside the moving image)."""
        normalized = moving_base + displacement_at_loss @ moving_linear.T
        return sample_normalized(moving_soft, normalized, padding_mode="zeros").T

    with torch.no_grad():
        start_overlap = (fixed_soft * warp_moving(torch.zeros_like(loss_points))).sum()
    if float(start_overlap) <= 0:
        raise InputError(
            "--init",
            "the fixed and moving masks do not overlap after initialisation; check that the segmentations belong to "
            "these images, or start from --init com / rigid-mask or a closer initial transform",
        )

    primary = 1 if 1 in labels else labels[0]
    weights = torch.tensor([1.0 if lab == primary else config.context_weight for lab in labels], dtype=dtype, device=device)
    generator = torch.Generator().manual_seed(seed)
    net = FourierFeatureMLP(3, 3, config.num_frequencies, config.frequency_scale, config.hidden, config.depth,
                            generator=generator).to(device)
    vel_points = vel_grid.world_points_torch(device=device, dtype=dtype)
    lo, hi = vel_points.reshape(-1, 3).min(0).values, vel_points.reshape(-1, 3).max(0).values
    spacing = vel_grid.spacing

    def velocity_on(grid: Grid, points: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(K, J, I, 3)`` windowed network velocity (mm) at the voxel centres of ``grid`` (any sub-grid of the box)."""
        points = grid.world_points_torch(device=device, dtype=dtype) if points is None else points
        coords = (2 * (points - lo) / (hi - lo).clamp(min=1e-6) - 1).reshape(-1, 3)
        window = border_window(grid, config.margin_mm, device, dtype)
        return net(coords).reshape(*grid.shape, 3) * config.velocity_scale_mm * window

    if config.weight_image > 0:
        monitor.report(0.0, "SINR: describing the images (image term)")
    image = _image_term(fixed_image, moving_image, box, vel_grid, initial, config, device, dtype)
    monitor.check("SINR")
    vel_coords = (2 * (vel_points - lo) / (hi - lo).clamp(min=1e-6) - 1).reshape(-1, 3)
    vel_window = border_window(vel_grid, config.margin_mm, device, dtype)

    def velocity() -> torch.Tensor:
        return net(vel_coords).reshape(*vel_grid.shape, 3) * config.velocity_scale_mm * vel_window

    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    best, best_state, since_best, history = float("inf"), None, 0, []
    t_setup = time.perf_counter()
    for it in range(config.iterations):
        monitor.check("SINR")
        optimizer.zero_grad()
        v = velocity()
        u = exponentiate(v, vel_grid, config.squaring_steps)
        u_loss = sample_normalized(u.permute(3, 0, 1, 2), u_at_points)  # (P, 3)
        dice = soft_dice_loss(fixed_soft, warp_moving(u_loss), weights)
        loss = dice
        if config.weight_sdm > 0:
            warped_dist = sample_normalized(moving_dist, sdm_base + u_loss @ sdm_linear.T).T  # (C, P), border extended
            loss = loss + config.weight_sdm * signed_distance_loss(fixed_dist, warped_dist, clip, weights)
        loss = loss + config.weight_mse * velocity_mse(v) + config.weight_tv * total_variation(v, spacing)
        if config.weight_bending > 0:
            loss = loss + config.weight_bending * bending_energy(v, spacing)
        if image is not None:
            image_loss = image.loss(u)
            loss = loss + config.weight_image * (image_loss - image.start)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise MMRegError(f"SINR: the loss became {value} at iteration {it}; try a smaller learning rate")
        history.append(value)
        if not math.isfinite(best) or value < best - config.min_improvement * abs(best):  # (can be negative)
            # the state whose loss this is: saved before the step moves it
            best, since_best = value, 0
            best_state = {k: t.detach().clone() for k, t in net.state_dict().items()}
        else:
            since_best += 1
        loss.backward()
        optimizer.step()
        monitor.report((it + 1) / config.iterations, f"SINR iteration {it + 1}: Dice loss {float(dice.detach()):.4f}")
        if since_best >= config.patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    t_fit = time.perf_counter()

    # the fitted field is continuous: the outputs are exponentiated on a finer grid than the fit used
    out_grid = box.resized(min(config.output_spacing_mm, config.velocity_spacing_mm))
    with torch.no_grad():
        v = velocity_on(out_grid).to(torch.float64)
        steps = config.squaring_steps + 1
        forward = exponentiate(v, out_grid, steps)
        backward = exponentiate(-v, out_grid, steps)
    svf_space = "fixed:svf"
    field = DisplacementField(out_grid, forward.cpu(), "fixed", svf_space)
    inverse_field = DisplacementField(out_grid, backward.cpu(), svf_space, "fixed")
    affine = AffineTransform(initial.matrix, svf_space, "moving")
    det = jacobian_determinant(field)
    info = {
        "iterations": len(history),
        "final_loss": history[-1] if history else None,
        "best_loss": best,
        "velocity_grid": {"shape": list(vel_grid.shape), "spacing_mm": vel_grid.spacing.tolist()},
        "output_grid": {"shape": list(out_grid.shape), "spacing_mm": out_grid.spacing.tolist()},
        "loss_grid_shape": list(loss_grid.shape),
        "loss_points": int(band.sum()),
        "jacobian_min_output_grid": float(det.min()),
        "folding_fraction_output_grid": float(np.mean(det <= 0)),
        "config": asdict(config),
    }
    if image is not None:
        with torch.no_grad():
            u_fit = exponentiate(velocity(), vel_grid, config.squaring_steps)
            info["image_term"] = {"points": image.term.count, "descriptor_spacing_mm": image.term.spacing_mm,
                                  "loss_start": image.start, "loss_final": float(image.loss(u_fit))}
    return RegistrationResult(
        transform=ComposedTransform([field, affine]),
        inverse=ComposedTransform([affine.inverse(), inverse_field]),
        stage_seconds={"setup": t_setup - t0, "fit": t_fit - t_setup, "finish": time.perf_counter() - t_fit},
        info=info,
    )


class _ImageTerm:
    """SINR's optional image term: :func:`~MMRegistrationLib.similarity.objectives.disa_image_term` on the box, with
    the fixed descriptor positions precomputed in the velocity grid's normalised coordinates."""

    def __init__(self, term, vel_grid: Grid, initial: AffineTransform, device, dtype):
        self.term = term
        points = term.points.to(device=device, dtype=dtype)
        to_v = torch.as_tensor(world_to_normalized_matrix(vel_grid), dtype=dtype, device=device)
        self.at_velocity = points @ to_v[:3, :3].T + to_v[:3, 3]  # (Q, 3)
        a = torch.as_tensor(initial.matrix, dtype=dtype, device=device)
        self.linear, self.base = a[:3, :3], points @ a[:3, :3].T + a[:3, 3]  # A(p + u) = base + u @ linear^T
        with torch.no_grad():
            self.start = float(self.term.evaluate(self.base[None])[0][0])

    def loss(self, u: torch.Tensor) -> torch.Tensor:
        """``u (K, J, I, 3)`` displacement on the velocity grid -> the DISA loss of ``A(p + u(p))`` (scalar)."""
        u_at = sample_normalized(u.permute(3, 0, 1, 2), self.at_velocity)  # (Q, 3)
        return self.term.evaluate((self.base + u_at @ self.linear.T)[None])[0][0]


def _image_term(fixed_image: Optional[Image], moving_image: Optional[Image], box: Grid, vel_grid: Grid,
                initial: AffineTransform, config: SINRConfig, device, dtype) -> Optional[_ImageTerm]:
    if config.weight_image < 0 or not math.isfinite(config.weight_image):
        raise InputError("--weight-image", f"must be 0 or more, got {config.weight_image}")
    if config.weight_image == 0:
        return None
    if fixed_image is None or moving_image is None:
        raise InputError("--weight-image", "the image term needs the fixed and moving images (give both, or set "
                         "--weight-image 0)")
    from MMRegistrationLib.similarity.objectives import disa_image_term

    term = disa_image_term(fixed_image, moving_image, box, weights=config.image_weights or None, device=device)
    return _ImageTerm(term, vel_grid, initial, device, dtype)
