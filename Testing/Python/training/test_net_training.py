"""Training of the registration networks: a tiny network overfits one synthetic pair with a known deformation and
recovers it; runs are deterministic for a seed; a resumed run equals an uninterrupted one; the loss terms are each
zero where they should be."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.training.net import (
    collate,
    loss_terms,
    new_network,
    predict_displacement,
    sample_pair,
    train_network,
    validate,
)
from MMRegistrationLib.training.net_config import preset_config
from MMRegistrationLib.training.net_data import make_case

CENTRE = np.array([4.0, -6.0, 20.0])
SHRINK = 0.75  # the moving gland is the fixed one shrunk about its centre: fixed -> moving T(x) = c + 0.75 (x - c)


def _ellipsoid(grid: Grid, radii, centre=CENTRE) -> np.ndarray:
    return (((grid.world_points() - centre) / np.asarray(radii)) ** 2).sum(-1) <= 1.0


def _pair(scale: float = SHRINK):
    """Fixed: an ellipsoidal gland and two landmark blobs; moving: the same shrunk by ``scale`` about the centre,
    on another (anisotropic, shifted) grid."""
    fixed_grid = Grid.from_geometry((24, 28, 28), (1.6, 1.6, 2.0), CENTRE - [22.4, 22.4, 24.0])
    moving_grid = Grid.from_geometry((40, 40, 30), (1.5, 1.2, 1.1), CENTRE - [16.5, 24.0, 29.0])
    radii = np.array([15.0, 12.0, 13.0])
    blobs = [np.array([6.0, 0.0, 0.0]), np.array([-5.0, 4.0, 3.0])]
    fixed_ch = [_ellipsoid(fixed_grid, radii)] + [_ellipsoid(fixed_grid, [3.0] * 3, CENTRE + b) for b in blobs]
    moving_ch = [_ellipsoid(moving_grid, radii * scale)] + [
        _ellipsoid(moving_grid, [3.0 * scale] * 3, CENTRE + scale * b) for b in blobs]
    fixed = Image(np.where(fixed_ch[0], 120.0, 30.0).astype(np.float32), fixed_grid)
    moving = Image(np.where(moving_ch[0], 60.0, 200.0).astype(np.float32), moving_grid)
    return make_case("pair", fixed, moving, fixed_ch, moving_ch, "test")


def _config(**changes):
    base = dict(iterations=200, batch_size=1, learning_rate=3e-3, validate_every=50, rotation_deg=0.0,
                scale_fraction=0.0, translation_mm=0.0, synthetic_cases=0, precision="float32")
    network = dict(channels=(4, 8, 8), grid_size=16, grid_spacing_mm=3.0, ramp_mm=6.0)
    return preset_config(changes.pop("preset", "both_masks"), network=network, **{**base, **changes})


def _displacement_mm(net, case, config) -> tuple:
    sample = sample_pair(case, net.config, None, config)
    batch = collate([sample], net, config)
    from MMRegistrationLib.registration.net_geometry import grid_window, voxels_to_world

    with torch.no_grad():
        disp, _ = predict_displacement(net, batch["inputs"], grid_window(sample["grid"], net.config.ramp_mm),
                                       config.precision)
    return voxels_to_world(disp, sample["grid"])[0].numpy(), sample["grid"]


@pytest.mark.slow
def test_a_tiny_network_overfits_one_pair_and_recovers_its_known_field():
    case = _pair()
    config = _config(iterations=300)
    net = new_network(config)
    assert validate(net, [case], config, "cpu")["dice"] < 0.8
    state = train_network(net, [case], [case], config, config.iterations, "cpu", Monitor())
    assert state.best_metrics["dice"] > 0.9, state.log
    field, grid = _displacement_mm(net, case, config)
    # the true fixed -> moving displacement is (SHRINK - 1)(x - c): check it on the fixed gland's surface band
    points = grid.world_points()
    radial = np.linalg.norm((points - CENTRE) / [15.0, 12.0, 13.0], axis=-1)
    band = (radial > 0.8) & (radial < 1.1)
    truth = (SHRINK - 1.0) * (points - CENTRE)
    error = np.linalg.norm(field[band] - truth[band], axis=-1)
    assert np.median(error) < 1.5, f"median error {np.median(error):.2f} mm (true displacement up to 3.8 mm)"
    # (inside the gland the gland-only losses of this preset say nothing; the band is what they determine)


def test_training_is_deterministic_for_a_seed_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    case = _pair()
    config = _config(iterations=4, validate_every=2, rotation_deg=4.0, translation_mm=2.0, batch_size=2,
                     precision="bfloat16")

    def run(iterations, checkpoint=None, resume=False):
        net = new_network(config)
        state = train_network(net, [case], [case], config, iterations, "cpu", Monitor(), checkpoint, resume)
        return net, state

    first, state_first = run(4)
    second, _ = run(4)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    checkpoint = tmp_path / "state.pt"
    run(2, checkpoint)
    resumed, state_resumed = run(4, checkpoint, resume=True)
    assert [e["loss"] for e in state_resumed.log] == [e["loss"] for e in state_first.log]
    for key, value in first.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    other = replace(config, seed=1)
    net = new_network(other)
    train_network(net, [case], [case], other, 4, "cpu", Monitor())
    assert not torch.equal(net.state_dict()["decoder.heads.0.weight"], first.state_dict()["decoder.heads.0.weight"])


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    from MMRegistrationLib.core.errors import InputError

    case = _pair()
    config = _config(iterations=2, validate_every=2)
    checkpoint = tmp_path / "state.pt"
    train_network(new_network(config), [case], [case], config, 2, "cpu", Monitor(), checkpoint)
    other = replace(config, learning_rate=1e-4)
    with pytest.raises(InputError, match="--resume"):
        train_network(new_network(other), [case], [case], other, 4, "cpu", Monitor(), checkpoint, resume=True)


@pytest.mark.parametrize("preset", ["mix_plus", "mdsc", "sdm", "srml", "both_masks"])
def test_every_similarity_term_is_lowest_for_the_aligned_pair(preset):
    """Each preset's label and image terms are smaller for a pair registered by its true field than for a pair
    that is not (the identity here): they pull towards the truth."""
    config = _config(preset=preset)
    aligned, shrunk = _pair(scale=1.0), _pair()
    net = new_network(config)
    values = []
    for case in (aligned, shrunk):
        batch = collate([sample_pair(case, net.config, None, config)], net, config)
        terms = loss_terms(batch, torch.zeros(1, 3, 16, 16, 16), config, 3.0)
        values.append({k: float(v) for k, v in terms.items() if k not in ("bending", "gradient")})
    for name in values[0]:
        assert values[0][name] < values[1][name], (name, values)


def test_train_net_reads_a_cohort_folder_and_writes_weights_sidecar_and_log(tmp_path, capsys):
    """Three case folders (fixed.*, moving.*, fixed_seg.*, moving_seg.*, landmarks): one trains, one validates, one
    is the untouched test part; two steps write NAME.pt, its sidecar and the log, and remove the checkpoint."""
    import json

    from MMRegistrationLib.cli.main import main
    from MMRegistrationLib.io import write_image, write_landmarks_csv

    cohort = tmp_path / "cohort"
    for index, scale in enumerate((0.75, 0.8, 0.85)):
        folder = cohort / f"case{index}"
        folder.mkdir(parents=True)
        case = _pair(scale)
        v = case.volumes
        for side, grid in (("fixed", v.fixed_grid), ("moving", v.moving_grid)):
            labels = getattr(v, f"{side}_labels")[0].numpy().astype(np.uint8)
            write_image(Image(labels * 100.0 + 20.0, grid), folder / f"{side}.nrrd")
            write_image(Image(labels, grid), folder / f"{side}_seg.nrrd")
        write_landmarks_csv(np.array([CENTRE + [6.0, 0, 0]]), folder / "fixed_landmarks.csv")
        write_landmarks_csv(np.array([CENTRE + [6.0 * scale, 0, 0]]), folder / "moving_landmarks.csv")
    out = tmp_path / "nets"
    code = main(["train-net", "--data", str(cohort), "--out", str(out), "--name", "mine", "--iterations", "2",
                 "--validate-every", "1", "--synthetic-cases", "0", "--threads", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "mine.json").read_text())
    assert meta["training"]["data"]["layout"] == "cohort"
    assert meta["training"]["data"]["train"] == ["case0"] and meta["training"]["data"]["validation"] == ["case1"]
    assert meta["training"]["data"]["test_not_used"] == ["case2"]
    assert meta["training"]["reproduce"].endswith("--iterations 2") and "--threads 1" in meta["training"]["reproduce"]
    assert len(meta["training"]["log"]) == 2
    assert (out / "mine_log.csv").read_text().startswith("iteration,loss,validation_dice")
    assert (out / "mine_log.png").is_file() and not (out / ".mine.checkpoint.pt").exists()
