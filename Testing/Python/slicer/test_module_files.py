"""Static checks of the scripted modules (they need Qt, so they cannot be imported here): every .ui widget
bound to a parameter names a real parameter-node field, every field is bound, resources exist, modules stay thin,
CMake builds every module, and the option parameters follow the engine's option metadata (ranges, choices,
defaults, tooltips applied by ``MMRegistrationSlicerLib.option_widgets``)."""

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
    assert {"DISASimilarity", "RegistrationEvaluation", "RSORefine", "SINRRegistration"} <= set(MODULES)


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


# ---- the option parameters follow the engine's option metadata ---------------------------------------------------
NOT_IN_OPTIONS = {
    # Every engine option of the module's method that its OPTIONS map (the advanced spin boxes, -1 = the preset's or
    # engine's value) does not map, and every option with advanced=False, with the reason. Adding an option to the
    # engine fails test_module_parameters_follow_the_engine_metadata until it is mapped or listed here.
    "SINRRegistration": {
        "preset": "main choice (advanced=False): its own combo box, EXPLICIT_OPTIONS; Choice = the engine's presets",
        "mask_smoothing_mm": "fine tuning of the surface losses; the preset's value (CLI: --mask-smoothing-mm)",
        "band_mm": "fine tuning of the surface losses; the preset's value",
        "sdm_clip_mm": "fine tuning of the signed distance loss; the preset's value",
        "patience": "stopping rule; the preset's value",
        "min_improvement": "stopping rule; the preset's value",
        "coarse_iterations": "coarse-to-fine schedule; the preset's value",
        "num_frequencies": "network architecture: the presets' business",
        "frequency_scale": "network architecture: the presets' business",
        "hidden": "network architecture: the presets' business",
        "depth": "network architecture: the presets' business",
        "velocity_scale_mm": "network output scaling: the presets' business",
        "squaring_steps": "scaling-and-squaring detail; the preset's value",
        "image_weights": "the image term uses the shipped DISA weights in the module",
    },
    "DISASimilarity": {
        "mode": "main choice (advanced=False): its own combo box, passed as DISALogic.register(mode=...)",
        "search": "main choice (advanced=False): its own combo box, passed as DISALogic.register(search=...)",
        "similarity": "main choice (advanced=False): its own combo box, passed as DISALogic.register(similarity=...)",
        "mask": "main choice (advanced=False): its own combo box, passed as DISALogic.register(mask=...)",
        "weights": "a file path: the weightsFile line edit (EXPLICIT_OPTIONS; empty = the shipped weights)",
        "precision": "automatic in the module (bfloat16 where the device has it)",
        "weighting": "the engine's default (variance) in the module",
        "finest_points": "the engine's default (chosen by measurement) in the module",
        "fixed_fov_threshold": "the engine's default (0: the ultrasound sector)",
        "moving_fov_threshold": "the engine's default (every voxel)",
        "probe_point": "probe geometry: inferred from the ultrasound sector in the module",
        "probe_direction": "probe geometry: inferred from the ultrasound sector in the module",
        "probe_decay_mm": "probe model detail; the engine's default (fitted anyway)",
        "deformable_after": "the engine's default (affine) in the module",
        "squaring_steps": "deformable detail; the engine's default",
        "output_spacing_mm": "deformable detail; the engine's default",
    },
    "RSORefine": {  # METHOD "refine": the options of one refinement step (option_widgets.OPTION_SETS)
        "iterations": "main option (advanced=False) on the command line; in the module's advanced section (OPTIONS, "
                      "-1 = the engine's default)",
        "trainable": "a choice: its own combo box (EXPLICIT_OPTIONS; Choice = the engine's choices)",
        "image_similarity": "a choice: its own combo box (EXPLICIT_OPTIONS; Choice = the engine's choices)",
        "precision": "a choice: its own combo box (EXPLICIT_OPTIONS; Choice = the engine's choices)",
        "hold": "a choice: its own combo box (EXPLICIT_OPTIONS; Choice = the engine's choices)",
        "weights": "a network name or file: the weights line edit (EXPLICIT_OPTIONS; empty = the general step's, "
                   "mix_plus by default; also the general model's weights)",
    },
}
ENGINE_MODULES = sorted(NOT_IN_OPTIONS)
SPECIAL_VALUE_TEXT = {"SINRRegistration": "preset", "DISASimilarity": "default", "RSORefine": "default"}
"""What the .ui shows for the -1 sentinel of the OPTIONS spin boxes (``specialValueText``)."""
SENTINEL = -1
NON_ENGINE_CHOICES = {"initialization", "device"}
"""``Choice`` parameters that are not engine options of the method (checked against the pipeline below)."""
WIDGET_CLASSES = {int: {"QSpinBox"}, float: {"QDoubleSpinBox"}, bool: {"QCheckBox"}, str: {"QLineEdit"}}
"""Parameter type -> widget classes the parameter node wrapper connects to it (``Choice``: QComboBox; MRML nodes:
qMRMLNodeComboBox)."""


def _parameters(module_file) -> dict:
    """Field -> ``{"type": name, "range": (lo, hi) | None, "choices": list | None, "default": literal | None,
    "annotations": [names]}`` of the @parameterNodeWrapper class."""
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and any(
        getattr(d, "id", None) == "parameterNodeWrapper" for d in n.decorator_list))
    out = {}
    for node in cls.body:
        if not isinstance(node, ast.AnnAssign):
            continue
        info = {"type": None, "range": None, "choices": None, "default": None, "annotations": []}
        annotation = node.annotation
        if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", None) == "Annotated":
            base, *extras = annotation.slice.elts
            info["type"] = base.id
            for call in extras:
                name, args = call.func.id, [ast.literal_eval(a) for a in call.args]
                info["annotations"].append(name)
                if name == "WithinRange":
                    info["range"] = tuple(args)
                elif name == "Choice":
                    info["choices"] = args[0]
        else:
            info["type"] = annotation.id
        if node.value is not None:
            info["default"] = ast.literal_eval(node.value)
        out[node.target.id] = info
    return out


def _ui_bound_widgets(ui_file) -> dict:
    """Parameter -> ``(widget class, {property: text})`` of every widget bound to a parameter."""
    out = {}
    for widget in ET.parse(ui_file).getroot().iter("widget"):
        name = widget.find("property[@name='SlicerParameterName']/string")
        if name is not None:
            props = {p.get("name"): (p[0].text if len(p) else None) for p in widget.findall("property")}
            out[name.text] = (widget.get("class"), props)
    return out


def _option_set(method: str) -> tuple:
    """``(option name -> OptionSpec, presets)`` of a registration method or of an option set of the modules that is
    not one (``option_widgets.OPTION_SETS``: no presets)."""
    from MMRegistrationLib.registration.methods import get_method
    from MMRegistrationSlicerLib.option_widgets import OPTION_SETS, option_specs

    return option_specs(method), {} if method in OPTION_SETS else get_method(method).presets


def _module_files(module):
    folder = MODULES_DIR / module
    return folder / f"{module}.py", folder / "Resources" / "UI" / f"{module}.ui"


@pytest.mark.parametrize("module", MODULES)
def test_bound_widgets_are_the_kind_the_parameter_wrapper_connects(module):
    module_file, ui_file = _module_files(module)
    parameters, bound = _parameters(module_file), _ui_bound_widgets(ui_file)
    for name, (widget_class, _) in bound.items():
        info = parameters[name]
        if info["choices"] is not None:
            expected = {"QComboBox"}
        elif info["type"].startswith("vtkMRML"):
            expected = {"qMRMLNodeComboBox"}
        else:
            expected = WIDGET_CLASSES[{"int": int, "float": float, "bool": bool, "str": str}[info["type"]]]
        assert widget_class in expected, (name, info["type"], widget_class)


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_module_parameters_follow_the_engine_metadata(module):
    """Parameter node, .ui and the method's configuration dataclass agree: OPTIONS and EXPLICIT_OPTIONS map bound
    parameters to options of the module's method; every option neither maps is in NOT_IN_OPTIONS (and nothing else
    is); each spin box's WithinRange lies within the option's range (lower bound: the -1 sentinel, shown as the
    special value text, of an option that has no negative values, or the option's minimum), its type and the .ui's
    decimals hold the option's values; each Choice is the option's choices (or a pipeline choice); each default is the
    sentinel or the dataclass default; and the .ui carries no copy of the help the metadata gives as tooltip."""
    from MMRegistrationLib.registration.pipeline import INITS

    module_file, ui_file = _module_files(module)
    method = _module_constant(module_file, "METHOD")
    options, explicit = _module_constant(module_file, "OPTIONS"), _module_constant(module_file, "EXPLICIT_OPTIONS")
    specs, presets = _option_set(method)
    parameters, bound = _parameters(module_file), _ui_bound_widgets(ui_file)
    mapped = {**options, **explicit}

    assert not set(options) & set(explicit), set(options) & set(explicit)
    assert set(mapped) <= set(parameters), f"not parameter-node fields: {set(mapped) - set(parameters)}"
    assert set(mapped) <= set(bound), f"not bound in the .ui: {set(mapped) - set(bound)}"
    assert set(mapped.values()) <= set(specs), f"not options of '{method}': {set(mapped.values()) - set(specs)}"
    assert len(set(mapped.values())) == len(mapped), "an engine option is mapped twice"
    must_list = {n for n, s in specs.items() if not s.advanced} | (set(specs) - set(options.values()))
    listed = set(NOT_IN_OPTIONS[module])
    assert listed == must_list, (f"decide about (map in OPTIONS or list in NOT_IN_OPTIONS): {must_list - listed}; "
                                 f"stale in NOT_IN_OPTIONS: {listed - must_list}")

    for name, option in options.items():  # the advanced spin boxes
        s, info = specs[option], parameters[name]
        props = bound[name][1]
        assert s.kind in (int, float) and info["type"] == s.kind.__name__, (name, info["type"], s.kind)
        assert info["range"] is not None, f"{name}: no WithinRange"
        low, high = info["range"]
        assert s.maximum is None or high <= s.maximum, (name, high, s.maximum)
        if low == SENTINEL:  # -1 = not given: only unambiguous when the option has no negative values
            assert s.minimum is not None and s.minimum >= 0, (name, s.minimum)
            assert props.get("specialValueText") == SPECIAL_VALUE_TEXT[module], (name, props.get("specialValueText"))
        else:
            assert low == s.minimum, (name, low, s.minimum)
        assert info["default"] == SENTINEL or info["default"] == s.default, (name, info["default"], s.default)
        values = [s.default] + [p[option] for p in presets.values() if option in p]
        assert all(low <= v <= high for v in values if v is not None), (name, (low, high), values)  # reachable
        if s.kind is float:  # the spin box shows the option's values exactly (decimals: set in the .ui)
            decimals = int(props["decimals"])
            for value in (v for v in values if v is not None):
                assert abs(round(value, decimals) - value) <= 1e-12 * max(1.0, abs(value)), (name, value)

    for name, info in parameters.items():  # combo boxes
        if info["choices"] is None:
            continue
        option = mapped.get(name)
        if option is None:
            assert name in NON_ENGINE_CHOICES, f"{name}: a Choice that is neither an engine option nor listed"
            continue
        assert info["choices"] == list(specs[option].choices), (name, info["choices"], specs[option].choices)
        assert info["default"] == specs[option].default, (name, info["default"], specs[option].default)
    for name, option in explicit.items():
        s, info = specs[option], parameters[name]
        if s.choices:
            assert info["choices"] is not None, f"{name}: the engine option has choices; use Choice({list(s.choices)})"
        elif s.kind is str:  # a text option: "" = not given where the option is optional
            assert info["type"] == "str" and info["choices"] is None, name
            assert info["default"] == s.default or (s.optional and info["default"] == ""), (name, info["default"])
    choices = {n: i["choices"] for n, i in parameters.items() if i["choices"] is not None}
    if "initialization" in choices:  # RSO Refine has none: its general model starts as its weights say
        assert set(choices["initialization"]) == {"default", *INITS}
    assert choices["device"][0] == "auto"

    duplicated = [name for name in mapped if "toolTip" in bound[name][1]]
    assert not duplicated, f"the .ui repeats the metadata's help (tooltip set by apply_option_metadata): {duplicated}"


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_module_setup_describes_the_widgets_before_connecting_the_parameter_node(module):
    """``setup()`` calls ``apply_option_metadata`` on OPTIONS and EXPLICIT_OPTIONS inside ``try/except
    ImportError`` (the engine may not be importable yet), before ``initializeParameterNode`` (whose connectGui sets
    the spin box ranges from WithinRange); the module imports it there, not at the top."""
    module_file, _ = _module_files(module)
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Widget")
    setup = next(n for n in widget.body if isinstance(n, ast.FunctionDef) and n.name == "setup")
    order = []
    for statement in setup.body:
        calls = {getattr(c.func, "id", None) or getattr(c.func, "attr", None)
                 for c in ast.walk(statement) if isinstance(c, ast.Call)}
        if isinstance(statement, ast.Try) and "apply_option_metadata" in calls:
            assert any(getattr(h.type, "id", None) == "ImportError" for h in statement.handlers)
            call = next(c for c in ast.walk(statement) if isinstance(c, ast.Call)
                        and getattr(c.func, "id", None) == "apply_option_metadata")
            assert ast.unparse(call.args[1]) == "METHOD"
            assert ast.unparse(call.args[2]) == "{**OPTIONS, **EXPLICIT_OPTIONS}"
            assert [ast.unparse(k.value) for k in call.keywords if k.arg == "sentinel"] == [str(SENTINEL)]
            order.append("apply")
        elif "initializeParameterNode" in calls:
            order.append("connect")
    assert order == ["apply", "connect"], order
    helper = ast.parse((MODULES_DIR / "MMRegistrationSlicerLib" / "option_widgets.py").read_text(encoding="utf-8"))
    top = {a.name for n in helper.body if isinstance(n, ast.Import) for a in n.names} | {
        n.module for n in helper.body if isinstance(n, ast.ImportFrom)}
    assert top <= {"__future__", "logging", "typing"}, top  # no Qt, no engine at import: importable anywhere


def _fake_ui(ui_file):
    """Stand-ins for the widgets of a .ui file (attributes as PythonQt exposes them; no Qt)."""

    class Widget:
        def __init__(self, cls, parameter):
            self._parameter, self.toolTip = parameter, ""
            if cls in ("QSpinBox", "QDoubleSpinBox"):
                self.minimum, self.maximum, self.suffix = 0, 99, ""

        def property(self, name):
            return self._parameter if name == "SlicerParameterName" else None

    ui = type("UI", (), {})()
    for widget in ET.parse(ui_file).getroot().iter("widget"):
        parameter = widget.find("property[@name='SlicerParameterName']/string")
        setattr(ui, widget.get("name"), Widget(widget.get("class"), None if parameter is None else parameter.text))
    ui.notAWidget = object()  # childWidgetVariables may hold anything
    return ui


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_apply_option_metadata_describes_the_modules_widgets(module):
    """What the module's setup() does, on stand-ins of its .ui widgets: tooltips = ``OptionSpec.describe()``, spin
    box ranges = [-1 sentinel, metadata maximum] (the WithinRange of the parameter, see above), unit suffixes; the
    other widgets are untouched."""
    from MMRegistrationSlicerLib.option_widgets import apply_option_metadata, option_specs

    module_file, ui_file = _module_files(module)
    method = _module_constant(module_file, "METHOD")
    options, explicit = _module_constant(module_file, "OPTIONS"), _module_constant(module_file, "EXPLICIT_OPTIONS")
    ui = _fake_ui(ui_file)
    described = apply_option_metadata(ui, method, {**options, **explicit}, sentinel=SENTINEL)
    specs, parameters = option_specs(method), _parameters(module_file)
    assert set(described) == set(options) | set(explicit)
    for name, widget in described.items():
        s = specs[{**options, **explicit}[name]]
        assert widget.toolTip == s.describe(), name
        if name in options:
            assert (widget.minimum, widget.maximum) == (SENTINEL, s.maximum), name
            assert widget.maximum >= parameters[name]["range"][1]  # the wrapper's range lies inside
            assert type(widget.maximum) is s.kind
            assert widget.suffix == (f" {s.unit}" if s.unit else ""), name
    for name, widget in vars(ui).items():
        if widget not in described.values() and hasattr(widget, "toolTip"):
            assert widget.toolTip == "" and getattr(widget, "minimum", 0) == 0, name
    assert any(w.suffix == " mm" for w in described.values() if hasattr(w, "suffix"))


def test_apply_option_metadata_without_sentinel_and_with_mistakes(caplog):
    """Without a sentinel the minimum is the option's (an exclusive integer minimum one above it); a parameter
    without a bound widget or an unknown option is logged and skipped."""
    from MMRegistrationSlicerLib.option_widgets import apply_option_metadata, bound_widgets, option_specs

    class SpinBox:
        def __init__(self, parameter):
            self.parameter, self.toolTip, self.minimum, self.maximum, self.suffix = parameter, "", 0, 99, ""

        def property(self, name):
            return self.parameter if name == "SlicerParameterName" else None

    ui = type("UI", (), {})()
    ui.a, ui.b, ui.c, ui.label = SpinBox("margin"), SpinBox("iterations"), SpinBox("bogus"), SpinBox(None)
    assert set(bound_widgets(ui)) == {"margin", "iterations", "bogus"}
    described = apply_option_metadata(ui, "sinr", {"margin": "margin_mm", "iterations": "iterations",
                                                   "bogus": "no_such_option", "missing": "hidden"})
    assert set(described) == {"margin", "iterations"}
    specs = option_specs("sinr")
    assert (ui.a.minimum, ui.a.maximum, ui.a.suffix) == (specs["margin_mm"].minimum, specs["margin_mm"].maximum, " mm")
    assert (ui.b.minimum, ui.b.maximum, ui.b.suffix) == (specs["iterations"].minimum, specs["iterations"].maximum, "")
    assert ui.a.toolTip.startswith(specs["margin_mm"].help) and specs["margin_mm"].range_text() + " mm" in ui.a.toolTip
    assert ui.c.toolTip == "" and ui.label.toolTip == ""
    assert "no_such_option" in caplog.text and "'missing'" in caplog.text
    from MMRegistrationLib.core.options import OptionSpec
    from MMRegistrationSlicerLib.option_widgets import widget_range

    count = OptionSpec("count", int, 3, "h", minimum=0, exclusive_minimum=True, maximum=1e12)
    assert widget_range(count) == (1, 2**31 - 1) and widget_range(count, -1) == (-1, 2**31 - 1)
    assert widget_range(OptionSpec("mode", str, "a", "h", choices=("a", "b")), -1) == (None, None)


def test_disa_module_passes_its_choices_and_roi_to_the_logic():
    """The module calls ``register(..., mode, search, similarity, mask, options)`` with the parameter node's choices;
    ``DISALogic.register`` takes them in that order and an optional ``roi`` (None by default)."""
    import inspect

    from MMRegistrationSlicerLib.disa_logic import DISALogic

    module_file, ui_file = _module_files("DISASimilarity")
    assert "p.mode, p.search, p.similarity, p.mask, self.options(p)" in module_file.read_text(encoding="utf-8")
    parameters = inspect.signature(DISALogic.register).parameters
    assert list(parameters)[6:11] == ["mode", "search", "similarity", "mask", "options"]
    assert parameters["roi"].default is None and parameters["roi"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert _ui_widgets(ui_file)["heatmapPlaceWidget"] == "qSlicerMarkupsPlaceWidget"


def test_rso_module_passes_its_inputs_to_the_logic_in_order():
    """The module calls ``set_inputs`` positionally with the parameter node's inputs in the order of the GUI-free
    logic's signature."""
    import inspect

    from MMRegistrationSlicerLib.rso_logic import RSORefineLogic

    module_file, ui_file = _module_files("RSORefine")
    call = re.search(r"logic\.set_inputs\(([^)]*)\)", module_file.read_text(encoding="utf-8")).group(1)
    assert [a.strip() for a in call.split(",")] == [
        "p.fixedVolume", "p.movingVolume", "p.fixedSegmentation", "p.movingSegmentation", "segmentMapping",
        "p.fixedLandmarks", "p.movingLandmarks", "p.startingTransform", "p.outputTransform", "p.device", "p.seed"]
    assert list(inspect.signature(RSORefineLogic.set_inputs).parameters)[1:] == [
        "fixed_volume", "moving_volume", "fixed_segmentation", "moving_segmentation", "segment_mapping",
        "fixed_landmarks", "moving_landmarks", "starting_transform", "output_transform", "device", "seed"]
    assert _ui_widgets(ui_file)["historyTable"] == "QTableWidget"
