"""The "Segment prostate" action with the shipped networks on the bundled sample case, on a slicer-core scene: the
TRUS (fixed) and MR (moving) volumes each get a "prostate" segment that matches the case's own segmentation."""

from __future__ import annotations

import numpy as np
import pytest

from MMRegistrationSlicerLib import bridge
from MMRegistrationSlicerLib.segmentation_logic import prostate_segment_ids, segment_prostate

pytest.importorskip("slicer")
pytest.importorskip("monai")


@pytest.mark.parametrize("side, modality", [("fixed", "trus"), ("moving", "mr")])
def test_the_shipped_network_segments_the_sample_case_in_slicer(scene, side, modality):
    from MMRegistrationLib.io.images import read_image
    from MMRegistrationLib.io.segmentations import read_segmentation
    from MMRegistrationLib.resources import sample_case_paths

    case = sample_case_paths()
    image = read_image(case[side])
    volume = bridge.volume_from_image(image, scene, side)
    node, warnings = segment_prostate(scene, volume, modality, device="cpu")
    ids = prostate_segment_ids(node)
    assert len(ids) == 1 and node.GetSegmentation().GetNumberOfSegments() == 1
    exported, _ = bridge.labelmap_from_segmentation(node, scene, ids, reference_volume=volume)
    given = read_segmentation(case[f"{side}_seg"]).labelmap.array == 1
    mask = exported.array > 0
    assert exported.grid.same_as(image.grid)
    assert 2 * np.count_nonzero(mask & given) / (mask.sum() + given.sum()) > 0.75, warnings
