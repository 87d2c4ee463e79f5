"""Slicer-side code shared by every MMRegistration module (one place, never copied).

Qt-free: it runs inside Slicer and on the PyPI ``slicer-core`` (real MRML without the desktop), where the
tests exercise it (``segment_mapping_table``, the widgets' shared table, imports ``qt`` inside its functions).
The RAS <-> LPS conversion between MRML nodes and engine objects happens here only (``bridge``).
"""
