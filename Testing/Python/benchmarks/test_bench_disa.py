"""benchmarks/bench_disa.py: the capture-range pose sampler (bins, determinism, composition direction).

No registration runs here; the benchmark itself is run by hand (benchmarks/README.md).
"""

from __future__ import annotations


import numpy as np
import pytest

from conftest import load_benchmark_module
from MMRegistrationLib.spatial.affine import AffineTransform





@pytest.fixture(scope="module")
def bench():
    return load_benchmark_module("bench_disa")


@pytest.fixture
def landmarks():
    rng = np.random.default_rng(3)
    fixed = rng.normal(scale=15.0, size=(6, 3)) + [10.0, -20.0, 40.0]
    # a rigid reference (rotation + translation) that maps the fixed landmarks exactly onto the moving ones
    reference = AffineTransform.from_rigid([0.1, -0.2, 0.15], [12.0, -7.0, 30.0], [5.0, 5.0, 5.0])
    moving = fixed @ reference.matrix[:3, :3].T + reference.matrix[:3, 3]
    return reference, fixed, moving


def test_translation_offset_gives_its_length(bench, landmarks):
    reference, fixed, moving = landmarks
    assert bench.mean_error(reference.matrix, fixed, moving) == pytest.approx(0.0, abs=1e-9)
    d = np.array([3.0, -4.0, 12.0])  # |d| = 13 mm
    pose = bench.initial_pose(reference, bench.perturbation([0.0, 0.0, 0.0], d, fixed.mean(0)))
    assert bench.mean_error(pose.matrix, fixed, moving) == pytest.approx(13.0, abs=1e-9)
    assert pose.source == "fixed" and pose.target == "moving"


def test_composition_is_reference_after_perturbation(bench, landmarks):
    reference, fixed, moving = landmarks
    centre = fixed.mean(0)
    perturb = bench.perturbation([0.0, 0.0, 0.5], [0.0, 0.0, 0.0], centre)
    pose = bench.initial_pose(reference, perturb)
    np.testing.assert_allclose(pose.matrix, reference.matrix @ perturb.matrix, atol=1e-12)
    # the perturbation rotates the fixed space about the fixed centroid: a landmark there stays exact
    mapped_centre = centre @ reference.matrix[:3, :3].T + reference.matrix[:3, 3]
    assert bench.mean_error(pose.matrix, centre[None], mapped_centre[None]) == pytest.approx(0.0, abs=1e-9)
    # the other order (perturbation applied in moving space) would not keep it
    wrong = perturb.matrix @ reference.matrix
    assert bench.mean_error(wrong, centre[None], mapped_centre[None]) > 1.0


def test_starts_land_in_their_bins_and_are_seeded(bench, landmarks):
    reference, fixed, moving = landmarks
    starts = bench.sample_starts(reference, fixed, moving, per_bin=4, seed=[7, 1])
    assert len(starts) == 4 * len(bench.BINS)
    for s in starts:
        lo, hi = bench.BINS[s["bin"]]
        assert lo <= s["initial_mm"] < hi
        assert bench.mean_error(np.array(s["matrix"]), fixed, moving) == pytest.approx(s["initial_mm"])
        assert 0.0 <= s["rotation_deg"] <= 30.0
        # rigid: rotation part orthonormal with det +1
        rot = np.array(s["matrix"])[:3, :3]
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)
    assert [s["bin"] for s in starts] == sorted(s["bin"] for s in starts)
    again = bench.sample_starts(reference, fixed, moving, per_bin=4, seed=[7, 1])
    assert [s["matrix"] for s in again] == [s["matrix"] for s in starts]
    other = bench.sample_starts(reference, fixed, moving, per_bin=4, seed=[7, 2])
    assert [s["matrix"] for s in other] != [s["matrix"] for s in starts]
    # each bin has its own stream: more starts per bin extend, not change, the first ones
    more = bench.sample_starts(reference, fixed, moving, per_bin=5, seed=[7, 1])
    for b in range(len(bench.BINS)):
        first = [s["matrix"] for s in more if s["bin"] == b][:4]
        assert first == [s["matrix"] for s in starts if s["bin"] == b]


def test_unfillable_bin_is_an_error(bench, landmarks):
    reference, fixed, moving = landmarks
    with pytest.raises(RuntimeError, match="poses"):
        bench.sample_starts(reference, fixed, moving, per_bin=1, seed=0, bins=((5.0, 5.0),), max_tries=50)


def test_points_error_matches_the_matrix_error(bench, landmarks):
    reference, fixed, moving = landmarks
    pose = bench.initial_pose(reference, bench.perturbation([0.1, 0.0, -0.2], [4.0, 1.0, -2.0], fixed.mean(0)))
    assert bench.mean_error_points(pose.map_points_np(fixed), moving) == pytest.approx(
        bench.mean_error(pose.matrix, fixed, moving), abs=1e-9)


def test_deformable_peer_is_left_out_of_the_rigid_reference_error(bench, landmarks, monkeypatch):
    """best_ref (and so the convergence threshold) comes from the rigid methods: convexAdam, deformable, can go
    below any rigid alignment and must not tighten the threshold for the others."""
    from types import SimpleNamespace

    _, fixed, moving = landmarks
    finals = {"disa-local": 6.0, "convexadam": 1.0}
    monkeypatch.setattr(bench, "run_method", lambda name, *a, **k: (finals[name], 1.0, {}))
    case = {"name": "c", "source": "test", "fixed_landmarks": fixed, "moving_landmarks": moving}
    args = SimpleNamespace(starts_per_bin=0, seed=0, max_rotation_deg=30.0, extra={}, threads=1)
    out = bench.run_case(case, 0, ["disa-local", "convexadam"], args)
    assert out["best_ref_mm"] == pytest.approx(6.0)
    assert out["threshold_mm"] == pytest.approx(9.0)
    assert out["from_reference"]["convexadam"]["final_mm"] == pytest.approx(1.0)
    only = bench.run_case(case, 0, ["convexadam"], args)  # alone, it is its own reference
    assert only["best_ref_mm"] == pytest.approx(1.0)
    assert "convexadam" in bench.METHODS and "convexadam" in bench.DEFORMABLE_METHODS
