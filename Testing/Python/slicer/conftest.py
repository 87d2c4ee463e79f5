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
