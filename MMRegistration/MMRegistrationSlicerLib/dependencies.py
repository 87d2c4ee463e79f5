"""Python dependencies inside 3D Slicer.

torch comes from the PyTorch extension's utilities (declared as an extension dependency); other packages
are installed with ``slicer.util.pip_install`` after asking the user. Packages Slicer ships (numpy,
SimpleITK, vtk) are never replaced. Nothing is installed at import time.
"""

from __future__ import annotations

import importlib.util

EXTRA_PACKAGES = {"scipy": "scipy", "skimage": "scikit-image", "matplotlib": "matplotlib", "nibabel": "nibabel"}
"""import name -> pip requirement of the engine's dependencies that Slicer may lack."""


def missing_packages() -> list:
    """pip requirements of the engine that are not importable in this Python."""
    return [req for module, req in EXTRA_PACKAGES.items() if importlib.util.find_spec(module) is None]


def ensure_engine_dependencies(ask: bool = True) -> None:
    """Make torch and the engine's other dependencies importable, asking before installing anything.

    Raises RuntimeError if the user declines or an installation fails.
    """
    import slicer

    if importlib.util.find_spec("torch") is None:
        try:
            import PyTorchUtils  # provided by the PyTorch extension
        except ImportError:
            raise RuntimeError("MMRegistration needs PyTorch: install the 'PyTorch' extension from the Extensions Manager") from None
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=ask)
        if torch is None:
            raise RuntimeError("PyTorch was not installed; MMRegistration cannot run without it")
    missing = missing_packages()
    if missing:
        if ask and not slicer.util.confirmOkCancelDisplay(
            f"MMRegistration needs these Python packages: {', '.join(missing)}. Install them now?",
            "Missing Python packages",
        ):
            raise RuntimeError(f"missing Python packages: {', '.join(missing)}")
        slicer.util.pip_install(" ".join(missing))
