"""Locations of files shipped with the extension (``Resources/`` at the repository root)."""

from __future__ import annotations

from pathlib import Path

from MMRegistrationLib.core.errors import InputError

from MMRegistrationLib.synthetic.writer import CASE_FILES

OPTIONAL_CASE_FILES = ("ground_truth", "case")


def resources_dir() -> Path:
    """``Resources/`` beside the package (source checkout, editable install, or Slicer extension layout)."""
    return Path(__file__).resolve().parent.parent / "Resources"


def sample_case_dir() -> Path:
    return resources_dir() / "SampleCase"


def sample_case_paths(case_dir: Path | None = None, argument: str = "--case") -> dict:
    """Paths of a case folder laid out like the bundled sample case; every listed file must exist."""
    case_dir = Path(case_dir) if case_dir is not None else sample_case_dir()
    paths = {key: case_dir / name for key, name in CASE_FILES.items()}
    missing = [str(p.name) for key, p in paths.items() if key not in OPTIONAL_CASE_FILES and not p.is_file()]
    if missing:
        raise InputError(
            argument,
            f"{case_dir} is not a complete case (missing {', '.join(missing)}); "
            "create one with 'mmreg generate --out DIR'",
        )
    return paths
