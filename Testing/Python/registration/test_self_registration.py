"""Registration that starts at the answer stays there: every method, given identical fixed and moving inputs (image,
segmentation), returns a transform that moves no point of the fixed image by more than 0.05 mm."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO_ROOT
from MMRegistrationLib.registration.pipeline import load_inputs, run_registration

SAMPLE = REPO_ROOT / "Resources" / "SampleCase"
DEEPREG = REPO_ROOT.parent / "shared" / "data" / "deepreg_mrus"
RUNS = [("none", {}), ("com", {}), ("rigid-mask", {}), ("sinr", {"preset": "fast"}), ("disa", {"mode": "rigid"}),
        ("disa", {"mode": "affine"}), ("disa", {"mode": "deformable"}), ("disa", {"similarity": "mind"})]


def _case(name: str):
    if name == "sample":
        image, seg, channel = SAMPLE / "fixed.nrrd", SAMPLE / "fixed_seg.nrrd", None
    else:
        if not DEEPREG.is_dir():
            pytest.skip(f"DeepReg demo data not found at {DEEPREG} (see ../shared/data/README.md)")
        image, seg, channel = DEEPREG / "fixed_images/obs003.nii.gz", DEEPREG / "fixed_labels/obs003.nii.gz", 0
    return load_inputs(image, image, seg, seg, label_channel=channel)


@pytest.mark.parametrize("case", ["sample", "deepreg-obs003"])
def test_identical_inputs_give_the_identity(case):
    inputs = _case(case)
    points = inputs.fixed.grid.world_points().reshape(-1, 3)[::5]
    for method, options in RUNS:
        result, _ = run_registration(method, inputs, options=options, seed=0, device="cpu")
        moved = np.linalg.norm(result.transform.map_points_np(points) - points, axis=1)
        assert moved.max() <= 0.05, (case, method, options, float(moved.max()))
