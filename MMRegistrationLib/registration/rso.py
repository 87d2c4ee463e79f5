"""Test-time optimisation of a registration network (paper 002): ISO over the whole fixed field of view, RSO inside a
user's box, as a correction composed on any earlier fixed -> moving transform.

One step (:func:`tune_step`), given the previous transform ``T`` (the general network's, an earlier step's, or any
other method's: SINR, DISA):

1. A step grid at the network's spacing: the network grid (ISO) or the box plus ``margin_mm`` along the box's axes
   reordered closest to LPS (RSO; each size a multiple of the network's downsampling factor): the paper's own
   suggestion to feed the network only the region (:func:`box_grid`).
2. The network sees the fixed image and the moving image (and the masks its weights take) *through* ``T`` on that
   grid. Its output at the weights the step starts from, ``f0``, is recorded; the correction velocity is
   ``c = W * (f_w - f0)``: exactly zero before the first update, so the step starts from ``T`` itself. ``W`` is the
   grid's border window (ISO), the box's window (RSO, ``hold=window``: ``c = 0`` on and outside the box border, so
   the field outside the box cannot drift), or the grid's window with a penalty on ``c`` outside the box
   (``hold=penalty``).
3. Adam on the decoder (or all) weights minimises, inside the region only, the multi-scale Dice of the gland (when
   both segmentations are given), an image term (DISA by default; MIND-SSC, LC2, MI) relative to its start value,
   and the bending energy of ``c``; early stop on a plateau, best state kept, progress and cancel each iteration
   (:func:`~MMRegistrationLib.registration.deformable.fit_adam`).
4. The result ``T' = T o exp(c)`` (``exp(c)`` first: a fixed -> fixed correction), inverse ``exp(-c) o T^-1``, both
   exponentiated in float64 on the step grid.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from MMRegistrationLib.core.box import OrientedBox
from MMRegistrationLib.core.device import move
from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.losses.functional import bending_energy, masked_mutual_information_loss, multiscale_dice_loss
from MMRegistrationLib.networks.registration import RegistrationNet
from MMRegistrationLib.registration.base import RegistrationInputs
from MMRegistrationLib.registration.deformable import fit_adam
from MMRegistrationLib.registration.initializers import gland_label
from MMRegistrationLib.registration.net_geometry import (
    canonical_axes,
    network_inputs,
    normalised_intensity,
    voxels_to_world,
    warp_voxels,
    world_to_voxels,
)
from MMRegistrationLib.registration.rso_config import TuningOptions
from MMRegistrationLib.spatial.base import SpatialTransform
from MMRegistrationLib.spatial.composite import ComposedTransform
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.spatial.jacobian import jacobian_determinant
from MMRegistrationLib.spatial.sampling import sample_at_world, sample_normalized, world_to_normalized_matrix
from MMRegistrationLib.spatial.velocity import border_window, exponentiate

CORRECTION_SPACE = "fixed"
"""A correction maps the fixed space onto itself (``fixed -> fixed``), then the previous transform applies."""

MDICE_SIGMAS_MM = (0.0, 4.0, 8.0)
"""Scales (mm) of the multi-scale Dice: the training's 0-16 mm without the widest (it would reach across a 40 mm
box); in voxels of the grid the label term is computed on."""

OPTIMISATION_SQUARINGS = 5
"""Squarings of ``exp(c)`` while optimising (at most the network's): a correction of a few mm on a 4 mm grid moves
well under a voxel per step after 5; the result is exponentiated with the network's own count + 1."""


# ---- geometry of a step ------------------------------------------------------------------------------------------
def box_grid(box: OrientedBox, spacing_mm: float, margin_mm: float, multiple: int) -> Grid:
    """The RSO step grid: ``box`` grown by ``margin_mm`` on every side at ``spacing_mm``, along the box's axes
    reordered and flipped closest to LPS (as the network was trained), centred on the box, each size rounded up to a
    multiple of ``multiple``."""
    axes = canonical_axes(box.axes)
    extent = np.abs(axes.T @ box.axes) @ box.size + 2.0 * float(margin_mm)  # along the new axes
    counts = np.ceil(extent / float(spacing_mm) / multiple).astype(int) * multiple
    counts = np.maximum(counts, multiple)
    spacing = np.full(3, float(spacing_mm))
    origin = box.center - axes @ (spacing * (counts - 1) / 2.0)
    return Grid.from_geometry(tuple(counts[::-1]), spacing, origin, axes)


def box_window(box: OrientedBox, grid: Grid, ramp_mm: float, device=None) -> torch.Tensor:
    """``(K, J, I, 1)`` weight on ``grid``: 0 on and outside the box border, rising as ``sin^2`` to 1 over
    ``ramp_mm`` (at most a quarter of the shortest edge) inside it."""
    ramp = min(float(ramp_mm), 0.25 * float(box.size.min()))
    local = (grid.world_points() - box.center) @ box.axes  # (K, J, I, 3) along the box axes
    inside = np.min(box.half_size - np.abs(local), axis=-1)  # mm to the nearest face (negative outside)
    weight = np.sin(0.5 * np.pi * np.clip(inside / max(ramp, 1e-6), 0.0, 1.0)) ** 2
    return torch.as_tensor(weight[..., None], dtype=torch.float32, device=device)


def map_on_grid(transform: SpatialTransform, grid: Grid, chunk: int = 1 << 18) -> torch.Tensor:
    """``(K, J, I, 3)`` float32: where ``transform`` sends the voxel centres of ``grid`` (evaluated in float64)."""
    points = grid.world_points_torch(dtype=torch.float64).reshape(-1, 3)
    out = torch.cat([transform.map_points(points[s:s + chunk]) for s in range(0, len(points), chunk)])
    return out.reshape(*grid.shape, 3).to(torch.float32)


def _gland_mask(seg: Optional[Image]) -> Optional[Image]:
    label = gland_label(seg) if seg is not None else None
    return None if label is None else seg.with_array((seg.array == label).astype(np.float32))


def _sample(image: Image, points: torch.Tensor) -> torch.Tensor:
    """``(1, 1, K, J, I)``: ``image`` sampled (trilinear, 0 outside) at ``points (K, J, I, 3)``."""
    volume = torch.as_tensor(np.ascontiguousarray(image.array, dtype=np.float32))[None]
    return sample_at_world(volume, image.grid, points.float(), outside_value=0.0)[..., 0][None, None]


def crop_to(image: Image, points: np.ndarray, margin_mm: float) -> Image:
    """The part of ``image`` (same grid, a sub-block) that covers ``points (N, 3)`` grown by ``margin_mm``; the whole
    image when the points cover it."""
    index = image.grid.world_to_index(points.reshape(-1, 3))
    grow = float(margin_mm) / image.grid.spacing
    size = np.array(image.grid.size_ijk)
    lo = np.clip(np.floor(index.min(axis=0) - grow), 0, size - 1).astype(int)
    hi = np.clip(np.ceil(index.max(axis=0) + grow) + 1, lo + 1, size).astype(int)
    if np.all(lo == 0) and np.all(hi == size):
        return image
    block = image.array[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
    return Image(np.ascontiguousarray(block), image.grid.cropped(lo, hi))


@dataclass
class StepGeometry:
    """What a step optimises on. On ``step_grid`` (the network's input and the label loss): ``previous_map``
    ``(K, J, I, 3)`` where the previous transform sends its voxel centres, ``region`` ``(1, 1, K, J, I)`` 1 where
    the loss counts. On ``grid`` (the correction's: the step grid or half its resolution): ``window``
    ``(k, j, i, 1)``, with ``hold=penalty`` ``outside`` (1 outside the box), and the label term's ``previous_map_c``
    and ``region_c`` (the same on the correction grid)."""

    step_grid: Grid
    grid: Grid
    box: Optional[OrientedBox]
    previous_map: torch.Tensor
    region: torch.Tensor
    window: torch.Tensor
    outside: Optional[torch.Tensor] = None
    previous_map_c: Optional[torch.Tensor] = None  # on the correction grid (the label term's)
    region_c: Optional[torch.Tensor] = None

    @property
    def region_mask(self) -> np.ndarray:
        """``region`` as a bool ``(K, J, I)`` array."""
        return self.region[0, 0].cpu().numpy() > 0


def step_geometry(fixed: Image, previous: SpatialTransform, step_grid: Grid, finest: int, box: Optional[OrientedBox],
                  ramp_mm: float, hold: str, box_ramp_mm: float, device) -> StepGeometry:
    """:class:`StepGeometry` of an ISO (``box`` None) or RSO step; the correction grid has ``2^finest`` times the
    step grid's spacing (same outer corners)."""
    grid = step_grid if finest == 0 else step_grid.resized(step_grid.spacing * 2**finest)
    region, region_c = _region(fixed, step_grid, box), _region(fixed, grid, box)
    outside = None
    if box is None:
        window = border_window(grid, ramp_mm, device)
    else:
        if hold == "window":
            window = box_window(box, grid, box_ramp_mm, device)
        else:
            window = border_window(grid, ramp_mm, device)
            outside = torch.as_tensor((~box.contains(grid.world_points()))[..., None], dtype=torch.float32,
                                      device=device)
    def tensor(mask: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(mask[None, None], dtype=torch.float32, device=device)

    previous_map = map_on_grid(previous, step_grid).to(device)
    previous_map_c = previous_map if grid is step_grid else map_on_grid(previous, grid).to(device)
    return StepGeometry(step_grid, grid, box, previous_map, tensor(region), window, outside, previous_map_c,
                        tensor(region_c))


def _region(fixed: Image, grid: Grid, box: Optional[OrientedBox]) -> np.ndarray:
    """``(K, J, I)`` bool: the voxel centres of ``grid`` inside the fixed image (and inside ``box``)."""
    points = grid.world_points()
    index = fixed.grid.world_to_index(points.reshape(-1, 3))
    inside = np.all((index >= -0.5) & (index <= np.array(fixed.grid.size_ijk) - 0.5), axis=-1).reshape(grid.shape)
    return inside & box.contains(points) if box is not None else inside


def _on_grid_of(field: torch.Tensor, geometry: StepGeometry, grid: Grid) -> torch.Tensor:
    """A ``(k, j, i, 3)`` field on the correction grid resampled (trilinear) on ``grid`` (the step grid)."""
    if tuple(geometry.grid.shape) == tuple(grid.shape):
        return field
    volume = field.permute(3, 0, 1, 2)[None]
    out = torch.nn.functional.interpolate(volume, size=tuple(grid.shape), mode="trilinear", align_corners=False)
    return out[0].permute(1, 2, 3, 0)


def _on_step_grid(u: torch.Tensor, geometry: StepGeometry) -> torch.Tensor:
    """A displacement ``(k, j, i, 3)`` mm on the correction grid as ``(1, 3, K, J, I)`` voxels of the step grid."""
    return world_to_voxels(_on_grid_of(u, geometry, geometry.step_grid)[None], geometry.step_grid)


# ---- the image term ----------------------------------------------------------------------------------------------
class _ImageTerm:
    """The image similarity inside the step's region as a function of the correction's displacement ``u``
    (``(k, j, i, 3)`` mm on the correction grid): ``evaluate(u) -> scalar`` (minimise)."""

    def __init__(self, kind: str, inputs: RegistrationInputs, geometry: StepGeometry, device):
        self.kind = kind
        self.geometry = geometry
        step_grid = geometry.step_grid
        region = geometry.region_mask
        points = step_grid.world_points()[region]
        mapped = geometry.previous_map.cpu().numpy()[region]
        fixed = crop_to(inputs.fixed, points, 8.0)
        moving = crop_to(inputs.moving, mapped, 16.0)
        region_image = Image(region.astype(np.float32), step_grid)
        self.objective = None
        if kind in ("disa", "mind"):
            self.objective = _descriptor_term(kind, fixed, moving, region_image, device)
        elif kind == "lc2":
            self.objective = _lc2_term(fixed, moving, region_image, device)
        else:  # mi on the step grid
            self.fixed = _sample(Image(normalised_intensity(inputs.fixed.array), inputs.fixed.grid),
                                 step_grid.world_points_torch()).to(device)
            self.moving = _sample(Image(normalised_intensity(inputs.moving.array), inputs.moving.grid),
                                  geometry.previous_map.cpu()).to(device)
        if self.objective is not None:
            pts = self.objective.points.to(device=device, dtype=torch.float32)
            to_c = torch.as_tensor(world_to_normalized_matrix(geometry.grid), dtype=torch.float32, device=device)
            to_s = torch.as_tensor(world_to_normalized_matrix(step_grid), dtype=torch.float32, device=device)
            self.points_c = pts @ to_c[:3, :3].T + to_c[:3, 3]
            self.points_s = pts @ to_s[:3, :3].T + to_s[:3, 3]
            self.to_s = to_s[:3, :3]
        self.start: Optional[float] = None

    def evaluate(self, u: torch.Tensor) -> torch.Tensor:
        geometry = self.geometry
        if self.objective is None:
            warped = warp_voxels(self.moving, _on_step_grid(u, geometry))
            return masked_mutual_information_loss(self.fixed, warped, geometry.region)[0]
        up = sample_normalized(u.permute(3, 0, 1, 2), self.points_c)  # (P, 3) mm
        mapped = sample_normalized(geometry.previous_map.permute(3, 0, 1, 2), self.points_s + up @ self.to_s.T)
        loss, _ = self.objective.evaluate(mapped[None])  # the moving image at T(p + u(p))
        return loss[0].float()


def _descriptor_term(kind: str, fixed: Image, moving: Image, region: Image, device):
    """DISA or MIND-SSC descriptors of both (cropped) images at the automatic working spacing of the region; the
    points: the fixed descriptor positions inside ``region``."""
    from MMRegistrationLib.similarity.descriptors import make_backend
    from MMRegistrationLib.similarity.objectives import descriptor_objectives, descriptor_spacing, keep_on_grid

    inside = keep_on_grid(region, fixed.grid) & (fixed.array > 0)
    stride = 4 if kind == "disa" else 2
    spacing = descriptor_spacing(float(np.count_nonzero(inside)) * fixed.grid.voxel_volume, stride=stride)
    backend = make_backend(kind, device=device, argument="--image-similarity")
    objectives, _ = descriptor_objectives(fixed, moving, backend, spacing, 1, 0.0, None, "variance", region, None,
                                          device)
    if objectives[-1].count == 0:
        raise InputError("--roi", f"the region holds no {kind.upper()} descriptor of the fixed image (too small, "
                                  "outside the field of view, or without intensity variation)")
    return objectives[-1]


def _lc2_term(fixed: Image, moving: Image, region: Image, device):
    from MMRegistrationLib.similarity.disa import prepare_volume
    from MMRegistrationLib.similarity.objectives import LC2Objective, keep_on_grid

    spacing = max(1.0, float(fixed.grid.spacing.min()))
    fp = prepare_volume(fixed, spacing, 0.0, "--fixed")
    mp = prepare_volume(moving, spacing, None, "--moving")
    objective = LC2Objective(fp, mp, keep_on_grid(region, fp.grid), None, device)
    if objective.count == 0:
        raise InputError("--roi", "the region is too small for LC2 (it needs the patch radius inside the image)")
    return objective


# ---- the step ----------------------------------------------------------------------------------------------------
@dataclass
class StepResult:
    """A finished step: ``transform`` fixed -> moving, ``inverse`` (None when the previous had none), ``info`` for
    ``result.json`` and the session's history (iterations, loss curve, terms, grid, box, correction statistics)."""

    transform: SpatialTransform
    inverse: Optional[SpatialTransform]
    info: dict = field(default_factory=dict)


FINEST_LEVEL = {"coarse": 1, "decoder": 0, "all": 0}
"""The decoder level whose output is the correction: ``coarse`` stops at half the network's resolution (5x cheaper
per iteration at 32^3; the correction is a smooth field anyway)."""


class _Correction(torch.nn.Module):
    """The correction velocity ``c = W * (f_w(x) - f0)`` in LPS mm ``(K, J, I, 3)`` on ``grid`` (the step grid, or
    the step grid at half its resolution for ``trainable='coarse'``); the encoder's features are computed once
    unless ``trainable='all'``."""

    def __init__(self, network: RegistrationNet, x: torch.Tensor, step_grid: Grid, grid: Grid,
                 window: torch.Tensor, trainable: str, precision: str):
        super().__init__()
        self.network = network
        self.x = x.contiguous(memory_format=torch.channels_last_3d)
        self.step_grid = step_grid
        self.grid = grid
        self.window = window
        self.finest = FINEST_LEVEL[trainable]
        self.autocast = precision == "bfloat16"
        self.features = None
        if trainable != "all":
            with torch.no_grad(), self._precision():
                self.features = [f.detach() for f in network.encoder(self.x)]
        with torch.no_grad():
            self.start = self.raw().detach()

    def _precision(self):
        return torch.autocast(device_type=self.x.device.type, dtype=torch.bfloat16, enabled=self.autocast)

    def raw(self) -> torch.Tensor:
        with self._precision():
            if self.features is not None:
                out = self.network.decode(self.features, self.finest)
            else:
                out = self.network(self.x)
        return out.float()

    def forward(self) -> torch.Tensor:
        return voxels_to_world(self.raw() - self.start, self.step_grid)[0] * self.window


def network_input(network: RegistrationNet, inputs: RegistrationInputs, geometry: StepGeometry) -> torch.Tensor:
    """``(1, C, K, J, I)``: the fixed image (and mask) on the step grid, the moving image (and mask) through the
    previous transform."""
    device = geometry.previous_map.device
    points = geometry.step_grid.world_points_torch()
    previous = geometry.previous_map.cpu()
    sampled = {
        "fixed": _sample(Image(normalised_intensity(inputs.fixed.array), inputs.fixed.grid), points)[0],
        "moving": _sample(Image(normalised_intensity(inputs.moving.array), inputs.moving.grid), previous)[0],
    }
    if "fixed_mask" in network.config.inputs:
        sampled["fixed_labels"] = _sample(_gland_mask(inputs.fixed_seg), points)[0]
    if "moving_mask" in network.config.inputs:
        sampled["moving_labels"] = _sample(_gland_mask(inputs.moving_seg), previous)[0]
    return network_inputs(network.config, network.input_order, sampled)[None].to(device)


def _label_volumes(inputs: RegistrationInputs, geometry: StepGeometry) -> Optional[tuple]:
    """``(fixed, moving)`` ``(1, C, K, J, I)`` indicators of every structure both segmentations hold (the gland and
    any other: the more surfaces, the better the interior is pinned down), fixed on the step grid, moving through the
    previous transform; None without both segmentations."""
    if inputs.fixed_seg is None or inputs.moving_seg is None:
        return None
    shared = sorted(set(inputs.fixed_seg.labels()) & set(inputs.moving_seg.labels()))
    if not shared:
        return None
    device = geometry.previous_map.device
    points = geometry.grid.world_points_torch()
    previous = geometry.previous_map_c.cpu()
    fixed, moving = [], []
    for value in shared:
        fixed.append(_sample(inputs.fixed_seg.with_array((inputs.fixed_seg.array == value).astype(np.float32)),
                             points))
        moving.append(_sample(inputs.moving_seg.with_array((inputs.moving_seg.array == value).astype(np.float32)),
                              previous))
    return torch.cat(fixed, dim=1).to(device), torch.cat(moving, dim=1).to(device)


def check_label_region(labels: Optional[tuple], geometry: StepGeometry) -> None:
    """Label terms need some gland inside the region: :class:`InputError` naming ``--roi`` otherwise."""
    if labels is None:
        return
    region = geometry.region_c
    if float((labels[0] * region).sum()) < 1.0 and float((labels[1] * region).sum()) < 1.0:
        raise InputError("--roi", "no segmentation (fixed or moving gland) inside the box, so the label term has "
                                  "nothing to align there: move the box, or give --label-weight 0 to refine on the "
                                  "image term alone")


def tune_step(inputs: RegistrationInputs, previous: SpatialTransform, previous_inverse: Optional[SpatialTransform],
              network: RegistrationNet, grid: Grid, box: Optional[OrientedBox], config: TuningOptions, iterations: int,
              precision: str, device, monitor: Optional[Monitor] = None, label: str = "ISO", hold: str = "window",
              hold_weight: float = 0.0, box_ramp_mm: float = 6.0) -> StepResult:
    """One test-time optimisation step (module docstring). ``network`` is changed in place (its tuned weights are
    the next step's start; callers pass a copy). ``grid``: the step grid (:func:`box_grid` for RSO, the network grid
    for ISO). Raises :class:`InputError` for a region without fixed voxels or, with label terms, without gland."""
    monitor = Monitor.wrap(monitor)
    started = time.perf_counter()
    device = torch.device(device)
    network.to(device).train(False)
    ramp = float(network.config.ramp_mm)
    geometry = step_geometry(inputs.fixed, previous, grid, FINEST_LEVEL[config.trainable], box, ramp, hold,
                             box_ramp_mm, device)
    if float(geometry.region.sum()) < 1:
        raise InputError("--roi", "the region holds no voxel of the fixed image")
    labels = _label_volumes(inputs, geometry) if config.label_weight > 0 else None
    check_label_region(labels, geometry)
    image_weight = config.image_weight if config.image_weight is not None else (0.1 if labels is not None else 1.0)
    use_image = config.image_similarity != "none" and image_weight > 0
    if labels is None and not use_image:
        raise InputError("--label-weight", "the label term needs --fixed-seg and --moving-seg; without them give an "
                                           "image term (--image-similarity, --image-weight)")
    monitor.report(0.02, f"{label}: preparing the inputs")
    image_term = _ImageTerm(config.image_similarity, inputs, geometry, device) if use_image else None
    x = network_input(network, inputs, geometry)
    for p in network.parameters():
        p.requires_grad_(False)
    trained = network if config.trainable == "all" else network.decoder
    for p in trained.parameters():
        p.requires_grad_(True)
    correction = _Correction(network, x, grid, geometry.grid, geometry.window, config.trainable, precision)
    steps = int(network.config.squaring_steps)
    fit_steps = min(steps, OPTIMISATION_SQUARINGS)
    sigmas = tuple(sigma / float(geometry.grid.spacing.min()) for sigma in MDICE_SIGMAS_MM)
    region = geometry.region_c
    fixed_labels = labels[0] * region if labels is not None else None
    cgrid = geometry.grid
    spacing = tuple(float(v) for v in cgrid.spacing)

    def terms() -> dict:
        c = correction()  # (K, J, I, 3) mm on the correction grid
        u = exponentiate(c, cgrid, fit_steps)
        out = {}
        if labels is not None:
            u_voxels = world_to_voxels(u[None], cgrid)
            warped = warp_voxels(labels[1], u_voxels) * region
            out["label"] = config.label_weight * multiscale_dice_loss(fixed_labels, warped, sigmas)[0]
        if image_term is not None:
            value = image_term.evaluate(u)
            if image_term.start is None:
                image_term.start = max(abs(float(value.detach())), 1e-6)
            out["image"] = image_weight * value / image_term.start
        c_field = c.permute(3, 0, 1, 2)[None]
        if config.smooth_weight > 0:
            out["bending"] = config.smooth_weight * bending_energy(c_field, spacing)[0]
        if geometry.outside is not None and hold_weight > 0:
            outside = geometry.outside
            out["hold"] = hold_weight * ((c**2).sum(-1, keepdim=True) * outside).sum() / outside.sum().clamp(min=1)
        return out

    def describe(values: dict) -> str:
        return ", ".join(f"{k} {v:.4f}" for k, v in values.items())

    fit = fit_adam(trained, terms, int(iterations), config.learning_rate, config.patience, 1e-3,
                   monitor.stage(0.05, 0.9), label, describe)
    for p in network.parameters():
        p.requires_grad_(False)
    monitor.report(0.92, f"{label}: transform and inverse")
    with torch.no_grad():  # exponentiated at the step grid's resolution (forward o inverse closer to identity),
        # windowed there too, so that the correction is exactly 0 at every step-grid node outside the box
        fine = _on_grid_of(correction(), geometry, grid)
        if geometry.grid is not grid:
            fine = fine * (box_window(box, grid, box_ramp_mm, device) if box is not None and hold == "window"
                           else border_window(grid, ramp, device))
        c_world = move(fine, "cpu", torch.float64)
    transform, inverse, stats = _compose(c_world, grid, steps + 1, previous, previous_inverse)
    info = {
        "step": label,
        "iterations": fit.iterations,
        "loss_curve": [float(v) for v in fit.history],
        "best_loss": fit.best,
        "final_terms": fit.last_terms,
        "seconds": time.perf_counter() - started,
        "step_grid": {"shape": list(grid.shape), "spacing_mm": grid.spacing.tolist(), "origin_mm": grid.origin.tolist(),
                      "direction": grid.direction.tolist()},
        "box": None if box is None else box.as_record(),
        "trainable": config.trainable,
        "label_term": labels is not None,
        "image_term": config.image_similarity if use_image else "none",
        "image_weight": image_weight if use_image else 0.0,
        "precision": precision,
        **stats,
    }
    return StepResult(transform, inverse, info)


def _compose(c_world: torch.Tensor, grid: Grid, steps: int, previous: SpatialTransform,
             previous_inverse: Optional[SpatialTransform]) -> tuple:
    """``(previous o exp(c), exp(-c) o previous^-1 or None, statistics)`` with the correction's fields on ``grid``."""
    forward = exponentiate(c_world, grid, steps)
    backward = exponentiate(-c_world, grid, steps)
    field_forward = DisplacementField(grid, forward, CORRECTION_SPACE, CORRECTION_SPACE)
    field_backward = DisplacementField(grid, backward, CORRECTION_SPACE, CORRECTION_SPACE)
    det = jacobian_determinant(field_forward)
    norms = np.linalg.norm(forward.numpy(), axis=-1)
    stats = {"max_correction_mm": float(norms.max()), "mean_correction_mm": float(norms.mean()),
             "jacobian_min_correction": float(det.min()), "folding_fraction_correction": float(np.mean(det <= 0))}
    if not math.isfinite(stats["max_correction_mm"]):
        raise ValueError("tune_step: the correction is not finite")
    transform = ComposedTransform([field_forward, previous])
    inverse = None if previous_inverse is None else ComposedTransform([previous_inverse, field_backward])
    return transform, inverse, stats
