"""The SINR Registration logic end to end on a real MR/TRUS pair (``../shared/data/deepreg_mrus``, NIfTI images and
4-D label files: channel 0 = gland, channels 1.. = landmark blobs), converted to MRML nodes as a user would load
them. Skipped with a message when the shared data is absent."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SHARED_DATA
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io import read_image
from MMRegistrationSlicerLib import bridge
from MMRegistrationSlicerLib.registration_logic import RegistrationLogic

slicer = pytest.importorskip("slicer")
DEEPREG = SHARED_DATA / "deepreg_mrus"


def _channels(path, image: Image) -> np.ndarray:
    """``(C, K, J, I)`` boolean label channels of a 4-D NIfTI on ``image``'s grid."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    array = array[None] if array.ndim == 3 else array
    assert array.shape[1:] == image.array.shape
    return array > 0.5


def _centroids(channels: np.ndarray, image: Image) -> np.ndarray:
    return np.array([image.grid.index_to_world(np.argwhere(c)[:, ::-1].mean(axis=0)) for c in channels])


@pytest.mark.skipif(not (DEEPREG / "fixed_images").is_dir(), reason=f"{DEEPREG} is absent (shared data)")
def test_sinr_logic_registers_a_deepreg_pair(scene):
    stem = "obs002"
    fixed = read_image(DEEPREG / "fixed_images" / f"{stem}.nii.gz")
    moving = read_image(DEEPREG / "moving_images" / f"{stem}.nii.gz")
    fch = _channels(DEEPREG / "fixed_labels" / f"{stem}.nii.gz", fixed)
    mch = _channels(DEEPREG / "moving_labels" / f"{stem}.nii.gz", moving)
    n = min(len(fch), len(mch))
    keep = [c for c in range(1, n) if fch[c].any() and mch[c].any()]
    nodes = {
        "fixed": bridge.volume_from_image(fixed, scene, "TRUS"),
        "moving": bridge.volume_from_image(moving, scene, "MR"),
        "fixed_seg": bridge.segmentation_from_labelmap(fixed.with_array(fch[0].astype(np.uint8)), {1: "prostate"},
                                                       scene, "TRUS segmentation"),
        "moving_seg": bridge.segmentation_from_labelmap(moving.with_array(mch[0].astype(np.uint8)), {1: "Prostate"},
                                                        scene, "MR segmentation"),
        "fixed_landmarks": bridge.markups_from_landmarks(_centroids(fch[keep], fixed), scene, "TRUS landmarks"),
        "moving_landmarks": bridge.markups_from_landmarks(_centroids(mch[keep], moving), scene, "MR landmarks"),
    }
    outcome = RegistrationLogic(scene, "sinr").process(
        nodes["fixed"], nodes["moving"], nodes["fixed_seg"], nodes["moving_seg"],
        fixed_landmarks=nodes["fixed_landmarks"], moving_landmarks=nodes["moving_landmarks"], device="cpu",
    )
    before, after = outcome.before.row(1), outcome.after.row(1)
    # gland-only data: the default start is the centre of mass (see --init auto), then SINR fast
    assert outcome.record["init"] == "com"
    assert after["dice"] > 0.93 and after["dice"] > before["dice"] + 0.3, (before["dice"], after["dice"])
    assert outcome.after.tre["tre_mean_mm"] < 0.6 * outcome.before.tre["tre_mean_mm"], (outcome.before.tre,
                                                                                         outcome.after.tre)
    assert outcome.after.jacobian is None or outcome.after.jacobian["folding_fraction"] == 0.0
    assert nodes["moving"].GetParentTransformNode() is outcome.transform
    assert outcome.segmentation is not None and outcome.segmentation.GetSegmentation().GetNumberOfSegments() == 1
