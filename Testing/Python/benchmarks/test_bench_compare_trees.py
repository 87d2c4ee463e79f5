"""The two-tree timing benchmark: its report and one real child run of this tree (sample case only)."""

from __future__ import annotations

import argparse

import pytest

from conftest import REPO_ROOT, load_benchmark_module


def test_report_gives_medians_and_per_round_ratios():
    bench = load_benchmark_module("bench_compare_trees")
    before = [{"sinr/a": 2.0, "sinr/b": 1.0}, {"sinr/a": 4.0, "sinr/b": 1.0}, {"sinr/a": 3.0, "sinr/b": 1.0}]
    after = [{"sinr/a": 1.0, "sinr/b": 1.0}, {"sinr/a": 2.0, "sinr/b": 1.0}, {"sinr/a": 6.0, "sinr/b": 1.0}]
    args = argparse.Namespace(before="old", after="new", rounds=3, threads=1)
    text = bench.report(before, after, args)
    assert "| sinr/a | 3.00 | 2.00 | 0.67 |" in text
    assert "| **sinr, all cases** | 4.00 | 3.00 | **0.75** (rounds: 0.67, 0.60, 1.75) |" in text


@pytest.mark.slow
def test_a_child_times_every_method_of_the_given_tree():
    bench = load_benchmark_module("bench_compare_trees")
    times = bench._child(REPO_ROOT, deepreg=0, threads=1)
    assert set(times) == {"sinr/sample", "rigid-mask/sample"} and all(t > 0 for t in times.values())
