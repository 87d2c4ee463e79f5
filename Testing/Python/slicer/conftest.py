"""Fixtures for tests on real MRML (PyPI slicer-core). Skipped with a message where slicer-core is absent."""

from __future__ import annotations

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (the project's test command installs it)")


@pytest.fixture
def scene():
    """A bare MRML scene (enough for volumes, segmentations, ROIs and transforms)."""
    return slicer.vtkMRMLScene()


@pytest.fixture
def app_scene():
    """A scene with an application logic and the colors/markups module logics registered, as markups storage
    and the markups logic need (see shared/SLICER_CORE_NOTES.md)."""
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(app_logic)
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    app_logic.SetModuleLogic("Colors", colors)
    markups = slicer.vtkSlicerMarkupsLogic()
    markups.SetMRMLScene(scene)
    markups.SetMRMLApplicationLogic(app_logic)
    app_logic.SetModuleLogic("Markups", markups)
    scene._mmreg_keep = (app_logic, colors, markups)  # keep the logics alive with the scene
    return scene
