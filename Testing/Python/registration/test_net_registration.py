"""``--method net`` on world-mm grids: forward and inverse agree; the result does not depend on how the images are
stored (axis order/flips) and moves with them in the world; missing inputs and bad weights are named errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analytic_case import write_case
from conftest import expect_input_error
from MMRegistrationLib.cli.main import main
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.networks.registration import RegistrationNet, RegNetConfig, save_registration_net
from MMRegistrationLib.registration.base import RegistrationInputs
from MMRegistrationLib.registration.pipeline import load_inputs, run_registration


def _weights(folder, **changes):
    """A small network with non-trivial heads (so its field is not the identity), saved with its sidecar."""
    config = RegNetConfig(**{**dict(channels=(2, 4, 4), grid_size=16, grid_spacing_mm=5.0, ramp_mm=10.0), **changes})
    torch.manual_seed(3)
    net = RegistrationNet(config)
    for head in net.decoder.heads:
        torch.nn.init.normal_(head.weight, std=0.05)
    path = folder / f"net_{abs(hash(tuple(sorted(changes.items())))) % 10**8}.pt"
    save_registration_net(net, path, {"config": {"precision": "float32"}})
    return str(path)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("net_case")
    paths = write_case(folder)
    return paths, load_inputs(paths["fixed"], paths["moving"], paths["fixed_seg"], paths["moving_seg"]), folder


def _register(inputs, weights, **options):
    return run_registration("net", inputs, options={"weights": weights, **options})


def _probe_points(inputs: RegistrationInputs) -> torch.Tensor:
    k, j, i = np.nonzero(inputs.fixed_seg.array == 1)
    picks = np.linspace(0, len(i) - 1, 200).astype(int)
    return torch.as_tensor(inputs.fixed_seg.grid.index_to_world(np.stack([i, j, k], 1)[picks]), dtype=torch.float64)


def test_forward_and_inverse_agree_and_the_field_is_not_trivial(case):
    _, inputs, folder = case
    result, record = _register(inputs, _weights(folder))
    assert record["init"] == "center"  # what the weights were trained after
    points = _probe_points(inputs)
    mapped = result.transform.map_points(points)
    assert record["method_info"]["max_displacement_mm"] > 0.3  # the network moved something
    back = result.inverse.map_points(mapped)
    error = (back - points).norm(dim=1)  # exp(v) and exp(-v) on the 5 mm network grid, trilinear in between
    assert float(error.max()) < 0.1 and float(error.median()) < 0.05
    assert record["method_info"]["folding_fraction_output_grid"] == 0.0


def _flipped_storage(image: Image) -> Image:
    """The same image stored with the i and j axes reversed (as a RAS-ordered file would be)."""
    grid = image.grid
    n_i, n_j = grid.size_ijk[0], grid.size_ijk[1]
    affine = np.array(grid.affine)
    affine[:3, 3] = grid.index_to_world([n_i - 1, n_j - 1, 0])
    affine[:3, 0] *= -1
    affine[:3, 1] *= -1
    return Image(image.array[:, ::-1, ::-1].copy(), Grid(grid.shape, affine))


def _shifted(image: Image, offset) -> Image:
    affine = np.array(image.grid.affine)
    affine[:3, 3] += offset
    return Image(image.array, Grid(image.grid.shape, affine))


def test_the_result_does_not_depend_on_axis_storage_and_moves_with_the_images(case):
    _, inputs, folder = case
    weights = _weights(folder)
    points = _probe_points(inputs)
    reference = _register(inputs, weights)[0].transform.map_points(points)
    flipped = RegistrationInputs(_flipped_storage(inputs.fixed), _flipped_storage(inputs.moving),
                                 _flipped_storage(inputs.fixed_seg), _flipped_storage(inputs.moving_seg))
    assert float((_register(flipped, weights)[0].transform.map_points(points) - reference).abs().max()) < 1e-3
    offset = np.array([37.0, -12.5, 140.0])
    shifted = RegistrationInputs(*(_shifted(im, offset) for im in (inputs.fixed, inputs.moving, inputs.fixed_seg,
                                                                    inputs.moving_seg)))
    moved = _register(shifted, weights)[0].transform.map_points(points + torch.as_tensor(offset))
    assert float((moved - torch.as_tensor(offset) - reference).abs().max()) < 1e-3


def test_the_inputs_the_weights_take_are_required_by_name(case):
    paths, inputs, folder = case
    no_moving = RegistrationInputs(inputs.fixed, inputs.moving, inputs.fixed_seg, None)
    expect_input_error(lambda: _register(no_moving, _weights(folder)), "--moving-seg", "need --moving-seg")
    both = _weights(folder, inputs=("fixed", "moving", "moving_mask", "fixed_mask"), init="com", center="fixed-mask")
    no_fixed = RegistrationInputs(inputs.fixed, inputs.moving, None, inputs.moving_seg)
    expect_input_error(lambda: _register(no_fixed, both), "--fixed-seg", "'com'")
    centred_on_fixed_gland = _weights(folder, inputs=("fixed", "moving"), init="rigid-mask", center="fixed-mask")
    expect_input_error(lambda: run_registration("net", no_fixed, init="none", options={"weights": centred_on_fixed_gland}),
                       "--fixed-seg", "centred on the fixed (TRUS) gland")
    images_only = _weights(folder, inputs=("fixed", "moving"))
    result, record = _register(RegistrationInputs(inputs.fixed, inputs.moving), images_only)
    assert record["init"] == "center" and result.inverse is not None


def test_displacement_output_has_an_inverse_by_inversion(case):
    _, inputs, folder = case
    result, _ = _register(inputs, _weights(folder, output="ddf"))
    points = _probe_points(inputs)
    back = result.inverse.map_points(result.transform.map_points(points))
    error = (back - points).norm(dim=1)  # a fixed-point inverse: looser than exp(-v), one reason svf is the default
    assert float(error.max()) < 0.3 and float(error.median()) < 0.05


def test_cli_bad_weights_are_exit_2_naming_weights_and_nothing_is_written(case, tmp_path, capsys):
    paths, _, folder = case
    base = ["register", "--method", "net", "--fixed", paths["fixed"], "--moving", paths["moving"],
            "--moving-seg", paths["moving_seg"], "--quiet"]
    out = tmp_path / "out"
    assert main([*base, "--weights", str(tmp_path / "none.pt"), "--out", str(out)]) == 2
    assert "--weights" in capsys.readouterr().err and not out.exists()
    broken = tmp_path / "broken.pt"
    good = _weights(folder)
    broken.write_bytes(open(good, "rb").read()[:-30])
    broken.with_suffix(".json").write_text(open(good.replace(".pt", ".json")).read())
    assert main([*base, "--weights", str(broken), "--out", str(out)]) == 2
    assert "corrupted" in capsys.readouterr().err and not out.exists()
    assert main([*base, "--weights", good, "--precision", "half", "--out", str(out)]) == 2
    assert "--precision" in capsys.readouterr().err
    assert main([*base, "--weights", good, "--out", str(out)]) == 0
    assert (out / "transform.h5").is_file() and (out / "inverse_transform.h5").is_file()


@pytest.mark.parametrize("args, flag", [
    (["--minutes", "0"], "--minutes"),
    (["--iterations", "0"], "--iterations"),
    (["--name", "../x"], "--name"),
    (["--resume"], "--resume"),
])
def test_train_net_bad_arguments_are_exit_2_naming_them(args, flag, tmp_path, capsys):
    data = tmp_path / "data"
    for sub in ("fixed_images", "fixed_labels", "moving_images", "moving_labels"):
        (data / sub).mkdir(parents=True)
        (data / sub / "case.nii.gz").write_bytes(b"")
    code = main(["train-net", "--data", str(data), "--out", str(tmp_path / "out"), "--quiet", *args])
    assert code == 2 and flag in capsys.readouterr().err


def test_train_net_refuses_a_folder_without_cases(tmp_path, capsys):
    assert main(["train-net", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--iterations", "1"]) == 2
    assert "--data" in capsys.readouterr().err
