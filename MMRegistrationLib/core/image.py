"""The engine's single image type: a voxel array plus its :class:`Grid`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.grid import Grid


@dataclass(frozen=True, eq=False)
class Image:
    """A 3-D scalar image.

    Attributes:
        array: ``(K, J, I)`` numpy array (any numeric dtype; label maps are integer). Never modified in place
            by the engine; functions return new images.
        grid: geometry (index -> LPS mm).
    """

    array: np.ndarray
    grid: Grid

    def __post_init__(self):
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise InputError("image", f"expected a 3-D array (K, J, I), got {array.ndim}-D shape {array.shape}")
        if tuple(array.shape) != self.grid.shape:
            raise InputError("image", f"array shape {array.shape} does not match grid shape {self.grid.shape}")
        object.__setattr__(self, "array", array)

    # ---- SimpleITK ----------------------------------------------------------------------------
    @classmethod
    def from_sitk(cls, image: sitk.Image, argument: str = "image") -> "Image":
        """Convert a 3-D scalar SimpleITK image (geometry in LPS, as ITK stores it)."""
        if image.GetDimension() != 3:
            raise InputError(argument, f"is {image.GetDimension()}-D; a 3-D image is needed")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(
                argument, f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; a scalar image is needed"
            )
        grid = Grid.from_geometry(
            tuple(image.GetSize()[::-1]),
            image.GetSpacing(),
            image.GetOrigin(),
            np.array(image.GetDirection()).reshape(3, 3),
        )
        return cls(sitk.GetArrayFromImage(image), grid)

    def to_sitk(self) -> sitk.Image:
        """SimpleITK image with the same voxels and geometry."""
        array = self.array
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        image.SetSpacing(tuple(float(s) for s in self.grid.spacing))
        image.SetOrigin(tuple(float(o) for o in self.grid.origin))
        image.SetDirection(tuple(float(d) for d in self.grid.direction.ravel()))
        return image

    # ---- torch --------------------------------------------------------------------------------
    def to_tensor(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """Tensor of shape ``(1, 1, K, J, I)`` — torch's ``(N, C, D, H, W)`` — for ``grid_sample``."""
        return torch.as_tensor(np.ascontiguousarray(self.array), device=device).to(dtype)[None, None]

    # ---- helpers ----------------------------------------------------------------------------
    def with_array(self, array: np.ndarray) -> "Image":
        """Same grid, new voxels."""
        return Image(np.asarray(array), self.grid)

    def check_finite(self, argument: str = "image") -> "Image":
        """Raise :class:`InputError` naming ``argument`` if any voxel is NaN or infinite."""
        if np.issubdtype(self.array.dtype, np.floating):
            bad = int(np.count_nonzero(~np.isfinite(self.array)))
            if bad:
                raise InputError(argument, f"contains {bad} NaN/Inf voxel(s); fix or mask them before registering")
        return self

    def labels(self) -> list:
        """Sorted non-zero label values of an integer label map."""
        return [int(v) for v in unique_values(self.array) if v != 0]

    def mask(self, label: int | None = None) -> np.ndarray:
        """Boolean mask of one label (or of all non-zero voxels)."""
        return self.array != 0 if label is None else self.array == label

    def __repr__(self) -> str:
        return f"Image(dtype={self.array.dtype}, {self.grid!r})"


BINCOUNT_LIMIT = 1 << 20


def unique_values(array: np.ndarray) -> np.ndarray:
    """Sorted distinct values, like ``np.unique``; label maps (non-negative integers below 2^20) are counted instead
    of sorted, which is several times faster on large volumes."""
    if array.size and np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high < BINCOUNT_LIMIT:
            return np.flatnonzero(np.bincount(array.ravel(), minlength=high + 1)).astype(array.dtype)
    return np.unique(array)
