"""Segmentation weights and the one-call segmentation: checked loading (missing, corrupted, another modality's),
no gland found is an error naming the image, the other modality's network hints at a modality mix-up, and the
record written to result.json."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.segmentation.predict import prediction_record, segment_image
from MMRegistrationLib.segmentation.weights import default_segmentation_weights, load_segmentation_net
from seg_fixtures import ball_image, save_tiny_weights, silenced


def test_the_networks_folder_follows_the_environment(tiny_seg_networks):
    assert default_segmentation_weights("mr") == tiny_seg_networks / "prostate_mr.pt"
    network, config, meta = load_segmentation_net("mr")
    assert config.modality == "mr" and meta["model"] == "ProstateSegNet"


def test_segment_image_finds_the_gland_and_records_it(tiny_seg_networks):
    image, gland = ball_image(7, (0.8, 1.1, 2.2), (10, -20, 35))
    predicted = segment_image(image, "trus")
    mask = predicted.mask.array > 0
    assert 2 * np.count_nonzero(mask & gland) / (mask.sum() + gland.sum()) > 0.85
    record = prediction_record(predicted, "trus")
    assert record["predicted"] and record["modality"] == "trus" and 25 < record["volume_ml"] < 45
    assert record["weights_sha256"] == json.loads((tiny_seg_networks / "prostate_trus.json").read_text())["sha256"]


def test_missing_and_corrupted_weights_are_input_errors(tmp_path, tiny_seg_dir):
    with pytest.raises(InputError, match="not found"):
        load_segmentation_net("trus", tmp_path / "absent.pt")
    broken = tmp_path / "prostate_trus.pt"
    shutil.copy(tiny_seg_dir / "prostate_trus.pt", broken)
    shutil.copy(tiny_seg_dir / "prostate_trus.json", tmp_path / "prostate_trus.json")
    with open(broken, "r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(InputError, match="corrupted"):
        load_segmentation_net("trus", broken, argument="--weights")


def test_the_other_modalitys_weights_are_refused_naming_the_modality(tiny_seg_dir):
    with pytest.raises(InputError, match="segments MR images, not TRUS"):
        load_segmentation_net("trus", tiny_seg_dir / "prostate_mr.pt")


def test_no_gland_found_names_the_image_and_the_other_networks_guess(tmp_path, tiny_seg_dir, monkeypatch):
    from seg_fixtures import train_tiny_network

    net, config = train_tiny_network("trus")
    save_tiny_weights(tmp_path, "trus", silenced(net), config)  # this TRUS network finds nothing
    shutil.copy(tiny_seg_dir / "prostate_mr.pt", tmp_path / "prostate_mr.pt")
    shutil.copy(tiny_seg_dir / "prostate_mr.json", tmp_path / "prostate_mr.json")
    monkeypatch.setenv("MMREG_SEGMENTATION_DIR", str(tmp_path))
    image, _ = ball_image(3)
    with pytest.raises(InputError) as caught:
        segment_image(image, "trus", argument="--image", modality_argument="--modality")
    assert caught.value.argument == "--image"
    assert "no prostate found" in str(caught.value) and "is this a MR image? (--modality trus" in str(caught.value)


def test_an_image_without_a_gland_is_an_input_error(tiny_seg_networks):
    image, _ = ball_image(4)
    flat = image.with_array(np.full(image.array.shape, 40.0, dtype=np.float32))
    with pytest.raises(InputError, match="no prostate found"):
        segment_image(flat, "trus")


def test_a_damaged_other_network_gives_no_hint_and_the_error_stands(tmp_path, tiny_seg_dir, monkeypatch):
    from seg_fixtures import train_tiny_network

    net, config = train_tiny_network("trus")
    save_tiny_weights(tmp_path, "trus", silenced(net), config)
    shutil.copy(tiny_seg_dir / "prostate_mr.json", tmp_path / "prostate_mr.json")
    (tmp_path / "prostate_mr.pt").write_bytes(b"not a network")
    monkeypatch.setenv("MMREG_SEGMENTATION_DIR", str(tmp_path))
    with pytest.raises(InputError) as caught:
        segment_image(ball_image(3)[0], "trus")
    assert caught.value.argument == "--image" and "check that the image shows the prostate" in str(caught.value)
