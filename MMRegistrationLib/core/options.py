"""Method options defined once: a frozen configuration dataclass whose fields carry their help, unit, range or
choices and whether they are "advanced" in the field metadata.

From that one definition come the checks (in ``__post_init__``, before any image is read, with errors that name the
option as the user typed it: ``--context-weight: must be 0 or more, got -1``), the ``mmreg register`` options,
``mmreg methods`` and the Slicer modules' advanced sections (tooltips, ranges, units).

Example::

    @dataclass(frozen=True)
    class MyConfig(MethodConfig):
        iterations: int = option(80, "maximum Adam iterations", minimum=1, maximum=100000)
        weight: float = option(1.0, "weight of the term", minimum=0.0)
        mode: str = option("fast", "how to run", choices=("fast", "accurate"), advanced=False)

Values may arrive as strings (the command line, a Slicer parameter node); they are converted and checked here.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Callable, Optional

from MMRegistrationLib.core.errors import InputError

NONE_WORDS = ("none", "all", "")
"""Strings an optional option reads as None (``--moving-fov-threshold none``)."""


def check_known_fields(cls, data: dict, argument: str = "config") -> None:
    """:class:`InputError` naming ``argument`` when ``data`` has keys that are not fields of dataclass ``cls`` (a
    config read back from a file: a sidecar, a checkpoint, a case description)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(argument, f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")


def flag_of(name: str) -> str:
    """The command-line spelling of a field name: ``context_weight`` -> ``--context-weight``."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class OptionSpec:
    """One option: a configuration field and what is allowed.

    Attributes:
        name: field name (Python keyword); ``flag`` is its command-line spelling.
        kind: ``int``, ``float``, ``str`` or ``tuple`` (three numbers ``x,y,z``).
        default: the dataclass default.
        help: one line (CLI help, ``mmreg methods``, Slicer tooltips).
        unit: e.g. ``mm``, ``deg`` ('' = none).
        minimum, maximum: allowed range of numbers (inclusive unless ``exclusive_minimum``).
        choices: allowed values of a ``str`` option.
        optional: None is allowed (``none`` on the command line).
        advanced: shown in the Slicer modules' advanced section (else in the main section).
        parse: converts a value of kind ``tuple`` (and checks it); raises :class:`InputError` naming the flag.
    """

    name: str
    kind: type
    default: object
    help: str
    unit: str = ""
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    exclusive_minimum: bool = False
    choices: Optional[tuple] = None
    optional: bool = False
    advanced: bool = True
    parse: Optional[Callable] = None

    @property
    def flag(self) -> str:
        return flag_of(self.name)

    def range_text(self) -> str:
        """``> 0``, ``1 to 100``, ``0 or more`` ... ('' when unbounded or not a number)."""
        if self.kind not in (int, float) or self.minimum is None and self.maximum is None:
            return ""
        low = None if self.minimum is None else f"{'> ' if self.exclusive_minimum else ''}{self.minimum:g}"
        if self.maximum is None:
            return f"> {self.minimum:g}" if self.exclusive_minimum else f"{self.minimum:g} or more"
        if low is None:
            return f"at most {self.maximum:g}"
        return f"{low} to {self.maximum:g}" if not self.exclusive_minimum else f"> {self.minimum:g} and <= {self.maximum:g}"

    def describe(self) -> str:
        """Help with unit, range or choices and default: what ``mmreg methods`` and ``--help`` show."""
        facts = []
        if self.choices:
            facts.append(" | ".join(self.choices))
        elif self.range_text():
            facts.append(self.range_text() + (f" {self.unit}" if self.unit else ""))
        elif self.unit:
            facts.append(self.unit)
        if self.optional:
            facts.append("or 'none'")
        return f"{self.help} [{', '.join(facts)}]" if facts else self.help

    def convert(self, value):
        """``value`` (possibly a string) as this option's type, checked; :class:`InputError` naming ``flag``."""
        if value is None or (self.optional and isinstance(value, str) and value.strip().lower() in NONE_WORDS):
            if self.optional:
                return None
            raise InputError(self.flag, "a value is required")
        if self.parse is not None:
            return self.parse(value, self.flag)
        if self.kind is str:
            return self._checked_choice(str(value))
        if self.kind is bool:
            return self._boolean(value)
        return self._checked_number(value)

    def _checked_choice(self, value: str) -> str:
        if self.choices is not None and value not in self.choices:
            raise InputError(self.flag, f"unknown value '{value}'; choose one of {', '.join(self.choices)}")
        return value

    def _boolean(self, value) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise InputError(self.flag, f"expected true or false, got {value!r}")

    def _checked_number(self, value):
        what = "an integer" if self.kind is int else "a number"
        if isinstance(value, bool):
            raise InputError(self.flag, f"expected {what}, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(self.flag, f"expected {what}, got {value!r}") from None
        if not math.isfinite(number):
            raise InputError(self.flag, f"must be a finite number, got {value}")
        if self.kind is int:
            if number != int(number):
                raise InputError(self.flag, f"expected an integer, got {value}")
            number = int(number)
        too_low = self.minimum is not None and (
            number <= self.minimum if self.exclusive_minimum else number < self.minimum)
        too_high = self.maximum is not None and number > self.maximum
        if too_low or too_high:
            raise InputError(self.flag, f"must be {self._bounds_phrase()}, got {value}")
        return number

    def _bounds_phrase(self) -> str:
        """``a positive integer and at most 12``, ``0 or more``, ``at least 5 mm and at most 60 mm`` ..."""
        unit = f" {self.unit}" if self.unit else ""
        if self.minimum is None:
            low = ""
        elif self.minimum == 0:
            low = f"a positive number{' of ' + self.unit if self.unit else ''}" if self.exclusive_minimum else "0 or more"
        elif self.kind is int and self.minimum == 1:
            low = "a positive integer"
        elif self.maximum is not None:
            return f"within {'(' if self.exclusive_minimum else '['}{self.minimum:g}, {self.maximum:g}]{unit}"
        else:
            low = f"{'more than' if self.exclusive_minimum else 'at least'} {self.minimum:g}{unit}"
        high = "" if self.maximum is None else f"at most {self.maximum:g}{unit}"
        return " and ".join(p for p in (low, high) if p)


def existing_file(value, argument: str) -> str:
    """``parse`` of a file option: the path of an existing file ('' = the default); :class:`InputError` otherwise."""
    from pathlib import Path

    text = str(value)
    if text and not Path(text).expanduser().is_file():
        raise InputError(argument, f"file not found: {text}")
    return text


def option(default, help: str, *, unit: str = "", minimum: Optional[float] = None, maximum: Optional[float] = None,
           exclusive_minimum: bool = False, choices: Optional[tuple] = None, optional: bool = False,
           advanced: bool = True, parse: Optional[Callable] = None, kind: Optional[type] = None):
    """A dataclass field that is a method option (see the module docstring). ``kind`` defaults to the default's type
    (give it when the default is None)."""
    if kind is None:
        if default is None:
            raise TypeError("option(): give 'kind' when the default is None")
        kind = tuple if isinstance(default, tuple) else type(default)
    meta = dict(help=help, unit=unit, minimum=minimum, maximum=maximum, exclusive_minimum=exclusive_minimum,
                choices=None if choices is None else tuple(choices), optional=optional, advanced=advanced,
                parse=parse, kind=kind)
    return field(default=default, metadata={"option": meta})


def option_specs(config_cls) -> tuple:
    """The :class:`OptionSpec` of every option field of a configuration dataclass, in field order."""
    out = []
    for f in fields(config_cls):
        meta = f.metadata.get("option")
        if meta is None:
            continue
        default = None if f.default is MISSING else f.default
        out.append(OptionSpec(name=f.name, default=default, **meta))
    return tuple(out)


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method's configuration: ``__post_init__`` converts and checks every option field (values may be
    strings), then :meth:`check` does the checks that involve several fields."""

    def __post_init__(self):
        for spec in option_specs(type(self)):
            object.__setattr__(self, spec.name, spec.convert(getattr(self, spec.name)))
        self.check()

    def check(self) -> None:
        """Checks across fields; raise :class:`InputError` naming the option."""

    @classmethod
    def options(cls) -> tuple:
        return option_specs(cls)

    @classmethod
    def from_options(cls, given: Optional[dict] = None, base: Optional[dict] = None, method: str = ""):
        """A config from keyword options over ``base`` (e.g. a preset's values); an unknown name is an error naming
        it as a flag. ``None`` means "not given" (the string ``"none"`` gives None to an option that allows it)."""
        given = {k: v for k, v in (given or {}).items() if v is not None}
        known = {s.name for s in cls.options()}
        unknown = sorted(set(given) - known)
        if unknown:
            owner = f"method '{method}'" if method else cls.__name__
            raise InputError(flag_of(unknown[0]), f"{owner} has no such option; its options: "
                             f"{', '.join(flag_of(k) for k in sorted(known)) or 'none'}")
        return cls(**{**(base or {}), **given})

    def as_dict(self) -> dict:
        """Plain values (``result.json``)."""
        return asdict(self)
