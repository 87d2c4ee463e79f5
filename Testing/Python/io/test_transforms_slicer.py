"""transform.h5 files as real 3D Slicer reads and writes them (PyPI slicer-core: the Qt-free Slicer core).

A fixed->moving displacement field must load as a grid transform whose FromParent mapping (RAS) is the same
point mapping as the engine's (LPS); an affine as a linear transform; and a grid transform saved by Slicer
must read back into the engine as the same mapping.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import oblique_grid
from MMRegistrationLib.core.conventions import lps_to_ras, ras_to_lps
from MMRegistrationLib.io.transforms import read_transform, write_transform
from MMRegistrationLib.spatial import AffineTransform, DisplacementField

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")


@pytest.fixture
def field():
    g = oblique_grid(shape=(20, 22, 24), spacing=(2.0, 1.5, 2.5))
    rng = np.random.default_rng(0)
    u = np.stack([ndimage.gaussian_filter(rng.normal(size=g.shape), 2) for _ in range(3)], -1) * 20
    return DisplacementField(g, u)


def load_in_slicer(path):
    scene = slicer.vtkMRMLScene()
    storage = slicer.vtkMRMLTransformStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    node = slicer.vtkMRMLTransformNode()
    scene.AddNode(node)
    assert storage.ReadData(node) == 1
    return scene, node


def slicer_from_parent_lps(node, points_lps):
    transform = node.GetTransformFromParent()
    if hasattr(transform, "SetInterpolationModeToLinear"):
        transform.SetInterpolationModeToLinear()  # Slicer defaults to cubic for ITK fields
    return np.array([ras_to_lps(np.array(transform.TransformPoint(lps_to_ras(p)))) for p in points_lps])


def test_displacement_field_loads_as_grid_transform_with_the_same_mapping(field, tmp_path):
    write_transform(field, tmp_path / "transform.h5")
    _, node = load_in_slicer(tmp_path / "transform.h5")
    assert not node.IsLinear()
    assert node.GetTransformFromParent().GetClassName() == "vtkOrientedGridTransform"
    pts = field.grid.index_to_world(np.random.default_rng(1).uniform(1, 18, size=(20, 3)))
    moved = field.map_points_np(pts)
    assert np.linalg.norm(moved - pts, axis=1).mean() > 1.0
    np.testing.assert_allclose(slicer_from_parent_lps(node, pts), moved, atol=1e-4)  # VTK stores float32


def test_affine_loads_as_linear_transform(tmp_path):
    aff = AffineTransform.from_rigid([0.1, 0.2, -0.1], [5.0, -3.0, 2.0], center=[10.0, 0.0, -5.0])
    write_transform(aff, tmp_path / "transform.h5")
    _, node = load_in_slicer(tmp_path / "transform.h5")
    assert node.IsLinear()
    pts = np.random.default_rng(2).normal(size=(10, 3)) * 30
    np.testing.assert_allclose(slicer_from_parent_lps(node, pts), aff.map_points_np(pts), atol=1e-9)


def test_grid_transform_saved_by_slicer_reads_back_identically(field, tmp_path):
    write_transform(field, tmp_path / "in.h5")
    scene, node = load_in_slicer(tmp_path / "in.h5")
    storage = slicer.vtkMRMLTransformStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "saved_by_slicer.h5"))
    assert storage.WriteData(node) == 1
    back = read_transform(tmp_path / "saved_by_slicer.h5")
    pts = field.grid.index_to_world(np.random.default_rng(3).uniform(1, 18, size=(20, 3)))
    np.testing.assert_allclose(back.map_points_np(pts), field.map_points_np(pts), atol=1e-4)
