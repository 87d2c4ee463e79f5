"""GUI-free logic of the Registration Evaluation module: MRML nodes in, engine evaluation, MRML nodes out.

Usable without the module's widget, inside Slicer or on ``slicer-core`` (the scene is passed explicitly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import vtk

from MMRegistrationLib.evaluation import CaseEvaluation, evaluate_case, write_report
from MMRegistrationSlicerLib import bridge
from MMRegistrationSlicerLib.segments import match_segments_by_name  # noqa: F401 (also imported from here)

TABLE_COLUMNS = ("Structure", "DSC", "MSD (mm)", "HD95 (mm)", "HD (mm)", "TRE (mm)", "Note")


class RegistrationEvaluationLogic:
    """Evaluate a registration on MRML nodes. Raises ValueError (naming the input) on bad input."""

    def __init__(self, scene):
        self.scene = scene
        self.table = None
        self.fixed_image = None  # the fixed label map of the last evaluation (for the report figure)

    def process(
        self,
        fixed_segmentation,
        moving_segmentation,
        transform=None,
        segment_mapping: Optional[dict] = None,
        fixed_landmarks=None,
        moving_landmarks=None,
        output_table=None,
        jacobian_volume=None,
        progress=None,
        cancel=None,
    ) -> CaseEvaluation:
        """Evaluate the moving segmentation mapped onto the fixed one.

        Args:
            fixed_segmentation, moving_segmentation: segmentation nodes.
            transform: any transform node (linear, grid, B-spline, composite, from any extension) whose
                FromWorld mapping is fixed -> moving, i.e. the transform that, set as the moving segmentation's
                parent, shows it aligned. None: the moving segmentation's own parent transform (what the user
                sees), or identity. An explicit transform replaces the moving segmentation's parent.
            segment_mapping: fixed segment ID -> moving segment ID (None: matched by name; empty: an error).
            fixed_landmarks, moving_landmarks: markups point lists for TRE (rows correspond).
            output_table: table node to fill (created if None), only once the metrics are computed: a failed
                or cancelled evaluation adds no node and leaves a given table as it was.
            jacobian_volume: scalar volume node to receive det(J) on the fixed grid (optional).

        Returns:
            The engine's :class:`CaseEvaluation` (the table node is available as ``self.table``).
        """
        if fixed_segmentation is None or moving_segmentation is None:
            raise ValueError("fixed and moving segmentations are both required")
        if fixed_segmentation is moving_segmentation:
            raise ValueError("fixed and moving segmentation must not be the same node")
        if (fixed_landmarks is None) != (moving_landmarks is None):
            raise ValueError("landmarks: give both the fixed and the moving point lists, or neither")
        if segment_mapping is not None and not segment_mapping:
            raise ValueError("segment mapping: no fixed segment is mapped to a moving segment (every one is 'not "
                             "evaluated'); map at least one, or pass None to match them by name")
        mapping = segment_mapping if segment_mapping is not None else match_segments_by_name(
            fixed_segmentation, moving_segmentation)
        if not mapping:
            raise ValueError(
                "segment mapping: no segment name is shared by the fixed and moving segmentations; map them by hand"
            )
        fixed_image, names = bridge.labelmap_from_segmentation(
            fixed_segmentation, self.scene, list(mapping.keys()), argument="fixed segmentation"
        )
        transform_node = transform if transform is not None else moving_segmentation.GetParentTransformNode()
        moving_image, _ = bridge.labelmap_from_segmentation(
            moving_segmentation, self.scene, list(mapping.values()), argument="moving segmentation",
            include_parent_transform=False,
        )
        engine_transform = bridge.engine_transform_from_node(transform_node, reference=fixed_image.grid)
        fixed_points = bridge.landmarks_from_markups(fixed_landmarks, "fixed landmarks") if fixed_landmarks else None
        moving_points = bridge.landmarks_from_markups(moving_landmarks, "moving landmarks") if moving_landmarks else None
        evaluation = evaluate_case(
            fixed_image, moving_image, engine_transform, label_names=names,
            fixed_landmarks=fixed_points, moving_landmarks=moving_points,
            jacobian=True, progress=progress, cancel=cancel,
        )
        self.fixed_image = fixed_image
        self.table = self.fill_table(evaluation, output_table)
        if jacobian_volume is not None and evaluation.jacobian_image is not None:
            bridge.volume_from_image(evaluation.jacobian_image, self.scene, "Jacobian", node=jacobian_volume)
        return evaluation

    def fill_table(self, evaluation: CaseEvaluation, table_node=None):
        """One row per segment (DSC, MSD, HD95, HD), one per landmark (TRE) and a Jacobian summary row."""
        if table_node is None:
            table_node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", "Registration evaluation")
        table = vtk.vtkTable()
        columns = [vtk.vtkStringArray() if c in ("Structure", "Note") else vtk.vtkDoubleArray() for c in TABLE_COLUMNS]
        for column, name in zip(columns, TABLE_COLUMNS):
            column.SetName(name)
            table.AddColumn(column)

        def add(structure: str, values: dict, note: str = "") -> None:
            row = table.InsertNextBlankRow()
            table.SetValue(row, 0, vtk.vtkVariant(structure))
            for n, name in enumerate(TABLE_COLUMNS[1:-1], start=1):
                value = values.get(name)
                table.SetValue(row, n, vtk.vtkVariant(float("nan") if value is None else float(value)))
            table.SetValue(row, len(TABLE_COLUMNS) - 1, vtk.vtkVariant(note or ""))

        for r in evaluation.rows:
            add(r["name"], {"DSC": r["dice"], "MSD (mm)": r["msd_mm"], "HD95 (mm)": r["hd95_mm"], "HD (mm)": r["hd_mm"]},
                r.get("note") or "")
        if evaluation.tre is not None:
            for n, value in enumerate(evaluation.tre["tre_mm"], start=1):
                add(f"Landmark {n}", {"TRE (mm)": value})
            add("TRE mean", {"TRE (mm)": evaluation.tre["tre_mean_mm"]},
                f"median {evaluation.tre['tre_median_mm']:.2f} mm, max {evaluation.tre['tre_max_mm']:.2f} mm")
        if evaluation.jacobian is not None:
            j = evaluation.jacobian
            add("Jacobian", {}, f"det J min {j['jacobian_min']:.3f}, max {j['jacobian_max']:.3f}, "
                f"folding {100 * j['folding_fraction']:.3f} %")
        table_node.SetAndObserveTable(table)
        return table_node

    def save_report(self, evaluation: CaseEvaluation, folder: str, basename: str = "evaluation") -> dict:
        """Write ``basename.csv``, ``basename.json`` and ``basename.png`` (contours and Jacobian) into ``folder``."""
        from MMRegistrationLib.visualization.evaluation_figures import evaluation_figure

        if self.fixed_image is None:
            raise ValueError("save report: run the evaluation first")
        folder_path = Path(folder)
        folder_path.mkdir(parents=True, exist_ok=True)
        paths = {"csv": folder_path / f"{basename}.csv", "json": folder_path / f"{basename}.json"}
        write_report(evaluation, paths["csv"])
        write_report(evaluation, paths["json"])
        paths["png"] = evaluation_figure(
            self.fixed_image, evaluation.warped_moving_seg, folder_path / f"{basename}.png",
            jacobian_image=evaluation.jacobian_image, title="Registration evaluation",
        )
        return paths


def table_as_dict(table_node) -> dict:
    """Structure -> {column: value} (for tests and scripting)."""
    table = table_node.GetTable()
    out = {}
    for row in range(table.GetNumberOfRows()):
        name = table.GetValue(row, 0).ToString()
        out[name] = {
            TABLE_COLUMNS[c]: (table.GetValue(row, c).ToDouble() if 0 < c < len(TABLE_COLUMNS) - 1
                               else table.GetValue(row, c).ToString())
            for c in range(1, len(TABLE_COLUMNS))
        }
        out[name] = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in out[name].items()}
    return out
