"""The shipped segmentation networks: each loads with its sidecar (config, data, split, command, versions, sha256),
segments the bundled sample case and DeepReg test pairs it never saw, drives a fully automatic registration end to
end through the CLI, and (slow) its recorded command repeats the first logged validation of the shipped run."""

from __future__ import annotations

import json
import numpy as np
import pytest
from MMRegistrationLib.cli.main import main
from MMRegistrationLib.io.images import read_image
from MMRegistrationLib.io.segmentations import read_segmentation
from MMRegistrationLib.resources import sample_case_paths
from MMRegistrationLib.segmentation.predict import predict_gland
from MMRegistrationLib.segmentation.weights import default_segmentation_weights, load_segmentation_net

from conftest import SHARED_DATA, rerun_recorded_command

MODALITIES = ("trus", "mr")
SIDE = {"trus": "fixed", "mr": "moving"}
DEEPREG = SHARED_DATA / "deepreg_mrus"


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.parametrize("modality", MODALITIES)
def test_shipped_weights_carry_their_sidecar_and_load(modality):
    network, config, meta = load_segmentation_net(modality)
    training = meta["training"]
    assert config.modality == modality and training["config"]["network"] == meta["config"]
    data = training["data"]
    assert set(data["test_not_used"]).isdisjoint(data["train"] + data["validation"])
    assert data["test_not_used"] == [f"obs{n:03d}" for n in range(70, 80)]
    assert training["reproduce"].startswith(f"mmreg train-seg --modality {modality}")
    assert "--iterations" in training["reproduce"] and "--threads 1" in training["reproduce"]
    assert {"torch", "monai", "numpy", "python"} <= set(training["versions"])
    assert len(meta["sha256"]) == 64 and training["best"]["iteration"] > 0
    path = default_segmentation_weights(modality)
    assert path.with_name(f"{path.stem}_log.csv").is_file() and path.with_name(f"{path.stem}_log.png").is_file()


@pytest.mark.parametrize("modality", MODALITIES)
def test_the_sample_case_is_segmented_from_the_cli(modality, tmp_path):
    case = sample_case_paths()
    out = tmp_path / "seg.seg.nrrd"
    assert main(["segment", "--image", str(case[SIDE[modality]]), "--modality", modality, "--out", str(out),
                 "--quiet"]) == 0
    given = read_segmentation(case[f"{SIDE[modality]}_seg"]).labelmap.array == 1
    assert _dice(read_segmentation(out).labelmap.array == 1, given) > 0.75


@pytest.mark.skipif(not DEEPREG.is_dir(), reason=f"shared data not found at {DEEPREG}")
@pytest.mark.parametrize("modality", MODALITIES)
def test_deepreg_test_pairs_never_seen_in_training_are_segmented(modality):
    from MMRegistrationLib.training.net_data import read_label_channels

    network, config, _ = load_segmentation_net(modality)
    scores = []
    for name in ("obs070", "obs074", "obs078"):
        image = read_image(DEEPREG / f"{SIDE[modality]}_images" / f"{name}.nii.gz")
        gland = read_label_channels(DEEPREG / f"{SIDE[modality]}_labels" / f"{name}.nii.gz", image.grid, "labels")[0]
        scores.append(_dice(predict_gland(network, config, image).mask.array > 0, gland))
    assert np.mean(scores) > 0.7, scores


def test_a_fully_automatic_registration_of_the_sample_case(tmp_path):
    """Predicted glands on both images -> rigid-mask; judged against the given segmentations."""
    case = sample_case_paths()
    runs = {}
    for method in ("rigid-mask", "none"):
        out = tmp_path / method
        assert main(["register", "--method", method, "--init", "com" if method == "none" else "rigid-mask",
                     "--fixed", str(case["fixed"]), "--moving", str(case["moving"]), "--fixed-seg", "auto",
                     "--moving-seg", "auto", "--out", str(out), "--quiet"]) == 0
        report = tmp_path / f"{method}.json"
        assert main(["evaluate", "--fixed-seg", str(case["fixed_seg"]), "--moving-seg", str(case["moving_seg"]),
                     "--transform", str(out / "transform.h5"), "--no-jacobian", "--quiet", "--out",
                     str(report)]) == 0
        runs[method] = json.loads(report.read_text())["labels"][0]["dice"]
    record = json.loads((tmp_path / "rigid-mask" / "result.json").read_text())
    assert set(record["predicted_segmentations"]) == {"fixed", "moving"}
    assert runs["rigid-mask"] > 0.8, runs


@pytest.mark.slow
@pytest.mark.parametrize("modality", MODALITIES)
def test_the_recorded_command_repeats_the_shipped_runs_first_validation(modality, tmp_path):
    """Re-run the recorded command up to its first logged validation: the same loss and validation Dice, bit for
    bit (the run is deterministic for its seed and thread count)."""
    from MMRegistrationLib.cli.train_seg import add_parser

    if not DEEPREG.is_dir():
        pytest.skip(f"shared data not found at {DEEPREG}")
    meta = load_segmentation_net(modality)[2]["training"]
    first = meta["log"][0]
    rerun_recorded_command(meta["reproduce"], add_parser, first["iteration"], tmp_path, DEEPREG)
    repeated = json.loads((tmp_path / f"prostate_{modality}.json").read_text())["training"]["log"][0]
    for key in ("loss", "validation_dice"):
        assert repeated[key] == first[key], key


@pytest.mark.parametrize("side, wrong, right", [("moving", "trus", "MR"), ("fixed", "mr", "TRUS")])
def test_the_wrong_modality_is_told(side, wrong, right, tmp_path, capsys):
    """The sample case's MR segmented as TRUS (and the other way round): the warnings say which modality the image
    looks like (the other network finds a plausible gland where this one's is implausible)."""
    case = sample_case_paths()
    out = tmp_path / "seg.nrrd"
    assert main(["segment", "--image", str(case[side]), "--modality", wrong, "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"is this a {right} image? (--modality {wrong} was given)" in err
