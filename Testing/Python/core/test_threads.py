"""The thread policy: explicit count, then MMREG_THREADS, then the user's OpenMP/MKL setting, then one thread for
usual sizes; bad values are refused naming where they came from; counts are restored after a call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from analytic_case import write_case
from MMRegistrationLib.cli.main import main
from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core import threads as policy
from MMRegistrationLib.core.threads import ThreadChoice, choose_threads, engine_threads


@pytest.fixture
def clean_environment(monkeypatch):
    for variable in (policy.THREADS_VARIABLE, *policy.USER_THREAD_VARIABLES):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_explicit_count_wins_over_the_environment(clean_environment):
    clean_environment.setenv("MMREG_THREADS", "3")
    clean_environment.setenv("OMP_NUM_THREADS", "5")
    assert choose_threads(2) == ThreadChoice(2, "--threads")
    assert choose_threads() == ThreadChoice(3, "MMREG_THREADS")


def test_the_users_openmp_setting_is_honoured(clean_environment):
    clean_environment.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads(work_voxels=10**9) == ThreadChoice(torch.get_num_threads(), "OMP_NUM_THREADS")


def test_usual_sizes_get_one_thread_and_large_ones_at_most_the_free_cores(clean_environment):
    assert choose_threads(work_voxels=182 * 167 * 91).count == 1
    assert choose_threads().count == 1
    clean_environment.setattr(policy, "free_cores", lambda: 3)
    assert choose_threads(work_voxels=400 * 400 * 300) == ThreadChoice(3, "auto: problem size and free cores")
    clean_environment.setattr(policy, "free_cores", lambda: 64)
    assert choose_threads(work_voxels=400 * 400 * 300).count == policy.MAX_AUTO_THREADS
    assert choose_threads(work_voxels=policy.PARALLEL_VOXELS).count == 2


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_counts_are_refused_naming_their_source(clean_environment, value):
    with pytest.raises(InputError, match="--threads"):
        choose_threads(value)
    clean_environment.setenv("MMREG_THREADS", value)
    with pytest.raises(InputError, match="MMREG_THREADS"):
        choose_threads()


def test_free_cores_is_between_one_and_the_usable_cores():
    assert 1 <= policy.free_cores() <= policy.usable_cores()


def test_engine_threads_applies_and_restores_both_libraries():
    torch_before = torch.get_num_threads()
    sitk_before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    with engine_threads(ThreadChoice(1, "test")):
        assert torch.get_num_threads() == 1
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 1
    assert torch.get_num_threads() == torch_before
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == sitk_before
    with pytest.raises(RuntimeError):
        with engine_threads(ThreadChoice(1, "test")):
            raise RuntimeError("restored on errors too")
    assert torch.get_num_threads() == torch_before


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return write_case(tmp_path_factory.mktemp("threads_case"))


def _register(case: dict, out, *extra) -> list:
    return ["register", "--method", "com", "--fixed", case["fixed"], "--moving", case["moving"], "--fixed-seg",
            case["fixed_seg"], "--moving-seg", case["moving_seg"], "--quiet", "--out", str(out), *extra]


def test_cli_records_the_choice_and_restores_the_count(case, tmp_path, clean_environment):
    before = torch.get_num_threads()
    assert main(_register(case, tmp_path / "auto")) == 0
    record = json.loads((tmp_path / "auto" / "result.json").read_text(encoding="utf-8"))
    assert record["threads"] == {"count": 1, "reason": "auto: small problem"}
    assert main(_register(case, tmp_path / "two", "--threads", "2")) == 0
    record = json.loads((tmp_path / "two" / "result.json").read_text(encoding="utf-8"))
    assert record["threads"] == {"count": 2, "reason": "--threads"}
    assert torch.get_num_threads() == before


def test_cli_refuses_a_bad_count_before_any_work(case, tmp_path, capsys, clean_environment):
    assert main(_register(case, tmp_path / "zero", "--threads", "0")) == 2
    assert "--threads" in capsys.readouterr().err
    clean_environment.setenv("MMREG_THREADS", "many")
    assert main(_register(case, tmp_path / "env")) == 2
    assert "MMREG_THREADS" in capsys.readouterr().err
    assert not Path(tmp_path / "zero").exists() and not Path(tmp_path / "env").exists()


def test_evaluate_and_generate_take_threads_and_refuse_bad_counts(case, tmp_path, capsys, clean_environment):
    assert main(["evaluate", "--fixed-seg", case["fixed_seg"], "--moving-seg", case["moving_seg"], "--threads", "1",
                 "--quiet", "--no-jacobian", "--out", str(tmp_path / "report.json")]) == 0
    assert main(["evaluate", "--fixed-seg", case["fixed_seg"], "--moving-seg", case["moving_seg"], "--threads", "-1",
                 "--quiet", "--out", str(tmp_path / "bad.json")]) == 2
    assert "--threads" in capsys.readouterr().err and not (tmp_path / "bad.json").exists()
    assert main(["generate", "--threads", "0", "--out", str(tmp_path / "gen")]) == 2
    assert "--threads" in capsys.readouterr().err and not (tmp_path / "gen").exists()
