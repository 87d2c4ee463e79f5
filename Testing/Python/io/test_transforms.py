"""ITK transform files: what the engine writes maps points in SimpleITK exactly as in the engine, and files
written by SimpleITK are read back as engine transforms that map points like SimpleITK."""

from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import oblique_grid
from scipy.spatial.transform import Rotation

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io.transforms import read_transform, write_transform
from MMRegistrationLib.spatial.affine import AffineTransform
from MMRegistrationLib.spatial.composite import ComposedTransform
from MMRegistrationLib.spatial.displacement import DisplacementField

FIELD_GRID = oblique_grid(shape=(7, 9, 8), spacing=(1.3, 0.9, 2.1), origin=(-31.5, 17.25, 42.0))


def _itk_map(tx: sitk.Transform, points: np.ndarray) -> np.ndarray:
    return np.array([tx.TransformPoint(tuple(float(v) for v in p)) for p in points])


def _random_affine(rng, source="fixed", target="moving") -> AffineTransform:
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_rotvec(rng.normal(0, 0.3, 3)).as_matrix() @ np.diag(rng.uniform(0.8, 1.25, 3))
    matrix[:3, :3] += rng.normal(0, 0.05, (3, 3))  # shear
    matrix[:3, 3] = rng.normal(0, 10, 3)
    return AffineTransform(matrix, source, target)


def _random_field(rng, source="fixed", target="moving") -> DisplacementField:
    u = rng.normal(0, 2.0, size=(*FIELD_GRID.shape, 3))
    return DisplacementField(FIELD_GRID, torch.from_numpy(u), source, target)


def _points_by_region(rng, grid, n=300):
    """World points whose continuous index is inside, within half a voxel outside (border), or further out."""
    size = np.array(grid.size_ijk, dtype=float)
    inside = rng.uniform(0.0, size - 1.0, size=(n, 3))
    border = rng.uniform(0.0, size - 1.0, size=(n, 3))
    axis = rng.integers(0, 3, n)
    low = rng.integers(0, 2, n).astype(bool)
    depth = rng.uniform(1e-6, 0.5 - 1e-6, n)
    border[np.arange(n), axis] = np.where(low, -depth, size[axis] - 1.0 + depth)
    outside = rng.uniform(-0.5 + 1e-6, size - 0.5 - 1e-6, size=(n, 3))
    outside[np.arange(n), axis] = np.where(low, -0.5 - rng.uniform(1e-6, 5.0, n), size[axis] - 0.5 + rng.uniform(1e-6, 5.0, n))
    return {name: grid.index_to_world(idx) for name, idx in (("inside", inside), ("border", border), ("outside", outside))}


def _only(tmp_path, name):
    assert sorted(os.listdir(tmp_path)) == [name], "a temporary file was left next to the output"


# ---- engine -> file -> SimpleITK -------------------------------------------------------------------
def test_affine_h5_maps_points_like_the_engine(tmp_path, rng):
    affine = _random_affine(rng)
    path = write_transform(affine, tmp_path / "affine.h5")
    _only(tmp_path, "affine.h5")
    tx = sitk.ReadTransform(str(path))
    pts = rng.uniform(-100, 100, size=(200, 3))
    np.testing.assert_allclose(_itk_map(tx, pts), affine.map_points_np(pts), rtol=0, atol=1e-9)
    back = read_transform(path, "--initial-transform")
    assert isinstance(back, AffineTransform)
    assert (back.source, back.target) == ("fixed", "moving")
    np.testing.assert_allclose(back.matrix, affine.matrix, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["affine.tfm", "affine.txt", "affine.mat"])
def test_affine_other_itk_formats(tmp_path, rng, name):
    affine = _random_affine(rng)
    write_transform(affine, tmp_path / name)
    _only(tmp_path, name)
    pts = rng.uniform(-100, 100, size=(50, 3))
    np.testing.assert_allclose(_itk_map(sitk.ReadTransform(str(tmp_path / name)), pts), affine.map_points_np(pts), rtol=0, atol=1e-9)
    back = read_transform(tmp_path / name, "--initial-transform")
    np.testing.assert_allclose(back.matrix, affine.matrix, rtol=0, atol=1e-12)


def test_displacement_field_h5_maps_points_like_the_engine(tmp_path, rng):
    field = _random_field(rng)
    path = write_transform(field, tmp_path / "field.h5")
    _only(tmp_path, "field.h5")
    tx = sitk.ReadTransform(str(path))
    assert tx.GetName() == "DisplacementFieldTransform"
    regions = _points_by_region(rng, FIELD_GRID)
    for region, pts in regions.items():
        engine = field.map_points_np(pts)
        np.testing.assert_allclose(_itk_map(tx, pts), engine, rtol=0, atol=1e-9, err_msg=region)
    # ITK's rule: zero displacement outside [-0.5, n - 0.5], clamped (non-zero) values in the border band
    np.testing.assert_array_equal(field.map_points_np(regions["outside"]), regions["outside"])
    assert np.all(np.abs(field.map_points_np(regions["border"]) - regions["border"]).max(axis=1) > 1e-6)


def test_displacement_field_round_trip_keeps_grid_and_vectors(tmp_path, rng):
    field = _random_field(rng, "a", "b")
    back = read_transform(write_transform(field, tmp_path / "field.h5"), "--initial-transform", source="a", target="b")
    assert isinstance(back, DisplacementField)
    assert (back.source, back.target) == ("a", "b")
    assert back.grid.same_as(FIELD_GRID, tol=1e-12)
    np.testing.assert_array_equal(back.numpy(), field.numpy())


def test_composed_field_then_affine_is_written_in_itk_order(tmp_path, rng):
    field = _random_field(rng, "fixed", "fixed:warped")
    affine = _random_affine(rng, "fixed:warped", "moving")
    composed = ComposedTransform([field, affine])  # the field is applied first
    path = write_transform(composed, tmp_path / "composite.h5")
    _only(tmp_path, "composite.h5")
    tx = sitk.ReadTransform(str(path))
    assert tx.GetName() == "CompositeTransform"
    pts = np.vstack(list(_points_by_region(rng, FIELD_GRID, n=150).values()))
    itk = _itk_map(tx, pts)
    np.testing.assert_allclose(itk, composed.map_points_np(pts), rtol=0, atol=1e-9)
    # the test can tell the two orders apart: affine-then-field maps the points elsewhere
    other_order = field.map_points_np(affine.map_points_np(pts))
    assert np.abs(other_order - itk).max() > 1.0

    back = read_transform(path, "--initial-transform")
    assert (back.source, back.target) == ("fixed", "moving")
    np.testing.assert_allclose(back.map_points_np(pts), itk, rtol=0, atol=1e-9)


def test_composed_transform_flattened_on_a_grid(tmp_path, rng):
    field = _random_field(rng, "fixed", "mid")
    affine = _random_affine(rng, "mid", "moving")
    composed = ComposedTransform([field, affine])
    grid = oblique_grid(shape=(6, 7, 5), spacing=(2.0, 1.5, 1.0), origin=(-25.0, 20.0, 45.0), angles_deg=(-5.0, 8.0, 12.0))
    path = write_transform(composed, tmp_path / "flat.h5", flatten_on=grid)
    _only(tmp_path, "flat.h5")
    tx = sitk.ReadTransform(str(path))
    assert tx.GetName() == "DisplacementFieldTransform"
    nodes = grid.world_points().reshape(-1, 3)
    np.testing.assert_allclose(_itk_map(tx, nodes), composed.map_points_np(nodes), rtol=0, atol=1e-9)


def test_written_sitk_displacement_field_read_by_engine(tmp_path, rng):
    """A field written by SimpleITK itself (not by the engine's writer)."""
    ref = Image(np.zeros(FIELD_GRID.shape, np.uint8), FIELD_GRID).to_sitk()
    disp = sitk.GetImageFromArray(rng.normal(0, 1.5, size=(*FIELD_GRID.shape, 3)), isVector=True)
    disp.CopyInformation(ref)
    tx = sitk.DisplacementFieldTransform(sitk.Image(disp))
    sitk.WriteTransform(tx, str(tmp_path / "sitk_field.h5"))
    back = read_transform(tmp_path / "sitk_field.h5", "--initial-transform")
    for region, pts in _points_by_region(rng, FIELD_GRID, n=150).items():
        np.testing.assert_allclose(back.map_points_np(pts), _itk_map(tx, pts), rtol=0, atol=1e-9, err_msg=region)


# ---- SimpleITK files -> engine ---------------------------------------------------------------------
def _versor(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return tuple(float(v) for v in q[:3] * np.sign(q[3])) + (float(abs(q[3])),)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda rng: sitk.Euler3DTransform((12.0, -30.0, 45.0), 0.2, -0.1, 0.35, (3.0, -4.0, 5.5)), "euler.h5"),
        (lambda rng: sitk.Euler3DTransform((12.0, -30.0, 45.0), 0.2, -0.1, 0.35, (3.0, -4.0, 5.5)), "euler.tfm"),
        (lambda rng: sitk.VersorRigid3DTransform(_versor(rng), (1.0, -2.0, 3.0), (-7.0, 8.0, 90.0)), "versor.h5"),
        (lambda rng: sitk.TranslationTransform(3, (1.5, -2.25, 3.0)), "translation.h5"),
        (lambda rng: sitk.Similarity3DTransform(1.2, (0.0, 0.0, 1.0), 0.4, (1.0, 2.0, 3.0), (10.0, 0.0, -5.0)), "similarity.h5"),
        (
            lambda rng: sitk.CompositeTransform(
                [sitk.Euler3DTransform((5.0, 5.0, 5.0), 0.3, 0.0, -0.2, (1.0, 0.0, 0.0)), sitk.TranslationTransform(3, (0.0, 10.0, -4.0))]
            ),
            "composite.h5",
        ),
    ],
    ids=["euler-h5", "euler-tfm", "versor", "translation", "similarity", "composite"],
)
def test_read_linear_sitk_transforms(tmp_path, rng, make, name):
    tx = make(rng)
    sitk.WriteTransform(tx, str(tmp_path / name))
    engine = read_transform(tmp_path / name, "--initial-transform")
    assert engine.is_linear
    assert (engine.source, engine.target) == ("fixed", "moving")
    pts = rng.uniform(-120, 120, size=(200, 3))
    np.testing.assert_allclose(engine.map_points_np(pts), _itk_map(tx, pts), rtol=0, atol=1e-9)


def _bspline(rng, offset=(1.0, -0.5, 0.8), noise=0.08) -> sitk.BSplineTransform:
    ref = sitk.Image([30, 26, 20], sitk.sitkUInt8)
    ref.SetSpacing((1.5, 1.2, 2.0))
    ref.SetOrigin((-20.0, 10.0, 5.0))
    ref.SetDirection(tuple(Rotation.from_euler("xyz", [10.0, -5.0, 20.0], degrees=True).as_matrix().ravel()))
    tx = sitk.BSplineTransformInitializer(ref, [3, 3, 3], 3)
    n = len(tx.GetParameters()) // 3
    tx.SetParameters(tuple(np.concatenate([np.full(n, c) + rng.normal(0, noise, n) for c in offset])))
    return tx


def _domain_points(tx: sitk.BSplineTransform, frac: np.ndarray) -> np.ndarray:
    """Points at fractions (0..1 per domain axis) of a B-spline transform's domain."""
    origin = np.array(tx.GetTransformDomainOrigin())
    dims = np.array(tx.GetTransformDomainPhysicalDimensions())
    direction = np.array(tx.GetTransformDomainDirection()).reshape(3, 3)
    return origin + (frac * dims) @ direction.T


def test_read_bspline_inside_its_domain(tmp_path, rng):
    tx = _bspline(rng)
    sitk.WriteTransform(tx, str(tmp_path / "bspline.h5"))
    engine = read_transform(tmp_path / "bspline.h5", "--initial-transform")
    dims = np.array(tx.GetTransformDomainPhysicalDimensions())
    pts = _domain_points(tx, rng.uniform(1.5 / dims, 1 - 1.5 / dims, size=(1000, 3)))  # >= 1.5 mm from the faces
    itk = _itk_map(tx, pts)
    assert np.abs(itk - pts).max() > 0.5  # a real deformation
    np.testing.assert_allclose(engine.map_points_np(pts), itk, rtol=0, atol=1e-3)  # resampled: not exact


def test_read_bspline_near_its_domain_faces(tmp_path, rng):
    tx = _bspline(rng)
    sitk.WriteTransform(tx, str(tmp_path / "bspline.h5"))
    engine = read_transform(tmp_path / "bspline.h5", "--initial-transform")
    dims = np.array(tx.GetTransformDomainPhysicalDimensions())
    n = 600
    frac = rng.uniform(1.5 / dims, 1 - 1.5 / dims, size=(n, 3))
    axis, low, depth = rng.integers(0, 3, n), rng.integers(0, 2, n).astype(bool), rng.uniform(0.05, 0.95, n)
    frac[np.arange(n), axis] = np.where(low, depth / dims[axis], 1 - depth / dims[axis])  # 0.05..0.95 mm inside a face
    pts = _domain_points(tx, frac)
    # cell-centred samples: the outer half sample is border-extrapolated, so allow a few micrometres
    np.testing.assert_allclose(engine.map_points_np(pts), _itk_map(tx, pts), rtol=0, atol=5e-3)


def test_read_bspline_outside_its_domain_is_identity(tmp_path, rng):
    tx = _bspline(rng)
    sitk.WriteTransform(tx, str(tmp_path / "bspline.h5"))
    engine = read_transform(tmp_path / "bspline.h5", "--initial-transform")
    dims = np.array(tx.GetTransformDomainPhysicalDimensions())
    frac = rng.uniform(0.2, 0.8, size=(100, 3))
    frac[:, 0] = 1 + 2.0 / dims[0]  # 2 mm beyond the domain
    pts = _domain_points(tx, frac)
    np.testing.assert_allclose(_itk_map(tx, pts), pts, atol=0)
    np.testing.assert_allclose(engine.map_points_np(pts), pts, atol=0)


def test_read_composite_of_rigid_and_bspline(tmp_path, rng):
    bspline = _bspline(rng)
    rigid = sitk.Euler3DTransform((0.0, 20.0, 15.0), 0.05, -0.08, 0.1, (2.0, -1.0, 0.5))
    tx = sitk.CompositeTransform([rigid, bspline])  # ITK: the last added (B-spline) is applied first
    sitk.WriteTransform(tx, str(tmp_path / "rigid_bspline.h5"))
    engine = read_transform(tmp_path / "rigid_bspline.h5", "--initial-transform")
    assert not engine.is_linear
    dims = np.array(bspline.GetTransformDomainPhysicalDimensions())
    pts = _domain_points(bspline, rng.uniform(1.5 / dims, 1 - 1.5 / dims, size=(500, 3)))
    itk = _itk_map(tx, pts)
    np.testing.assert_allclose(engine.map_points_np(pts), itk, rtol=0, atol=1e-3)
    swapped = _itk_map(bspline, _itk_map(rigid, pts))  # the other order is measurably different
    assert np.abs(swapped - itk).max() > 0.01


# ---- errors ----------------------------------------------------------------------------------------
def test_read_transform_missing_file(tmp_path):
    with pytest.raises(InputError) as err:
        read_transform(tmp_path / "nothing.h5", "--initial-transform")
    assert str(err.value).startswith("--initial-transform: file not found")


@pytest.mark.parametrize("name", ["garbage.h5", "garbage.tfm", "garbage.txt"])
def test_read_transform_garbage_file(tmp_path, rng, name):
    (tmp_path / name).write_bytes(rng.bytes(512))
    with pytest.raises(InputError) as err:
        read_transform(tmp_path / name, "--initial-transform")
    message = str(err.value)
    assert message.startswith("--initial-transform: cannot read")
    assert name in message


def test_read_transform_unknown_type_message_names_that_type(tmp_path):
    path = tmp_path / "unknown.tfm"
    path.write_text(
        "#Insight Transform File V1.0\n#Transform 0\nTransform: NoSuchTransform_double_3_3\nParameters: 1 2 3\nFixedParameters: \n",
        encoding="utf-8",
    )
    with pytest.raises(InputError) as err:
        read_transform(path, "--initial-transform")
    assert str(err.value).startswith("--initial-transform: ")
    assert "NoSuchTransform_double_3_3" in str(err.value)
    assert "VersorTransform_float_3_3" not in str(err.value)
