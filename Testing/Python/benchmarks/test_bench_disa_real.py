"""benchmarks/bench_disa_realus.py and bench_disa_resolution.py: the geometry helpers (moving volume construction,
start perturbations, error functions, spacing selection). No registration runs and no shared data here; the
benchmarks themselves are run by hand (benchmarks/README.md)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import load_benchmark_module, oblique_grid
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image


@pytest.fixture(scope="module")
def realus():
    return load_benchmark_module("bench_disa_realus")


@pytest.fixture(scope="module")
def resolution():
    return load_benchmark_module("bench_disa_resolution")


def smooth_value(points: np.ndarray) -> np.ndarray:
    """A smooth analytic volume (LPS mm): positive, a few cm wavelengths."""
    x, y, z = np.moveaxis(np.asarray(points, dtype=np.float64), -1, 0)
    return 100.0 + 30.0 * np.sin(x / 9.0) * np.cos(y / 11.0) + 20.0 * np.sin(z / 7.0 + 0.4) + 0.2 * x


@pytest.fixture(scope="module")
def us_volume():
    """An oblique, anisotropic grid with a non-zero origin holding ``smooth_value`` inside a ball-shaped 'sector'
    and 0 outside (the ultrasound convention)."""
    grid = oblique_grid(shape=(44, 50, 56), spacing=(0.9, 0.7, 1.1), origin=(-21.5, 13.25, 38.0),
                        angles_deg=(17.0, -11.0, 28.0))
    pts = grid.world_points()
    inside = np.linalg.norm(pts - grid.center, axis=-1) < 17.0
    return Image(np.where(inside, smooth_value(pts), 0.0).astype(np.float32), grid)


def sample(image: Image, points: np.ndarray) -> np.ndarray:
    """Trilinear value of ``image`` at world points ``(N, 3)``."""
    idx = image.grid.world_to_index(points)[:, ::-1].T
    return ndimage.map_coordinates(np.asarray(image.array, dtype=np.float64), idx, order=1, mode="constant")


def test_moving_volume_satisfies_moving_of_t_true_equals_fixed(realus, us_volume):
    fixed = us_volume
    rng = np.random.default_rng(5)
    mask = realus.fov_mask(fixed)
    fov_world = realus.mask_points(fixed.grid, mask)
    centre = fov_world.mean(axis=0)
    t_true = realus.true_transform(rng, centre)
    direction = realus.rotation(np.radians(35.0) * realus.unit(rng)) @ fixed.grid.direction
    grid = realus.moving_grid(fov_world, t_true, 0.7, direction, (0.8, 0.75, 0.85), (0.3, -0.5, 0.2))
    assert np.allclose(grid.spacing, 0.7) and np.allclose(grid.direction, direction, atol=1e-9)
    assert np.linalg.norm(grid.origin) > 1.0
    moving = realus.make_moving(fixed, t_true, grid)
    # points deep inside the fixed field of view whose image lies inside the moving box
    x = realus.virtual_landmarks(fixed, mask, rng, 40, t_true, moving, erosion_mm=3.0)
    assert len(x) == 40
    expected = smooth_value(x)
    got = sample(moving, realus.apply(t_true, x))
    # two linear interpolations of a smooth volume (swing ~100 units): ~0.1 units off at most
    assert np.max(np.abs(got - expected)) < 0.5
    assert np.mean(np.abs(got - expected)) < 0.15
    # the wrong direction (T_true^-1) is far off
    wrong = sample(moving, realus.apply(np.linalg.inv(t_true), x))
    assert np.mean(np.abs(wrong - expected)) > 10.0
    # zero outside the sector stays exactly zero (every interpolation neighbour outside the 17 mm ball); the box
    # covers part of the field of view only
    y = moving.grid.world_points().reshape(-1, 3)
    far = np.linalg.norm(realus.apply(np.linalg.inv(t_true), y) - fixed.grid.center, axis=1) > 17.0 + 2.0
    assert far.any() and np.all(moving.array.reshape(-1)[far] == 0.0)
    assert np.all(moving.array.reshape(-1)[~far] >= 0.0)
    moved_fov = realus.apply(t_true, fov_world)
    idx = moving.grid.world_to_index(moved_fov)
    covered = np.all((idx >= -0.5) & (idx <= np.array(moving.grid.size_ijk) - 0.5), axis=1).mean()
    assert 0.3 < covered < 0.95


def test_noise_is_multiplicative_mean_one_and_keeps_zeros(realus, us_volume):
    fixed = us_volume
    grid = fixed.grid
    clean = realus.make_moving(fixed, np.eye(4), grid)
    noisy = realus.make_moving(fixed, np.eye(4), grid, np.random.default_rng(1), noise_cv=0.3)
    zero = clean.array == 0
    assert np.all(noisy.array[zero] == 0)
    ratio = noisy.array[~zero] / clean.array[~zero]
    assert abs(ratio.mean() - 1.0) < 0.02
    assert abs(ratio.std() - 0.3) < 0.02


def test_build_case_is_seeded_and_consistent(realus, us_volume):
    a = realus.build_case(us_volume, [0, 3], noise_cv=0.0, n_landmarks=10, n_starts=3)
    b = realus.build_case(us_volume, [0, 3], noise_cv=0.0, n_landmarks=10, n_starts=3)
    assert np.array_equal(a["t_true"], b["t_true"]) and np.array_equal(a["landmarks"], b["landmarks"])
    assert 0.6 <= a["moving_spacing_mm"] <= 0.8
    assert len(a["starts"]) == 3 and all(10.0 <= s["initial_mm"] <= 25.0 for s in a["starts"])
    r = a["t_true"][:3, :3]
    angle = np.degrees(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)))
    assert 3.0 - 1e-6 <= angle <= 12.0 + 1e-6


def test_start_perturbations_land_in_the_requested_range(realus):
    rng = np.random.default_rng(7)
    landmarks = rng.normal(scale=12.0, size=(15, 3)) + [40.0, -10.0, 25.0]
    centre = landmarks.mean(axis=0)
    t_true = realus.rigid_matrix([0.05, -0.12, 0.08], [7.0, -3.0, 11.0], centre)
    starts = realus.sample_starts(t_true, landmarks, centre, 30, np.random.default_rng(2))
    errors = [s["initial_mm"] for s in starts]
    assert len(starts) == 30 and min(errors) >= 10.0 and max(errors) <= 25.0
    assert max(s["rotation_deg"] for s in starts) <= 12.0
    for s in starts:  # the recorded error is the landmark error of the start, and the start is T_true o P
        assert s["initial_mm"] == pytest.approx(realus.landmark_error(s["matrix"], t_true, landmarks), abs=1e-9)
        p = np.linalg.inv(t_true) @ s["matrix"]
        assert np.allclose(p[:3, :3] @ p[:3, :3].T, np.eye(3), atol=1e-9)
        moved = realus.apply(p, landmarks)
        assert s["initial_mm"] == pytest.approx(np.linalg.norm(moved - landmarks, axis=1).mean(), abs=1e-9)
    # a narrower window is honoured too; the draws are seeded
    narrow = realus.sample_starts(t_true, landmarks, centre, 5, np.random.default_rng(2), error_mm=(20.0, 21.0))
    assert all(20.0 <= s["initial_mm"] <= 21.0 for s in narrow)
    again = realus.sample_starts(t_true, landmarks, centre, 5, np.random.default_rng(2), error_mm=(20.0, 21.0))
    assert all(np.array_equal(x["matrix"], y["matrix"]) for x, y in zip(narrow, again))


def test_error_is_zero_for_the_true_transform(realus):
    rng = np.random.default_rng(11)
    landmarks = rng.uniform(-30, 30, size=(15, 3))
    t_true = realus.rigid_matrix([0.1, 0.2, -0.05], [4.0, 5.0, -6.0], [1.0, 2.0, 3.0])
    assert realus.landmark_error(t_true, t_true, landmarks) == pytest.approx(0.0, abs=1e-12)
    shifted = t_true.copy()
    shifted[:3, 3] += [0.0, 3.0, 4.0]
    assert realus.landmark_error(shifted, t_true, landmarks) == pytest.approx(5.0, abs=1e-9)


def test_virtual_landmarks_lie_inside_the_eroded_field_of_view(realus):
    grid = Grid.from_geometry((40, 40, 40), (0.5, 0.5, 0.5), (10.0, -5.0, 3.0))
    pts = grid.world_points()
    inside = np.linalg.norm(pts - grid.center, axis=-1) < 8.0
    image = Image(inside.astype(np.float32), grid)
    x = realus.virtual_landmarks(image, realus.fov_mask(image), np.random.default_rng(0), 15)
    assert len(x) == 15
    assert np.all(np.linalg.norm(x - grid.center, axis=1) < 8.0 - 5.0 + 0.5)


def test_method_names(realus):
    assert realus.expand_methods(["disa-global", "lc2-local"], [0.5, 1.0]) == [
        "disa-global", "lc2-local", "disa-global@0.5", "disa-global@1"]
    assert realus.parse_method("mind-global@0.5", 1.0) == {"mode": "rigid", "similarity": "mind", "search": "global",
                                                           "spacing_mm": 0.5}
    assert "spacing_mm" not in realus.parse_method("disa-global", 1.0)
    assert realus.parse_method("lc2-local", 1.5)["spacing_mm"] == 1.5
    with pytest.raises(SystemExit):
        realus.parse_method("lc2-local@1", 1.0)
    assert realus.parse_method("disa-global@0.5+interpolated", 1.0)["finest_points"] == "interpolated"
    assert "finest_points" not in realus.parse_method("disa-global", 1.0)
    with pytest.raises(SystemExit):
        realus.parse_method("disa-global+dense", 1.0)


def test_resolution_rigid_fit_and_errors(resolution):
    rng = np.random.default_rng(4)
    fixed = rng.normal(scale=10.0, size=(6, 3))
    truth = load_benchmark_module("bench_disa_realus").rigid_matrix([0.1, -0.2, 0.15], [5.0, -2.0, 9.0],
                                                                    [1.0, 0.0, 2.0])
    moving = fixed @ truth[:3, :3].T + truth[:3, 3]
    assert resolution.mean_error(truth, fixed, moving) == pytest.approx(0.0, abs=1e-9)
    assert np.allclose(resolution.rigid_fit(fixed, moving), truth, atol=1e-9)
    noisy = moving + rng.normal(scale=0.5, size=moving.shape)
    fit = resolution.rigid_fit(fixed, noisy)
    assert resolution.mean_error(fit, fixed, noisy) <= resolution.mean_error(truth, fixed, noisy) + 1e-9


def test_resolution_verdict_and_spacing_selection(resolution):
    assert resolution.verdict(1.05, 1.0)["ok"] and not resolution.verdict(1.5, 1.0)["ok"]
    assert resolution.verdict(0.5, 0.25)["ok"]  # 0.25 mm worse: at the floor
    assert not resolution.verdict(float("nan"), 1.0)["ok"]
    size, spacing, capped = resolution.capped((0.3, 0.3, 0.3), 60.0, 1_000_000)
    assert capped and np.prod(size) <= 1_000_000 and spacing[0] > 0.3
    assert np.allclose(np.array(size) * np.array(spacing), 60.0)
    fixed = Image(np.zeros((50, 50, 50), np.float32), Grid.from_geometry((50, 50, 50), (0.5, 0.5, 0.5)))
    moving = Image(np.zeros((40, 60, 60), np.float32), Grid.from_geometry((40, 60, 60), (0.5, 0.5, 1.0)))
    kept, skipped = resolution.spacings_for({"fixed": fixed, "moving": moving}, [0.3, 0.5, 0.75, 1.0], 120**3)
    assert kept == [0.5, 0.75, 1.0] and set(skipped) == {0.3}
    kept, skipped = resolution.spacings_for({"fixed": fixed, "moving": moving}, [0.5, 1.0], 50**3)
    assert kept == [1.0] and "working grid" in skipped[0.5]
    cfg, notes = resolution.case_config(0.5, 60.0, 3, 8_000_000)
    assert cfg.fixed_spacing == (0.5, 0.5, 0.5) and cfg.fixed_size == (120, 120, 120) and not notes
    assert cfg.moving_spacing == (0.5, 0.5, 1.0) and cfg.sector_radius_mm == pytest.approx(53.0)
