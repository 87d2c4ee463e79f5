"""Options defined once: conversion, checks and messages of :mod:`MMRegistrationLib.core.options`."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.options import MethodConfig, existing_file, option


@dataclass(frozen=True)
class Example(MethodConfig):
    steps: int = option(6, "steps", minimum=1, maximum=12)
    width_mm: float = option(2.0, "a width", unit="mm", minimum=0.0, exclusive_minimum=True, maximum=50.0)
    weight: float = option(0.0, "a weight", minimum=0.0, maximum=10.0)
    mode: str = option("a", "a mode", choices=("a", "b"), advanced=False)
    limit: float = option(None, "an optional limit", kind=float, optional=True, minimum=-5.0, maximum=5.0)
    path: str = option("", "a file", parse=existing_file)

    def check(self):
        if self.mode == "b" and self.weight == 0:
            raise InputError("--weight", "mode b needs a weight")


def test_defaults_and_string_values_are_converted():
    assert Example().steps == 6
    config = Example(steps="7", width_mm="0.5", limit="none", mode="a")
    assert config.steps == 7 and config.width_mm == 0.5 and config.limit is None
    assert Example(limit="-2").limit == -2.0


@pytest.mark.parametrize("field,value,message", [
    ("steps", 0, "--steps: must be a positive integer and at most 12, got 0"),
    ("steps", 13, "--steps: must be a positive integer and at most 12"),
    ("steps", 2.5, "--steps: expected an integer"),
    ("steps", "x", "--steps: expected an integer, got 'x'"),
    ("width_mm", 0, "--width-mm: must be a positive number of mm and at most 50 mm, got 0"),
    ("width_mm", float("nan"), "--width-mm: must be a finite number"),
    ("width_mm", float("inf"), "--width-mm: must be a finite number"),
    ("weight", -1, "--weight: must be 0 or more and at most 10, got -1"),
    ("mode", "c", "--mode: unknown value 'c'; choose one of a, b"),
    ("limit", 9, "--limit: must be within [-5, 5], got 9"),
    ("path", "/no/such/file.pt", "--path: file not found"),
    ("steps", True, "--steps: expected an integer"),
])
def test_bad_values_name_the_option(field, value, message):
    with pytest.raises(InputError) as err:
        Example(**{field: value})
    assert str(err.value).startswith(message), str(err.value)


def test_cross_field_check_runs_after_the_fields():
    with pytest.raises(InputError, match="--weight: mode b needs a weight"):
        Example(mode="b")
    assert Example(mode="b", weight="1").weight == 1.0


def test_from_options_over_a_base_and_unknown_names():
    config = Example.from_options({"steps": "3", "weight": None}, base={"weight": 2.0})
    assert config.steps == 3 and config.weight == 2.0  # None = not given: the base's value stays
    with pytest.raises(InputError, match="^--stpes: Example has no such option"):
        Example.from_options({"stpes": 3})


def test_specs_carry_the_metadata():
    specs = {s.name: s for s in Example.options()}
    assert specs["mode"].advanced is False and specs["steps"].advanced is True
    assert specs["width_mm"].flag == "--width-mm"
    assert specs["width_mm"].describe() == "a width [> 0 and <= 50 mm]"
    assert specs["mode"].describe() == "a mode [a | b]"
    assert specs["limit"].kind is float and specs["limit"].optional
    assert Example().as_dict()["steps"] == 6
