"""The module widgets' tooltips, ranges and units from the engine's option metadata (one definition: the method's
configuration dataclass, see ``MMRegistrationLib.core.options``), so the .ui files carry no copy of the help.

Qt-free: the widgets are only read and written through attributes (``toolTip``, ``minimum``, ``maximum``,
``suffix``) and ``widget.property("SlicerParameterName")``, as PythonQt exposes them, so the tests use plain Python
stand-ins. The engine is imported inside the functions: where it cannot be imported yet (Slicer before the
dependencies are installed, see :mod:`MMRegistrationSlicerLib.dependencies`) they raise ImportError, which the
modules catch (the widgets then keep their .ui state).

Finding the widgets: every attribute of ``ui`` (``slicer.util.childWidgetVariables``) is scanned for the
``SlicerParameterName`` property, exactly as the parameter node wrapper's ``connectGui`` binds widgets, so the widget
that gets a parameter's tooltip is the one bound to it, whatever its object name.

Ranges: the parameter node wrapper sets a spin box's range from the parameter's ``WithinRange`` whenever it connects
the GUI (and its validator refuses values outside it). The modules call :func:`apply_option_metadata` before they
connect the parameter node, and ``Testing/Python/slicer/test_module_files.py`` keeps every ``WithinRange`` within the
metadata (upper bound at most the maximum, lower bound the sentinel or the minimum), so both agree. A sentinel
(-1: "the preset's/engine's value", shown with the .ui's ``specialValueText``) stays the spin box minimum; values
between it and the option's minimum are refused by the engine with a message naming the option.
"""

from __future__ import annotations

import logging
from typing import Optional

PARAMETER_PROPERTY = "SlicerParameterName"
"""The dynamic property of a .ui widget that names the parameter it is bound to."""

_INT_LIMIT = 2**31 - 1  # QSpinBox holds a C int

OPTION_SETS = {"refine": ("MMRegistrationLib.registration.rso_config", "RefineConfig")}
"""Option sets of the modules that are not registration methods: name -> (engine module, configuration dataclass).
``refine``: one refinement step (ISO or RSO) of the RSO Refine module (``RefinementSession.refine``)."""


def option_specs(method: str) -> dict:
    """Engine option name -> its :class:`~MMRegistrationLib.core.options.OptionSpec` for ``method`` (``preset``
    included for a method with presets), a registration method or one of :data:`OPTION_SETS`. Raises ImportError
    where the engine cannot be imported and ValueError (the engine's InputError) for an unknown method."""
    if method in OPTION_SETS:
        import importlib

        module, name = OPTION_SETS[method]
        return {spec.name: spec for spec in getattr(importlib.import_module(module), name).options()}
    from MMRegistrationLib.registration.methods import get_method

    return {spec.name: spec for spec in get_method(method).options}


def bound_widgets(ui) -> dict:
    """Parameter name -> widget of every attribute of ``ui`` whose ``SlicerParameterName`` property is set."""
    found = {}
    for widget in vars(ui).values():
        read = getattr(widget, "property", None)
        if not callable(read):
            continue
        try:
            name = read(PARAMETER_PROPERTY)
        except TypeError:  # not a Qt object's property()
            continue
        if name:
            found[str(name)] = widget
    return found


def widget_range(spec, sentinel: Optional[float] = None) -> tuple:
    """``(minimum, maximum)`` a numeric widget should allow for ``spec`` (None = leave as is): the sentinel, else the
    option's minimum (one step above it when exclusive for an integer); the option's maximum. Integers are clamped to
    what a QSpinBox holds; ``(None, None)`` for an option that is not a number."""
    if spec.kind not in (int, float):
        return None, None
    low, high = spec.minimum, spec.maximum
    if sentinel is not None:
        low = sentinel
    elif low is not None and spec.exclusive_minimum and spec.kind is int:
        low = low + 1
    if spec.kind is int:
        low = None if low is None else max(int(low), -_INT_LIMIT)
        high = None if high is None else min(int(high), _INT_LIMIT)
    else:
        low = None if low is None else float(low)
        high = None if high is None else float(high)
    return low, high


def apply_option_metadata(ui, method: str, options_map: dict, sentinel: Optional[float] = None) -> dict:
    """Describe the widgets bound to the parameters of ``options_map`` (parameter -> engine option of ``method``)
    from the engine's metadata: ``toolTip`` = ``OptionSpec.describe()``; for a number option also ``minimum`` /
    ``maximum`` (:func:`widget_range`; ``sentinel``, e.g. -1, stays the minimum: the module's "preset/default"
    value) and, with a unit, ``suffix`` (``" mm"``) where the widget has these attributes.

    A parameter without a bound widget or an engine option the method lacks is logged and skipped (the module-file
    tests fail on either). Raises ImportError where the engine cannot be imported. Returns parameter -> widget of
    the widgets described."""
    specs = option_specs(method)
    widgets = bound_widgets(ui)
    described = {}
    for parameter, name in options_map.items():
        spec, widget = specs.get(name), widgets.get(parameter)
        if spec is None or widget is None:
            logging.warning("MMRegistration: parameter '%s' (%s option '%s') %s", parameter, method, name,
                            "has no such engine option" if spec is None else "has no bound widget")
            continue
        widget.toolTip = spec.describe()
        if spec.kind in (int, float):
            low, high = widget_range(spec, sentinel)
            if low is not None and hasattr(widget, "minimum"):
                widget.minimum = low
            if high is not None and hasattr(widget, "maximum"):
                widget.maximum = high
            if spec.unit and hasattr(widget, "suffix"):
                widget.suffix = f" {spec.unit}"
        described[parameter] = widget
    return described
