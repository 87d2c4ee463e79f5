"""DISA training: LC2-targeted sampler, augmentation that keeps the target, a tiny seeded training, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import expect_input_error
from MMRegistrationLib.core.errors import Cancelled
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.networks.disa import DISANet
from MMRegistrationLib.similarity.disa import PreparedVolume, normalize_intensities
from MMRegistrationLib.similarity.lc2 import extract_patch, gradient_magnitude, lc2_map
from MMRegistrationLib.training.disa import agreement, predict, train_network
from MMRegistrationLib.training.disa_config import TrainingConfig
from MMRegistrationLib.training.disa_data import VolumePair, make_training_volume
from MMRegistrationLib.training.disa_patches import PatchBatcher, PatchPairs, PatchPairSampler

SHAPE = (34, 36, 38)


def _prepared(array: np.ndarray) -> PreparedVolume:
    mask = np.ones(array.shape, dtype=bool)
    return PreparedVolume(normalize_intensities(array, mask), mask, Grid.from_geometry(array.shape, (2.0, 2.0, 2.0)))


@pytest.fixture(scope="module")
def volumes():
    """An MR-like structured volume and a US-like one made of its intensity and gradient magnitude plus noise."""
    rng = np.random.default_rng(0)
    mr = ndimage.gaussian_filter(rng.normal(size=SHAPE), 2.0)
    mr = np.tanh(30.0 * mr)  # piecewise-flat tissues with edges
    grad = gradient_magnitude(torch.tensor(mr)).numpy()
    gain = np.geomspace(0.05, 3.0, SHAPE[2])  # contrast (and so the LC2 weight) grows along x
    us = gain * (0.4 * mr + 1.5 * grad + 0.25 * rng.normal(size=SHAPE))
    return [make_training_volume("us", "us", _prepared(us)), make_training_volume("mr", "mr", _prepared(mr))]


@pytest.fixture(scope="module")
def sampled(volumes):
    sampler = PatchPairSampler(volumes, search_size=64, targets_per_round=16, rng=np.random.default_rng(1))
    return sampler.sample(0, VolumePair(0, 1, "first"), 160)


def _lc2_brute(target_patch: np.ndarray, volume: np.ndarray, gradient: np.ndarray, centre) -> float:
    values = []
    for r in (3, 5, 7):
        u = target_patch[7 - r:8 + r, 7 - r:8 + r, 7 - r:8 + r].ravel()
        design = np.stack([extract_patch(volume, centre, r).ravel(), extract_patch(gradient, centre, r).ravel(),
                           np.ones(u.size)], axis=1)
        coef, *_ = np.linalg.lstsq(design, u, rcond=None)
        values.append(1.0 - (u - design @ coef).var() / u.var())
    return float(np.mean(values))


def test_sampler_targets_are_the_lc2_of_the_pairs_and_spread_over_the_range(volumes, sampled):
    t = sampled.target
    assert len(sampled) == 160 and t.min() >= 0.0 and t.max() <= 1.0
    counts = np.histogram(t, bins=5, range=(0, 1))[0]
    assert (counts > 0).sum() >= 4 and t.std() > 0.15 and t.max() - t.min() > 0.6, counts
    us, mr = volumes
    mr64 = mr.volume.array.astype(np.float64)
    grad = gradient_magnitude(torch.tensor(mr64)).numpy()
    for row in range(0, 160, 23):
        patch = extract_patch(us.volume.array.astype(np.float64), sampled.centre_a[row], 7)
        assert _lc2_brute(patch, mr64, grad, sampled.centre_b[row]) == pytest.approx(float(t[row]), abs=1e-4)


def test_sampler_draws_valid_centres_weighted_by_patch_variance(volumes, sampled):
    us, mr = volumes
    assert np.all(sampled.volume_a == 0) and np.all(sampled.volume_b == 1)
    assert all(us.centres[tuple(c)] for c in sampled.centre_a) and all(mr.centres[tuple(c)] for c in sampled.centre_b)
    w = us.weights
    drawn = w[tuple(sampled.centre_a.T)].mean()
    size_biased = (w**2).sum() / w.sum()  # expected mean weight when drawing proportionally to w
    assert drawn == pytest.approx(size_biased, rel=0.15) and drawn > 1.8 * w[us.centres].mean()


def test_octahedral_augmentation_keeps_the_target_exactly(volumes, sampled):
    pairs = sampled.subset(np.arange(8))
    batcher = PatchBatcher(volumes, TrainingConfig(rotation="octahedral"), torch.Generator().manual_seed(0))
    x = batcher.inputs(pairs, augment=True).double()
    plain = batcher.inputs(pairs, augment=False)
    assert x.shape == (16, 1, 17, 17, 17) and not torch.allclose(x.float(), plain)
    for s in range(8):
        lc2 = lc2_map(x[s, 0], x[8 + s, 0]).values[0, 0, 1, 1, 1]  # centre of the 17^3 inputs
        assert float(lc2) == pytest.approx(float(pairs.target[s]), abs=1e-5)


def test_uniform_rotation_is_the_same_for_both_patches(volumes, sampled):
    same = sampled.subset(np.arange(6))
    same.volume_b, same.centre_b = same.volume_a.copy(), same.centre_a.copy()
    batcher = PatchBatcher(volumes, TrainingConfig(rotation="uniform"), torch.Generator().manual_seed(3))
    x = batcher.inputs(same, augment=True)
    plain = batcher.inputs(same, augment=False)
    for s in range(6):
        r = np.corrcoef(x[s].flatten().numpy(), x[6 + s].flatten().numpy())[0, 1]
        assert abs(r) > 0.99999  # identical up to the independent linear intensity change
        assert abs(np.corrcoef(x[s].flatten().numpy(), plain[s].flatten().numpy())[0, 1]) < 0.999  # rotated


def _train(volumes, pairs, seed=0, iterations=40, cancel=None):
    config = TrainingConfig(batch_size=16, learning_rate=3e-3, warmup_iterations=5, seed=seed)
    torch.manual_seed(seed)
    net = DISANet()
    batcher = PatchBatcher(volumes, config, torch.Generator().manual_seed(seed + 1))
    before = agreement(predict(net, batcher, pairs), pairs.target)["mse"]
    history = train_network(net, batcher, pairs, config, iterations, rng=np.random.default_rng(seed), cancel=cancel,
                            log_every=10)
    after = agreement(predict(net, batcher, pairs), pairs.target)["mse"]
    return net, history, before, after


def test_tiny_training_reduces_the_loss_and_is_deterministic(volumes, sampled):
    net_a, hist_a, before, after = _train(volumes, sampled)
    print(f"mse before {before:.4f} after {after:.4f}")
    assert after < 0.6 * before, (before, after)
    assert hist_a.loss[-1] < hist_a.loss[0]
    net_b, hist_b, _, _ = _train(volumes, sampled)
    assert hist_a.loss == hist_b.loss
    assert all(torch.equal(p, q) for p, q in zip(net_a.state_dict().values(), net_b.state_dict().values()))


def test_training_can_be_cancelled_and_stops_at_a_deadline(volumes, sampled, monitor_clock):
    with pytest.raises(Cancelled):
        _train(volumes, sampled, iterations=5, cancel=lambda: True)
    config = TrainingConfig(batch_size=4)
    # a clock that advances 1 s per reading: the deadline falls a few steps in, however fast this machine is
    history = train_network(DISANet(), PatchBatcher(volumes, config), sampled, config, 50, deadline=10.0)
    assert history.stopped_at is not None and 0 < history.stopped_at < 50
    assert history.iteration and history.iteration[-1] == history.stopped_at, history  # the partial run is logged


@pytest.fixture
def monitor_clock(monkeypatch):
    """``time.perf_counter`` as seen by the training loop: 1, 2, 3, ... seconds (one second per reading)."""
    from types import SimpleNamespace

    from MMRegistrationLib.training import disa as training_disa

    ticks = iter(range(1, 10**6))
    monkeypatch.setattr(training_disa, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))


def test_agreement_metrics_and_config_checks():
    target = np.array([0.1, 0.5, 0.9, 0.3])
    perfect = agreement(target, target)
    assert perfect["mse"] == 0.0 and perfect["pearson"] == pytest.approx(1.0)
    shifted = agreement(target + 0.1, target)
    assert shifted["mse"] == pytest.approx(0.01) and shifted["pearson"] == pytest.approx(1.0)
    expect_input_error(lambda: TrainingConfig(rotation="random"), "rotation")
    expect_input_error(lambda: TrainingConfig(radii=(3, 9)), "radii", "17^3")
    assert len(PatchPairs.empty()) == 0


def test_cli_trains_writes_weights_and_validates(tmp_path, capsys):
    from MMRegistrationLib.cli.main import main

    data, out = tmp_path / "no_real_data", tmp_path / "weights"
    data.mkdir()
    args = ["train-disa", "--iterations", "3", "--samples-per-pair", "24", "--batch-size", "8", "--synthetic-cases",
            "1", "--synthetic-scale", "0.5", "--extra-spacings", "1", "--data", str(data), "--device", "cpu", "--quiet"]
    assert main(args + ["--out", str(out)]) == 0
    side = json.loads((out / "disa_lc2.json").read_text(encoding="utf-8"))
    assert (out / "disa_lc2.pt").is_file() and (out / "training_log.csv").is_file()
    training = side["training"]
    assert training["config"]["iterations"] == 3 and "--iterations 3 --samples-per-pair 24" in training["reproduce"]
    assert "--extra-spacings 1 " in training["reproduce"] and training["config"]["extra_spacings_mm"] == [1.0]
    assert training["metrics"]["validation"]["float"]["n"] > 0 and training["data"]["samples"]["train"] > 0
    names = {"synthetic1000_trus", "synthetic1000_mr", "synthetic1001_trus", "synthetic1001_mr"}
    assert {v["name"] for v in training["data"]["volumes"]} == names | {f"{n}@1mm" for n in names}
    assert {v["spacing_mm"] for v in training["data"]["volumes"]} == {2.0, 1.0}
    capsys.readouterr()
    assert main(["train-disa", "--validate-only", "--out", str(out), "--data", str(data), "--samples-per-pair", "16",
                 "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sha256"] == side["sha256"] and report["heldout_volumes"]["float"]["n"] == 32  # 16 per spacing
    assert set(report["heldout_volumes"]["by_spacing_mm"]) == {"1", "2"} and report["heldout_real_us"] is None
    (out / "disa_lc2.pt").write_bytes(b"broken")
    assert main(["train-disa", "--validate-only", "--out", str(out), "--quiet"]) == 2
    assert "corrupted" in capsys.readouterr().err
    assert main(["train-disa", "--iterations", "0", "--out", str(out), "--quiet"]) == 2
    assert main(["train-disa", "--iterations", "1", "--extra-spacings", "1,x", "--out", str(out), "--quiet"]) == 2
    assert "--extra-spacings" in capsys.readouterr().err
    assert main(["train-disa", "--iterations", "1", "--extra-spacings", "2", "--out", str(out), "--quiet"]) == 2
    assert "--extra-spacings" in capsys.readouterr().err


def test_real_brain_ultrasound_is_found_split_and_cropped(tmp_path):
    """Every ``us_brain_real/*.nrrd`` is a real-US source (sorted), the last ``heldout_real_us`` never train; the
    fine-spacing crop keeps the world position of every voxel and centres on the field of view."""
    import SimpleITK as sitk

    from MMRegistrationLib.core.image import Image
    from MMRegistrationLib.training.disa_data import _pairs_at, brain_us_sources, crop_around_field_of_view

    folder = tmp_path / "us_brain_real"
    folder.mkdir()
    for name in ("resect_us_case03", "resect_us_case01", "resect_us_case02"):
        sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkUInt8), str(folder / f"{name}.nrrd"))
    sources = brain_us_sources(tmp_path)
    assert [s.name for s in sources] == ["resect_us_case01", "resect_us_case02", "resect_us_case03"]
    assert all(s.modality == "us" and s.fov_threshold == 0.0 for s in sources)
    assert brain_us_sources(tmp_path / "absent") == [] and brain_us_sources(None) == []

    grid = Grid.from_geometry((60, 50, 40), (0.5, 0.6, 0.7), (-10.0, 20.0, 5.0),
                              np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    array = np.zeros(grid.shape, np.float32)
    array[30:50, 10:30, 5:25] = 1.0 + np.arange(20)[:, None, None]  # the field of view, off centre
    crop = crop_around_field_of_view(Image(array, grid), 0.0, 8.0)
    assert np.all(np.asarray(crop.array.shape) * grid.spacing[::-1] <= 8.0 + 2 * grid.spacing[::-1])
    corner = crop.grid.index_to_world(np.zeros((1, 3)))
    index = np.round(grid.world_to_index(corner)[0]).astype(int)  # (i, j, k)
    np.testing.assert_array_equal(crop.array, array[index[2]:index[2] + crop.array.shape[0],
                                                    index[1]:index[1] + crop.array.shape[1],
                                                    index[0]:index[0] + crop.array.shape[2]])
    assert crop.array.min() > 0  # inside the field of view

    us = [make_training_volume(n, "us", _prepared(np.random.default_rng(k).normal(size=SHAPE)), source={})
          for k, n in enumerate(("b1", "b2", "trus"))]
    mr = make_training_volume("mr", "mr", _prepared(np.random.default_rng(9).normal(size=SHAPE)), source={})
    volumes = us + [mr]
    pairs = _pairs_at(volumes, {"b1": 0, "b2": 1, "trus": 2, "mr": 3}, [], {"b1": "train", "b2": "heldout_real_us"})
    assert {(volumes[p.first].name, p.split) for p in pairs} == {("b1", "train"), ("b2", "heldout_real_us"),
                                                                  ("trus", "train")}
    assert all(volumes[p.second].name == "mr" and p.target == "first" for p in pairs)
