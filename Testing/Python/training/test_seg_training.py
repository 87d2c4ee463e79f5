"""Training of the segmentation networks: it learns (a tiny network segments unseen ball images on other grids), runs
are deterministic for a seed, a resumed run equals an uninterrupted one, the time budget stops a run, the sidecar
holds what re-trains it, and the split never loads the test cases."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.segmentation.predict import predict_gland
from MMRegistrationLib.training.seg import left_right_flip, new_network, sample_image, train_segmentation
from MMRegistrationLib.training.seg_config import SegTrainingConfig
from MMRegistrationLib.training.seg_data import make_seg_case
from seg_fixtures import TINY, ball_image, train_tiny_network


def _cases(count: int = 3) -> list:
    return [make_seg_case(f"ball{k}", *ball_image(k, (1.5, 1.2, 2.0), (5 * k, 0, 10)), "test") for k in range(count)]


def _config(**changes) -> SegTrainingConfig:
    return SegTrainingConfig(**{**dict(network=replace(TINY, modality="trus"), iterations=12, validate_every=4,
                                       precision="float32", learning_rate=5e-3), **changes})


def _weights(net) -> list:
    return [t.detach().clone() for t in net.state_dict().values()]


def _train(config, steps, **kwargs):
    torch.set_num_threads(1)
    net = new_network(config)
    cases = _cases()
    state = train_segmentation(net, cases[:2], cases[2:], config, steps, "cpu", Monitor.wrap(None), **kwargs)
    return net, state


def test_a_tiny_network_learns_to_segment_unseen_images_on_other_grids():
    net, config = train_tiny_network("trus")
    for seed, spacing, angles in ((300, (0.6, 0.7, 1.4), (15, -10, 30)), (301, (2.0, 1.0, 1.0), (0, 20, 45))):
        image, gland = ball_image(seed, spacing, angles, center=(-20.0, 15.0, -60.0))
        mask = predict_gland(net, config.network, image).mask.array > 0
        assert 2 * np.count_nonzero(mask & gland) / (mask.sum() + gland.sum()) > 0.85


def test_same_seed_same_weights_and_another_seed_differs():
    a, _ = _train(_config(), 6)
    b, _ = _train(_config(), 6)
    c, _ = _train(_config(seed=1), 6)
    assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b)))
    assert not all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(c)))


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    config = _config()
    whole, whole_state = _train(config, 12)
    checkpoint = tmp_path / "ckpt.pt"
    _train(config, 8, checkpoint=checkpoint)  # stopped after 8 steps (a checkpoint at step 8)
    resumed, resumed_state = _train(config, 12, checkpoint=checkpoint, resume=True)
    def values(log):
        return [{k: v for k, v in entry.items() if k != "seconds"} for entry in log]

    assert resumed_state.step == 12 and values(resumed_state.log) == values(whole_state.log)
    assert all(torch.equal(x, y) for x, y in zip(_weights(whole), _weights(resumed)))


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    checkpoint = tmp_path / "ckpt.pt"
    _train(_config(), 4, checkpoint=checkpoint)
    with pytest.raises(InputError, match="--resume"):
        _train(_config(learning_rate=1e-2), 8, checkpoint=checkpoint, resume=True)


def test_the_time_budget_stops_the_run_with_a_validated_state():
    _, state = _train(_config(), 1000, deadline=0.0)
    assert state.stopped_by_budget and state.step == 1 and state.best_step == 1 and len(state.log) == 1


def test_augmented_samples_move_the_image_and_its_gland_together():
    case = _cases(1)[0]
    config = _config(gamma_range=(1.0, 1.0))
    for step in range(4):
        image, target = sample_image(case, config, np.random.default_rng([0, step]))
        bright = (image[0] > 0.5).numpy()
        inside = (target[0] > 0.5).numpy()
        assert 2 * np.count_nonzero(bright & inside) / (bright.sum() + inside.sum()) > 0.9


def test_the_left_right_flip_mirrors_the_l_axis_about_the_centre():
    flip = left_right_flip(np.array([10.0, 5.0, -3.0]))
    point = np.array([13.0, 7.0, 1.0, 1.0])
    assert np.allclose(flip @ point, [7.0, 7.0, 1.0, 1.0]) and np.allclose(flip @ flip, np.eye(4))


def test_no_training_or_validation_image_is_refused():
    with pytest.raises(InputError, match="--data"):
        train_segmentation(new_network(_config()), [], _cases(1), _config(), 2, "cpu", Monitor.wrap(None))


def test_an_empty_gland_is_refused():
    image, gland = ball_image(0)
    with pytest.raises(InputError, match="empty"):
        make_seg_case("empty", image, np.zeros_like(gland), "test")


def test_train_seg_reads_a_cohort_folder_and_writes_weights_sidecar_and_log(tmp_path, capsys):
    """Three case folders: one trains, one validates, one is the untouched test part; two steps write NAME.pt, its
    sidecar (data, split, the command that repeats the run) and the log, and remove the checkpoint."""
    import json

    from MMRegistrationLib.cli.main import main
    from MMRegistrationLib.core.image import Image
    from MMRegistrationLib.io import write_image

    cohort = tmp_path / "cohort"
    for index in range(3):
        folder = cohort / f"case{index}"
        folder.mkdir(parents=True)
        for side, angles in (("fixed", (0, 0, 10)), ("moving", (5, -5, 0))):
            image, gland = ball_image(index, (1.5, 1.5, 2.0), angles)
            write_image(image, folder / f"{side}.nrrd")
            write_image(Image(gland.astype(np.uint8), image.grid), folder / f"{side}_seg.nrrd")
    out = tmp_path / "nets"
    code = main(["train-seg", "--modality", "mr", "--data", str(cohort), "--out", str(out), "--iterations", "2",
                 "--validate-every", "1", "--synthetic-cases", "0", "--grid-size", "16", "--grid-spacing-mm", "6",
                 "--threads", "1", "--precision", "float32", "--quiet"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "prostate_mr.json").read_text())
    training = meta["training"]
    assert meta["model"] == "ProstateSegNet" and meta["config"]["modality"] == "mr" and meta["config"]["grid_size"] == 16
    assert training["data"]["train"] == ["case0"] and training["data"]["validation"] == ["case1"]
    assert training["data"]["test_not_used"] == ["case2"]
    assert training["reproduce"].startswith("mmreg train-seg --modality mr") and training["reproduce"].endswith(
        "--iterations 2") and "--threads 1" in training["reproduce"]
    assert len(training["log"]) == 2 and (out / "prostate_mr_log.csv").read_text().startswith(
        "iteration,loss,validation_dice,seconds")
    assert (out / "prostate_mr_log.png").is_file() and not (out / ".prostate_mr.checkpoint.pt").exists()


@pytest.mark.parametrize("extra, argument", [
    (["--grid-size", "20"], "--grid-size"),
    (["--minutes", "0"], "--minutes"),
    (["--resume"], "--resume"),
    (["--name", "../x"], "--name"),
])
def test_train_seg_bad_options_exit_2_naming_them(tmp_path, capsys, extra, argument):
    from MMRegistrationLib.cli.main import main

    code = main(["train-seg", "--modality", "trus", "--data", str(tmp_path), "--out", str(tmp_path / "o"), *extra])
    assert code == 2 and argument in capsys.readouterr().err


def test_train_seg_refuses_a_folder_without_cases(tmp_path, capsys):
    from MMRegistrationLib.cli.main import main

    assert main(["train-seg", "--modality", "trus", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--data" in capsys.readouterr().err and not (tmp_path / "o").exists()
