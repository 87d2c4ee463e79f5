"""Progress a person can read: one bar per stage on a terminal, a line per stage (then every few seconds) in a log,
nothing with --quiet."""

from __future__ import annotations

import io

from analytic_case import write_case
from MMRegistrationLib.cli.main import main
from MMRegistrationLib.cli.progress import ProgressPrinter, close_progress, split_message


def _sinr_like_run(printer) -> None:
    printer(0.0, "rigid-mask: starting rotations")
    printer(0.3, "rigid-mask: distance-map loss 1.234 mm^2")
    printer(0.3, "SINR: describing the images (image term)")
    for it in range(80):
        printer(0.3 + 0.7 * (it + 1) / 80, f"SINR: iteration {it + 1}: surface 0.{it:03d}")


def test_split_message_separates_the_stage_from_the_detail():
    assert split_message("SINR: iteration 3: surface 0.2") == ("SINR", "iteration 3: surface 0.2")
    assert split_message("resampling") == ("resampling", "")


def test_a_log_gets_a_line_per_stage_not_per_iteration():
    stream = io.StringIO()
    _sinr_like_run(ProgressPrinter(stream=stream, bars=False))
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("rigid-mask: starting rotations")
    assert lines[1].endswith("SINR: describing the images (image term)")
    assert lines[-1].startswith("[100.0%]") and lines[-1].endswith("SINR: iteration 80: surface 0.079")
    assert len(lines) == 3


def test_a_log_line_repeats_after_the_interval():
    stream = io.StringIO()
    printer = ProgressPrinter(stream=stream, bars=False, interval=0.0)
    for it in range(5):
        printer(it / 10, f"SINR: iteration {it}")
    assert len(stream.getvalue().splitlines()) == 5


def test_a_terminal_gets_one_bar_per_stage_with_the_detail():
    stream = io.StringIO()
    printer = ProgressPrinter(stream=stream, bars=True)
    _sinr_like_run(printer)
    close_progress()
    text = stream.getvalue()
    finished_lines = text.split("\n")[:-1]  # every closed bar ends its line
    assert len(finished_lines) == 2
    assert finished_lines[0].split("\r")[-1].startswith("rigid-mask:")
    assert finished_lines[1].split("\r")[-1].startswith("SINR: 100%")
    assert "iteration 80: surface 0.079" in finished_lines[1].split("\r")[-1]


def test_quiet_prints_nothing():
    stream = io.StringIO()
    _sinr_like_run(ProgressPrinter(quiet=True, stream=stream, bars=True))
    _sinr_like_run(ProgressPrinter(quiet=True, stream=stream, bars=False))
    assert stream.getvalue() == ""


def test_a_registration_in_a_log_prints_few_lines(tmp_path, capsys):
    case = write_case(tmp_path / "case")
    assert main(["register", "--method", "sinr", "--preset", "fast", "--fixed", case["fixed"], "--moving",
                 case["moving"], "--fixed-seg", case["fixed_seg"], "--moving-seg", case["moving_seg"],
                 "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().err.splitlines()
    iteration_lines = [line for line in lines if "iteration" in line]
    assert 1 <= len(iteration_lines) <= 4, lines
