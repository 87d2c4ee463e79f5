"""Installing the engine's dependencies inside Slicer (``MMRegistrationSlicerLib.dependencies``): torch through the
PyTorch extension with the engine's version requirement, a too old torch reported, only the packages the engine
imports asked for, pip constrained to the numpy/SimpleITK/VTK Slicer ships. ``slicer.util``'s installers and
dialogs and the PyTorch extension are replaced by recorders."""

from __future__ import annotations

import ast
import re
import sys
import types

import pytest

from conftest import REPO_ROOT
from MMRegistrationSlicerLib import dependencies

slicer = pytest.importorskip("slicer")


def _pyproject_requirements() -> dict:
    tomllib = pytest.importorskip("tomllib")
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    requirements = tomllib.loads(text)["project"]["dependencies"]
    return {re.match(r"[A-Za-z0-9_.-]+", r).group().lower(): r for r in requirements}


def _engine_imports() -> set:
    """Top-level packages imported anywhere in MMRegistrationLib."""
    found = set()
    for path in (REPO_ROOT / "MMRegistrationLib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


def test_requirements_are_the_engines():
    declared = _pyproject_requirements()
    assert f"torch{dependencies.TORCH_REQUIREMENT}" == declared["torch"]
    for module, requirement in {**dependencies.ENGINE_PACKAGES, **dependencies.REPORT_PACKAGES}.items():
        assert requirement == declared[requirement.split(">")[0].lower()], requirement


def test_only_packages_the_engine_imports_are_asked_for():
    asked = set(dependencies.ENGINE_PACKAGES) | set(dependencies.REPORT_PACKAGES)
    imported = _engine_imports()
    assert asked <= imported, asked - imported
    assert "skimage" not in asked and "nibabel" not in asked  # not imported, or not on the modules' paths
    assert not asked & set(dependencies.SLICER_PACKAGES)


@pytest.mark.parametrize("version, release", [("2.1.0", (2, 1, 0)), ("2.10.1+cu121", (2, 10, 1)),
                                              ("2.0.0a0+gitabc", (2, 0, 0)), ("1.13.1", (1, 13, 1))])
def test_release_numbers(version, release):
    assert dependencies.release(version) == release
    assert (release >= dependencies.minimum_version(dependencies.TORCH_REQUIREMENT)) == (release >= (2, 1))


@pytest.fixture
def recorder(monkeypatch):
    """Recorders for pip, the confirmation dialog and the PyTorch extension; ``absent`` = packages to pretend are
    not installed; ``torch_version`` = the installed torch's version."""
    calls = types.SimpleNamespace(pip=[], constraints=[], asked=[], torch_installs=[], confirm=True,
                                  absent=set(), torch_version="2.5.1")

    def pip_install(arguments):
        calls.pip.append(list(arguments))
        constraint = arguments[arguments.index("--constraint") + 1]
        with open(constraint, encoding="utf-8") as handle:
            calls.constraints.append(handle.read().split())

    def confirm(text, *args, **kwargs):
        calls.asked.append(text)
        return calls.confirm

    class PyTorchUtilsLogic:
        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None):
            calls.torch_installs.append((askConfirmation, forceComputationBackend, torchVersionRequirement))
            return types.SimpleNamespace(__version__="2.5.1") if calls.confirm else None

    monkeypatch.setattr(slicer.util, "pip_install", pip_install)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", confirm)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    real_importable, real_version = dependencies._importable, dependencies.installed_version
    monkeypatch.setattr(dependencies, "_importable", lambda m: m not in calls.absent and real_importable(m))
    monkeypatch.setattr(dependencies, "installed_version",
                        lambda d: calls.torch_version if d == "torch" else real_version(d))
    return calls


def test_torch_is_installed_with_the_engines_requirement(recorder):
    recorder.absent = {"torch"}
    dependencies.ensure_torch(ask=True)
    assert recorder.torch_installs == [(True, None, ">=2.1")]
    recorder.confirm = False
    with pytest.raises(RuntimeError, match="PyTorch was not installed"):
        dependencies.ensure_torch(ask=True)


def test_an_installed_torch_that_is_too_old_is_reported(recorder):
    recorder.torch_version = "1.13.1"
    with pytest.raises(RuntimeError, match=r"PyTorch 1\.13\.1 is installed but MMRegistration needs torch>=2\.1"):
        dependencies.ensure_engine_dependencies(ask=False)
    assert "1.13.1" in dependencies.missing_requirements()[0]
    assert recorder.torch_installs == [] and recorder.pip == []
    recorder.torch_version = "2.1.0+cpu"
    dependencies.ensure_engine_dependencies(ask=False)  # new enough, everything present: nothing installed


def test_missing_packages_are_installed_after_asking_with_slicers_packages_pinned(recorder):
    import numpy
    import SimpleITK
    import vtk

    recorder.absent = {"scipy", "matplotlib"}
    dependencies.ensure_engine_dependencies(ask=True)
    assert len(recorder.asked) == 1 and "scipy>=1.10" in recorder.asked[0] and "matplotlib" not in recorder.asked[0]
    assert recorder.pip[0][0] == "scipy>=1.10" and recorder.pip[0][1] == "--constraint"
    pins = dict(line.split("==") for line in recorder.constraints[0])
    assert pins["numpy"] == numpy.__version__
    assert pins["SimpleITK"].split("rc")[0] in SimpleITK.Version_VersionString()
    assert pins["vtk"].startswith(vtk.vtkVersion.GetVTKVersion()[:3])
    dependencies.ensure_report_dependencies(ask=True)  # the report's figure: matplotlib, asked for only now
    assert recorder.pip[-1][0] == "matplotlib>=3.7"
    recorder.confirm = False
    with pytest.raises(RuntimeError, match="missing Python packages: scipy"):
        dependencies.ensure_engine_dependencies(ask=True)
    assert len(recorder.pip) == 3  # declined: nothing installed


def test_self_test_skips_without_asking_where_nobody_can_answer(recorder):
    recorder.absent = {"torch", "scipy"}
    reason = dependencies.self_test_skip_reason(interactive=False)
    assert reason.startswith("Self-test skipped") and "torch>=2.1" in reason and "scipy>=1.10" in reason
    assert recorder.asked == [] and recorder.pip == [] and recorder.torch_installs == []
    recorder.confirm = False  # interactive: asked, declined -> skipped with the reason
    assert "PyTorch was not installed" in dependencies.self_test_skip_reason(interactive=True)
    recorder.absent = set()
    assert dependencies.self_test_skip_reason(interactive=False) == ""


def test_segmentation_asks_for_monai_only_when_segmenting_with_torch_pinned(recorder):
    """MONAI (the segmentation network's U-Net) is the engine's requirement, imported by the engine, asked for by the
    "Segment prostate" action only, and installed without replacing the installed torch (MONAI depends on it)."""
    assert dependencies.SEGMENTATION_PACKAGES == {"monai": _pyproject_requirements()["monai"]}
    assert "monai" in _engine_imports() and "monai" not in dependencies.ENGINE_PACKAGES
    recorder.absent = {"monai"}
    dependencies.ensure_engine_dependencies(ask=True)  # registering: nothing asked
    assert recorder.asked == [] and recorder.pip == []
    dependencies.ensure_segmentation_dependencies(ask=True)
    assert len(recorder.asked) == 1 and "monai>=1.3" in recorder.asked[0]
    assert recorder.pip == [["monai>=1.3", "--constraint", recorder.pip[0][2]]]
    assert "torch==2.5.1" in recorder.constraints[0]
    recorder.confirm = False
    with pytest.raises(RuntimeError, match="missing Python packages: monai"):
        dependencies.ensure_segmentation_dependencies(ask=True)
    assert len(recorder.pip) == 1
