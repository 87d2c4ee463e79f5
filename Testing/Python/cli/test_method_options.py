"""Every option of every method, given 0, a negative number, NaN or an unknown choice where its metadata says that is
invalid, exits with code 2 naming the option before any image is read (the images given here do not exist)."""

from __future__ import annotations

import math

import pytest

from MMRegistrationLib.cli.main import main
from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.registration.methods import METHODS

BAD_VALUES = ("0", "-1", "nan", "no-such-choice")


def _allowed(opt, text: str) -> bool:
    """Whether the option's own metadata admits ``text`` (computed here, independently of the engine's checks)."""
    if opt.optional and text.lower() in ("none", "all", ""):
        return True
    if opt.choices is not None:
        return text in opt.choices
    if opt.kind is tuple:
        return False  # three numbers are needed
    if opt.kind is str:
        return False  # a file option: none of the bad values names an existing file
    try:
        value = float(text)
    except ValueError:
        return False
    if not math.isfinite(value):
        return False
    if opt.minimum is not None and (value <= opt.minimum if opt.exclusive_minimum else value < opt.minimum):
        return False
    return opt.maximum is None or value <= opt.maximum


CASES = [(method, opt, value) for method, spec in METHODS.items() for opt in spec.options for value in BAD_VALUES
         if not _allowed(opt, value)]


def test_every_numeric_option_declares_its_range():
    """A number without a range could not be checked: every int/float option states at least its minimum."""
    for spec in METHODS.values():
        for opt in spec.options:
            if opt.kind in (int, float) and opt.parse is None:
                assert opt.minimum is not None and opt.maximum is not None, (spec.name, opt.name)
            assert opt.help, (spec.name, opt.name)


@pytest.mark.parametrize("method,opt,value", CASES, ids=[f"{m}{o.flag}={v}" for m, o, v in CASES])
def test_bad_option_value_exits_2_naming_it_before_reading_images(tmp_path, capsys, method, opt, value):
    argv = ["register", "--method", method, "--fixed", str(tmp_path / "no_fixed.nrrd"), "--moving",
            str(tmp_path / "no_moving.nrrd"), "--out", str(tmp_path / "out"), f"{opt.flag}={value}"]
    if METHODS[method].needs_segmentations:
        argv += ["--fixed-seg", str(tmp_path / "a.nrrd"), "--moving-seg", str(tmp_path / "b.nrrd")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: {opt.flag}: " in err, err  # the option, not the missing image, is what is reported
    assert "no_fixed" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_defaults_and_presets_pass_their_own_checks(method):
    spec = METHODS[method]
    for preset in spec.presets or [None]:
        config = spec.build_config({} if preset is None else {"preset": preset})
        assert isinstance(config, spec.config)


def test_python_keywords_are_checked_like_the_command_line():
    with pytest.raises(InputError, match="^--context-weight: must be 0 or more and at most 100, got -1"):
        METHODS["sinr"].build_config({"context_weight": -1})
    with pytest.raises(InputError, match="^--weight-bending: "):
        METHODS["sinr"].build_config({"weight_bending": -100})
    with pytest.raises(InputError, match="^--iterations: expected an integer"):
        METHODS["rigid-mask"].build_config({"iterations": 2.5})
    with pytest.raises(InputError, match="^--warp-speed: method 'sinr' has no such option"):
        METHODS["sinr"].build_config({"warp_speed": 9})
    with pytest.raises(InputError, match="^--preset: unknown preset 'turbo'"):
        METHODS["sinr"].build_config({"preset": "turbo"})
    with pytest.raises(InputError, match="^--preset: method 'disa' has no presets"):
        METHODS["disa"].build_config({"preset": "fast"})


def test_strings_are_converted_and_presets_filled():
    config = METHODS["sinr"].build_config({"preset": "accurate", "iterations": "12"})
    assert config.iterations == 12 and config.velocity_spacing_mm == 3.0  # given value over the preset's
    config = METHODS["disa"].build_config({"probe_point": "1,2,3", "moving_fov_threshold": "none"})
    assert config.probe_point == (1.0, 2.0, 3.0) and config.moving_fov_threshold is None


def test_methods_lists_every_option_with_range_and_default(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for spec in METHODS.values():
        for opt in spec.options:
            assert opt.flag in out
    assert "--squaring-steps" in out and "1 to 12" in out
    assert "--roi:" in out
