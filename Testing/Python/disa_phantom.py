"""Analytic textured phantom for the DISA registration and heatmap tests.

The anatomy is a function of position (LPS mm): a smooth ellipsoidal "gland" plus a few hundred Gaussian blobs of
2.5-5 mm, fine enough to give local optima, so that an image of it through any known transform is exact. A fixed
image samples ``anatomy(T(x))`` (T fixed -> moving, e.g. a probe compression or a deformation) and a moving image
``remap(anatomy(S^-1(y)))`` (S a rigid/affine fixed -> moving transform), optionally inside an ultrasound-like
sector with exactly 0 outside.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image

_RNG = np.random.default_rng(3)
BLOB_CENTRES = _RNG.uniform(-40.0, 40.0, (250, 3))
BLOB_SIGMAS = _RNG.uniform(2.5, 5.0, 250)
BLOB_AMPLITUDES = _RNG.uniform(-1.0, 1.0, 250)


def anatomy(points: np.ndarray) -> np.ndarray:
    """Intensity of the phantom at world points ``(..., 3)`` (LPS mm)."""
    pts = np.asarray(points, dtype=np.float64)
    flat = pts.reshape(-1, 3)
    out = np.zeros(len(flat))
    for start in range(0, len(flat), 20000):
        chunk = flat[start:start + 20000]
        d2 = ((chunk[:, None, :] - BLOB_CENTRES[None]) ** 2).sum(-1)
        out[start:start + 20000] = (BLOB_AMPLITUDES * np.exp(-d2 / (2 * BLOB_SIGMAS**2))).sum(-1)
    r = np.sqrt((((flat - np.array([0.0, 5.0, 0.0])) / np.array([22.0, 16.0, 18.0])) ** 2).sum(-1))
    out += 0.8 / (1.0 + np.exp((r - 1.0) * 12.0))
    return out.reshape(pts.shape[:-1])


def cube_grid(n: int = 48, spacing: float = 2.0, centre=(0.0, 0.0, 0.0), angles_deg=(0.0, 0.0, 0.0)) -> Grid:
    """``n^3`` isotropic grid centred on ``centre`` with a rotated (oblique) direction."""
    direction = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    origin = np.asarray(centre, dtype=np.float64) - direction @ np.full(3, spacing * (n - 1) / 2)
    return Grid.from_geometry((n, n, n), (spacing,) * 3, origin, direction)


def sector_mask(grid: Grid, apex=(0.0, -50.0, 0.0), axis=(0.0, 1.0, 0.0), half_angle_deg: float = 55.0,
                depth_mm: float = 95.0, near_mm: float = 8.0) -> np.ndarray:
    """Ultrasound-like field of view: a cone from ``apex`` along ``axis``, between ``near_mm`` and ``depth_mm``."""
    rel = grid.world_points() - np.asarray(apex, dtype=np.float64)
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    dist = np.linalg.norm(rel, axis=-1)
    cos = (rel @ axis) / np.maximum(dist, 1e-9)
    return (cos > np.cos(np.deg2rad(half_angle_deg))) & (dist < depth_mm) & (dist > near_mm)


def phantom_image(grid: Grid, mapping=None, remap=None, fov: np.ndarray | None = None) -> Image:
    """``remap(anatomy(mapping(x)))`` on ``grid``; inside ``fov`` shifted to positive values and exactly 0 outside."""
    pts = grid.world_points()
    if mapping is not None:
        pts = mapping(pts.reshape(-1, 3)).reshape(pts.shape)
    values = anatomy(pts)
    if remap is not None:
        values = remap(values)
    if fov is not None:
        values = np.where(fov, values - values[fov].min() + 0.1, 0.0)
    return Image(values.astype(np.float32), grid)


def point_errors(estimate, truth_points: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``|estimate(x) - truth(x)|`` (mm) at ``points``; ``truth_points`` are the true images of ``points``."""
    return np.linalg.norm(estimate.map_points_np(points) - truth_points, axis=1)
