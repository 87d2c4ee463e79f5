"""The editable fixed -> moving segment mapping table shown by the module widgets (one row per fixed segment, a
combo box of moving segments; default: matched by name). The only Qt code of this package: ``qt`` is imported
inside the functions, which run only in Slicer's GUI."""

from __future__ import annotations

from MMRegistrationSlicerLib import bridge
from MMRegistrationSlicerLib.evaluation_logic import match_segments_by_name


def fill_mapping_table(table, fixed_segmentation, moving_segmentation, unused_text: str = "(not used)") -> None:
    """Rows of ``table`` (a 2-column ``QTableWidget``): fixed segment name -> moving segment combo box."""
    import qt

    table.setRowCount(0)
    if not fixed_segmentation or not moving_segmentation:
        return
    moving_names = bridge.segment_names(moving_segmentation)
    default = match_segments_by_name(fixed_segmentation, moving_segmentation)
    for row, (fixed_id, fixed_name) in enumerate(bridge.segment_names(fixed_segmentation).items()):
        table.insertRow(row)
        item = qt.QTableWidgetItem(fixed_name)
        item.setData(qt.Qt.UserRole, fixed_id)
        table.setItem(row, 0, item)
        combo = qt.QComboBox()
        combo.addItem(unused_text, "")
        for moving_id, moving_name in moving_names.items():
            combo.addItem(moving_name, moving_id)
        combo.setCurrentIndex(max(0, combo.findData(default.get(fixed_id, ""))))
        table.setCellWidget(row, 1, combo)


def mapping_from_table(table) -> dict:
    """Fixed segment ID -> moving segment ID of the rows that map to a moving segment."""
    import qt

    mapping = {}
    for row in range(table.rowCount):
        moving_id = table.cellWidget(row, 1).currentData
        if moving_id:
            mapping[table.item(row, 0).data(qt.Qt.UserRole)] = moving_id
    return mapping
