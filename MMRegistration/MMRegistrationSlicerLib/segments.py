"""Segment names and the default fixed -> moving segment mapping of segmentation nodes, without the engine.

The module widgets fill their mapping tables from here the moment a segmentation is chosen, which is before the
engine's dependencies (torch, SciPy) are installed: this module imports nothing but the standard library (the nodes
are only called). :func:`normalise_segment_name` is the engine's rule
(``MMRegistrationLib.io.segmentations.normalise_segment_name``, which imports torch through the engine's core);
``Testing/Python/slicer/test_segment_mapping.py`` checks that both agree.
"""

from __future__ import annotations

import re


def normalise_segment_name(name: str) -> str:
    """Case- and space-insensitive form of a segment name (how segments are matched by name)."""
    return re.sub(r"\s+", " ", name.strip().lower())


def segment_names(segmentation_node) -> dict:
    """Segment ID -> segment name, in the segmentation's order."""
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    return {sid: segmentation.GetSegment(sid).GetName() for sid in ids}


def match_segments_by_name(fixed_segmentation, moving_segmentation) -> dict:
    """Default mapping fixed segment ID -> moving segment ID for segments with the same name
    (case- and space-insensitive), in the fixed segmentation's order."""
    moving = {normalise_segment_name(name): sid for sid, name in segment_names(moving_segmentation).items()}
    return {
        sid: moving[normalise_segment_name(name)]
        for sid, name in segment_names(fixed_segmentation).items()
        if normalise_segment_name(name) in moving
    }
