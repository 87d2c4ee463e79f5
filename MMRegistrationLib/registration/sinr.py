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

import copy
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
    fit, coarse_run = _fit(velocity, surfaces, image, config, monitor)
    t_fit = time.perf_counter()
    # the fitted field is continuous: the outputs are exponentiated on a finer grid than the fit used
    out_grid = box.resized(min(config.output_spacing_mm, config.velocity_spacing_mm))
    transform, inverse, finished = finish_velocity(velocity, out_grid, initial.matrix, config.squaring_steps + 1)
    info = {
        "iterations": coarse_run + fit.iterations,
        "coarse_iterations": coarse_run,
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


def fit_levels(vel_grid: Grid, config: SINRConfig) -> list:
    """``[(grid, iterations, coarse), ...]``: ``coarse_iterations`` on the box at twice the velocity spacing (and the
    losses at every other point), then the rest on the velocity grid (the MLP is a continuous field, evaluated on
    either)."""
    coarse = min(config.coarse_iterations, config.iterations - 1)
    if coarse <= 0:
        return [(vel_grid, config.iterations, False)]
    return [(vel_grid.resized(2 * config.velocity_spacing_mm), coarse, True),
            (vel_grid, config.iterations - coarse, False)]


def _fit(velocity: MLPVelocity, surfaces: "SurfaceTerms", image, config: SINRConfig, monitor: Monitor) -> tuple:
    """Adam over the levels of :func:`fit_levels` (each keeps its best state). Returns ``(fit, coarse)``: the last
    level's :class:`AdamFit` and the iterations run before it."""
    levels = fit_levels(velocity.grid, config)
    done, total, fits = 0, sum(n for _, n, _ in levels), []
    optimizer = torch.optim.Adam(velocity.parameters(), lr=config.learning_rate)  # its moments carry across levels
    for grid, iterations, coarse in levels:
        terms = surfaces.coarse() if coarse else surfaces
        fits.append(fit_adam(velocity, lambda g=grid, t=terms: _loss_terms(velocity, t, image, config, g), iterations,
                             config.learning_rate, config.patience, config.min_improvement,
                             monitor.stage(done / total, (done + iterations) / total), "SINR",
                             describe=lambda terms: f"Dice loss {terms['dice']:.4f}", optimizer=optimizer))
        done += iterations
    return fits[-1], sum(f.iterations for f in fits[:-1])


def _loss_terms(velocity: MLPVelocity, surfaces: "SurfaceTerms", image, config: SINRConfig,
                grid: Optional[Grid] = None) -> dict:
    """The weighted loss terms of the current field on ``grid`` (default: the velocity grid; name -> scalar
    tensor)."""
    grid = velocity.grid if grid is None else grid
    v = velocity.on(grid)
    u = exponentiate(v, grid, config.squaring_steps)
    terms = surfaces.terms(u, config, grid)
    field = v.permute(3, 0, 1, 2)[None]  # (1, 3, K, J, I), as the losses take fields
    spacing = grid.spacing
    terms["mse"] = config.weight_mse * velocity_mse(field)[0]
    if config.weight_tv > 0:
        terms["tv"] = config.weight_tv * total_variation(field, spacing)[0]
    if config.weight_bending > 0:
        terms["bending"] = config.weight_bending * bending_energy(field, spacing)[0]
    if image is not None:
        terms["image"] = config.weight_image * (image.loss(u, grid) - image.start)
    return terms


def _soft_masks(seg: Image, labels: Sequence[int], smoothing_mm: float) -> tuple:
    """``((C, K, J, I) float32 indicator of each label, Gaussian-smoothed by smoothing_mm, its grid)``: computed on
    ``seg``'s grid cropped to the labels' bounding box grown by the filter's reach (4 sigma, as SciPy truncates, plus a
    voxel), which gives exactly the values of the whole grid (outside the crop they are 0)."""
    sigma = smoothing_mm / seg.grid.spacing[::-1] if smoothing_mm > 0 else None
    reach = np.ceil(4.0 * sigma).astype(int) + 1 if sigma is not None else np.ones(3, dtype=int)
    inside = np.argwhere(np.isin(seg.array, labels))  # (N, 3) k, j, i
    start = np.maximum(inside.min(0) - reach, 0)
    stop = np.minimum(inside.max(0) + 1 + reach, seg.array.shape)
    crop = seg.array[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]]
    out = []
    for lab in labels:
        m = (crop == lab).astype(np.float32)
        out.append(ndimage.gaussian_filter(m, sigma) if sigma is not None else m)
    return np.stack(out), seg.grid.cropped(start[::-1], stop[::-1])


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

    def subset(self, keep: torch.Tensor) -> "_Sampled":
        """The same volume sampled at the points ``keep`` selects."""
        out = copy.copy(self)
        out.base = self.base[keep]
        return out


class GridCoordinates:
    """Fixed points ``(P, 3)`` (LPS mm) in the normalised coordinates of a grid, computed once per grid."""

    def __init__(self, points: torch.Tensor, default: Grid):
        self.points, self.default, self._cache = points, default, {}

    def on(self, grid: Optional[Grid] = None) -> torch.Tensor:
        grid = self.default if grid is None else grid
        key = (grid.shape, grid.affine.tobytes())
        if key not in self._cache:
            m = torch.as_tensor(world_to_normalized_matrix(grid), dtype=self.points.dtype, device=self.points.device)
            self._cache[key] = self.points @ m[:3, :3].T + m[:3, 3]
        return self._cache[key]


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
        band = (near < config.band_mm).any(dim=0)
        k, j, i = np.unravel_index(np.flatnonzero(band.cpu().numpy()), loss_grid.shape)
        self._every_other = torch.as_tensor((k % 2 == 0) & (j % 2 == 0) & (i % 2 == 0), device=device)
        points = points[band]
        self.count = int(len(points))
        if self.count == 0:
            raise InputError("--roi", "the box holds no fixed structure (no point inside or near a fixed segment)")
        primary = 1 if 1 in labels else labels[0]
        self.weights = torch.tensor([1.0 if lab == primary else config.context_weight for lab in labels],
                                    dtype=torch.float32, device=device)
        self.at_velocity = GridCoordinates(points, vel_grid)  # the points in a velocity grid's coordinates
        smooth = config.mask_smoothing_mm
        self.fixed_masks = _Sampled(*_soft_masks(fixed_seg, labels, smooth), points, np.eye(4), "zeros").at()
        self.moving_masks = _Sampled(*_soft_masks(moving_seg, labels, smooth), points, initial.matrix, "zeros")
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

    def coarse(self) -> "SurfaceTerms":
        """The same terms at every other loss point along each axis (twice the loss spacing), for the coarse level;
        ``self`` where that leaves no point."""
        keep = self._every_other
        if not bool(keep.any()):
            return self
        out = copy.copy(self)
        out.count = int(keep.sum())
        out.at_velocity = GridCoordinates(self.at_velocity.points[keep], self.at_velocity.default)
        out.fixed_masks = self.fixed_masks[:, keep]
        out.moving_masks = self.moving_masks.subset(keep)
        if self.fixed_distances is not None:
            out.fixed_distances = self.fixed_distances[:, keep]
            out.moving_distances = self.moving_distances.subset(keep)
        return out

    def terms(self, u: torch.Tensor, config: SINRConfig, grid: Optional[Grid] = None) -> dict:
        """``u (K, J, I, 3)`` displacement on ``grid`` (default: the velocity grid) -> weighted ``{"dice", "sdm"}``
        terms."""
        u_points = sample_normalized(u.permute(3, 0, 1, 2), self.at_velocity.on(grid))  # (P, 3)
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
        self.at_velocity = GridCoordinates(points, vel_grid)  # (Q, 3) on a velocity grid
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

    def loss(self, u: torch.Tensor, grid: Optional[Grid] = None) -> torch.Tensor:
        """``u (K, J, I, 3)`` displacement on ``grid`` (default: the velocity grid) -> the DISA loss of ``A(p + u(p))``
        (scalar)."""
        u_at = sample_normalized(u.permute(3, 0, 1, 2), self.at_velocity.on(grid))  # (Q, 3)
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
