"""Python dependencies inside 3D Slicer.

torch comes from the PyTorch extension's utilities (declared as an extension dependency), with the engine's
version requirement; an installed torch older than that is reported, not used. Other packages are installed with
``slicer.util.pip_install`` after asking the user, only those the engine imports on the path in question (SciPy for
every computation, matplotlib for report figures, MONAI for the prostate segmentation network), and always under a
constraints file that pins the packages Slicer ships (numpy, SimpleITK, vtk) and the installed torch to their
installed versions, so pip can never replace them (MONAI depends on torch). Nothing is
installed at import time; this module imports only the standard library.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import tempfile
from pathlib import Path
from typing import Optional

TORCH_REQUIREMENT = ">=2.1"
"""The engine's torch requirement (``pyproject.toml``), passed to the PyTorch extension's installer."""

ENGINE_PACKAGES = {"scipy": "scipy>=1.10"}
"""import name -> pip requirement: what every engine computation imports that Slicer lacks."""

REPORT_PACKAGES = {"matplotlib": "matplotlib>=3.7"}
"""import name -> pip requirement: what the evaluation report's figure imports."""

SEGMENTATION_PACKAGES = {"monai": "monai>=1.3"}
"""import name -> pip requirement: what the prostate segmentation network (the "Segment prostate" action) imports."""

SLICER_PACKAGES = {"numpy": "numpy", "SimpleITK": "SimpleITK", "vtk": "vtk"}
"""import name -> distribution name of the packages Slicer ships: pinned to their installed versions."""


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def missing_packages(packages: Optional[dict] = None) -> list:
    """pip requirements of ``packages`` (default :data:`ENGINE_PACKAGES`) that are not importable here."""
    packages = ENGINE_PACKAGES if packages is None else packages
    return [req for module, req in packages.items() if not _importable(module)]


def release(version: str) -> tuple:
    """The numeric release of a version string: ``"2.1.0+cu121"`` -> ``(2, 1, 0)``, ``"2.10.0a0"`` -> ``(2, 10, 0)``."""
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.group() != piece:
            break
    return tuple(parts)


def minimum_version(requirement: str) -> tuple:
    """``">=2.1"`` -> ``(2, 1)``."""
    return release(requirement.lstrip(">= "))


def installed_version(distribution: str) -> Optional[str]:
    """The installed version of a distribution (without importing it), or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_problem() -> str:
    """Why the installed torch cannot be used ("" when it can, or when none is installed)."""
    if not _importable("torch"):
        return ""
    version = installed_version("torch")
    if version is None or release(version) >= minimum_version(TORCH_REQUIREMENT):
        return ""
    return (f"PyTorch {version} is installed but MMRegistration needs torch{TORCH_REQUIREMENT}: open the PyTorch Utils "
            "module, uninstall PyTorch, restart Slicer, and install it again (or install a newer one from the "
            "Python console)")


def missing_requirements(packages: Optional[dict] = None) -> list:
    """What stops the engine from running here: a missing or too old torch and the missing ``packages``."""
    if not _importable("torch"):
        torch = [f"torch{TORCH_REQUIREMENT}"]
    else:
        torch = [torch_problem()] if torch_problem() else []
    return torch + missing_packages(packages)


def slicer_constraints() -> list:
    """``name==version`` lines pinning the packages Slicer ships (:data:`SLICER_PACKAGES`) as they are installed
    (the module's own version where a package has no distribution metadata, as Slicer's own VTK), and torch when
    installed (the PyTorch extension's build: a package that depends on torch must not replace it)."""
    lines = []
    for module, distribution in SLICER_PACKAGES.items():
        version = installed_version(distribution) or _module_version(module)
        if version:
            lines.append(f"{distribution}=={version}")
    torch = installed_version("torch") if _importable("torch") else None
    if torch:
        lines.append(f"torch=={torch}")
    return lines


def _module_version(module: str) -> Optional[str]:
    if not _importable(module):
        return None
    imported = importlib.import_module(module)
    if module == "vtk":
        return imported.vtkVersion.GetVTKVersion()
    return getattr(imported, "__version__", None)


def pip_arguments(requirements: list, constraints_file: Path) -> list:
    """``slicer.util.pip_install`` arguments installing ``requirements`` under ``constraints_file``."""
    return [*requirements, "--constraint", str(constraints_file)]


def install_packages(requirements: list) -> None:
    """pip-install ``requirements`` without touching the packages Slicer ships (:func:`slicer_constraints`)."""
    import slicer

    with tempfile.TemporaryDirectory(prefix="mmreg-pip-") as folder:
        constraints = Path(folder) / "slicer-constraints.txt"
        constraints.write_text("\n".join(slicer_constraints()) + "\n", encoding="utf-8")
        slicer.util.pip_install(pip_arguments(requirements, constraints))


def ensure_torch(ask: bool = True) -> None:
    """Make torch (:data:`TORCH_REQUIREMENT`) importable through the PyTorch extension; RuntimeError if it is
    missing and not installed, or installed but too old."""
    if not _importable("torch"):
        try:
            import PyTorchUtils  # provided by the PyTorch extension
        except ImportError:
            raise RuntimeError("MMRegistration needs PyTorch: install the 'PyTorch' extension from the Extensions "
                               "Manager") from None
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=ask,
                                                              torchVersionRequirement=TORCH_REQUIREMENT)
        if torch is None:
            raise RuntimeError("PyTorch was not installed; MMRegistration cannot run without it")
    problem = torch_problem()
    if problem:
        raise RuntimeError(problem)


def ensure_packages(packages: dict, ask: bool = True) -> None:
    """pip-install the missing ``packages`` (import name -> requirement) after asking; RuntimeError if declined."""
    import slicer

    missing = missing_packages(packages)
    if not missing:
        return
    if ask and not slicer.util.confirmOkCancelDisplay(
        f"MMRegistration needs these Python packages: {', '.join(missing)}. Install them now? (numpy, SimpleITK "
        "and VTK stay as Slicer ships them.)",
        "Missing Python packages",
    ):
        raise RuntimeError(f"missing Python packages: {', '.join(missing)}")
    install_packages(missing)


def ensure_engine_dependencies(ask: bool = True) -> None:
    """Make torch and the engine's other dependencies importable, asking before installing anything.

    Raises RuntimeError if the user declines, an installation fails or the installed torch is too old.
    """
    ensure_torch(ask)
    ensure_packages(ENGINE_PACKAGES, ask)


def ensure_report_dependencies(ask: bool = True) -> None:
    """What the evaluation report needs on top of the engine (matplotlib for its figure)."""
    ensure_engine_dependencies(ask)
    ensure_packages(REPORT_PACKAGES, ask)


def ensure_segmentation_dependencies(ask: bool = True) -> None:
    """What the "Segment prostate" action needs on top of the engine (MONAI for the segmentation network)."""
    ensure_engine_dependencies(ask)
    ensure_packages(SEGMENTATION_PACKAGES, ask)


def self_test_skip_reason(interactive: bool) -> str:
    """Why a module's self-test cannot run here ("" when it can). ``interactive`` (a person pressed "Reload and
    Test"): missing dependencies are installed after asking first; otherwise (``ctest``, an extension build machine)
    nothing is installed and the missing requirements are named."""
    missing = missing_requirements()
    if not missing:
        return ""
    if interactive:
        try:
            ensure_engine_dependencies(ask=True)
        except RuntimeError as error:
            return f"Self-test skipped: {error}"
        return ""
    return ("Self-test skipped: the engine's Python dependencies are not installed here ("
            + "; ".join(missing) + "). Install the PyTorch extension and run the test again.")


def self_test_can_run(test) -> bool:
    """For a module's ``ScriptedLoadableModuleTest.runTest``: True when the engine can run here; otherwise the
    reason is logged and shown (``test.delayDisplay``) and the test returns without running its scenarios."""
    import logging

    import slicer

    reason = self_test_skip_reason(interactive=not slicer.app.testingEnabled())
    if reason:
        logging.warning(reason)
        test.delayDisplay(reason)
    return not reason
