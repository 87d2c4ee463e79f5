"""Benchmark helpers (benchmarks/peers.py, benchmarks/datasets.py): peer transform direction and DeepReg loading.

The peers need the benchmark-only packages of benchmarks/requirements.txt; their tests skip without them.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from conftest import SHARED_DATA, load_benchmark_module
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image

DEEPREG = SHARED_DATA / "deepreg_mrus"




def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


SHIFT = np.array([4.0, -2.5, 1.5])  # fixed -> moving: a fixed point x corresponds to the moving point x + SHIFT


def _translated_pair():
    """40^3 oblique, anisotropic grids; an ellipsoid (mask and a smooth textured image) centred at c in the fixed
    image and at c + SHIFT in the moving one."""
    direction = Rotation.from_euler("xyz", [12.0, -7.0, 20.0], degrees=True).as_matrix()
    spacing = np.array([1.0, 1.1, 0.9])
    fixed_grid = Grid.from_geometry((40, 40, 40), spacing, (-20.0, -15.0, 5.0), direction)
    moving_grid = Grid.from_geometry((40, 40, 40), spacing, (-18.0, -16.0, 6.0), direction)  # other origin
    centre = fixed_grid.index_to_world(np.full(3, 19.5))
    radii = np.array([10.0, 8.0, 9.0])

    def case_image(grid: Grid, c: np.ndarray):
        q = (grid.world_points() - c) / radii
        r = np.linalg.norm(q, axis=-1)
        mask = r <= 1.0
        # a smooth blob with an off-centre inner structure: MI has something to lock onto in every direction
        inner = np.linalg.norm(q - np.array([0.35, 0.2, -0.25]), axis=-1) <= 0.4
        # (+ 10: a non-zero background, like an image filling its grid, so elastix runs without a fixed mask)
        intensity = (10.0 + ndimage.gaussian_filter(100.0 * mask + 80.0 * inner, 1.0)).astype(np.float32)
        return Image(intensity, grid), Image(mask.astype(np.uint8), grid)

    fixed, fixed_seg = case_image(fixed_grid, centre)
    moving, moving_seg = case_image(moving_grid, centre + SHIFT)
    case = {
        "name": "translation", "source": "test", "fixed": fixed, "moving": moving, "fixed_seg": fixed_seg,
        "moving_seg": moving_seg, "label_names": {1: "prostate"}, "fixed_landmarks": None,
        "moving_landmarks": None, "ground_truth": None, "notes": [],
    }
    points = centre + np.array([[0.0, 0.0, 0.0], [4.0, 2.0, -3.0], [-5.0, 3.0, 2.0], [2.0, -4.0, 4.0]])
    return case, points


@pytest.mark.slow
@pytest.mark.skipif(not _has("ants"), reason="antspyx is not installed (pip install --no-deps -r benchmarks/requirements.txt)")
def test_ants_syn_on_sdm_recovers_a_known_translation_fixed_to_moving():
    peers = load_benchmark_module("peers")
    case, points = _translated_pair()
    transform, seconds = peers.ants_syn_on_sdm(case, threads=2)
    assert transform.source == "fixed" and transform.target == "moving"
    mapped = transform.map_points_np(points)
    np.testing.assert_allclose(mapped, points + SHIFT, atol=1.0)
    assert seconds > 0


@pytest.mark.slow
@pytest.mark.skipif(not _has("ants"), reason="antspyx is not installed (pip install --no-deps -r benchmarks/requirements.txt)")
def test_ants_transform_conversion_matches_ants_point_mapping(tmp_path):
    """The engine transform built from ANTs' fwdtransforms maps points exactly as ANTs does."""
    import pandas as pd

    peers = load_benchmark_module("peers")
    ants = peers._import_ants(2)
    case, points = _translated_pair()
    f = peers._to_ants(ants, peers.signed_distance_map(case["fixed_seg"]), case["fixed_seg"].grid)
    m = peers._to_ants(ants, peers.signed_distance_map(case["moving_seg"]), case["moving_seg"].grid)
    reg = ants.registration(f, m, type_of_transform="SyN", aff_metric="meansquares", syn_metric="meansquares",
                            reg_iterations=(20, 10), outprefix=str(tmp_path / "reg_"))
    assert len(reg["fwdtransforms"]) == 2
    transform = peers.ants_transforms_to_engine(reg["fwdtransforms"])
    rng = np.random.default_rng(0)
    pts = points[0] + rng.uniform(-10, 10, size=(50, 3))
    expected = ants.apply_transforms_to_points(3, pd.DataFrame(pts, columns=["x", "y", "z"]), reg["fwdtransforms"])
    np.testing.assert_allclose(transform.map_points_np(pts), expected[["x", "y", "z"]].to_numpy(), atol=1e-3)


@pytest.mark.slow
@pytest.mark.skipif(not (_has("itk") and _has("itk.ElastixPython")),
                    reason="itk-elastix is not installed (pip install --no-deps -r benchmarks/requirements.txt)")
def test_elastix_bspline_mi_recovers_a_known_translation_fixed_to_moving():
    peers = load_benchmark_module("peers")
    case, points = _translated_pair()
    transform, seconds = peers.elastix_bspline_mi(case, threads=2)
    assert transform.source == "fixed" and transform.target == "moving"
    mapped = transform.map_points_np(points)
    np.testing.assert_allclose(mapped, points + SHIFT, atol=1.0)
    assert seconds > 0


CONVEXADAM_SKIP = pytest.mark.skipif(
    not _has("convexAdam"), reason="convexadam is not installed (pip install --no-deps -r benchmarks/requirements.txt)")
# fixed -> moving: fixed point x corresponds to moving point x + CONVEX_SHIFT (5.9 mm). Chosen so that each likely
# conversion mistake moves the test points far more than the tolerance (0.8 mm): field components in k, j, i order
# taken as i, j, k: 10.3 mm off; the grid direction ignored: 4.6 mm; voxels taken as mm: 1.6 mm; the inverse: 11.9 mm.
CONVEX_SHIFT = np.array([5.5, 1.0, -2.0])
CONVEX_TOLERANCE_MM = 0.8  # one voxel of the finest axis


def _textured_translated_pair(shape=(48, 48, 56)):
    """A smooth texture (60 Gaussian blobs, sigma 2.5-5 mm, defined in world mm) on an oblique, anisotropic
    (0.8 x 1.5 x 1.2 mm), non-zero-origin fixed grid, and the same texture moved by CONVEX_SHIFT on a moving grid
    with another origin: ``moving(x + CONVEX_SHIFT) = fixed(x)``. Returns (case, fixed test points)."""
    rng = np.random.default_rng(1)
    direction = Rotation.from_euler("xyz", [25.0, -15.0, 35.0], degrees=True).as_matrix()
    spacing = np.array([0.8, 1.5, 1.2])
    fixed_grid = Grid.from_geometry(shape, spacing, (-20.0, 35.0, -12.0), direction)
    moving_grid = Grid.from_geometry(shape, spacing, (-19.0, 33.0, -11.0), direction)
    centre = fixed_grid.center
    extent = float((np.array(fixed_grid.size_ijk) * spacing).max())
    centres = centre + rng.uniform(-0.6, 0.6, size=(60, 3)) * extent
    sigmas = rng.uniform(2.5, 5.0, size=60)
    amplitudes = rng.uniform(0.3, 1.0, size=60)

    def texture(points):
        out = np.zeros(points.shape[:-1])
        for c, s, a in zip(centres, sigmas, amplitudes):
            out += a * np.exp(-((points - c) ** 2).sum(-1) / (2.0 * s * s))
        return (100.0 * out).astype(np.float32)

    fixed = Image(texture(fixed_grid.world_points()), fixed_grid)
    moving = Image(texture(moving_grid.world_points() - CONVEX_SHIFT), moving_grid)
    case = {"name": "convex-translation", "source": "test", "fixed": fixed, "moving": moving}
    points = centre + rng.uniform(-8.0, 8.0, size=(20, 3))
    return case, points


@pytest.mark.slow
@CONVEXADAM_SKIP
def test_convex_adam_recovers_a_known_translation_fixed_to_moving():
    """Direction (fixed -> moving, not the inverse), axis order and units (voxels -> LPS mm through the oblique,
    anisotropic grid) of the convexAdam adapter: every point within ~1 voxel (0.8 mm) of the truth."""
    import torch

    torch.set_num_threads(1)
    peers = load_benchmark_module("peers")
    case, points = _textured_translated_pair()
    transform, seconds, info = peers.convex_adam_mind(case, threads=1, return_info=True)
    assert transform.source == "fixed" and transform.target == "moving"
    assert info["padded_shape"] == [48, 48, 60] and info["shape"] == [48, 48, 56]  # padded to multiples of 6
    mapped = transform.map_points_np(points)
    assert np.linalg.norm(mapped - (points + CONVEX_SHIFT), axis=1).max() < CONVEX_TOLERANCE_MM
    assert np.linalg.norm(mapped - (points - CONVEX_SHIFT), axis=1).min() > 5.0  # clearly not the inverse
    assert seconds > 0


@pytest.mark.slow
@CONVEXADAM_SKIP
def test_convex_adam_composes_after_an_initial_transform():
    """With a start S (fixed -> moving), the moving image is resampled through S and the result is x -> S(x + u(x)):
    started from half of the translation (plus a small rotation), it still lands on the truth."""
    import torch

    from MMRegistrationLib.spatial.affine import AffineTransform

    torch.set_num_threads(1)
    peers = load_benchmark_module("peers")
    case, points = _textured_translated_pair()
    start = AffineTransform.from_rigid([0.0, 0.0, np.radians(3.0)], 0.5 * CONVEX_SHIFT, points.mean(0))
    transform, _ = peers.convex_adam_mind(case, threads=1, initial=start)
    assert transform.source == "fixed" and transform.target == "moving"
    field = transform.transforms[0]
    assert field.target == transform.transforms[1].source
    assert np.linalg.norm(transform.map_points_np(points) - (points + CONVEX_SHIFT), axis=1).max() < CONVEX_TOLERANCE_MM
    # the order: start applied after the field, S(x + u(x))
    u = field.map_points_np(points) - points
    np.testing.assert_allclose(transform.map_points_np(points), start.map_points_np(points + u), atol=1e-9)


@CONVEXADAM_SKIP
def test_convex_adam_runs_on_a_small_real_case():
    """The sample case (TRUS/MR), fixed grid coarsened to 2 mm: finite displacements of a plausible size."""
    import torch

    from MMRegistrationLib.spatial.resample import resample

    torch.set_num_threads(1)
    peers = load_benchmark_module("peers")
    datasets = load_benchmark_module("datasets")
    case = datasets.sample_case()
    grid = case["fixed"].grid.resized(2.0)
    small = dict(case, fixed=resample(case["fixed"], grid))
    transform, seconds, info = peers.convex_adam_mind(small, threads=1, return_info=True)
    disp = transform.numpy()
    assert disp.shape == (*grid.shape, 3) and np.all(np.isfinite(disp))
    assert 0.0 < info["max_displacement_mm"] < 40.0
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    before = np.linalg.norm(case["fixed_landmarks"] - case["moving_landmarks"], axis=1).mean()
    after = np.linalg.norm(transform.map_points_np(case["fixed_landmarks"]) - case["moving_landmarks"], axis=1).mean()
    assert np.isfinite(after) and after < before + 1.0
    assert seconds > 0


@pytest.mark.skipif(not DEEPREG.exists(), reason=f"{DEEPREG} is absent (shared data not available)")
def test_deepreg_cases_load_gland_and_matching_landmarks():
    datasets = load_benchmark_module("datasets")
    cases = list(datasets.deepreg_cases(DEEPREG, limit=1))
    assert len(cases) == 1
    case = cases[0]
    assert case["name"] == "obs000" and case["source"] == "deepreg"
    for key in ("fixed_seg", "moving_seg"):
        assert case[key].labels() == [1], key
        assert case[key].grid.same_as(case[key.split("_")[0]].grid)
    flm, mlm = case["fixed_landmarks"], case["moving_landmarks"]
    assert flm is not None and flm.shape == mlm.shape and flm.shape[1] == 3 and len(flm) >= 1
    for points, image in ((flm, case["fixed"]), (mlm, case["moving"])):
        index = image.grid.world_to_index(points)
        assert np.all(index >= -0.5) and np.all(index <= np.array(image.grid.size_ijk) - 0.5)
    assert case["label_names"] == {1: "prostate"} and case["ground_truth"] is None


def test_deepreg_cases_absent_folder_yields_nothing(tmp_path, capsys):
    datasets = load_benchmark_module("datasets")
    assert list(datasets.deepreg_cases(tmp_path / "nowhere")) == []
    assert "absent" in capsys.readouterr().err
