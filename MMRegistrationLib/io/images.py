"""Image reading/writing through SimpleITK: NRRD, NIfTI, MHA/MHD, GIPL, DICOM series (a folder)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.image import Image


def _read_sitk(path: str | os.PathLike, argument: str) -> sitk.Image:
    path = Path(path)
    if not path.exists():
        raise InputError(argument, f"file not found: {path}")
    try:
        if path.is_dir():
            series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise InputError(argument, f"folder {path} contains no DICOM series")
            if len(series) > 1:
                raise InputError(
                    argument, f"folder {path} contains {len(series)} DICOM series ({', '.join(series)}); give one series' folder"
                )
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0]))
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as err:
        detail = str(err).strip().splitlines()
        reason = next((line for line in reversed(detail) if line.strip()), "unknown reason")
        if "direction" in str(err).lower() or "singular" in str(err).lower():
            raise InputError(argument, f"{path} has a non-invertible direction matrix ({reason.strip()})") from None
        raise InputError(argument, f"cannot read {path} as an image ({reason.strip()})") from None


def read_sitk_image(path: str | os.PathLike, argument: str = "image") -> sitk.Image:
    """Read any SimpleITK-supported file or a DICOM series folder; errors name ``argument``."""
    return _read_sitk(path, argument)


def read_image(path: str | os.PathLike, argument: str = "image", require_finite: bool = True) -> Image:
    """Read a 3-D scalar image into the engine's :class:`Image` (LPS geometry, array ``(K, J, I)``).

    Raises :class:`InputError` naming ``argument`` for a missing/unreadable file, a 2-D or 4-D image, a
    multi-component image, a non-invertible direction, or (``require_finite``) NaN/Inf voxels.
    """
    image = _read_sitk(path, argument)
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    elif dim != 3:
        raise InputError(argument, f"{path} is {dim}-D (size {image.GetSize()}); a 3-D image is needed")
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if abs(np.linalg.det(direction)) < 1e-6:
        raise InputError(argument, f"{path} has a non-invertible direction matrix {direction.round(4).tolist()}")
    result = Image.from_sitk(image, argument)
    if require_finite:
        result.check_finite(argument)
    return result


def write_image(image: Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write with SimpleITK (format from the extension). Written to a temporary name, then renamed."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.stem}.partial{suffix}")
    sitk.WriteImage(image.to_sitk(), str(tmp), compress)
    os.replace(tmp, path)
    return path
