"""The editable fixed -> moving segment mapping table shown by the module widgets (one row per fixed segment, a
combo box of moving segments; default: matched by name).

Everything here works before the engine's dependencies are installed (it imports only :mod:`.segments`): the table
fills the moment a segmentation is chosen. The rows are computed by the Qt-free :func:`mapping_rows` and read back
by :func:`mapping_from_choices`; ``qt`` is imported inside the two functions that touch the widget.
"""

from __future__ import annotations

from typing import Optional

from MMRegistrationSlicerLib.segments import match_segments_by_name, segment_names

NOT_USED = ""
"""Item data of the "(not used)" entry of a row's combo box."""


def mapping_rows(fixed_segmentation, moving_segmentation, previous: Optional[dict] = None) -> tuple:
    """``(rows, moving_names)``: ``rows`` = ``[(fixed ID, fixed name, chosen moving ID or NOT_USED)]`` in the fixed
    segmentation's order, ``moving_names`` = moving ID -> name.

    ``previous`` (fixed ID -> moving ID or NOT_USED, the table's choices before a refresh) is kept where both IDs
    still exist; a new fixed segment, or one whose moving segment is gone (a stale ID), gets the match by name."""
    moving_names = segment_names(moving_segmentation)
    default = match_segments_by_name(fixed_segmentation, moving_segmentation)
    previous = previous or {}
    rows = []
    for fixed_id, fixed_name in segment_names(fixed_segmentation).items():
        choice = previous.get(fixed_id)
        if choice is None or (choice != NOT_USED and choice not in moving_names):
            choice = default.get(fixed_id, NOT_USED)
        rows.append((fixed_id, fixed_name, choice))
    return rows, moving_names


def mapping_from_choices(choices: dict) -> Optional[dict]:
    """Fixed ID -> moving ID of the rows mapped to a moving segment; None when there are no rows (the logic then
    matches by name). Raises ValueError when every row is "(not used)": nothing would be registered or evaluated."""
    if not choices:
        return None
    mapping = {fixed_id: moving_id for fixed_id, moving_id in choices.items() if moving_id != NOT_USED}
    if not mapping:
        raise ValueError("segment mapping: every fixed segment is set to 'not used'; map at least one segment to a "
                         "moving segment")
    return mapping


def table_choices(table) -> dict:
    """Fixed ID -> chosen moving ID (NOT_USED for "(not used)") of every row of ``table``."""
    import qt

    return {str(table.item(row, 0).data(qt.Qt.UserRole)): str(table.cellWidget(row, 1).currentData or NOT_USED)
            for row in range(table.rowCount)}


def fill_mapping_table(table, fixed_segmentation, moving_segmentation, unused_text: str = "(not used)",
                       keep_choices: bool = False) -> None:
    """Rows of ``table`` (a 2-column ``QTableWidget``): fixed segment name -> moving segment combo box. With
    ``keep_choices`` (the same segmentations, refreshed after segments were added, removed or renamed) the rows keep
    the choices made in the table (see :func:`mapping_rows`)."""
    import qt

    previous = table_choices(table) if keep_choices else None
    table.setRowCount(0)
    if not fixed_segmentation or not moving_segmentation:
        return
    rows, moving_names = mapping_rows(fixed_segmentation, moving_segmentation, previous)
    for row, (fixed_id, fixed_name, choice) in enumerate(rows):
        table.insertRow(row)
        item = qt.QTableWidgetItem(fixed_name)
        item.setData(qt.Qt.UserRole, fixed_id)
        table.setItem(row, 0, item)
        combo = qt.QComboBox()
        combo.addItem(unused_text, NOT_USED)
        for moving_id, moving_name in moving_names.items():
            combo.addItem(moving_name, moving_id)
        combo.setCurrentIndex(max(0, combo.findData(choice)))
        table.setCellWidget(row, 1, combo)


def mapping_from_table(table) -> Optional[dict]:
    """:func:`mapping_from_choices` of the table's rows."""
    return mapping_from_choices(table_choices(table))
