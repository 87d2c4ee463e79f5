"""Similarity measures between images: LC2 (reference, patch-wise), MIND-SSC, Mattes MI (SimpleITK) and the DISA
descriptor similarity that approximates LC2 with dot products (paper 001)."""

from __future__ import annotations

from MMRegistrationLib.similarity.disa import descriptor_similarity, disa_loss
from MMRegistrationLib.similarity.lc2 import DEFAULT_RADII, LC2Map, PatchSearch, lc2_map, lc2_similarity
from MMRegistrationLib.similarity.mind import mind_loss, mind_ssc

__all__ = [
    "DEFAULT_RADII",
    "LC2Map",
    "PatchSearch",
    "descriptor_similarity",
    "disa_loss",
    "lc2_map",
    "lc2_similarity",
    "mind_loss",
    "mind_ssc",
]
