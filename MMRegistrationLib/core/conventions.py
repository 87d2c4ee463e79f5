"""The engine's conventions, stated once.

World space
    Physical millimetres in **LPS** (x grows to the patient's Left, y to Posterior, z to Superior),
    the convention of ITK, SimpleITK, DICOM, NRRD/NIfTI readers and ITK transform files. Every point,
    landmark, affine matrix and displacement vector inside the engine is LPS mm. 3D Slicer works in
    RAS; the only conversions happen at the Slicer boundary (``MMRegistration`` modules) and when reading
    files that store RAS (Slicer ``.mrk.json``/``.fcsv`` markups) via :func:`ras_to_lps`.

Arrays
    Image arrays are indexed ``[k, j, i]`` (shape ``(K, J, I)``), i.e. the order of
    ``SimpleITK.GetArrayFromImage`` and of torch's ``(D, H, W)``. Voxel *indices* written as vectors are
    ``(i, j, k)`` (x-fastest, like ITK). A grid's 4x4 ``affine`` maps homogeneous ``(i, j, k, 1)`` to
    LPS world mm: ``world = direction @ diag(spacing) @ (i, j, k) + origin``.

Normalised coordinates (torch ``grid_sample``)
    Always ``align_corners=True``: index ``0`` maps to ``-1`` and index ``n - 1`` to ``+1`` along each
    axis, i.e. ``u = 2 * i / (n - 1) - 1`` (``u = 0`` when ``n == 1``). The last dimension of a sampling
    grid is ordered ``(i, j, k)`` as torch expects. See :meth:`Grid.index_to_normalized`.

Transform direction
    A transform maps points of its ``source`` space to its ``target`` space. A registration result is
    **fixed -> moving**: it maps a point of the fixed image's world space to the corresponding point of
    the moving image's world space, which is the mapping that resamples the moving image onto the fixed
    grid (the ITK/ANTs/elastix output convention, and what ITK ``.h5`` files store). In 3D Slicer the same
    mapping is the moving volume's parent transform "FromParent" direction.

Interpolation outside a grid
    As in ITK: a point whose continuous index lies in ``[-0.5, n - 0.5]`` on every axis is inside (values
    at the border are clamped); beyond that, images take a default value and displacement fields are 0.
"""

from __future__ import annotations

import numpy as np

ALIGN_CORNERS = True
"""The single ``align_corners`` setting used for every ``torch.nn.functional.grid_sample`` call."""

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
"""3x3 matrix flipping RAS to LPS (its own inverse)."""


def ras_to_lps(points: np.ndarray) -> np.ndarray:
    """Convert points ``(..., 3)`` from RAS to LPS mm (flip the first two axes)."""
    points = np.asarray(points, dtype=np.float64)
    return points * np.array([-1.0, -1.0, 1.0])


lps_to_ras = ras_to_lps
"""The flip is its own inverse: LPS -> RAS is the same operation."""


def ras_matrix_to_lps(matrix_ras: np.ndarray) -> np.ndarray:
    """Convert a 4x4 world->world matrix expressed in RAS into the same mapping expressed in LPS."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ np.asarray(matrix_ras, dtype=np.float64) @ flip


lps_matrix_to_ras = ras_matrix_to_lps
