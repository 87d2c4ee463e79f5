"""Deformable stage of DISA registration: a stationary velocity field after the linear result.

``T(x) = A(x + u(x))`` with ``u = exp(v) - id``, ``v`` a parameter tensor on a coarse grid (``grid_spacing_mm``) over
the fixed points (the deformable core's :class:`~MMRegistrationLib.registration.deformable.TensorVelocity`, windowed
to 0 at its border), fitted with L-BFGS on the similarity (divided by its value after the linear stage) plus bending
energy; the result is finished as every velocity-field method's
(:func:`~MMRegistrationLib.registration.deformable.finish_velocity`).
"""

from __future__ import annotations

import numpy as np
import torch

from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.losses.functional import bending_energy
from MMRegistrationLib.registration.deformable import TensorVelocity, finish_velocity, mask_box
from MMRegistrationLib.registration.disa_config import DISARegistrationConfig
from MMRegistrationLib.registration.lbfgs import minimize_lbfgs
from MMRegistrationLib.spatial.sampling import sample_normalized, world_to_normalized_matrix
from MMRegistrationLib.spatial.velocity import exponentiate


def velocity_grid(level, spacing_mm: float) -> tuple:
    """Velocity grid over the fixed points of ``level`` (their bounding box grown by two velocity spacings, the
    window's ramp, and one voxel) in the fixed grid's orientation; returns ``(grid, ramp_mm)``."""
    ramp = 2.0 * spacing_mm
    box = mask_box(level.grid, level.mask, ramp + float(level.grid.spacing.max()))
    return box.resized(np.minimum(spacing_mm, box.spacing * np.array(box.size_ijk) / 4.0)), ramp


def fit_velocity_field(level, matrix: np.ndarray, config: DISARegistrationConfig, monitor: Monitor) -> tuple:
    """Fit the windowed SVF after the affine ``matrix`` on the objective ``level`` (module docstring).

    Returns ``(forward fixed -> moving, inverse, info)``."""
    vgrid, ramp = velocity_grid(level, config.grid_spacing_mm)
    velocity = TensorVelocity(vgrid, ramp, device=level.points.device)
    pts = level.points
    to_v = torch.as_tensor(world_to_normalized_matrix(vgrid), dtype=torch.float32, device=pts.device)
    pts_v = pts @ to_v[:3, :3].T + to_v[:3, 3]
    lin = torch.as_tensor(matrix[:3, :3], dtype=torch.float32, device=pts.device)
    off = torch.as_tensor(matrix[:3, 3], dtype=torch.float32, device=pts.device)
    steps = int(config.squaring_steps)
    state = {}

    with torch.no_grad():
        start = float(level.evaluate((pts @ lin.T + off)[None])[0][0])
    scale = 1.0 / max(start, 1e-12)  # the similarity term is relative to its value after the affine stage

    def loss_fn(values: torch.Tensor) -> torch.Tensor:
        vw = velocity.windowed(values)
        u = exponentiate(vw, vgrid, steps)
        up = sample_normalized(u.permute(3, 0, 1, 2), pts_v)
        loss, overlap = level.evaluate(((pts + up) @ lin.T + off)[None])
        state["similarity"], state["overlap"] = float(loss[0].detach()), float(overlap[0].detach())
        if config.weight_bending <= 0:
            return loss[0] * scale
        reg = bending_energy(vw.permute(3, 0, 1, 2)[None], vgrid.spacing)[0]
        return loss[0] * scale + config.weight_bending * reg.to(loss.dtype)  # float64, float32 on MPS

    values, final, count = minimize_lbfgs(velocity.values.detach(), loss_fn, config.deformable_iterations, monitor,
                                          "deformable")
    with torch.no_grad():
        velocity.values.copy_(values)
    monitor.report(0.8, f"DISA: deformable, loss {final:.4f}")
    out_grid = vgrid.resized(min(config.output_spacing_mm, config.grid_spacing_mm))
    transform, inverse, finished = finish_velocity(velocity, out_grid, matrix, steps + 1)
    info = {
        "velocity_grid": {"shape": list(vgrid.shape), "spacing_mm": vgrid.spacing.tolist()},
        "evaluations": count,
        "similarity_loss_after_affine": start,
        "similarity_loss": state.get("similarity"),
        "final_objective": final,
        **finished,
    }
    return transform, inverse, info
