"""Prostate segmentation (paper 003): post-processing and the quality check of a predicted gland mask."""

from MMRegistrationLib.segmentation.postprocess import clean_mask, quality_warnings

__all__ = ["clean_mask", "quality_warnings"]
