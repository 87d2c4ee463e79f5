"""``mmreg register --cohort``: one result per case equal to the case registered alone, serial or on a local Dask
cluster; failed cases recorded while the others finish; resumable; bad requests refused with exit code 2."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from analytic_case import write_case
from MMRegistrationLib.cli.main import main
from MMRegistrationLib.io import read_landmarks, write_landmarks_csv

REPO = Path(__file__).resolve().parents[3]
CASES = ("case_0", "case_1", "case_2", "case_3")
SINR = ["--method", "sinr", "--preset", "fast", "--iterations", "5"]
RESULT_FILES = ("transform.h5", "inverse_transform.h5", "warped_moving.nrrd", "warped_moving_seg.nrrd")


def write_cohort(root: Path, names=CASES) -> Path:
    """Analytic cases that differ: case k's moving image (and its labels and landmarks) moved by k * (2, -1.5, 1) mm."""
    base = write_case(root / names[0])
    for k, name in enumerate(names[1:], start=1):
        folder = root / name
        folder.mkdir()
        shift = np.array([2.0, -1.5, 1.0]) * k
        for key in ("fixed", "fixed_seg", "fixed_landmarks"):
            shutil.copy(base[key], folder)
        for key in ("moving", "moving_seg"):
            image = sitk.ReadImage(base[key])
            image.SetOrigin(tuple(np.array(image.GetOrigin()) + shift))
            sitk.WriteImage(image, str(folder / Path(base[key]).name), True)
        write_landmarks_csv(read_landmarks(base["moving_landmarks"]) + shift, folder / "moving_landmarks.csv")
    return root


def cohort_args(cohort: Path, out: Path, *extra, method=SINR) -> list:
    return ["register", "--cohort", str(cohort), *method, "--out", str(out), "--quiet", *extra]


def single_args(case: Path, out: Path) -> list:
    files = {stem: str(next(case.glob(f"{stem}.*"))) for stem in
             ("fixed", "moving", "fixed_seg", "moving_seg", "fixed_landmarks", "moving_landmarks")}
    return ["register", *SINR, "--out", str(out), "--quiet",
            *[a for stem, path in files.items() for a in (f"--{stem.replace('_', '-')}", path)]]


def read_rows(out: Path) -> dict:
    with open(out / "cases.csv", newline="", encoding="utf-8") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def transform_parts(path: Path) -> list:
    """``(class name, fixed parameters, parameters)`` of every transform in an ITK file (a displacement field's
    parameters are its vectors)."""
    transform = sitk.ReadTransform(str(path))
    parts = ([transform.GetNthTransform(i) for i in range(transform.GetNumberOfTransforms())]
             if isinstance(transform, sitk.CompositeTransform) else [transform])
    return [(t.GetName(), np.array(t.GetFixedParameters()), np.array(t.GetParameters())) for t in parts]


def assert_same_results(a: Path, b: Path) -> None:
    """The results of two case folders are bit for bit the same: the images byte for byte, the transforms' numbers
    exactly (HDF5 files hold their write time, so their bytes differ between any two runs)."""
    for name in RESULT_FILES:
        if name.endswith(".h5"):
            left, right = transform_parts(a / name), transform_parts(b / name)
            assert [p[0] for p in left] == [p[0] for p in right], (a, b, name)
            for (_, fixed_l, values_l), (_, fixed_r, values_r) in zip(left, right):
                assert np.array_equal(fixed_l, fixed_r) and np.array_equal(values_l, values_r), (a, b, name)
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), (a, b, name)


def metric_columns(rows: dict) -> list:
    return [c for c in next(iter(rows.values())) if c.startswith(("dice_", "hd_mm_", "tre_", "jacobian_"))]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="module")
def serial(cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serial") / "out"
    assert main(cohort_args(cohort, out)) == 0
    return out


def test_serial_cohort_writes_every_case_and_the_summary(serial):
    assert sorted(p.name for p in serial.iterdir() if p.is_dir()) == list(CASES)
    for name in CASES:
        assert sorted(p.name for p in (serial / name).iterdir()) == sorted((".mmreg-output", "result.json",
                                                                           *RESULT_FILES))
    rows = read_rows(serial)
    assert sorted(rows) == list(CASES)
    assert {row["status"] for row in rows.values()} == {"registered"} and not any(r["error"] for r in rows.values())
    for name, row in rows.items():  # the deformable result aligns each case (the evaluation read transform.h5)
        assert float(row["dice_1"]) > 0.9 and float(row["tre_mean_mm"]) < 2.0, (name, row)
    summary = json.loads((serial / "summary.json").read_text(encoding="utf-8"))
    assert summary["cases"] == 4 and summary["succeeded"] == 4 and summary["failed"] == {}
    assert summary["metrics"]["dice_1"]["n"] == 4
    assert summary["registration"]["method"] == "sinr" and summary["registration"]["options"]["iterations"] == "5"
    assert (serial / "summary.csv").is_file() and (serial / ".mmreg-output").is_file()


def test_serial_results_equal_each_case_registered_alone(cohort, serial, tmp_path):
    transforms = set()
    for name in CASES:
        alone = tmp_path / name
        assert main(single_args(cohort / name, alone)) == 0
        assert_same_results(serial / name, alone)
        transforms.add(transform_parts(alone / "transform.h5")[-1][2].tobytes())
    assert len(transforms) == len(CASES)  # the cases differ, so equality above says something


def test_two_local_workers_give_the_serial_results(cohort, serial, tmp_path):
    pytest.importorskip("distributed", reason="dask[distributed] is not installed (requirements/pinned.txt has it)")
    out = tmp_path / "workers"
    environment = dict(os.environ)
    assert main(cohort_args(cohort, out, "--workers", "2")) == 0
    assert dict(os.environ) == environment  # Dask's settings for its workers did not leak into this process
    for name in CASES:
        assert_same_results(serial / name, out / name)
    rows, serial_rows = read_rows(out), read_rows(serial)
    for name in CASES:
        assert [rows[name][c] for c in metric_columns(rows)] == [serial_rows[name][c] for c in metric_columns(rows)]
    record = json.loads((out / "case_1" / "result.json").read_text(encoding="utf-8"))
    assert record["threads"]["count"] == 1


def test_an_existing_cluster_through_scheduler_gives_the_serial_results(cohort, serial, tmp_path):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed")
    out = tmp_path / "scheduler"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        assert main(cohort_args(cohort, out, "--scheduler", cluster.scheduler_address)) == 0
    for name in CASES:
        assert_same_results(serial / name, out / name)


def broken_cohort(cohort: Path, root: Path) -> Path:
    """case_0 and case_2 as they are; case_1's fixed image is not an image; case_3 has no moving segmentation."""
    for name in CASES:
        shutil.copytree(cohort / name, root / name)
    (root / "case_1" / "fixed.nrrd").write_text("not an image", encoding="utf-8")
    (root / "case_3" / "moving_seg.nrrd").unlink()
    return root


@pytest.mark.parametrize("where", ["serial", "workers"])
def test_failed_cases_are_recorded_and_the_others_finish(where, cohort, tmp_path, capsys):
    extra = ["--workers", "2"] if where == "workers" else []
    if extra:
        pytest.importorskip("distributed", reason="dask[distributed] is not installed")
    out = tmp_path / "out"
    code = main(cohort_args(broken_cohort(cohort, tmp_path / "broken"), out, *extra, method=["--method", "com"]))
    err = capsys.readouterr().err
    assert code == 1, err
    assert "2 of 4 cases failed" in err
    assert "case case_1 failed: --fixed" in err and "case case_3 failed: --cohort" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["case_0", "case_2"]
    rows = read_rows(out)
    assert [rows[n]["status"] for n in CASES] == ["registered", "failed", "registered", "failed"]
    assert "fixed.nrrd" in rows["case_1"]["error"] and "no moving_seg.* file" in rows["case_3"]["error"]
    assert rows["case_1"]["dice_1"] == "" and float(rows["case_0"]["dice_1"]) > 0.5
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["succeeded"] == 2 and sorted(summary["failed"]) == ["case_1", "case_3"]
    assert summary["metrics"]["dice_1"]["n"] == 2
    assert not [p for p in out.iterdir() if ".partial" in p.name]


def test_progress_reports_each_case(cohort, tmp_path):
    from MMRegistrationLib.registration.cohort import register_cohort

    messages = []
    result = register_cohort(cohort, tmp_path / "out", "com", progress=lambda f, m: messages.append((f, m)))
    assert [o.status for o in result.outcomes] == ["registered"] * 4
    done = [(f, m) for f, m in messages if " done (" in m]
    assert done == [(k / 4, f"cohort: case {name} done ({k}/4)") for k, name in enumerate(CASES, start=1)]
    assert all(m.startswith("cohort: ") for _, m in messages)


def _mtimes(folder: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_rerun_keeps_complete_cases_and_redoes_a_deleted_one(cohort, tmp_path, capsys):
    out = tmp_path / "out"
    com = ["--method", "com"]
    assert main(cohort_args(cohort, out, method=com)) == 0
    before = {name: _mtimes(out / name) for name in CASES}
    earlier = tmp_path / "earlier"
    shutil.copytree(out / "case_2", earlier / "case_2")
    shutil.rmtree(out / "case_2")
    capsys.readouterr()
    assert main(cohort_args(cohort, out, method=com)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["registered"], printed["kept"], printed["failed"]) == (1, 3, {})
    for name in ("case_0", "case_1", "case_3"):
        assert _mtimes(out / name) == before[name]
    assert_same_results(out / "case_2", earlier / "case_2")
    assert [r["status"] for r in read_rows(out).values()] == ["kept", "kept", "registered", "kept"]

    assert main(cohort_args(cohort, out, "--seed", "3", method=com)) == 2  # other settings: not mixed in
    assert "--out:" in capsys.readouterr().err and _mtimes(out / "case_0") == before["case_0"]

    assert main(cohort_args(cohort, out, "--overwrite", method=com)) == 0
    assert json.loads(capsys.readouterr().out)["registered"] == 4
    assert _mtimes(out / "case_0")["transform.h5"] != before["case_0"]["transform.h5"]


def test_an_incomplete_case_folder_is_redone(cohort, tmp_path):
    out = tmp_path / "out"
    assert main(cohort_args(cohort, out, method=["--method", "com"])) == 0
    (out / "case_1" / "result.json").write_text("{half", encoding="utf-8")  # unreadable: not complete
    stamp = _mtimes(out / "case_0")
    assert main(cohort_args(cohort, out, method=["--method", "com"])) == 0
    assert json.loads((out / "case_1" / "result.json").read_text(encoding="utf-8"))["method"] == "com"
    assert _mtimes(out / "case_0") == stamp


@pytest.mark.parametrize("name, args, words", [
    ("empty cohort", lambda c, e, o: cohort_args(e, o), ["--cohort", "no case folder"]),
    ("--fixed with --cohort", lambda c, e, o: cohort_args(c, o, "--fixed", str(c / "case_0" / "fixed.nrrd")),
     ["--cohort", "cannot be combined with --fixed"]),
    ("--moving with --cohort", lambda c, e, o: cohort_args(c, o, "--moving", str(c / "case_0" / "moving.nrrd")),
     ["--cohort", "--moving"]),
    ("--workers without --cohort", lambda c, e, o: [a for a in single_args(c / "case_0", o)] + ["--workers", "2"],
     ["--workers", "only applies with --cohort"]),
    ("no --fixed nor --cohort", lambda c, e, o: ["register", "--method", "com", "--out", str(o)],
     ["--fixed", "required"]),
    ("--workers 0", lambda c, e, o: cohort_args(c, o, "--workers", "0"), ["--workers", "at least 1"]),
    ("--workers and --scheduler", lambda c, e, o: cohort_args(c, o, "--workers", "2", "--scheduler", "tcp://x:1"),
     ["--scheduler", "cannot be combined with --workers"]),
    ("bad method option", lambda c, e, o: cohort_args(c, o, "--iterations", "0"), ["--iterations"]),
    ("out is the cohort", lambda c, e, o: cohort_args(c, c), ["--out", "holds the input"]),
])
def test_bad_requests_exit_2_before_any_work(name, args, words, cohort, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    before = sorted(p.name for p in cohort.rglob("*"))
    assert main(args(cohort, empty, out)) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    assert "Traceback" not in err
    assert not out.exists() and sorted(p.name for p in cohort.rglob("*")) == before


def test_an_unreachable_scheduler_is_refused_within_10_s(cohort, tmp_path, capsys):
    pytest.importorskip("distributed", reason="dask[distributed] is not installed")
    out = tmp_path / "out"
    start = time.monotonic()
    assert main(cohort_args(cohort, out, "--scheduler", "tcp://127.0.0.1:9")) == 2
    assert time.monotonic() - start < 10.0
    err = capsys.readouterr().err
    assert "--scheduler: no Dask scheduler answered at tcp://127.0.0.1:9" in err and "dask scheduler" in err
    assert not out.exists()


def test_without_dask_workers_say_how_to_install_it(cohort, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # "import distributed" now fails
    for flag, value in (("--workers", "2"), ("--scheduler", "tcp://127.0.0.1:8786")):
        assert main(cohort_args(cohort, tmp_path / "out", flag, value)) == 2
        err = capsys.readouterr().err
        assert f"{flag}: needs Dask" in err and 'pip install "mmregistration[cohort]"' in err, err
    assert not (tmp_path / "out").exists()


def _send(process: subprocess.Popen, how: str) -> None:
    if how == "sigterm":  # what timeout and schedulers send: to mmreg alone
        process.send_signal(signal.SIGTERM)
    else:  # Ctrl-C at a terminal: SIGINT to the whole process group, the Dask worker processes included
        os.killpg(process.pid, signal.SIGINT)


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_an_interrupt_stops_the_workers_keeps_finished_cases_and_a_rerun_resumes(how, cohort, tmp_path):
    psutil = pytest.importorskip("psutil", reason="psutil comes with dask[distributed]")
    pytest.importorskip("distributed", reason="dask[distributed] is not installed")
    out = tmp_path / "out"
    method = ["--method", "sinr", "--preset", "fast", "--iterations", "40"]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen([sys.executable, "-m", "MMRegistrationLib", *cohort_args(cohort, out, "--workers", "2",
                                                                                         method=method)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not list(out.glob("*/result.json")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    children = psutil.Process(process.pid).children(recursive=True)
    assert children  # the local cluster's worker processes
    _send(process, how)
    err = process.stderr.read()
    assert process.wait(timeout=120) == 130, err
    assert "cancelled; the finished cases are kept" in err and "Traceback" not in err, err
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, alive  # the local cluster's processes are gone
    finished = [p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert finished and all((out / name / "result.json").is_file() for name in finished)
    assert not [p for p in out.iterdir() if ".partial" in p.name]
    assert not (out / "summary.json").exists()
    stamps = {name: _mtimes(out / name) for name in finished}
    assert main(cohort_args(cohort, out, method=method)) == 0
    assert {name: _mtimes(out / name) for name in finished} == stamps
    assert [r["status"] for r in read_rows(out).values()].count("kept") == len(finished)
