"""Evaluation of a registration result: every accuracy number the product reports is computed here.

Definitions
-----------
Transform and resampling
    ``T`` maps fixed world points to moving world points (fixed -> moving, LPS mm; no transform = identity).
    The moving segmentation is resampled onto the fixed segmentation's grid through ``T`` with nearest
    neighbour interpolation (``resample_labels``): voxel ``x`` of the warped moving segmentation takes the
    moving label at ``T(x)`` (0 beyond half a voxel outside the moving grid). All metrics below are computed on
    the fixed grid, one label at a time (corresponding structures share a label value; Slicer ``.seg.nrrd``
    segments are matched by name first).
DSC
    ``2 |F n W| / (|F| + |W|)`` with ``F`` the fixed mask and ``W`` the warped moving mask of the label
    (voxel counts on the fixed grid).
Surface points
    The mask voxels with at least one 6-neighbour (face neighbour) outside the mask; neighbours beyond the
    array border count as outside, so mask voxels on the border of the grid are surface points. A point is
    the voxel centre in world coordinates (LPS mm).
Surface distance
    From a surface point of one mask to the other mask's surface: the Euclidean distance in mm, in world
    space (anisotropic spacing and oblique directions respected), to the nearest surface point of the other
    mask (KD-tree over world points).
MSD (average symmetric surface distance, mm)
    (sum of the distances fixed -> warped + sum of the distances warped -> fixed) / (number of surface
    points of both masks).
HD95 (mm)
    The larger of the two directed 95th percentiles (``numpy.percentile``, linear interpolation, numpy's
    default) of the distances fixed -> warped and warped -> fixed.
HD (mm)
    The larger of the two directed maxima (the symmetric Hausdorff distance between the two surfaces).
TRE (mm)
    Per landmark ``|T(p_fixed) - p_moving|`` (rows of the two lists correspond); mean, median, max and all.
Jacobian
    ``T`` is sampled as a displacement field on the fixed grid (``DisplacementField.from_transform``; for a
    linear transform the determinant is exactly the constant ``det(A)``) and ``det(I + du/dx)`` is computed
    with world-mm derivatives (``jacobian_determinant``: central differences, one-sided at the border, chain
    rule with the grid's direction and spacing). Reported: min, max, folding fraction (fraction of voxels
    with ``det <= 0``), and ``mean |grad det J|`` (1/mm, ``np.gradient`` + the same chain rule), over the
    whole fixed grid and within the union of the fixed labels. Optionally written as a float32 image on the
    fixed grid.
Undefined values
    An empty fixed or moving segmentation, a label present in only one segmentation, and landmark lists of
    different lengths are input errors. A label whose warped moving mask is empty on the fixed grid (e.g.
    mapped out of the field of view) is not: its DSC is 0 and MSD/HD95/HD are NaN (``null`` in JSON, empty
    in CSV) with a ``note`` giving the reason; a distance is never reported as a silent 0.
"""

from __future__ import annotations

from MMRegistrationLib.evaluation.case import CaseEvaluation, evaluate_case
from MMRegistrationLib.evaluation.cohort import evaluate_cohort
from MMRegistrationLib.evaluation.report import write_report

__all__ = ["CaseEvaluation", "evaluate_case", "evaluate_cohort", "write_report"]
