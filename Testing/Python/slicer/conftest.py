"""Fixtures for tests on real MRML (PyPI slicer-core). Skipped with a message where slicer-core is absent."""

from __future__ import annotations

import pytest

from conftest import markups_app_scene

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (the project's test command installs it)")


@pytest.fixture
def scene():
    """A bare MRML scene (enough for volumes, segmentations, ROIs and transforms)."""
    return slicer.vtkMRMLScene()


@pytest.fixture
def app_scene():
    """A scene with the application, colour and markups logics markups storage needs."""
    return markups_app_scene(slicer)


def _gui_stubs():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_mmreg_gui_stubs", Path(__file__).with_name("gui_stubs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def gui_stubs():
    """The ``gui_stubs`` helpers (stand-ins for Slicer's GUI; see that file)."""
    return _gui_stubs()


@pytest.fixture
def gui(scene):
    """Slicer's GUI stand-ins installed for ``scene`` (as ``slicer.mrmlScene``), removed afterwards. Yields a
    namespace: ``stubs`` (the helpers), ``app`` (the fake ``slicer.app``), ``errors`` (what error displays showed),
    ``scene``."""
    from types import SimpleNamespace

    stubs = _gui_stubs()
    app, errors, undo = stubs.install(slicer, scene, testing=True)
    try:
        yield SimpleNamespace(stubs=stubs, app=app, errors=errors, scene=scene)
    finally:
        undo()
