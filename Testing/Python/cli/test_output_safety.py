"""Outputs never destroy data: ``--out`` may replace only an earlier result of mmreg (with ``--overwrite``), never a
folder holding an input, a foreign folder or a file; SIGTERM stops a run like Ctrl-C without leftovers, and the
leftovers of a run killed outright are removed by the next run into the same place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from analytic_case import write_case
from MMRegistrationLib.cli.main import main
from MMRegistrationLib.io.outputs import OUTPUT_MARKER, remove_stale_leftovers

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return write_case(tmp_path_factory.mktemp("safety_case"))


def _register(case: dict, out, *extra) -> list:
    return ["register", "--method", "com", "--fixed", case["fixed"], "--moving", case["moving"], "--fixed-seg",
            case["fixed_seg"], "--moving-seg", case["moving_seg"], "--quiet", "--out", str(out), *extra]


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_out_holding_or_equal_to_an_input_is_refused_and_the_inputs_stay(case, capsys, monkeypatch):
    folder = Path(case["fixed"]).parent
    before = _snapshot(folder)
    for out in (folder, folder.parent):
        assert main(_register(case, out, "--overwrite")) == 2
        assert "--out:" in capsys.readouterr().err
    monkeypatch.chdir(folder)
    assert main(_register(case, ".", "--overwrite")) == 2
    assert "holds the input" in capsys.readouterr().err
    assert _snapshot(folder) == before


def test_evaluate_cohort_into_the_cohort_is_refused(case, tmp_path, capsys):
    cohort = tmp_path / "cohort"
    (cohort / "case0").mkdir(parents=True)
    (cohort / "case0" / "note.txt").write_text("mine", encoding="utf-8")
    assert main(["evaluate", "--cohort", str(cohort), "--out", str(cohort), "--overwrite"]) == 2
    assert "--out:" in capsys.readouterr().err
    assert (cohort / "case0" / "note.txt").read_text(encoding="utf-8") == "mine"


def test_a_foreign_folder_or_a_file_is_never_replaced(case, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work", encoding="utf-8")
    assert main(_register(case, foreign, "--overwrite")) == 2
    assert "not an earlier mmreg result" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
    a_file = tmp_path / "result.txt"
    a_file.write_text("keep", encoding="utf-8")
    assert main(_register(case, a_file, "--overwrite")) == 2
    assert "is a file" in capsys.readouterr().err
    assert a_file.read_text(encoding="utf-8") == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "result.txt"]  # no .old/.partial leftovers


def test_an_earlier_result_is_replaced_only_with_overwrite(case, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_register(case, out)) == 0
    assert (out / OUTPUT_MARKER).is_file()
    stamp = (out / "result.json").stat().st_mtime_ns
    assert main(_register(case, out)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "result.json").stat().st_mtime_ns == stamp
    assert main(_register(case, out, "--overwrite")) == 0
    assert (out / "result.json").stat().st_mtime_ns != stamp
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(_register(case, empty)) == 0  # an empty folder loses nothing


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user (root may write "
                                                                      "into read-only folders)")
def test_a_read_only_parent_is_refused_before_any_work(case, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(_register(case, locked / "out")) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_sigterm_stops_a_run_like_ctrl_c_and_leaves_nothing(case, tmp_path):
    out = tmp_path / "terminated"
    args = [a for a in _register(case, out) if a != "--quiet"]
    args[args.index("--method") + 1] = "sinr"  # long enough to be interrupted while it works
    command = [sys.executable, "-m", "MMRegistrationLib", *args]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    for line in process.stderr:  # the first progress line: the run has started its work
        if line.startswith("["):
            break
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 130, rest
    assert "cancelled; no output was written" in rest
    assert "Traceback" not in rest
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".terminated.")]


def test_leftovers_of_a_killed_run_are_removed_by_the_next_run(case, tmp_path):
    out = tmp_path / "run"
    dead = tmp_path / ".run.partial-999999999-abcd"  # no such process
    dead.mkdir()
    (dead / "transform.h5").write_bytes(b"half written")
    alive = tmp_path / f".run.partial-{os.getppid()}-efgh"  # a live process's: not ours to remove
    alive.mkdir()
    assert remove_stale_leftovers(out) == [dead]
    dead.mkdir()
    assert main(_register(case, out)) == 0
    assert not dead.exists() and alive.exists()
