"""Registering a cohort: every case folder of a cohort folder registered into a result folder of its own, in this
process or on a Dask cluster, then the cohort evaluation of the results.

Case folder: the layout ``mmreg evaluate --cohort`` reads (:mod:`MMRegistrationLib.evaluation.cohort`) with both
images: ``fixed.*`` and ``moving.*`` (any image format), ``fixed_seg.*`` and ``moving_seg.*``, optional
``fixed_landmarks.*`` / ``moving_landmarks.*`` and ``case.json`` (label names).

Output folder: ``<case>/`` per case (what :func:`~MMRegistrationLib.registration.pipeline.register_files` writes),
``cohort.json`` (the settings the results were made with), and the cohort evaluation of the results: ``cases.csv``
(one row per case: its status, metrics, and error when it failed), ``summary.csv`` and ``summary.json``.

Guarantees:

- A failing case (a bad or missing file, any error) is recorded with its reason; the other cases go on.
- Each case folder is written whole or not at all. A rerun into the same output with the same settings keeps the
  complete case folders and registers the others (resume); ``overwrite`` starts afresh.
- A case's result is the one ``mmreg register`` gives for that case alone with the same seed (each case seeds its
  own run); on Dask workers each case uses one thread (unless ``threads`` says otherwise) and a worker process runs
  one case at a time.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Optional

from MMRegistrationLib.core.errors import Cancelled, InputError, MMRegError
from MMRegistrationLib.core.progress import Monitor

SETTINGS_FILE = "cohort.json"
"""The settings of a cohort result, written when its folder is made; a rerun resumes only with equal settings."""

KIND = "mmreg register --cohort"
INSTALL_HINT = 'pip install "mmregistration[cohort]"'
CONNECT_TIMEOUT_S = 5.0
"""How long a Dask scheduler (``--scheduler``) has to answer before the address is refused."""

POLL_S = 0.2
"""How often the Dask runner looks for finished cases (and for a cancel request)."""

_ONE_CASE_AT_A_TIME = threading.Lock()
"""Seeds and thread counts are process-wide: a worker process with several threads runs one case at a time."""


@dataclass(frozen=True)
class CohortSettings:
    """What decides the results (a resumed cohort must keep them) plus the device they ran on."""

    method: str
    options: dict = field(default_factory=dict)
    init: Optional[str] = None
    seed: int = 0
    device: str = "auto"
    label_channel: Optional[int] = None
    target_label: Optional[str] = None
    fixed_seg: Optional[str] = None
    moving_seg: Optional[str] = None

    RESULT_KEYS = ("method", "options", "init", "seed", "label_channel", "target_label", "fixed_seg", "moving_seg")
    """``fixed_seg`` / ``moving_seg``: ``auto`` (or ``auto:mr`` / ``auto:trus``) registers on the predicted gland
    instead of the case's segmentation (still used for the evaluation); None: the case's own file."""

    def as_record(self) -> dict:
        """JSON-ready settings (options as given)."""
        record = {name: getattr(self, name) for name in (*self.RESULT_KEYS, "device")}
        return json.loads(json.dumps(record, default=str))

    def differences(self, earlier: dict) -> list:
        """The names of the result-deciding settings that differ from an earlier record."""
        now = self.as_record()
        return [name for name in self.RESULT_KEYS if earlier.get(name) != now[name]]


@dataclass(frozen=True)
class CaseTask:
    """One case to run: its input folder, its result folder, and whether to register it (False: a complete earlier
    result is kept and only evaluated). Plain data, so it can travel to a Dask worker."""

    name: str
    folder: str
    out: str
    settings: CohortSettings
    threads: Optional[int] = None
    register: bool = True


@dataclass(frozen=True)
class CaseOutcome:
    """What became of one case. ``status``: ``registered``, ``kept`` (an earlier complete result) or ``failed``;
    ``row``: the evaluation row (:func:`~MMRegistrationLib.evaluation.summary.case_row`) unless it failed."""

    name: str
    status: str
    row: Optional[dict] = None
    error: Optional[str] = None
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass(frozen=True)
class CohortResult:
    """Every case's outcome (in case order) and the summary statistics over the cases that did not fail."""

    out: Path
    outcomes: tuple
    summary: dict

    @property
    def failed(self) -> list:
        return [o for o in self.outcomes if o.failed]


# ---- one case ------------------------------------------------------------------------------------------------
def describe_error(err: BaseException) -> str:
    """One line for the summary: the engine's own message, or the exception type and message otherwise."""
    text = str(err).strip().replace("\n", " ")
    return text if isinstance(err, MMRegError) else f"{type(err).__name__}: {text}"


def case_inputs(folder: str | Path) -> tuple:
    """``(files, fixed image, moving image)`` of a case folder; a missing or ambiguous file is an InputError."""
    from MMRegistrationLib.evaluation.cohort import case_files, find_case_file

    files = case_files(folder)
    fixed = find_case_file(files.folder, "fixed", "--cohort", True)
    moving = find_case_file(files.folder, "moving", "--cohort", True)
    return files, fixed, moving


def is_complete(folder: str | Path) -> bool:
    """True when ``folder`` holds a readable ``result.json`` and every file it lists."""
    folder = Path(folder)
    try:
        record = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        listed = list(record["files"].values())
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return False
    return all(isinstance(name, str) and (folder / name).is_file() for name in listed)


def register_case(task: CaseTask, files, fixed: Path, moving: Path, progress=None, cancel=None) -> dict:
    """``register_files`` on one case folder into ``task.out``; returns its record."""
    from MMRegistrationLib.io.outputs import check_output_target
    from MMRegistrationLib.registration.pipeline import register_files

    s = task.settings
    check_output_target(task.out, (files.folder,), overwrite=True)  # never a foreign folder of that name
    optional = {name: None if getattr(files, name) is None else str(getattr(files, name))
                for name in ("fixed_landmarks", "moving_landmarks")}
    return register_files(s.method, str(fixed), str(moving), task.out, fixed_seg=s.fixed_seg or str(files.fixed_seg),
                          moving_seg=s.moving_seg or str(files.moving_seg), **optional, init=s.init, options=dict(s.options),
                          seed=s.seed, device=s.device, progress=progress, cancel=cancel,
                          label_channel=s.label_channel, threads=task.threads, target_label=s.target_label)


def evaluate_result(task: CaseTask, files) -> dict:
    """The cohort-evaluation row of a case's written result (its ``transform.h5`` read back)."""
    from MMRegistrationLib.core.threads import choose_threads, engine_threads
    from MMRegistrationLib.evaluation.case import evaluate_case
    from MMRegistrationLib.evaluation.cohort import load_case
    from MMRegistrationLib.evaluation.summary import case_row

    if not is_complete(task.out):
        raise MMRegError(f"{task.out} holds no complete result")
    inputs = load_case(replace(files, transform=Path(task.out) / "transform.h5"), task.settings.label_channel)
    inputs.pop("fixed_image")
    with engine_threads(choose_threads(task.threads)):
        evaluation = evaluate_case(**inputs, jacobian=True)
    return case_row(task.name, evaluation, "transform.h5")


def run_case(task: CaseTask, progress=None, cancel=None) -> CaseOutcome:
    """Register (unless kept) and evaluate one case. Every error of the case is caught and returned as a ``failed``
    outcome, except a cancellation (:class:`Cancelled`, ``KeyboardInterrupt``), which stops the cohort."""
    t0 = time.perf_counter()
    try:
        with _ONE_CASE_AT_A_TIME:
            files, fixed, moving = case_inputs(task.folder)
            if task.register:
                register_case(task, files, fixed, moving, progress, cancel)
            row = evaluate_result(task, files)
    except Cancelled:
        raise
    except Exception as err:  # noqa: BLE001 - a case's failure, whatever it is, must not stop the others
        return CaseOutcome(task.name, "failed", error=describe_error(err), seconds=time.perf_counter() - t0)
    return CaseOutcome(task.name, "registered" if task.register else "kept", row=row,
                       seconds=time.perf_counter() - t0)


# ---- the output folder ---------------------------------------------------------------------------------------
def earlier_settings(out: Path) -> Optional[dict]:
    """The settings record of an earlier cohort result in ``out``, or None when ``out`` is not one."""
    try:
        record = json.loads((out / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get("settings") if isinstance(record, dict) and record.get("kind") == KIND else None


def check_output(out: str | Path, cohort: str | Path, settings: CohortSettings, overwrite: bool) -> bool:
    """Refuse an output folder this run may not use (naming ``--out``); True when it resumes an earlier result.

    Usable: a new or empty folder; an earlier cohort result with the same settings (resumed); with ``overwrite``, any
    earlier result of mmreg (replaced afresh). Never a folder holding the cohort, a foreign folder or a file.
    """
    from MMRegistrationLib.io.outputs import check_output_target

    target = check_output_target(out, (cohort,), overwrite=True)
    if overwrite or not target.is_dir() or not any(target.iterdir()):
        return False
    earlier = earlier_settings(target)
    if earlier is None:
        raise InputError("--out", f"{out} holds an earlier mmreg result that is not a cohort registration; give "
                                  "--overwrite to replace it, or choose a new folder")
    changed = settings.differences(earlier)
    if changed:
        shown = ", ".join(f"{name} {earlier.get(name)!r} -> {settings.as_record()[name]!r}" for name in changed)
        raise InputError("--out", f"{out} holds a cohort registration made with other settings ({shown}); rerun with "
                                  "the same settings to resume it, give --overwrite to redo every case, or choose a "
                                  "new folder")
    return True


def start_output(out: str | Path, cohort: str | Path, settings: CohortSettings) -> Path:
    """Make ``out`` a new, empty cohort result (replacing an earlier result of mmreg as a whole)."""
    from MMRegistrationLib.evaluation.report import json_text
    from MMRegistrationLib.io.outputs import atomic_output_dir

    with atomic_output_dir(out, inputs=(cohort,)) as tmp:
        record = {"kind": KIND, "cohort": str(Path(cohort).resolve()), "settings": settings.as_record()}
        (tmp / SETTINGS_FILE).write_text(json_text(record), encoding="utf-8")
    return Path(out).resolve()


def plan_cases(folders: list, out: Path, settings: CohortSettings, threads: Optional[int]) -> list:
    """One :class:`CaseTask` per case folder; a case whose result folder is complete is kept."""
    return [CaseTask(f.name, str(f.resolve()), str(out / f.name), settings, threads, not is_complete(out / f.name))
            for f in folders]


def write_summary(out: Path, outcomes: list, settings: CohortSettings) -> dict:
    """``cases.csv`` (every case: status, metrics, error), ``summary.csv`` and ``summary.json`` (statistics over the
    cases that did not fail, the settings, each failed case's error); returns the statistics."""
    from MMRegistrationLib.evaluation.cohort import write_tables
    from MMRegistrationLib.evaluation.summary import summarize

    summary = summarize([o.row for o in outcomes if not o.failed])
    rows = [{"case": o.name, "status": o.status, **{k: v for k, v in (o.row or {}).items() if k != "case"},
             "error": o.error or ""} for o in outcomes]
    failed = {o.name: o.error for o in outcomes if o.failed}
    write_tables(out, rows, summary, {"succeeded": len(outcomes) - len(failed), "failed": failed,
                                      "registration": settings.as_record()})
    return summary


# ---- running the cases ---------------------------------------------------------------------------------------
def done_message(outcome: CaseOutcome, k: int, n: int) -> str:
    """The progress message of a finished case: ``cohort: case NAME done (k/n)``."""
    what = {"registered": "done", "kept": "done (kept from an earlier run)"}.get(outcome.status, "failed")
    return f"cohort: case {outcome.name} {what} ({k}/{n})"


def run_serial(tasks: list, monitor: Monitor, on_case: Callable, cancel=None) -> list:
    """Run the cases one after the other in this process, with each case's progress as the detail."""
    outcomes = []
    n = len(tasks)
    for k, task in enumerate(tasks):
        inner = monitor.stage(k / n, (k + 1) / n)
        monitor.report(k / n, f"cohort: case {task.name} ({k + 1}/{n})")
        outcome = run_case(task, lambda f, m, s=inner, name=task.name: s.report(f, f"cohort: {name}: {m}"), cancel)
        outcomes.append(outcome)
        on_case(outcome)
        monitor.report((k + 1) / n, done_message(outcome, k + 1, n))
    return outcomes


def run_on_dask(client, tasks: list, monitor: Monitor, on_case: Callable) -> list:
    """Submit one Dask task per case and collect the outcomes as they finish (a case whose worker died fails).
    Unfinished tasks are cancelled when this returns or is interrupted."""
    run_id = uuid.uuid4().hex[:8]
    futures = {client.submit(run_case, task, key=f"mmreg-case-{task.name}-{run_id}", pure=False): task
               for task in tasks}
    pending = dict(futures)
    outcomes = {}
    try:
        while pending:
            monitor.check("cohort")
            for future in [f for f in pending if f.done()]:
                outcome = outcome_of(future, pending.pop(future))
                outcomes[outcome.name] = outcome
                on_case(outcome)
                monitor.report(len(outcomes) / len(tasks), done_message(outcome, len(outcomes), len(tasks)))
            time.sleep(POLL_S if pending else 0.0)
    finally:
        client.cancel([f for f in futures if not f.done()])
    return [outcomes[task.name] for task in tasks]


def outcome_of(future, task: CaseTask) -> CaseOutcome:
    """A finished future's outcome; a task that did not run through (its worker died) is a failed case."""
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - e.g. KilledWorker, or the package missing on a worker
        return CaseOutcome(task.name, "failed", error=f"did not run on the Dask cluster: {describe_error(err)}")


def import_distributed(argument: str):
    """The ``distributed`` package, or an :class:`InputError` naming ``argument`` that says how to install it."""
    try:
        import distributed
    except ImportError:
        raise InputError(argument, f"needs Dask (dask[distributed]), which is not installed; install it with "
                                   f"{INSTALL_HINT}") from None
    return distributed


@contextlib.contextmanager
def dask_client(workers: Optional[int] = None, scheduler: Optional[str] = None,
                timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator:
    """A Dask client: of a local cluster of ``workers`` single-threaded processes, or of the scheduler at
    ``scheduler`` (refused, naming ``--scheduler``, when it does not answer within ``timeout_s``). The client and
    the local cluster are closed on the way out, however it is left."""
    distributed = import_distributed("--scheduler" if scheduler is not None else "--workers")
    cluster = None
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=f"{timeout_s}s", set_as_default=False)
        except (OSError, TimeoutError, ValueError, TypeError) as err:
            raise InputError("--scheduler", f"no Dask scheduler answered at {scheduler} within {timeout_s:g} s "
                                            f"({describe_error(err)}); start one with 'dask scheduler' and workers "
                                            "with 'dask worker ADDRESS --nthreads 1'") from None
    else:
        cluster = local_cluster(distributed, workers)
        client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


WORKER_ENVIRONMENT = {"MALLOC_TRIM_THRESHOLD_": None}
"""Dask's defaults for the environment of its worker processes that are changed here (None: not set).
``MALLOC_TRIM_THRESHOLD_`` (Dask: 65536) fixes glibc's mmap threshold, so every tensor above 128 kB is mapped and
unmapped again: torch work took 1.7x as long in such a process (measured)."""


def local_cluster(distributed, workers: int):
    """A local Dask cluster of ``workers`` single-threaded worker processes (with :data:`WORKER_ENVIRONMENT`). This
    process's environment is left as it was (Dask's nannies write their workers' variables into it)."""
    import logging

    import dask

    settings = {f"distributed.nanny.pre-spawn-environ.{name}": value for name, value in WORKER_ENVIRONMENT.items()}
    try:
        with kept_environment(), dask.config.set(settings), ctrl_c_ignored():
            return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=logging.ERROR)
    except Exception as err:  # noqa: BLE001 - whatever stops the processes from starting is said in one line
        raise MMRegError(f"could not start a local Dask cluster of {workers} workers: {describe_error(err)}") from None


@contextlib.contextmanager
def ctrl_c_ignored() -> Iterator[None]:
    """SIGINT ignored while the ``with`` body starts processes, which keep ignoring it: Ctrl-C at a terminal reaches
    the whole process group, and the cluster's workers are to be stopped by this process (which closes the cluster),
    not by the signal (each would print a traceback). Only in the main thread, where signals can be set."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def kept_environment() -> Iterator[None]:
    """Put this process's environment variables back as they were when the ``with`` body ends."""
    import os

    saved = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        for name, value in saved.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


def remove_leftovers(tasks: list) -> None:
    """Remove the partial case folders of worker processes that were stopped (their process is gone)."""
    from MMRegistrationLib.io.outputs import remove_stale_leftovers

    for task in tasks:
        remove_stale_leftovers(Path(task.out))


# ---- the cohort ----------------------------------------------------------------------------------------------
def check_request(method: str, options, threads, workers, scheduler) -> None:
    """Everything about the request that can be refused before any file is read (errors name the flag)."""
    from MMRegistrationLib.core.threads import choose_threads
    from MMRegistrationLib.registration.methods import get_method

    get_method(method).build_config(options)
    choose_threads(threads)
    if workers is not None and scheduler is not None:
        raise InputError("--scheduler", "cannot be combined with --workers (the scheduler's workers run the cases)")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError("--workers", f"must be a whole number of worker processes, at least 1, got {workers!r}")
    if workers is not None or scheduler is not None:
        import_distributed("--scheduler" if scheduler is not None else "--workers")


def check_auto_segmentations(fixed_seg, moving_seg) -> None:
    """``fixed_seg`` / ``moving_seg`` of a cohort are None or ``auto[:mr|:trus]``, and the networks are there."""
    from MMRegistrationLib.segmentation.auto import auto_modality, check_auto_weights

    for value, side in ((fixed_seg, "fixed"), (moving_seg, "moving")):
        if value is not None and auto_modality(value, side, f"--{side}-seg") is None:
            raise InputError(f"--{side}-seg", "with --cohort only 'auto' (or auto:mr, auto:trus) is accepted: each case "
                                              "folder holds its own segmentations")
    check_auto_weights(fixed_seg, moving_seg)


def register_cohort(
    cohort: str | Path,
    out: str | Path,
    method: str,
    options: Optional[dict] = None,
    init: Optional[str] = None,
    seed: int = 0,
    device: str = "auto",
    threads: Optional[int] = None,
    label_channel: Optional[int] = None,
    target_label: Optional[str] = None,
    overwrite: bool = False,
    workers: Optional[int] = None,
    fixed_seg: Optional[str] = None,
    moving_seg: Optional[str] = None,
    scheduler: Optional[str] = None,
    progress=None,
    cancel=None,
    on_case: Optional[Callable[[CaseOutcome], None]] = None,
) -> CohortResult:
    """Register every case of ``cohort`` into ``out`` (see the module docstring), then evaluate the results.

    Args:
        cohort: a folder whose non-hidden sub-folders are the cases.
        out: the output folder: new or empty, an earlier cohort result with the same settings (resumed: complete
            cases are kept), or with ``overwrite`` any earlier result of mmreg (every case redone).
        method, options, init, seed, device, label_channel, target_label: as for ``register_files``, for every case.
        fixed_seg, moving_seg: ``auto`` (``auto:mr``, ``auto:trus``) to register on the glands the segmentation
            networks predict (the case folders' segmentations still evaluate the results); None: the case's files.
        threads: CPU threads per case; ``None``: the engine's policy in this process, 1 on Dask workers.
        workers: run on a local Dask cluster of this many single-threaded worker processes.
        scheduler: run on the Dask cluster whose scheduler is at this address (e.g. ``tcp://host:8786``); the case
            and output paths must be valid on its workers.
        progress, cancel: progress callback (``cohort: case NAME done (k/n)``) and cancel check.
        on_case: called with each case's :class:`CaseOutcome` as it finishes.

    Returns:
        :class:`CohortResult`. Failed cases are in it (and in the tables), not raised.

    Raises:
        InputError: a bad request, an empty cohort, an unusable output folder, a scheduler that does not answer.
        Cancelled / KeyboardInterrupt: stopped; finished cases are kept and unfinished ones leave nothing.
    """
    options = dict(options or {})
    check_request(method, options, threads, workers, scheduler)
    check_auto_segmentations(fixed_seg, moving_seg)
    from MMRegistrationLib.evaluation.cohort import find_cases

    settings = CohortSettings(method, options, init, seed, device, label_channel, target_label, fixed_seg, moving_seg)
    folders = find_cases(cohort, exclude=Path(out))
    resume = check_output(out, cohort, settings, overwrite)
    monitor = Monitor.wrap(progress, cancel)
    on_case = on_case or (lambda outcome: None)
    if workers is None and scheduler is None:
        target = open_output(out, cohort, settings, resume)
        outcomes = run_serial(plan_cases(folders, target, settings, threads), monitor, on_case, cancel)
    else:
        target, outcomes = run_distributed(folders, (out, cohort, settings, resume), threads, workers, scheduler,
                                           monitor, on_case)
    summary = write_summary(target, outcomes, settings)
    return CohortResult(target, tuple(outcomes), summary)


def open_output(out: str | Path, cohort: str | Path, settings: CohortSettings, resume: bool) -> Path:
    """The output folder, resolved: the earlier result when resuming, else a new one (:func:`start_output`)."""
    return Path(out).resolve() if resume else start_output(out, cohort, settings)


def run_distributed(folders: list, output: tuple, threads, workers, scheduler, monitor: Monitor,
                    on_case: Callable) -> tuple:
    """``(output folder, outcomes)`` of the cases run on Dask (``output``: :func:`open_output`'s arguments). If it
    is stopped, the local cluster is closed first and then what its workers were writing is removed."""
    tasks: list = []
    try:
        with dask_client(workers, scheduler) as client:
            target = open_output(*output)
            tasks = plan_cases(folders, target, output[2], threads if threads is not None else 1)
            where = f"{workers} local Dask worker(s)" if workers is not None else f"the Dask cluster at {scheduler}"
            monitor.report(0.0, f"cohort: {len(tasks)} cases on {where}")
            return target, run_on_dask(client, tasks, monitor, on_case)
    except BaseException:
        if workers is not None:  # a remote worker may still be finishing its case: its folder is left to it
            remove_leftovers(tasks)
        raise
