"""How many CPU threads the engine's torch and SimpleITK work uses (the thread policy).

Why a policy: OpenMP worker threads spin while they wait. On a quiet machine a second thread buys ~15 % on the
problem sizes of a registration; beside another busy process (Slicer's GUI and render threads, a second cohort
worker, a test run) the spinning threads fight for the same cores and the same run takes up to 30x longer, while
one thread takes the same time in every condition (measured: ``benchmarks/results/threads.md``). So:

1. ``--threads N`` (or the ``threads`` argument of the Python API / Slicer logic) when given;
2. else ``MMREG_THREADS`` from the environment;
3. else, when the user set ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS``, torch's own count (which honours them);
4. else automatic: one thread below :data:`PARALLEL_VOXELS` voxels of work; above, one thread per
   :data:`VOXELS_PER_THREAD` voxels, at most the cores that are free now (usable cores minus the 1-minute load
   average other processes put on them), at most :data:`MAX_AUTO_THREADS`.

:func:`engine_threads` applies a choice for the duration of a call and restores the previous counts (Slicer keeps
its own setting).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Iterator, Optional

from MMRegistrationLib.core.errors import InputError

THREADS_VARIABLE = "MMREG_THREADS"
USER_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
PARALLEL_VOXELS = 8_000_000
VOXELS_PER_THREAD = 4_000_000
MAX_AUTO_THREADS = 8


@dataclass(frozen=True)
class ThreadChoice:
    """``count`` threads, chosen because of ``reason`` (recorded in result.json)."""

    count: int
    reason: str

    def as_dict(self) -> dict:
        return {"count": self.count, "reason": self.reason}


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def free_cores() -> int:
    """Usable cores minus the load other processes put on them now (1-minute load average), at least 1."""
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, cores - math.floor(load)))


def parse_thread_count(text, argument: str) -> int:
    """A positive integer thread count from an option or environment value; :class:`InputError` otherwise."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise InputError(argument, f"'{text}' is not a whole number of threads") from None
    if value < 1:
        raise InputError(argument, f"{value} threads: at least 1 is needed")
    return value


def choose_threads(requested: Optional[int] = None, work_voxels: Optional[int] = None) -> ThreadChoice:
    """The thread count by the policy in this module's docstring.

    Args:
        requested: an explicit count (``--threads``); ``None`` = decide.
        work_voxels: the size of the problem (voxels of the largest grid worked on); ``None`` = small.
    """
    if requested is not None:
        return ThreadChoice(parse_thread_count(requested, "--threads"), "--threads")
    if os.environ.get(THREADS_VARIABLE, "").strip():
        return ThreadChoice(parse_thread_count(os.environ[THREADS_VARIABLE], THREADS_VARIABLE), THREADS_VARIABLE)
    for variable in USER_THREAD_VARIABLES:
        if os.environ.get(variable, "").strip():
            import torch

            return ThreadChoice(torch.get_num_threads(), variable)
    if work_voxels is None or work_voxels < PARALLEL_VOXELS:
        return ThreadChoice(1, "auto: small problem")
    wanted = min(MAX_AUTO_THREADS, max(1, int(work_voxels // VOXELS_PER_THREAD)))
    return ThreadChoice(max(1, min(wanted, free_cores())), "auto: problem size and free cores")


@contextlib.contextmanager
def engine_threads(choice: ThreadChoice) -> Iterator[ThreadChoice]:
    """Run the ``with`` body with ``choice.count`` torch and SimpleITK threads; restore the previous counts."""
    import SimpleITK as sitk
    import torch

    torch_before = torch.get_num_threads()
    sitk_before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    torch.set_num_threads(choice.count)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(choice.count)
    try:
        yield choice
    finally:
        torch.set_num_threads(torch_before)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(sitk_before)
