"""Reading the real/external data in ../shared/data (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SHARED_DATA
from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.io.images import read_image

TRUS = SHARED_DATA / "trus_real" / "trus_case001.nrrd"
DEEPREG = SHARED_DATA / "deepreg_mrus"


@pytest.mark.skipif(not TRUS.exists(), reason=f"{TRUS} is absent (shared data not available)")
def test_real_trus_reads_with_its_geometry():
    img = read_image(TRUS, "--fixed")
    ref = sitk.ReadImage(str(TRUS))
    assert img.grid.size_ijk == ref.GetSize()
    np.testing.assert_allclose(img.grid.spacing, ref.GetSpacing())
    idx = (10.5, 20.25, 3.0)
    np.testing.assert_allclose(img.grid.index_to_world(np.array(idx)), ref.TransformContinuousIndexToPhysicalPoint(idx), atol=1e-9)
    assert img.array.dtype == np.uint8 and img.array.max() > 0


@pytest.mark.skipif(not DEEPREG.exists(), reason=f"{DEEPREG} is absent (shared data not available)")
def test_deepreg_images_read_and_4d_labels_are_refused_as_images():
    img = read_image(DEEPREG / "moving_images" / "obs000.nii.gz", "--moving")
    assert img.grid.shape == (64, 69, 69)
    np.testing.assert_allclose(img.grid.spacing, 1.5, atol=1e-4)
    with pytest.raises(InputError, match="--moving: .*4-D"):
        read_image(DEEPREG / "moving_labels" / "obs000.nii.gz", "--moving")
