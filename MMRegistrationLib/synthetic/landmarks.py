"""Calcifications: small signal voids (MR) / bright shadowing spots (TRUS) that double as landmarks."""

from __future__ import annotations

import numpy as np

from MMRegistrationLib.core.errors import MMRegError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.spatial.displacement import DisplacementField
from MMRegistrationLib.synthetic.anatomy import Anatomy
from MMRegistrationLib.synthetic.deformation import invert_points
from MMRegistrationLib.synthetic.geometry import CaseFrames, ProbeGeometry

MIN_SEPARATION_MM = 7.0
RADIUS_RANGE_MM = (0.9, 1.5)


def _inside_grid(grid: Grid, points: np.ndarray, margin_vox: float) -> np.ndarray:
    idx = grid.world_to_index(points)
    size = np.asarray(grid.size_ijk, dtype=np.float64)
    return np.all((idx >= margin_vox) & (idx <= size - 1 - margin_vox), axis=-1)


def place_calcifications(
    anatomy: Anatomy,
    frames: CaseFrames,
    ground_truth: DisplacementField,
    probe: ProbeGeometry,
    fixed_grid: Grid,
    moving_grid: Grid,
    rng: np.random.Generator,
    count: int,
) -> tuple:
    """Pick ``count`` calcification centres well inside the MR prostate whose TRUS positions lie inside the
    sector, at least :data:`MIN_SEPARATION_MM` apart.

    Returns:
        ``(anatomy_with_calcifications, moving_landmarks (N, 3), fixed_landmarks (N, 3))``, LPS mm;
        ``fixed = T^{-1}(moving)`` with ``|T(fixed) - moving| < 1e-4`` mm.
    """
    axes = anatomy.gland_axes
    chosen_local: list = []
    chosen_moving: list = []
    chosen_fixed: list = []
    for _ in range(30):
        cand = rng.uniform(-1.0, 1.0, size=(256, 3)) * axes
        ok = (anatomy.gland_radius(cand) < 0.72) & (anatomy.urethra_distance(cand) > 4.0)
        cand = cand[ok]
        moving = frames.local_to_moving(cand)
        ok = _inside_grid(moving_grid, moving, 2.0)
        cand, moving = cand[ok], moving[ok]
        if not len(cand):
            continue
        fixed = invert_points(ground_truth, moving)
        ok = probe.inside(fixed, margin_mm=4.0, margin_deg=6.0) & _inside_grid(fixed_grid, fixed, 3.0)
        for q, m, f in zip(cand[ok], moving[ok], fixed[ok]):
            if all(np.linalg.norm(q - other) >= MIN_SEPARATION_MM for other in chosen_local):
                chosen_local.append(q)
                chosen_moving.append(m)
                chosen_fixed.append(f)
                if len(chosen_local) == count:
                    radii = rng.uniform(*RADIUS_RANGE_MM, size=count)
                    return (
                        anatomy.with_calcifications(np.array(chosen_local), radii),
                        np.array(chosen_moving),
                        np.array(chosen_fixed),
                    )
    raise MMRegError(f"could not place {count} calcifications inside the prostate and the TRUS sector")
