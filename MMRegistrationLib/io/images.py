"""Image reading/writing through SimpleITK: NRRD, NIfTI, MHA/MHD, GIPL, DICOM series (a folder)."""

from __future__ import annotations

import os
import re
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
        reason = itk_error_reason(str(err))
        low = str(err).lower()
        if "bad direction" in low or "singular" in low or "determinant" in low:
            raise InputError(argument, f"{path} has a non-invertible direction matrix ({reason})") from None
        if "zero-valued spacing" in low or ("spacing" in low and "refusing" in low):
            raise InputError(argument, f"{path} has a zero voxel spacing, so its geometry is not invertible ({reason})") from None
        if "unable to determine imageio reader" in low:
            raise InputError(argument, f"cannot read {path}: not an image file in a supported format, or corrupt") from None
        raise InputError(argument, f"cannot read {path} as an image ({reason})") from None


def itk_error_reason(message: str) -> str:
    """The informative part of an ITK/SimpleITK exception text (not a source location or a matrix row)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    nrrd = [line for line in lines if line.startswith("[nrrd]")]
    if nrrd:  # teem reports the actual problem last
        return nrrd[-1][len("[nrrd]"):].strip()
    for line in lines:
        found = re.search(r"(?:ITK|itk|sitk)(?:::|\s)\s*ERROR:\s*(?:\w+\(0x[0-9a-fA-F]+\):\s*)?(.*)", line)
        if found and found.group(1).strip():
            text = found.group(1).strip()
            head = text.split(" Refusing")[0].strip()
            return head.rstrip(".") if head else text
    informative = [line for line in lines if not line.startswith("Exception thrown in")]
    return informative[-1] if informative else (lines[-1] if lines else "unknown reason")


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
    components = image.GetNumberOfComponentsPerPixel()
    if components != 1:
        raise InputError(
            argument, f"{path} has {components} components per voxel (RGB/vector image); a scalar 3-D image is needed"
        )
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if abs(np.linalg.det(direction)) < 1e-6:
        raise InputError(argument, f"{path} has a non-invertible direction matrix {direction.round(4).tolist()}")
    result = Image.from_sitk(image, argument)
    if require_finite:
        result.check_finite(argument)
        bad = _nifti_nonfinite_count(Path(path))
        if bad:
            raise InputError(
                argument,
                f"{path} contains {bad} NaN/Inf voxel(s) (the NIfTI reader would silently set them to 0); "
                "fix or mask them before registering",
            )
    return result


def _nifti_nonfinite_count(path: Path) -> int:
    """Number of NaN/Inf voxels stored in a float NIfTI file (0 for other files or data types).

    ITK's NIfTI reader replaces non-finite float voxels by 0 without telling, so the stored voxels are
    checked again with nibabel, the reference NIfTI library.
    """
    name = path.name.lower()
    if path.is_dir() or not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return 0
    import nibabel

    try:
        nifti = nibabel.load(str(path))
    except Exception:  # nibabel cannot parse what ITK could: nothing more to check
        return 0
    if not np.issubdtype(nifti.get_data_dtype(), np.floating):
        return 0
    return int(np.count_nonzero(~np.isfinite(np.asanyarray(nifti.dataobj))))


def write_image(image: Image, path: str | os.PathLike, compress: bool = True, metadata: dict | None = None) -> Path:
    """Write with SimpleITK (format from the extension; ``metadata`` as header fields where the format keeps them).
    Written to a temporary name, then renamed."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    tmp = path.with_name(f".{stem}.partial{suffix}")
    try:
        itk_image = image.to_sitk()
        for key, value in (metadata or {}).items():
            itk_image.SetMetaData(str(key), str(value))
        sitk.WriteImage(itk_image, str(tmp), compress)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
