"""The one deformable core every velocity-field method uses (SINR, DISA deformable; the learned networks next).

- A stationary velocity field ``v`` on a box grid whose values come from parameters (:class:`VelocitySource`: a
  tensor, an MLP over coordinates, or later a network's output), multiplied by the border window
  (:func:`~MMRegistrationLib.spatial.velocity.border_window`) so that ``exp(v)`` is the identity outside the box and
  continuous across its border.
- The box: around a mask (:func:`mask_box`) or a user's region (:func:`region_box`).
- One first-order optimisation loop (:func:`fit_adam`: Adam, early stop on a plateau, keeps the best state, progress,
  cancel, a non-finite check naming the term that went non-finite); second-order fits use
  :func:`~MMRegistrationLib.registration.lbfgs.minimize_lbfgs`.
- One finishing step (:func:`finish_velocity`): ``T(x) = A(x + u(x))`` with ``u = exp(v) - id`` and the inverse
  ``exp(-v)`` after ``A^-1``, exponentiated on an output grid, with folding statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from MMRegistrationLib.core.box import OrientedBox
from MMRegistrationLib.core.device import move
from MMRegistrationLib.core.errors import MMRegError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.spatial.affine import AffineTransform
from MMRegistrationLib.spatial.composite import ComposedTransform
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.spatial.jacobian import jacobian_determinant
from MMRegistrationLib.spatial.sampling import sample_at_world
from MMRegistrationLib.spatial.velocity import border_window, exponentiate

SVF_SPACE = "fixed:svf"
"""Name of the space between ``exp(v)`` and the initial affine in the composed transforms."""


# ---- boxes ------------------------------------------------------------------------------------------------------
def mask_box(grid: Grid, mask: np.ndarray, grow_mm: float) -> Grid:
    """Sub-grid of ``grid`` (same spacing and orientation) around the voxels where ``mask`` ``(K, J, I)`` is true,
    grown by ``grow_mm`` on every side (rounded up to whole voxels; it may extend past ``grid``)."""
    k, j, i = np.nonzero(mask)
    if len(i) == 0:
        raise ValueError("mask_box(): 'mask' has no true voxel")
    grow = np.ceil(float(grow_mm) / grid.spacing).astype(int)
    lo = np.array([i.min(), j.min(), k.min()]) - grow
    hi = np.array([i.max(), j.max(), k.max()]) + 1 + grow
    return grid.cropped(lo, hi)


def region_box(region: OrientedBox, spacing_mm: float) -> Grid:
    """A grid along the region's axes whose outer corners are the region's corners, at about ``spacing_mm``."""
    extent = 2.0 * region.half_size
    size_ijk = np.maximum(1, np.round(extent / float(spacing_mm))).astype(int)
    spacing = extent / size_ijk
    corner = region.center - region.axes @ region.half_size
    origin = corner + region.axes @ (0.5 * spacing)
    return Grid.from_geometry(tuple(size_ijk[::-1]), spacing, origin, region.axes)


# ---- velocity fields from parameters ----------------------------------------------------------------------------
class VelocitySource(nn.Module):
    """A windowed stationary velocity field (LPS mm) over ``grid`` whose values come from this module's parameters.

    Subclasses implement :meth:`raw` (the velocity before the window at the voxel centres of a grid inside the box).
    ``ramp_mm``: the window rises from 0 on the box border to 1 over this distance.
    """

    def __init__(self, grid: Grid, ramp_mm: float):
        super().__init__()
        self.grid = grid
        self.ramp_mm = float(ramp_mm)
        self._windows: dict = {}

    def raw(self, grid: Grid) -> torch.Tensor:
        raise NotImplementedError

    def window(self, grid: Grid, device, dtype) -> torch.Tensor:
        """``(K, J, I, 1)`` border window of ``grid`` (computed once per grid)."""
        key = (grid.shape, grid.affine.tobytes(), str(device), dtype)
        if key not in self._windows:
            self._windows[key] = border_window(grid, self.ramp_mm, device, dtype)
        return self._windows[key]

    def on(self, grid: Optional[Grid] = None) -> torch.Tensor:
        """``(K, J, I, 3)`` windowed velocity at the voxel centres of ``grid`` (default: the source's own grid), a grid
        with the box's extent and orientation at any spacing."""
        grid = self.grid if grid is None else grid
        raw = self.raw(grid)
        return raw * self.window(grid, raw.device, raw.dtype)


class TensorVelocity(VelocitySource):
    """The velocity is a parameter tensor on the box grid itself (zero at the start); on other grids it is resampled
    (trilinear, 0 outside the box) after the window."""

    def __init__(self, grid: Grid, ramp_mm: float, device=None, dtype=torch.float32):
        super().__init__(grid, ramp_mm)
        self.values = nn.Parameter(torch.zeros((*grid.shape, 3), dtype=dtype, device=device))

    def raw(self, grid: Grid) -> torch.Tensor:
        return self.values

    def windowed(self, values: torch.Tensor) -> torch.Tensor:
        """``values (K, J, I, 3)`` on the box grid times the window (for optimisers that hold their own tensor)."""
        return values * self.window(self.grid, values.device, values.dtype)

    def on(self, grid: Optional[Grid] = None) -> torch.Tensor:
        own = super().on(None)
        if grid is None or grid.same_as(self.grid):
            return own
        points = grid.world_points_torch(device=own.device, dtype=own.dtype)
        return sample_at_world(own.permute(3, 0, 1, 2), self.grid, points, outside_value=0.0)  # (K, J, I, 3)


class MLPVelocity(VelocitySource):
    """The velocity is ``scale_mm * mlp(x)`` with ``x`` the box coordinates scaled to [-1, 1] (a continuous field,
    evaluated on any grid inside the box)."""

    def __init__(self, grid: Grid, ramp_mm: float, mlp: nn.Module, scale_mm: float, device=None,
                 dtype=torch.float32):
        super().__init__(grid, ramp_mm)
        self.mlp = mlp.to(device)
        self.scale_mm = float(scale_mm)
        points = grid.world_points_torch(device=device, dtype=dtype).reshape(-1, 3)
        self.register_buffer("low", points.min(0).values)
        self.register_buffer("high", points.max(0).values)
        self._cache: dict = {}

    def raw(self, grid: Grid) -> torch.Tensor:
        key = (grid.shape, grid.affine.tobytes())
        inputs = self._cache.get(key)
        if inputs is None:  # the coordinates of a grid (and their fixed Fourier encoding) are computed once
            points = grid.world_points_torch(device=self.low.device, dtype=self.low.dtype).reshape(-1, 3)
            inputs = 2 * (points - self.low) / (self.high - self.low).clamp(min=1e-6) - 1
            if hasattr(self.mlp, "from_encoded"):
                with torch.no_grad():
                    inputs = self.mlp.encode(inputs)
            self._cache[key] = inputs
        out = self.mlp.from_encoded(inputs) if hasattr(self.mlp, "from_encoded") else self.mlp(inputs)
        return out.reshape(*grid.shape, 3) * self.scale_mm


# ---- the optimisation loop --------------------------------------------------------------------------------------
@dataclass
class AdamFit:
    """What :func:`fit_adam` did: ``history`` (total loss per iteration), ``best`` (the lowest), ``last_terms`` (the
    weighted terms at the last iteration, floats)."""

    history: list = field(default_factory=list)
    best: float = math.inf
    last_terms: dict = field(default_factory=dict)

    @property
    def iterations(self) -> int:
        return len(self.history)


def fit_adam(module: nn.Module, terms: Callable[[], dict], iterations: int, learning_rate: float, patience: int,
             min_improvement: float, monitor: Monitor, label: str,
             describe: Callable[[dict], str] = lambda terms: "",
             optimizer: Optional[torch.optim.Optimizer] = None) -> AdamFit:
    """Minimise the sum of ``terms()`` (name -> weighted scalar tensor) over ``module``'s parameters with Adam.

    Stops after ``iterations`` or when the loss has not decreased by ``min_improvement`` (relative) for ``patience``
    iterations; the module is left in the state whose loss was lowest (saved before the step that moves it).
    ``monitor`` reports each iteration (with ``describe(terms)``) and cancels; a NaN/Inf term raises
    :class:`MMRegError` naming it. ``optimizer``: an Adam over ``module``'s parameters to continue (its moments
    carry over, e.g. from a coarser level); default: a new one with ``learning_rate``.
    """
    optimizer = optimizer if optimizer is not None else torch.optim.Adam(module.parameters(), lr=learning_rate)
    fit, best_state, since_best = AdamFit(), None, 0
    for it in range(iterations):
        monitor.check(label)
        optimizer.zero_grad()
        values = terms()
        loss = sum(values.values())
        value = float(loss.detach())
        if not math.isfinite(value):
            bad = [name for name, t in values.items() if not math.isfinite(float(t.detach()))]
            raise MMRegError(f"{label}: the {', '.join(bad) or 'total'} loss term became {value} at iteration {it}; "
                             "try a smaller learning rate")
        fit.history.append(value)
        fit.last_terms = {name: float(t.detach()) for name, t in values.items()}
        if not math.isfinite(fit.best) or value < fit.best - min_improvement * abs(fit.best):  # (can be negative)
            fit.best, since_best = value, 0
            best_state = {k: t.detach().clone() for k, t in module.state_dict().items()}
        else:
            since_best += 1
        loss.backward()
        optimizer.step()
        monitor.report((it + 1) / iterations, f"{label}: iteration {it + 1}: {describe(fit.last_terms)}")
        if since_best >= patience:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    return fit


# ---- the result ---------------------------------------------------------------------------------------------------
def finish_velocity(velocity: VelocitySource, out_grid: Grid, affine: np.ndarray, steps: int) -> tuple:
    """Exponentiate the fitted field on ``out_grid`` (float64) forward and backward and compose with ``affine``.

    Returns ``(transform fixed -> moving, inverse moving -> fixed, info)``: ``T = A o exp(v)``, ``T^-1 = exp(-v) o
    A^-1``; ``info`` holds the output grid, the largest displacement and the Jacobian statistics."""
    with torch.no_grad():
        v = move(velocity.on(out_grid), "cpu", torch.float64)
        forward = exponentiate(v, out_grid, steps)
        backward = exponentiate(-v, out_grid, steps)
    field_forward = DisplacementField(out_grid, forward, "fixed", SVF_SPACE)
    field_backward = DisplacementField(out_grid, backward, SVF_SPACE, "fixed")
    linear = AffineTransform(affine, SVF_SPACE, "moving")
    det = jacobian_determinant(field_forward)
    info = {
        "output_grid": {"shape": list(out_grid.shape), "spacing_mm": out_grid.spacing.tolist()},
        "max_displacement_mm": float(np.linalg.norm(forward.numpy(), axis=-1).max()),
        "jacobian_min_output_grid": float(det.min()),
        "folding_fraction_output_grid": float(np.mean(det <= 0)),
    }
    return ComposedTransform([field_forward, linear]), ComposedTransform([linear.inverse(), field_backward]), info
