"""Static checks of the scripted modules (they need Qt, so they cannot be imported here): every .ui widget
bound to a parameter names a real parameter-node field, every field is bound, resources exist, modules stay thin,
and CMake builds every module."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET

import pytest

from conftest import REPO_ROOT

MODULES_DIR = REPO_ROOT / "MMRegistration"
MODULES = sorted(p.parent.name for p in MODULES_DIR.glob("*/CMakeLists.txt"))


def _parameter_fields(module_file) -> set:
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list
        ):
            return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError(f"{module_file.name}: no @parameterNodeWrapper class")


def _ui_parameter_names(ui_file) -> set:
    root = ET.parse(ui_file).getroot()
    names = set()
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                names.add(prop.find("string").text)
    return names


def test_there_is_at_least_one_module():
    assert "RegistrationEvaluation" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_layout_and_parameter_bindings(module):
    folder = MODULES_DIR / module
    module_file = folder / f"{module}.py"
    ui_file = folder / "Resources" / "UI" / f"{module}.ui"
    assert module_file.is_file() and ui_file.is_file()
    assert (folder / "Resources" / "Icons" / f"{module}.png").is_file()
    fields, bound = _parameter_fields(module_file), _ui_parameter_names(ui_file)
    assert bound <= fields, f"widgets bound to unknown parameters: {bound - fields}"
    assert fields <= bound, f"parameters without a widget: {fields - bound}"
    assert len(module_file.read_text(encoding="utf-8").splitlines()) < 300  # thin: the substance is in the libs
    cmake = (folder / "CMakeLists.txt").read_text(encoding="utf-8")
    assert f"set(MODULE_NAME {module})" in cmake and "slicerMacroBuildScriptedModule" in cmake
    assert f"add_subdirectory({module})" in (MODULES_DIR / "CMakeLists.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_heavy_packages_lazily(module):
    """torch and the engine are imported inside methods, never at module import (Slicer startup stays fast)."""
    tree = ast.parse((MODULES_DIR / module / f"{module}.py").read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names] + [
        n.module for n in top if isinstance(n, ast.ImportFrom) and n.module
    ]
    heavy = [n for n in names if re.match(r"(torch|MMRegistrationLib|MMRegistrationSlicerLib|scipy|skimage)\b", n)]
    assert not heavy, heavy
