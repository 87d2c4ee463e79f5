"""Packaging and layout rules: the engine stays Slicer-free; an existing torch is never replaced."""

from __future__ import annotations

import ast
import re
import pytest

tomllib = pytest.importorskip("tomllib", reason="Python < 3.11")

from conftest import REPO_ROOT

FORBIDDEN = {"slicer", "vtk", "vtkmodules", "qt", "ctk", "PythonQt"}


def test_engine_never_imports_slicer_vtk_or_qt():
    offenders = []
    for path in (REPO_ROOT / "MMRegistrationLib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO_ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


def test_package_dependencies_keep_an_existing_torch():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    torch_spec = next(d for d in project["dependencies"] if re.match(r"torch\b", d))
    assert "==" not in torch_spec and ">=" in torch_spec  # Slicer's PyTorch-extension torch satisfies it
    assert project["scripts"]["mmreg"] == "MMRegistrationLib.cli.main:main"


def test_setup_pins_the_local_cpu_torch():
    pinned = (REPO_ROOT / "requirements" / "pinned.txt").read_text(encoding="utf-8").splitlines()
    assert "torch==2.13.0" in pinned
    assert all("==" in line for line in pinned if line.strip() and not line.startswith("#"))


def test_required_layout_exists():
    for name in ("CMakeLists.txt", "MMRegistration", "MMRegistrationLib", "Testing", "Resources", "README.md",
                 ".ci/run", "pyproject.toml", "benchmarks"):
        assert (REPO_ROOT / name).exists(), name
    assert "bash scripts/test.sh" in (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "bash scripts/demo.sh" in readme and "bash scripts/test.sh" in readme
