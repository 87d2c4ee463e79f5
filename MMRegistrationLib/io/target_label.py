"""Which structure of the segmentations is the target (the gland) that methods and initialisers taking one use.

The engine's methods look for the target at label 1 (without it: the lowest label, or for ``com`` all structures
together). So that a label map whose prostate is 255 (or a ``.seg.nrrd`` whose first segment is the bladder) is never
silently registered by another structure, the choice is made here, once, from the values and segment names
(:func:`choose_target`), and the segmentations are relabelled so that the chosen structure is label 1
(:func:`target_first`); outputs map the values back (:func:`relabel` with the mapping the other way).

Rule (``--target-label`` absent): the only label; else the one segment named prostate/gland (case-insensitive); else
label 1 of a plain label map (the convention: 1 = prostate). Otherwise label 1, else the lowest label, with a warning
naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io.segmentations import normalise_segment_name

TARGET_NAMES = ("prostate", "gland", "prostate gland", "whole gland")
"""Segment names (normalised) that make a structure the target without ``--target-label``."""

TARGET_LABEL_HELP = (
    "the structure methods and initialisers take as the target (the gland): a label value or, with .seg.nrrd files, a "
    "segment name. Default: the only label; else the one segment named prostate or gland; else label 1 of a plain "
    "label map; otherwise label 1 (else the lowest label) with a warning"
)


@dataclass(frozen=True)
class TargetChoice:
    """The target structure: its label value (as in the segmentations), its name (or ""), how it was chosen and the
    warning to give (None when the choice is unambiguous)."""

    value: int
    name: str
    rule: str
    warning: Optional[str] = None

    def as_record(self) -> dict:
        return {"label": self.value, "name": self.name or None, "rule": self.rule}


def engine_target(labels) -> int:
    """The label the methods take as the target by themselves: 1 when present, else the lowest."""
    return 1 if 1 in labels else min(labels)


def _describe(value: int, names: dict) -> str:
    return f"{value} ('{names[value]}')" if names.get(value) else str(value)


def _given(choice: str, labels: list, names: dict, argument: str) -> TargetChoice:
    """``--target-label`` as a label value or a segment name (:class:`InputError` naming ``argument`` otherwise)."""
    text = str(choice).strip()
    listed = ", ".join(_describe(v, names) for v in labels)
    if text.lstrip("+-").isdigit():
        value = int(text)
        if value not in labels:
            raise InputError(argument, f"label {value} is not in the segmentations (labels: {listed})")
        return TargetChoice(value, names.get(value, ""), "given (--target-label)")
    wanted = normalise_segment_name(text)
    matches = [v for v in labels if names.get(v) and normalise_segment_name(names[v]) == wanted]
    if not matches:
        hint = "" if any(names.get(v) for v in labels) else "; these segmentations have no segment names: give a value"
        raise InputError(argument, f"no segment is named '{text}' (labels: {listed}){hint}")
    return TargetChoice(matches[0], names[matches[0]], "given (--target-label)")


def choose_target(labels, names: Optional[dict] = None, choice: Optional[str] = None,
                  argument: str = "--target-label") -> Optional[TargetChoice]:
    """The target among ``labels`` (values present) with ``names`` (value -> segment name); None without labels.

    ``choice``: a value or a segment name (``--target-label``). Without it, the module's rule; a choice that is a
    guess carries a warning naming the label used.
    """
    labels = sorted(int(v) for v in labels)
    names = {int(k): str(v) for k, v in (names or {}).items() if v}
    if not labels:
        return None
    if choice is not None:
        return _given(choice, labels, names, argument)
    if len(labels) == 1:
        return TargetChoice(labels[0], names.get(labels[0], ""), "the only label")
    named = [v for v in labels if normalise_segment_name(names.get(v, "")) in TARGET_NAMES]
    if len(named) == 1:
        return TargetChoice(named[0], names[named[0]], "the segment named prostate/gland")
    if 1 in labels and not any(names.get(v) for v in labels):
        return TargetChoice(1, "", "label 1 (the convention of plain label maps)")
    value = engine_target(labels)
    why = (f"several segments are named prostate/gland ({', '.join(_describe(v, names) for v in named)})" if named else
           "no segment is named prostate or gland" if any(names.get(v) for v in labels) else "there is no label 1")
    warning = (f"the segmentations hold {len(labels)} structures (labels {', '.join(_describe(v, names) for v in labels)})"
               f" and {why}: label {_describe(value, names)} is used as the target structure (the gland) by the "
               f"methods and initialisers that take one; choose it with --target-label VALUE_OR_NAME")
    return TargetChoice(value, names.get(value, ""), "guessed: label 1, else the lowest label", warning)


def target_first(value: int, labels) -> dict:
    """The relabelling (engine value -> file value, only the values that move) that makes ``value`` label 1, where
    every method looks for the target (``com`` takes label 1, else all structures together): ``value`` and 1 swap
    places; empty when ``value`` is 1."""
    if value == 1:
        return {}
    return {1: value, value: 1} if 1 in set(int(v) for v in labels) else {1: value}


def relabel(labelmap: Optional[Image], mapping: dict) -> Optional[Image]:
    """``labelmap`` with every value ``a`` of ``mapping`` (``{old: new}``) replaced by ``mapping[a]`` (at once)."""
    if labelmap is None or not mapping:
        return labelmap
    arr = labelmap.array
    out = arr.copy()
    for old, new in mapping.items():
        out[arr == old] = new
    return labelmap.with_array(out)


def to_engine(file_values: dict) -> dict:
    """The inverse mapping (file value -> engine value) of ``file_values`` (engine -> file)."""
    return {file: engine for engine, file in file_values.items()}


def moved_names(names: dict, labels, to_engine_values: dict) -> dict:
    """Names keyed by engine values, every label named (a plain value keeps its file value as its name), so that the
    metrics, keyed by name, read as the files' labels."""
    return {to_engine_values.get(v, v): names.get(v) or str(v) for v in sorted(int(x) for x in labels)}


def restored_names(engine_names: dict, file_values: dict) -> dict:
    """``engine_names`` keyed by the files' values again; names that only repeat their value are dropped."""
    out = {}
    for engine, name in engine_names.items():
        file = file_values.get(int(engine), int(engine))
        if name != str(file):
            out[file] = name
    return out


def foreground_labels(*labelmaps) -> list:
    """Sorted labels present in any of ``labelmaps`` (None skipped)."""
    values = set()
    for labelmap in labelmaps:
        if labelmap is not None:
            values.update(int(v) for v in np.unique(labelmap.array) if v > 0)
    return sorted(values)
