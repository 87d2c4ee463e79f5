"""The target structure (the gland): the rule without ``--target-label``, the option by value or name, and the
relabelling that puts the target at label 1 and back."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import expect_input_error, oblique_grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.io.target_label import (
    choose_target,
    moved_names,
    relabel,
    restored_names,
    target_first,
    to_engine,
)


@pytest.mark.parametrize("labels, names, value, rule", [
    ([255], {}, 255, "the only label"),
    ([1, 2, 3], {}, 1, "label 1 (the convention of plain label maps)"),
    ([1, 2], {1: "Bladder", 2: "Prostate"}, 2, "the segment named prostate/gland"),
    ([3, 7], {3: "rectum", 7: "  Whole   GLAND "}, 7, "the segment named prostate/gland"),
])
def test_unambiguous_targets_carry_no_warning(labels, names, value, rule):
    choice = choose_target(labels, names)
    assert (choice.value, choice.rule, choice.warning) == (value, rule, None)


@pytest.mark.parametrize("labels, names, value, words", [
    ([2, 3, 255], {}, 2, ["labels 2, 3, 255", "there is no label 1", "label 2 is used as the target"]),
    ([1, 2], {1: "Bladder", 2: "Rectum"}, 1, ["no segment is named prostate or gland", "label 1 ('Bladder')"]),
    ([1, 2], {1: "prostate", 2: "Prostate Gland"}, 1, ["several segments are named prostate/gland"]),
])
def test_a_guess_names_the_label_used(labels, names, value, words):
    choice = choose_target(labels, names)
    assert choice.value == value and choice.rule.startswith("guessed")
    for word in words + ["--target-label"]:
        assert word in choice.warning, choice.warning


def test_the_option_by_value_or_name():
    names = {1: "Bladder", 2: "Prostate"}
    assert choose_target([1, 2], names, "1").value == 1
    assert choose_target([1, 2], names, " bladder ").value == 1
    assert choose_target([2, 3, 255], {}, "255").as_record() == {"label": 255, "name": None,
                                                                  "rule": "given (--target-label)"}
    expect_input_error(lambda: choose_target([1, 2], names, "3"), "--target-label", "label 3 is not", "'Prostate'")
    expect_input_error(lambda: choose_target([1, 2], names, "urethra"), "--target-label", "'urethra'")
    expect_input_error(lambda: choose_target([1, 2], {}, "prostate"), "--target-label", "no segment names")
    assert choose_target([], {}) is None


def test_relabelling_puts_the_target_at_1_and_back():
    grid = oblique_grid(shape=(3, 4, 5))
    arr = np.zeros(grid.shape, np.uint8)
    arr[0], arr[1], arr[2, :2] = 255, 1, 3
    seg = Image(arr, grid)
    assert target_first(1, [1, 3, 255]) == {}
    for labels, expected in (([1, 3, 255], {1: 255, 255: 1}), ([3, 255], {1: 255})):
        file_values = target_first(255, labels)
        assert file_values == expected
        source = seg if 1 in labels else seg.with_array(np.where(arr == 1, 0, arr).astype(np.uint8))
        engine = relabel(source, to_engine(file_values))
        assert np.array_equal(engine.array == 1, source.array == 255)
        np.testing.assert_array_equal(relabel(engine, file_values).array, source.array)
    names = moved_names({3: "rectum"}, [1, 3, 255], {255: 1, 1: 255})
    assert names == {255: "1", 3: "rectum", 1: "255"}
    assert restored_names(names, {1: 255, 255: 1}) == {3: "rectum"}
