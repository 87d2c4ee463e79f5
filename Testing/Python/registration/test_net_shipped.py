"""The shipped registration networks: each loads with its sidecar (config, data, split, command, versions,
sha256), registers the bundled sample case end to end through the CLI, and (slow) its recorded command repeats the
first logged validation of the shipped run exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from MMRegistrationLib.cli.main import main
from MMRegistrationLib.networks.registration import load_registration_net, networks_dir
from MMRegistrationLib.resources import sample_case_paths

from conftest import rerun_recorded_command

SHIPPED = ("mix_plus", "both_masks", "srml")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_carry_their_sidecar_and_load(name):
    path = networks_dir() / f"{name}.pt"
    network, meta = load_registration_net(path)
    training = meta["training"]
    assert training["config"]["network"] == meta["config"] == network.config.to_dict()
    assert set(training["data"]["test_not_used"]).isdisjoint(training["data"]["train"] + training["data"]["validation"])
    assert training["reproduce"].startswith("mmreg train-net") and "--iterations" in training["reproduce"]
    assert f"--preset {name}" in training["reproduce"] and "--threads" in training["reproduce"]
    assert {"torch", "monai", "numpy", "python"} <= set(training["versions"])
    assert len(meta["sha256"]) == 64 and training["best"]["iteration"] > 0
    assert (networks_dir() / f"{name}_log.csv").is_file() and (networks_dir() / f"{name}_log.png").is_file()


def _evaluate(case: dict, transform, out) -> dict:
    assert main(["evaluate", "--fixed-seg", str(case["fixed_seg"]), "--moving-seg", str(case["moving_seg"]),
                 "--fixed-landmarks", str(case["fixed_landmarks"]), "--moving-landmarks", str(case["moving_landmarks"]),
                 "--transform", str(transform), "--no-jacobian", "--quiet", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    return {"dice": report["labels"][0]["dice"], "tre": report["tre"]["tre_mean_mm"]}


def test_the_default_network_registers_the_sample_case_from_the_mr_mask_alone(tmp_path):
    """The sample case (a generated case never trained on) with the MR mask only: the network improves on its start
    (``--init center``: gland Dice 0.65, TRE 7.0 mm)."""
    case = sample_case_paths()
    runs = {}
    for method in ("net", "none"):
        out = tmp_path / method
        code = main(["register", "--method", method, "--init", "center", "--fixed", str(case["fixed"]), "--moving",
                     str(case["moving"]), "--moving-seg", str(case["moving_seg"]), "--out", str(out), "--quiet"])
        assert code == 0
        runs[method] = _evaluate(case, out / "transform.h5", tmp_path / f"{method}.json")
    record = json.loads((tmp_path / "net" / "result.json").read_text())
    assert record["init"] == "center" and record["method_info"]["folding_fraction_output_grid"] == 0.0
    for name in ("transform.h5", "inverse_transform.h5", "warped_moving.nrrd", "warped_moving_seg.nrrd"):
        assert (tmp_path / "net" / name).is_file()
    assert runs["net"]["dice"] > runs["none"]["dice"] + 0.15, runs
    assert runs["net"]["tre"] < 0.6 * runs["none"]["tre"], runs


@pytest.mark.slow
def test_the_recorded_command_repeats_the_shipped_runs_first_validation(tmp_path):
    """Re-run ``mix_plus``'s recorded command up to its first logged validation: the same loss and validation
    figures, bit for bit (the run is deterministic for its seed and thread count)."""
    from MMRegistrationLib.cli.train_net import add_parser

    meta = load_registration_net(networks_dir() / "mix_plus.pt")[1]["training"]
    first = meta["log"][0]
    rerun_recorded_command(meta["reproduce"], add_parser, first["iteration"], tmp_path)
    repeated = json.loads((tmp_path / "mix_plus.json").read_text())["training"]["log"][0]
    for key in ("loss", "validation_dice", "validation_tre_mm"):
        assert repeated[key] == first[key] or (np.isnan(repeated[key]) and np.isnan(first[key])), key


def test_without_the_mr_mask_the_default_network_names_itself_and_the_option(tmp_path, capsys):
    case = sample_case_paths()
    code = main(["register", "--method", "net", "--fixed", str(case["fixed"]), "--moving", str(case["moving"]),
                 "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2 and not (tmp_path / "out").exists()
    assert "--moving-seg: these weights (mix_plus) need --moving-seg" in capsys.readouterr().err
