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


def _parameter_choices(module_file) -> dict:
    """Field -> the list given to ``Choice([...])`` in its ``Annotated[...]`` type."""
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    choices = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            for call in ast.walk(node.annotation):
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Choice":
                    choices[node.target.id] = ast.literal_eval(call.args[0])
    return choices


def _module_constant(module_file, name: str):
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{module_file.name}: no module-level {name}")


def _ui_widgets(ui_file) -> dict:
    """Widget name -> class of every widget in the .ui file."""
    return {w.get("name"): w.get("class") for w in ET.parse(ui_file).getroot().iter("widget")}


def test_there_is_at_least_one_module():
    assert {"RegistrationEvaluation", "SINRRegistration"} <= set(MODULES)


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
    """torch and the engine are imported inside methods, never at module import (Slicer startup stays fast); the
    only shared module imported at the top is the light widget mixin (itself checked to import nothing heavy)."""
    tree = ast.parse((MODULES_DIR / module / f"{module}.py").read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names] + [
        n.module for n in top if isinstance(n, ast.ImportFrom) and n.module
    ]
    names = [n for n in names if n != "MMRegistrationSlicerLib.module_widget"]
    heavy = [n for n in names if re.match(r"(torch|MMRegistrationLib|MMRegistrationSlicerLib|scipy|skimage)\b", n)]
    assert not heavy, heavy
    mixin = ast.parse((MODULES_DIR / "MMRegistrationSlicerLib" / "module_widget.py").read_text(encoding="utf-8"))
    assert all(isinstance(n, ast.ImportFrom) and n.module == "__future__"
               for n in mixin.body if isinstance(n, (ast.Import, ast.ImportFrom)))


@pytest.mark.parametrize("module", MODULES)
def test_module_title_category_and_widgets(module):
    """Every module is in the extension's category; every ``self.ui.name`` the code uses exists in its .ui file;
    every node selector gets the scene."""
    folder = MODULES_DIR / module
    code = (folder / f"{module}.py").read_text(encoding="utf-8")
    assert 'self.parent.categories = ["Registration.MMRegistration"]' in code
    title = re.search(r'self\.parent\.title = "([^"]+)"', code).group(1)
    assert title.replace(" ", "") == module, title
    ui_file = folder / "Resources" / "UI" / f"{module}.ui"
    widgets = _ui_widgets(ui_file)
    used = set(re.findall(r"self\.ui\.(\w+)", code))
    assert used <= set(widgets), f"widgets used by the code but missing in the .ui: {used - set(widgets)}"
    combos = {name for name, cls in widgets.items() if cls == "qMRMLNodeComboBox"}
    receivers = {c.findtext("receiver") for c in ET.parse(ui_file).getroot().iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    assert combos <= receivers, f"node selectors without the scene: {combos - receivers}"


def test_sinr_module_parameters_match_the_engine():
    """The module's option parameters name real options of the engine's "sinr" method, the preset and
    initialisation choices are the engine's, and bound widgets are the types the parameter wrapper connects."""
    from MMRegistrationLib.registration.methods import get_method
    from MMRegistrationLib.registration.pipeline import INITS
    from MMRegistrationLib.registration.sinr import PRESETS

    module_file = MODULES_DIR / "SINRRegistration" / "SINRRegistration.py"
    assert _module_constant(module_file, "METHOD") == "sinr"
    options = _module_constant(module_file, "OPTIONS")
    engine_options = {o.name for o in get_method("sinr").options}
    assert set(options.values()) <= engine_options, set(options.values()) - engine_options
    assert set(options) <= _parameter_fields(module_file)
    choices = _parameter_choices(module_file)
    assert choices["preset"] == list(PRESETS)
    assert set(choices["initialization"]) == {"default", *INITS}
    assert choices["device"][0] == "auto"
    ui_file = MODULES_DIR / "SINRRegistration" / "Resources" / "UI" / "SINRRegistration.ui"
    root = ET.parse(ui_file).getroot()
    bound = {w.find("property[@name='SlicerParameterName']/string").text: w.get("class")
             for w in root.iter("widget") if w.find("property[@name='SlicerParameterName']") is not None}
    for name in options:  # "preset" at the minimum: a negative value keeps the preset's
        assert bound[name] in ("QSpinBox", "QDoubleSpinBox"), (name, bound[name])
    assert {bound[name] for name in choices} == {"QComboBox"}
    assert bound["applyToMoving"] == "QCheckBox"


def _parameter_defaults(module_file) -> dict:
    """Field -> literal default value of the @parameterNodeWrapper class (fields without a literal default left out)."""
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    defaults = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            try:
                defaults[node.target.id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return defaults


def test_disa_module_parameters_match_the_engine():
    """The module's advanced parameters name real options of the engine's "disa" method (negative = the engine's
    default, shown as 'default' at the spin box minimum); the mode/search/similarity/mask choices are the engine's,
    in its order, with its defaults; the initialisation choices are the pipeline's; widgets are the types the
    parameter wrapper connects; the logic passes the choices as the engine's arguments of the same names."""
    import dataclasses

    from MMRegistrationLib.registration import disa
    from MMRegistrationLib.registration.methods import get_method
    from MMRegistrationLib.registration.pipeline import INITS

    module_file = MODULES_DIR / "DISASimilarity" / "DISASimilarity.py"
    assert _module_constant(module_file, "METHOD") == "disa"
    options = _module_constant(module_file, "OPTIONS")
    engine_options = {o.name for o in get_method("disa").options}
    assert set(options.values()) <= engine_options, set(options.values()) - engine_options
    fields = _parameter_fields(module_file)
    assert set(options) <= fields
    choices, defaults = _parameter_choices(module_file), _parameter_defaults(module_file)
    engine_defaults = {f.name: f.default for f in dataclasses.fields(disa.DISARegistrationConfig)}
    for name, engine_choices in (("mode", disa.MODES), ("search", disa.SEARCHES), ("similarity", disa.SIMILARITIES),
                                 ("mask", disa.MASKS)):
        assert choices[name] == list(engine_choices), name
        assert defaults[name] == engine_defaults[name], name
        assert name in engine_options
    assert set(choices["initialization"]) == {"default", *INITS}
    assert choices["device"][0] == "auto"
    assert all(defaults[name] == -1 for name in options), {name: defaults[name] for name in options}
    ui_file = MODULES_DIR / "DISASimilarity" / "Resources" / "UI" / "DISASimilarity.ui"
    root = ET.parse(ui_file).getroot()
    bound = {w.find("property[@name='SlicerParameterName']/string").text: w.get("class")
             for w in root.iter("widget") if w.find("property[@name='SlicerParameterName']") is not None}
    for name in options:
        assert bound[name] in ("QSpinBox", "QDoubleSpinBox"), (name, bound[name])
        special = root.find(f".//widget[@name='{name}SpinBox']/property[@name='specialValueText']/string")
        assert special is not None and special.text == "default", name
    assert {bound[name] for name in choices} == {"QComboBox"}
    assert bound["applyToMoving"] == bound["heatmapAutoUpdate"] == "QCheckBox"
    assert bound["weightsFile"] == "QLineEdit"
    assert _ui_widgets(ui_file)["heatmapPlaceWidget"] == "qSlicerMarkupsPlaceWidget"
    code = module_file.read_text(encoding="utf-8")
    assert "p.mode, p.search, p.similarity, p.mask" in code  # register(..., mode, search, similarity, mask, options)
    import inspect

    from MMRegistrationSlicerLib.disa_logic import DISALogic

    assert list(inspect.signature(DISALogic.register).parameters)[6:11] == ["mode", "search", "similarity", "mask",
                                                                          "options"]
