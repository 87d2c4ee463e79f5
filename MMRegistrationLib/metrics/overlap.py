"""Overlap of label maps on a common grid."""

from __future__ import annotations

import numpy as np


def dice_per_label(reference: np.ndarray, test: np.ndarray, labels=None) -> dict:
    """Dice similarity coefficient per label of two label arrays of the same shape.

    Returns ``{label: dice}``; a label absent from both gives NaN (never a silent 0 or 1).
    """
    if reference.shape != test.shape:
        raise ValueError(f"dice_per_label: shapes differ {reference.shape} vs {test.shape}")
    if labels is None:
        labels = sorted(set(np.unique(reference).tolist()) - {0})
    out = {}
    for lab in labels:
        a = reference == lab
        b = test == lab
        denom = int(a.sum()) + int(b.sum())
        out[int(lab)] = float(2.0 * np.logical_and(a, b).sum() / denom) if denom else float("nan")
    return out
