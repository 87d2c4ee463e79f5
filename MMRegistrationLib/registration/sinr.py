"""SINR: surface-driven implicit neural stationary velocity field registration (paper 000).

An MLP over the (normalised) coordinates of a box around the structures gives a stationary velocity field ``v``
(:class:`~MMRegistrationLib.registration.deformable.MLPVelocity`); the fixed -> moving transform is
``T(x) = A(x + u(x))`` with ``u = exp(v) - id`` and ``A`` the initial affine. The network is fitted per case with
Adam (:func:`~MMRegistrationLib.registration.deformable.fit_adam`) on a soft Dice loss between the fixed and the
warped moving masks, a signed-distance-map loss (004), velocity MSE and total variation (000), bending energy (004)
and optionally the DISA image term. ``v`` is windowed to vanish on the box border, so ``u`` is continuous everywhere
(0 outside the box) and the inverse ``T^-1(y) = exp(-v)(A^-1 y)`` comes from the same fit
(:func:`~MMRegistrationLib.registration.deformable.finish_velocity`).

Both sides of every surface term go through the same operations (the fixed masks and distance maps are sampled at
the loss points exactly as the moving ones are at ``T(p)``), so identical inputs are registered by the identity.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np
import torch
from scipy import ndimage

from MMRegistrationLib.core.box import OrientedBox
from MMRegistrationLib.core.errors import InputError
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
from MMRegistrationLib.registration.deformable import (
    MLPVelocity,
    fit_adam,
    finish_velocity,
    mask_box,
    region_box,
)
from MMRegistrationLib.registration.initializers import sdm_stack, shared_labels
from MMRegistrationLib.registration.sinr_config import PRESETS, SINRConfig, sinr_config
from MMRegistrationLib.spatial.affine import AffineTransform
from MMRegistrationLib.spatial.sampling import sample_normalized, world_to_normalized_matrix
from MMRegistrationLib.spatial.velocity import exponentiate

__all__ = ["PRESETS", "SINRConfig", "sinr_config", "sinr_register"]


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
    region: Optional[OrientedBox] = None,
) -> RegistrationResult:
    """Fit the SINR velocity field; returns fixed -> moving and moving -> fixed transforms.

    Args:
        fixed_seg, moving_seg: label maps with corresponding label values.
        initial: fixed -> moving affine start (``--init``).
        labels: structures to use (default: all shared labels).
        seed: seed of the MLP's initial weights and Fourier frequencies.
        fixed_image, moving_image: the images, needed only for ``config.weight_image > 0`` (the fixed field of view
            is the voxels above 0, as for ultrasound; the whole moving image counts).
        region: a box (LPS mm) the field is confined to (``--roi``); default: the fixed structures' bounding box grown
            by ``config.margin_mm``.

    Raises:
        InputError: no shared label, masks that do not overlap after ``initial``, a region without fixed structure,
            an image term without images or without a fixed descriptor inside the box, bad images or weights.
        MMRegError: a loss term became NaN/Inf.
    """
    monitor = Monitor.wrap(progress, cancel)
    device = torch.device(device) if device is not None else torch.device("cpu")
    t0 = time.perf_counter()
    labels = shared_labels(fixed_seg, moving_seg, labels)
    box = _velocity_box(fixed_seg, labels, config, region)
    vel_grid = box.resized(config.velocity_spacing_mm)
    loss_grid = box.resized(min(config.loss_spacing_mm, config.velocity_spacing_mm))
    surfaces = SurfaceTerms(fixed_seg, moving_seg, labels, loss_grid, vel_grid, initial, config, device)
    mlp = FourierFeatureMLP(3, 3, config.num_frequencies, config.frequency_scale, config.hidden, config.depth,
                            generator=torch.Generator().manual_seed(int(seed)))
    velocity = MLPVelocity(vel_grid, config.margin_mm, mlp, config.velocity_scale_mm, device)
    if config.weight_image > 0:
        monitor.report(0.0, "SINR: describing the images (image term)")
    image = _image_term(fixed_image, moving_image, box, vel_grid, initial, config, device, torch.float32)
    monitor.check("SINR")
    t_setup = time.perf_counter()
    fit = fit_adam(velocity, lambda: _loss_terms(velocity, surfaces, image, config), config.iterations,
                   config.learning_rate, config.patience, config.min_improvement, monitor, "SINR",
                   describe=lambda terms: f"Dice loss {terms['dice']:.4f}")
    t_fit = time.perf_counter()
    # the fitted field is continuous: the outputs are exponentiated on a finer grid than the fit used
    out_grid = box.resized(min(config.output_spacing_mm, config.velocity_spacing_mm))
    transform, inverse, finished = finish_velocity(velocity, out_grid, initial.matrix, config.squaring_steps + 1)
    info = {
        "iterations": fit.iterations,
        "final_loss": fit.history[-1] if fit.history else None,
        "best_loss": fit.best,
        "final_terms": fit.last_terms,
        "velocity_grid": {"shape": list(vel_grid.shape), "spacing_mm": vel_grid.spacing.tolist()},
        "loss_grid_shape": list(loss_grid.shape),
        "loss_points": surfaces.count,
        "region": None if region is None else {"center_mm": region.center.tolist(), "axes": region.axes.tolist(),
                                               "size_mm": (2 * region.half_size).tolist()},
        **finished,
        "config": config.as_dict(),
    }
    if image is not None:
        info["image_term"] = image.report(velocity, config)
    return RegistrationResult(
        transform=transform,
        inverse=inverse,
        stage_seconds={"setup": t_setup - t0, "fit": t_fit - t_setup, "finish": time.perf_counter() - t_fit},
        info=info,
    )


def _velocity_box(fixed_seg: Image, labels: Sequence[int], config: SINRConfig, region: Optional[OrientedBox]) -> Grid:
    """The box the field lives in: the user's region, or the fixed structures' bounding box grown by the margin."""
    if region is None:
        return mask_box(fixed_seg.grid, np.isin(fixed_seg.array, labels), config.margin_mm)
    if np.any(2 * region.half_size <= 2 * config.margin_mm):
        raise InputError("--roi", f"the box ({np.round(2 * region.half_size, 1).tolist()} mm) must be larger than twice "
                         f"--margin-mm ({config.margin_mm:g} mm) on every axis: the field ramps up over the margin "
                         "inside it")
    return region_box(region, float(fixed_seg.grid.spacing.min()))


def _loss_terms(velocity: MLPVelocity, surfaces: "SurfaceTerms", image, config: SINRConfig) -> dict:
    """The weighted loss terms of the current field (name -> scalar tensor)."""
    v = velocity.on()
    u = exponentiate(v, velocity.grid, config.squaring_steps)
    terms = surfaces.terms(u, config)
    field = v.permute(3, 0, 1, 2)[None]  # (1, 3, K, J, I), as the losses take fields
    spacing = velocity.grid.spacing
    terms["mse"] = config.weight_mse * velocity_mse(field)[0]
    if config.weight_tv > 0:
        terms["tv"] = config.weight_tv * total_variation(field, spacing)[0]
    if config.weight_bending > 0:
        terms["bending"] = config.weight_bending * bending_energy(field, spacing)[0]
    if image is not None:
        terms["image"] = config.weight_image * (image.loss(u) - image.start)
    return terms


def _soft_masks(seg: Image, labels: Sequence[int], smoothing_mm: float) -> np.ndarray:
    """``(C, K, J, I)`` float32 indicator of each label, Gaussian-smoothed by ``smoothing_mm``."""
    sigma = smoothing_mm / seg.grid.spacing[::-1] if smoothing_mm > 0 else None
    out = []
    for lab in labels:
        m = (seg.array == lab).astype(np.float32)
        out.append(ndimage.gaussian_filter(m, sigma) if sigma is not None else m)
    return np.stack(out)


class _Sampled:
    """A ``(C, K, J, I)`` volume on ``grid`` sampled at ``A(p + u)`` for fixed points ``p`` (the linear maps folded
    into grid_sample coordinates once)."""

    def __init__(self, volume: np.ndarray, grid: Grid, points: torch.Tensor, affine: np.ndarray, padding: str):
        m = torch.as_tensor(world_to_normalized_matrix(grid) @ affine, dtype=points.dtype, device=points.device)
        self.volume = torch.as_tensor(volume, dtype=points.dtype, device=points.device)
        self.linear, self.base = m[:3, :3], points @ m[:3, :3].T + m[:3, 3]
        self.padding = padding

    def at(self, displacement: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(C, P)`` values at ``A(p + displacement)`` (``displacement`` ``(P, 3)`` mm; None = 0)."""
        coords = self.base if displacement is None else self.base + displacement @ self.linear.T
        return sample_normalized(self.volume, coords, padding_mode=self.padding).T


class SurfaceTerms:
    """SINR's surface terms at the fixed loss points: inside a fixed structure or within ``band_mm`` of its surface
    (elsewhere the masks do not change for any displacement smaller than the band).

    The fixed side is sampled exactly as the moving side (smoothed masks with zero padding; signed distance maps
    clipped at ``sdm_clip_mm`` on grids of ``loss_spacing_mm`` with the border extended), at ``p`` instead of
    ``A(p + u(p))``, so both terms are at their optimum when identical inputs are registered by the identity.
    """

    def __init__(self, fixed_seg: Image, moving_seg: Image, labels: Sequence[int], loss_grid: Grid, vel_grid: Grid,
                 initial: AffineTransform, config: SINRConfig, device):
        points = loss_grid.world_points_torch(device=device, dtype=torch.float32).reshape(-1, 3)
        # one distance transform serves the band and the loss: clipping it again at a smaller distance is exact
        clip = config.sdm_clip_mm
        fixed_sdm, sdm_grid = sdm_stack(fixed_seg, labels, config.loss_spacing_mm, max(config.band_mm + 1.0, clip))
        near = _Sampled(fixed_sdm, sdm_grid, points, np.eye(4), "border").at()  # (C, P)
        points = points[(near < config.band_mm).any(dim=0)]
        self.count = int(len(points))
        if self.count == 0:
            raise InputError("--roi", "the box holds no fixed structure (no point inside or near a fixed segment)")
        primary = 1 if 1 in labels else labels[0]
        self.weights = torch.tensor([1.0 if lab == primary else config.context_weight for lab in labels],
                                    dtype=torch.float32, device=device)
        to_v = torch.as_tensor(world_to_normalized_matrix(vel_grid), dtype=torch.float32, device=device)
        self.at_velocity = points @ to_v[:3, :3].T + to_v[:3, 3]  # the points in the velocity grid's coordinates
        smooth = config.mask_smoothing_mm
        self.fixed_masks = _Sampled(_soft_masks(fixed_seg, labels, smooth), fixed_seg.grid, points, np.eye(4),
                                    "zeros").at()
        self.moving_masks = _Sampled(_soft_masks(moving_seg, labels, smooth), moving_seg.grid, points, initial.matrix,
                                     "zeros")
        self.fixed_distances = self.moving_distances = None
        if config.weight_sdm > 0:
            self.fixed_distances = _Sampled(np.clip(fixed_sdm, -clip, clip), sdm_grid, points, np.eye(4),
                                            "border").at()
            self.moving_distances = _Sampled(*sdm_stack(moving_seg, labels, config.loss_spacing_mm,
                                                        config.sdm_clip_mm), points, initial.matrix, "border")
        with torch.no_grad():
            overlap = (self.fixed_masks * self.moving_masks.at()).sum()
        if float(overlap) <= 0:
            raise InputError(
                "--init",
                "the fixed and moving masks do not overlap after initialisation; check that the segmentations belong "
                "to these images, or start from --init com / rigid-mask or a closer initial transform",
            )

    def terms(self, u: torch.Tensor, config: SINRConfig) -> dict:
        """``u (K, J, I, 3)`` displacement on the velocity grid -> weighted ``{"dice", "sdm"}`` terms."""
        u_points = sample_normalized(u.permute(3, 0, 1, 2), self.at_velocity)  # (P, 3)
        dice = soft_dice_loss(self.fixed_masks[None], self.moving_masks.at(u_points)[None], self.weights,
                              squared=True)[0]
        terms = {"dice": dice}
        if self.fixed_distances is not None:
            warped = self.moving_distances.at(u_points)
            sdm = signed_distance_loss(self.fixed_distances[None], warped[None], config.sdm_clip_mm, self.weights)[0]
            terms["sdm"] = config.weight_sdm * sdm
        return terms


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

    def report(self, velocity: MLPVelocity, config: SINRConfig) -> dict:
        """The image term's facts for ``result.json`` (its value at the start and with the fitted field)."""
        with torch.no_grad():
            u_fit = exponentiate(velocity.on(), velocity.grid, config.squaring_steps)
            final = float(self.loss(u_fit))
        return {"points": self.term.count, "descriptor_spacing_mm": self.term.spacing_mm, "loss_start": self.start,
                "loss_final": final}

    def loss(self, u: torch.Tensor) -> torch.Tensor:
        """``u (K, J, I, 3)`` displacement on the velocity grid -> the DISA loss of ``A(p + u(p))`` (scalar)."""
        u_at = sample_normalized(u.permute(3, 0, 1, 2), self.at_velocity)  # (Q, 3)
        return self.term.evaluate((self.base + u_at @ self.linear.T)[None])[0][0]


def _image_term(fixed_image: Optional[Image], moving_image: Optional[Image], box: Grid, vel_grid: Grid,
                initial: AffineTransform, config: SINRConfig, device, dtype) -> Optional[_ImageTerm]:
    if config.weight_image == 0:
        return None
    if fixed_image is None or moving_image is None:
        raise InputError("--weight-image", "the image term needs the fixed and moving images (give both, or set "
                         "--weight-image 0)")
    from MMRegistrationLib.similarity.objectives import disa_image_term

    term = disa_image_term(fixed_image, moving_image, box, weights=config.image_weights or None, device=device)
    return _ImageTerm(term, vel_grid, initial, device, dtype)
