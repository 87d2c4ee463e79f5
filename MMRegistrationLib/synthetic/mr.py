"""T2-weighted MR appearance of the synthetic anatomy on the MR (moving) grid."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.synthetic.anatomy import NUM_TISSUES, Tissue

FAT_SIGNAL = 620.0

T2_SIGNAL = np.zeros(NUM_TISSUES, dtype=np.float32)
"""Mean T2 signal of each tissue (arbitrary units, fat = 620)."""
T2_TEXTURE = np.zeros(NUM_TISSUES, dtype=np.float32)
"""Relative amplitude of the anatomical texture in each tissue."""
for _tissue, _signal, _texture in (
    (Tissue.FAT, FAT_SIGNAL, 0.07),
    (Tissue.MUSCLE, 210.0, 0.08),
    (Tissue.PERIPHERAL_ZONE, 860.0, 0.07),
    (Tissue.TRANSITION_ZONE, 420.0, 0.22),
    (Tissue.NODULE_DARK, 290.0, 0.12),
    (Tissue.NODULE_BRIGHT, 700.0, 0.15),
    (Tissue.FIBROMUSCULAR_STROMA, 190.0, 0.08),
    (Tissue.CAPSULE, 150.0, 0.05),
    (Tissue.URETHRA, 560.0, 0.05),
    (Tissue.CALCIFICATION, 25.0, 0.0),
    (Tissue.URINE, 1300.0, 0.02),
    (Tissue.BLADDER_WALL, 230.0, 0.06),
    (Tissue.RECTAL_WALL, 270.0, 0.10),
    (Tissue.RECTAL_LUMEN, 35.0, 0.10),
    (Tissue.CORTICAL_BONE, 45.0, 0.05),
    (Tissue.BONE_MARROW, 430.0, 0.20),
    (Tissue.SYMPHYSIS, 170.0, 0.05),
    (Tissue.SEMINAL_VESICLE, 980.0, 0.18),
    (Tissue.RECTAL_SUBMUCOSA, 560.0, 0.10),
    (Tissue.VESSEL_DARK, 110.0, 0.05),
    (Tissue.VESSEL_BRIGHT, 900.0, 0.10),
):
    T2_SIGNAL[_tissue] = _signal
    T2_TEXTURE[_tissue] = _texture


def bias_field(grid: Grid, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Smooth multiplicative field ``(K, J, I)`` float32: ``exp`` of a random quadratic in normalised grid
    coordinates, scaled so ``|log b| <= amplitude``."""
    if amplitude <= 0:
        return np.ones(grid.shape, dtype=np.float32)
    axes = [np.linspace(-1.0, 1.0, n) for n in grid.shape]
    kk, jj, ii = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = [ii, jj, kk, ii * jj, jj * kk, ii * kk, ii**2, jj**2, kk**2]
    coeffs = rng.normal(size=len(terms)) * np.array([1, 1, 0.6, 0.5, 0.4, 0.4, 0.5, 0.5, 0.3])
    log_b = sum(c * t for c, t in zip(coeffs, terms))
    log_b = np.broadcast_to(log_b, grid.shape)
    log_b = log_b - log_b.mean()
    log_b *= amplitude / max(float(np.abs(log_b).max()), 1e-9)
    return np.exp(log_b).astype(np.float32)


def render_mr(
    tissue: np.ndarray,
    texture: np.ndarray,
    grid: Grid,
    rng: np.random.Generator,
    noise: float,
    bias: float,
    blur_mm: float,
) -> np.ndarray:
    """T2-like MR image.

    Args:
        tissue: ``(K, J, I)`` uint8 tissue classes at the MR voxel centres.
        texture: ``(K, J, I)`` float32 anatomical texture (zero mean, unit variance).
        grid: MR grid (for the anisotropic blur and the bias field).
        rng: random generator (bias and noise).
        noise: Rician sigma relative to :data:`FAT_SIGNAL`.
        bias: bias-field amplitude (log scale).
        blur_mm: partial-volume Gaussian sigma in mm (per axis, divided by the spacing).

    Returns:
        ``(K, J, I)`` uint16 image.
    """
    signal = T2_SIGNAL[tissue] * (1.0 + T2_TEXTURE[tissue] * texture)
    if blur_mm > 0:
        sigma_vox = blur_mm / grid.spacing[::-1]  # (k, j, i) order
        signal = ndimage.gaussian_filter(signal, sigma_vox, mode="nearest", truncate=3.0)
    signal *= bias_field(grid, rng, bias)
    if noise > 0:
        sigma = noise * FAT_SIGNAL
        real = signal + rng.normal(0.0, sigma, size=signal.shape).astype(np.float32)
        imag = rng.normal(0.0, sigma, size=signal.shape).astype(np.float32)
        signal = np.hypot(real, imag)
    return np.clip(np.rint(signal), 0, 65535).astype(np.uint16)
