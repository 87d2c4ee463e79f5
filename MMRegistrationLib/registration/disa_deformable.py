"""Deformable stage of DISA registration: a stationary velocity field after the linear result.

``T(x) = A(x + u(x))`` with ``u = exp(v) - id`` (scaling and squaring), ``v`` on a coarse grid (``grid_spacing_mm``)
over the fixed points, windowed to 0 at its border (:func:`~MMRegistrationLib.spatial.velocity.border_window`),
fitted with L-BFGS on the similarity (divided by its value after the linear stage) plus bending energy. Forward
``exp(v)`` and inverse ``exp(-v)`` are exponentiated on a finer output grid, as in SINR.
"""

from __future__ import annotations

import numpy as np
import torch

from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.losses.functional import bending_energy
from MMRegistrationLib.registration.disa_config import DISARegistrationConfig
from MMRegistrationLib.registration.lbfgs import minimize_lbfgs
from MMRegistrationLib.spatial.affine import AffineTransform
from MMRegistrationLib.spatial.composite import ComposedTransform
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.spatial.sampling import sample_at_world, sample_normalized, world_to_normalized_matrix
from MMRegistrationLib.spatial.velocity import border_window, exponentiate


def velocity_grid(level, spacing_mm: float) -> tuple:
    """Velocity grid over the fixed points of ``level`` (their bounding box grown by two velocity spacings, the
    window's ramp) in the fixed grid's orientation; returns ``(grid, ramp_mm)``."""
    k, j, i = np.nonzero(level.mask)
    ramp = 2.0 * spacing_mm
    grow = np.ceil(ramp / level.grid.spacing).astype(int) + 1
    lo = np.array([i.min(), j.min(), k.min()]) - grow
    hi = np.array([i.max(), j.max(), k.max()]) + 1 + grow
    box = level.grid.cropped(lo, hi)
    return box.resized(np.minimum(spacing_mm, box.spacing * np.array(box.size_ijk) / 4.0)), ramp


def fit_velocity_field(level, matrix: np.ndarray, config: DISARegistrationConfig, monitor: Monitor) -> tuple:
    """Fit the windowed SVF after the affine ``matrix`` on the objective ``level`` (module docstring).

    Returns ``(forward fixed -> moving, inverse, info)`` composed as SINR builds them."""
    from MMRegistrationLib.spatial.jacobian import jacobian_determinant

    vgrid, ramp = velocity_grid(level, config.grid_spacing_mm)
    window = border_window(vgrid, ramp, device=level.points.device)
    pts = level.points
    to_v = torch.as_tensor(world_to_normalized_matrix(vgrid), dtype=torch.float32, device=pts.device)
    pts_v = pts @ to_v[:3, :3].T + to_v[:3, 3]
    lin = torch.as_tensor(matrix[:3, :3], dtype=torch.float32, device=pts.device)
    off = torch.as_tensor(matrix[:3, 3], dtype=torch.float32, device=pts.device)
    steps = int(config.squaring_steps)
    spacing = vgrid.spacing
    state = {}

    with torch.no_grad():
        start = float(level.evaluate((pts @ lin.T + off)[None])[0][0])
    scale = 1.0 / max(start, 1e-12)  # the similarity term is relative to its value after the affine stage

    def loss_fn(v: torch.Tensor) -> torch.Tensor:
        vw = v * window
        u = exponentiate(vw, vgrid, steps)
        up = sample_normalized(u.permute(3, 0, 1, 2), pts_v)
        loss, overlap = level.evaluate(((pts + up) @ lin.T + off)[None])
        state["similarity"], state["overlap"] = float(loss[0].detach()), float(overlap[0].detach())
        reg = bending_energy(vw, spacing) if config.weight_bending > 0 else torch.zeros((), device=pts.device)
        return loss[0] * scale + config.weight_bending * reg.to(torch.float64)

    v0 = torch.zeros((*vgrid.shape, 3), dtype=torch.float32, device=pts.device)
    v, final, count = minimize_lbfgs(v0, loss_fn, config.deformable_iterations, monitor, "deformable")
    monitor.report(0.8, f"DISA deformable: loss {final:.4f}")
    out_grid = vgrid.resized(min(config.output_spacing_mm, config.grid_spacing_mm))
    with torch.no_grad():
        vw = (v * window).permute(3, 0, 1, 2).to(torch.float64).cpu()
        v_out = sample_at_world(vw, vgrid, out_grid.world_points_torch(dtype=torch.float64), outside_value=0.0)
        forward = exponentiate(v_out, out_grid, steps + 1)
        backward = exponentiate(-v_out, out_grid, steps + 1)
    svf_space = "fixed:svf"
    field = DisplacementField(out_grid, forward, "fixed", svf_space)
    inverse_field = DisplacementField(out_grid, backward, svf_space, "fixed")
    affine = AffineTransform(matrix, svf_space, "moving")
    det = jacobian_determinant(field)
    info = {
        "velocity_grid": {"shape": list(vgrid.shape), "spacing_mm": vgrid.spacing.tolist()},
        "output_grid": {"shape": list(out_grid.shape), "spacing_mm": out_grid.spacing.tolist()},
        "evaluations": count,
        "similarity_loss_after_affine": start,
        "similarity_loss": state.get("similarity"),
        "final_objective": final,
        "max_displacement_mm": float(np.linalg.norm(forward.numpy(), axis=-1).max()),
        "jacobian_min_output_grid": float(det.min()),
        "folding_fraction_output_grid": float(np.mean(det <= 0)),
    }
    return (ComposedTransform([field, affine]), ComposedTransform([affine.inverse(), inverse_field]), info)
