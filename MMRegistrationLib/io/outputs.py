"""Whole-or-nothing output folders that never destroy data.

- :func:`check_output_target` (called by every command before any work, and again when writing): an output folder
  may replace only an earlier result of this tool (a folder holding :data:`OUTPUT_MARKER`, or a result written
  before the marker existed, recognised by :data:`LEGACY_RESULT_FILES`), and never one that holds or is an input;
  a file is never turned into a folder; the place must be writable.
- :func:`atomic_output_dir` writes into a hidden sibling ``.NAME.partial-PID-XXXX`` and renames it into place; on
  any error or interruption (Ctrl-C, and SIGTERM, which the command line turns into the same) the partial folder is
  removed, and the leftovers of a run that was killed outright (SIGKILL, power loss) are removed by the next run
  into the same place (their process is gone).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from MMRegistrationLib.core.errors import InputError

OUTPUT_MARKER = ".mmreg-output"
"""File written into every output folder: it marks the folder as this tool's (replaceable with ``--overwrite``)."""

LEGACY_RESULT_FILES = ("result.json", "summary.json", "case.json", "training_log.csv")
"""What marks an output folder written before :data:`OUTPUT_MARKER` existed (register/refine, cohort evaluation,
generate, train-disa)."""


def is_earlier_result(folder: str | os.PathLike) -> bool:
    """True when ``folder`` is an output folder of this tool."""
    folder = Path(folder)
    return folder.is_dir() and any((folder / name).is_file() for name in (OUTPUT_MARKER, *LEGACY_RESULT_FILES))


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path)))).resolve()


def _writable_ancestor(target: Path) -> Path:
    """The nearest existing ancestor of ``target`` (where the folder will be created)."""
    for parent in target.parents:
        if parent.exists():
            return parent
    return Path(target.anchor)


def check_output_target(path: str | os.PathLike, inputs: Iterable = (), overwrite: bool = True,
                        argument: str = "--out") -> Path:
    """Refuse an output folder that would destroy data; returns it resolved.

    Raises :class:`InputError` naming ``argument`` when ``path`` is or holds one of ``inputs`` (files or folders),
    is an existing file, is an existing folder that is not an earlier result of this tool, is an earlier result and
    ``overwrite`` is False (an empty folder is fine), or cannot be created/written (a read-only or non-folder
    parent).
    """
    target = _resolved(path)
    for item in inputs:
        if item is None:
            continue
        source = _resolved(item)
        if source == target or target in source.parents:
            raise InputError(argument, f"{path} holds the input {item}: the output folder is replaced as a whole, "
                                       "so it must not contain the inputs; choose another folder")
    if target.exists() and not target.is_dir():
        raise InputError(argument, f"{path} is a file; give a folder name (the outputs are several files)")
    if target.is_dir() and any(target.iterdir()):  # an empty folder loses nothing
        if not is_earlier_result(target):
            raise InputError(argument, f"{path} exists and is not an earlier mmreg result; it would be replaced as a "
                                       "whole: choose a new folder")
        if not overwrite:
            raise InputError(argument, f"{path} holds an earlier result; give --overwrite to replace it, or choose "
                                       "a new folder")
    parent = target.parent if target.parent.exists() else _writable_ancestor(target)
    if not parent.is_dir():
        raise InputError(argument, f"cannot create {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(argument, f"cannot write {path}: the folder {parent} is not writable")
    return target


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_leftovers(target: Path) -> list:
    """Remove ``.NAME.partial-PID-*`` / ``.NAME.old-PID-*`` siblings of ``target`` whose process has ended (a killed
    run's leftovers); returns what was removed."""
    removed = []
    if not target.parent.is_dir():
        return removed
    for kind in ("partial", "old"):
        for leftover in target.parent.glob(f".{target.name}.{kind}-*"):
            pid_text = leftover.name[len(f".{target.name}.{kind}-"):].split("-", 1)[0]
            if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
    return removed


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, argument: str = "--out", inputs: Iterable = ()) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` in one rename, on error it is removed.

    ``path`` is checked first (:func:`check_output_target`: only an earlier result of this tool is replaced, never a
    folder holding ``inputs``); an existing result is kept untouched if anything fails.
    """
    target = check_output_target(path, inputs, overwrite=True, argument=argument)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_leftovers(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{os.getpid()}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the result should look like any folder the user makes
    try:
        yield tmp
        (tmp / OUTPUT_MARKER).write_text(json.dumps({"written_by": "mmreg"}) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}-{tmp.name.rsplit('-', 1)[-1]}")
        os.replace(target, backup)
    try:
        os.replace(tmp, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)  # put the previous output back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def check_output_file(path: str | os.PathLike, inputs: Iterable = (), overwrite: bool = False,
                      suffixes: tuple = (), argument: str = "--out") -> Path:
    """Refuse an output file that would destroy data or cannot be written; returns it resolved.

    :class:`InputError` naming ``argument`` when ``path`` is one of ``inputs``, is a folder, exists without
    ``overwrite``, does not end with one of ``suffixes`` (when given), or its folder cannot be created or written.
    """
    target = _resolved(path)
    if suffixes and not str(path).lower().endswith(tuple(suffixes)):
        raise InputError(argument, f"{path}: give a file ending with {', '.join(suffixes)}")
    for item in inputs:
        if item is not None and _resolved(item) == target:
            raise InputError(argument, f"{path} is the input {item}; choose another file name")
    if target.is_dir():
        raise InputError(argument, f"{path} is a folder; give a file name")
    if target.exists() and not overwrite:
        raise InputError(argument, f"{path} exists; give --overwrite to replace it, or choose a new file name")
    parent = target.parent if target.parent.exists() else _writable_ancestor(target.parent)
    if not parent.is_dir():
        raise InputError(argument, f"cannot create {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(argument, f"cannot write {path}: the folder {parent} is not writable")
    return target
