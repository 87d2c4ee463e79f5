"""B-mode transrectal ultrasound appearance of the (deformed) anatomy on the TRUS (fixed) grid.

Model, per voxel inside the sector: scatter amplitude = echogenicity(tissue) x texture x transmission x
time-gain compensation; transmission ``exp(-integral of attenuation)`` is integrated along the ray from the
probe surface (in a cylindrical resampling around the probe axis, so bone and calcifications cast shadows
and fluid gives slight posterior enhancement). Speckle: the amplitude multiplies complex Gaussian noise
and is convolved with a Gaussian point-spread function; the envelope is log-compressed to uint8.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.synthetic.anatomy import NUM_TISSUES, Tissue
from MMRegistrationLib.synthetic.geometry import ProbeGeometry

ECHO = np.zeros(NUM_TISSUES, dtype=np.float32)
"""Mean backscatter amplitude of each tissue (relative units)."""
ECHO_TEXTURE = np.zeros(NUM_TISSUES, dtype=np.float32)
"""Relative amplitude of the anatomical texture in the echo."""
ATTENUATION = np.zeros(NUM_TISSUES, dtype=np.float32)
"""Round-trip amplitude attenuation (nepers per mm)."""
for _tissue, _echo, _texture, _att in (
    (Tissue.FAT, 0.70, 0.30, 0.024),
    (Tissue.MUSCLE, 0.26, 0.20, 0.030),
    (Tissue.PERIPHERAL_ZONE, 0.32, 0.15, 0.022),
    (Tissue.TRANSITION_ZONE, 0.22, 0.35, 0.022),
    (Tissue.NODULE_DARK, 0.14, 0.15, 0.022),
    (Tissue.NODULE_BRIGHT, 0.38, 0.20, 0.022),
    (Tissue.FIBROMUSCULAR_STROMA, 0.20, 0.10, 0.026),
    (Tissue.CAPSULE, 1.80, 0.10, 0.030),
    (Tissue.URETHRA, 0.10, 0.10, 0.015),
    (Tissue.CALCIFICATION, 6.00, 0.00, 1.200),
    (Tissue.URINE, 0.012, 0.00, 0.002),
    (Tissue.BLADDER_WALL, 1.00, 0.10, 0.030),
    (Tissue.RECTAL_WALL, 0.50, 0.40, 0.025),
    (Tissue.RECTAL_LUMEN, 0.08, 0.20, 0.020),
    (Tissue.CORTICAL_BONE, 5.00, 0.00, 1.500),
    (Tissue.BONE_MARROW, 0.50, 0.20, 0.600),
    (Tissue.SYMPHYSIS, 0.40, 0.10, 0.300),
    (Tissue.SEMINAL_VESICLE, 0.14, 0.30, 0.012),
    (Tissue.RECTAL_SUBMUCOSA, 0.90, 0.20, 0.025),
    (Tissue.VESSEL_DARK, 0.05, 0.10, 0.012),
    (Tissue.VESSEL_BRIGHT, 0.05, 0.10, 0.012),
):
    ECHO[_tissue] = _echo
    ECHO_TEXTURE[_tissue] = _texture
    ATTENUATION[_tissue] = _att

TGC_NEPERS_PER_MM = 0.019
"""Time-gain compensation (slightly less than soft-tissue attenuation: the image darkens a little with depth)."""

PSF_SIGMA_MM = np.array([1.2, 0.55, 0.95])
"""Point-spread function sigma along the TRUS grid's (k, j, i) axes: elevation, ~axial, lateral."""

REFERENCE_ECHO = 11.0
"""Envelope mapped to full brightness (0 dB) by the log compression."""

SPECKLE_LOOKS = 2
"""Independent speckle realisations compounded incoherently (reduces speckle contrast a little)."""

RECONSTRUCTION_SIGMA_VOX = 0.5
"""Gaussian smoothing (voxels) of the envelope, standing in for scan conversion / 3-D reconstruction."""


def transmission(
    attenuation: np.ndarray, grid: Grid, probe: ProbeGeometry, s: np.ndarray, r: np.ndarray, theta: np.ndarray
) -> np.ndarray:
    """``exp(-integral_{r_probe}^{r} attenuation)`` along the probe's rays for the query voxels.

    Args:
        attenuation: ``(K, J, I)`` nepers/mm on ``grid``.
        grid: TRUS grid.
        probe: probe geometry.
        s, r, theta: ``(N,)`` cylindrical coordinates of the query voxels (inside the sector).

    Returns:
        ``(N,)`` float32 transmission in (0, 1].
    """
    step = 0.5 * float(grid.spacing.min())
    s_lo, s_hi = float(s.min()) - step, float(s.max()) + step
    s_axis = np.arange(s_lo, s_hi + step, float(grid.spacing[2]))
    r_axis = np.arange(probe.radius_mm, probe.depth_mm + 2 * step, step)
    t_max = np.deg2rad(probe.half_angle_deg) + 0.02
    n_theta = int(np.ceil(2 * t_max * probe.depth_mm / step)) + 1
    t_axis = np.linspace(-t_max, t_max, n_theta)
    pts = probe.from_cylindrical(s_axis[:, None, None], r_axis[None, None, :], t_axis[None, :, None])
    idx = grid.world_to_index(pts)  # (Ns, Nt, Nr, 3) i, j, k
    alpha = ndimage.map_coordinates(
        attenuation, [idx[..., 2], idx[..., 1], idx[..., 0]], order=1, mode="constant",
        cval=float(ATTENUATION[Tissue.FAT]),
    )
    cumulative = (np.cumsum(alpha, axis=-1) - 0.5 * alpha) * step  # integral from the probe surface
    trans = np.exp(-cumulative).astype(np.float32)
    coords = [
        (s - s_axis[0]) / (s_axis[1] - s_axis[0]),
        (theta - t_axis[0]) / (t_axis[1] - t_axis[0]),
        (r - r_axis[0]) / step,
    ]
    return ndimage.map_coordinates(trans, coords, order=1, mode="nearest")


def render_trus(
    tissue: np.ndarray,
    texture: np.ndarray,
    grid: Grid,
    probe: ProbeGeometry,
    rng: np.random.Generator,
    speckle: float,
    noise: float,
    dynamic_range_db: float,
) -> np.ndarray:
    """B-mode TRUS image.

    Args:
        tissue: ``(K, J, I)`` uint8 tissue classes at the anatomy points of the TRUS voxels.
        texture: ``(K, J, I)`` float32 anatomical texture at the same points.
        grid: TRUS grid; probe: probe and sector.
        rng: random generator (speckle and noise).
        speckle: 0 (none) .. 1 (fully developed speckle).
        noise: additive electronic noise relative to soft-tissue echo.
        dynamic_range_db: log-compression range.

    Returns:
        ``(K, J, I)`` uint8; 0 exactly outside the sector, 1..255 inside.
    """
    s, r, theta = probe.cylindrical(grid.world_points())
    sector = probe.inside_cylindrical(s, r, theta)
    sel = np.flatnonzero(sector)

    amp = np.zeros(grid.num_voxels, dtype=np.float32)
    t_sel = tissue.ravel()[sel]
    trans = transmission(ATTENUATION[tissue], grid, probe, s.ravel()[sel], r.ravel()[sel], theta.ravel()[sel])
    depth = r.ravel()[sel] - probe.radius_mm
    gain = np.exp(TGC_NEPERS_PER_MM * depth).astype(np.float32)
    edge = 1.0 - 0.3 * (theta.ravel()[sel] / np.deg2rad(probe.half_angle_deg)) ** 4  # beam falls off at the edges
    amp[sel] = ECHO[t_sel] * (1.0 + ECHO_TEXTURE[t_sel] * texture.ravel()[sel]) * trans * gain * edge
    amp = np.maximum(amp, 0.0).reshape(grid.shape)

    sigma = PSF_SIGMA_MM / grid.spacing[::-1]
    coherent = ndimage.gaussian_filter(amp, sigma, truncate=3.0)
    envelope = (1.0 - speckle) * coherent
    if speckle > 0:
        power = np.zeros(grid.shape, dtype=np.float32)
        for _ in range(SPECKLE_LOOKS):  # incoherent compounding of a few looks (as in 3-D reconstruction)
            re = ndimage.gaussian_filter(amp * rng.standard_normal(grid.shape, dtype=np.float32), sigma, truncate=3.0)
            im = ndimage.gaussian_filter(amp * rng.standard_normal(grid.shape, dtype=np.float32), sigma, truncate=3.0)
            power += re * re + im * im
        envelope += speckle * np.sqrt(power / SPECKLE_LOOKS) / _speckle_rms(sigma)
    envelope = ndimage.gaussian_filter(envelope, RECONSTRUCTION_SIGMA_VOX, truncate=2.0)
    if noise > 0:
        level = noise * float(ECHO[Tissue.PERIPHERAL_ZONE])
        envelope = np.hypot(
            envelope + level * rng.standard_normal(grid.shape, dtype=np.float32),
            level * rng.standard_normal(grid.shape, dtype=np.float32),
        )
    db = 20.0 * np.log10(np.maximum(envelope, 1e-6) / REFERENCE_ECHO)
    display = np.clip((db + dynamic_range_db) / dynamic_range_db, 0.0, 1.0)
    out = np.zeros(grid.shape, dtype=np.uint8)
    out[sector] = np.clip(np.rint(display[sector] * 255.0), 1, 255).astype(np.uint8)
    return out


def _speckle_rms(sigma_vox: np.ndarray) -> float:
    """RMS of ``|h * (n_re + i n_im)|`` for unit-variance real and imaginary white noise and the PSF ``h``."""
    size = [2 * int(np.ceil(3.0 * s)) + 1 for s in sigma_vox]
    delta = np.zeros(size, dtype=np.float64)
    delta[tuple(n // 2 for n in size)] = 1.0
    h = ndimage.gaussian_filter(delta, sigma_vox, truncate=3.0)
    return float(np.sqrt(2.0 * (h**2).sum()))
