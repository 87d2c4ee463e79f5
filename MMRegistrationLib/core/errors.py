"""Exceptions with messages that name the offending argument and the fix."""

from __future__ import annotations


class MMRegError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(MMRegError, ValueError):
    """Bad user input: names the argument (``--fixed``, ``moving_seg`` ...) and what is wrong with it.

    Subclasses :class:`ValueError` so GUI-free logic can follow Slicer's ``process()`` convention.
    """

    def __init__(self, argument: str, problem: str):
        self.argument = argument
        self.problem = problem
        super().__init__(f"{argument}: {problem}" if argument else problem)


class Cancelled(MMRegError):
    """Raised when a cancel check returned True; nothing is written after it."""

    def __init__(self, stage: str = ""):
        super().__init__(f"cancelled{' during ' + stage if stage else ''}")
