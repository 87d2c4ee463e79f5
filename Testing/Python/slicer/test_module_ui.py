"""What a real Slicer shows of the modules, read from the module and .ui files: parameter nodes use only annotations
Slicer's wrapper consumes (no "Unused annotations" warnings at start-up), float spin boxes get their decimals and a
step that suits their range from the .ui, volume selectors list plain scalar volumes (no label maps, no vector
volumes) and hide the volumes DISA computes, and the SINR help states the default start."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest

from conftest import REPO_ROOT

MODULES_DIR = REPO_ROOT / "MMRegistration"
MODULES = ("DISASimilarity", "RegistrationEvaluation", "RSORefine", "SINRRegistration")
CONSUMED = {"WithinRange", "Minimum", "Maximum", "Choice", "Default"}
"""Annotations Slicer's parameterNodeWrapper reads (validators and Default); any other is reported as unused."""


def _source(module):
    return (MODULES_DIR / module / f"{module}.py").read_text(encoding="utf-8")


def _ui(module):
    return ET.parse(MODULES_DIR / module / "Resources" / "UI" / f"{module}.ui").getroot()


def _parameter_annotations(module) -> dict:
    """Field -> (base type, {annotation name: literal args}, default) of the @parameterNodeWrapper class."""
    tree = ast.parse(_source(module))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and any(
        getattr(d, "id", None) == "parameterNodeWrapper" for d in n.decorator_list))
    out = {}
    for node in (n for n in cls.body if isinstance(n, ast.AnnAssign)):
        extras, base = {}, node.annotation
        if isinstance(base, ast.Subscript) and getattr(base.value, "id", None) == "Annotated":
            base, *calls = base.slice.elts
            extras = {c.func.id: [ast.literal_eval(a) for a in c.args] for c in calls}
        default = ast.literal_eval(node.value) if node.value is not None else None
        out[node.target.id] = (getattr(base, "id", None), extras, default)
    return out


def _properties(widget) -> dict:
    return {p.get("name"): (p[0].text if len(p) else None) for p in widget.findall("property")}


def _bound(module) -> dict:
    """Parameter -> (widget class, properties) of the widgets bound to a parameter."""
    out = {}
    for widget in _ui(module).iter("widget"):
        props = _properties(widget)
        if props.get("SlicerParameterName"):
            out[props["SlicerParameterName"]] = (widget.get("class"), props)
    return out


@pytest.mark.parametrize("module", MODULES)
def test_parameter_nodes_use_only_annotations_slicer_consumes(module):
    used = {name for _, extras, _ in _parameter_annotations(module).values() for name in extras}
    assert used <= CONSUMED, f"Slicer warns 'Unused annotations' at every start for {used - CONSUMED}"
    assert "Decimals" not in _source(module)


def _option_values(module) -> dict:
    """Parameter -> the engine's default and preset values of its option (modules with engine options)."""
    from MMRegistrationLib.registration.methods import get_method
    from MMRegistrationSlicerLib.option_widgets import OPTION_SETS, option_specs

    tree = ast.parse(_source(module))
    constants = {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if getattr(t, "id", None) in ("METHOD", "OPTIONS")}
    if "OPTIONS" not in constants:
        return {}
    method = constants["METHOD"]
    specs = option_specs(method)
    presets = {} if method in OPTION_SETS else get_method(method).presets
    return {parameter: [specs[option].default] + [p[option] for p in presets.values() if option in p]
            for parameter, option in constants["OPTIONS"].items()}


@pytest.mark.parametrize("module", MODULES)
def test_float_spin_boxes_have_decimals_and_a_step_that_suits_their_range(module):
    """Every float spin box sets decimals and singleStep in the .ui; the step is a multiple of the last decimal, at
    most a twentieth of the range (not 1 on -1..1) and no larger than the smallest positive default or preset value,
    so stepping from a value changes it by a fraction of itself."""
    parameters, values = _parameter_annotations(module), _option_values(module)
    checked = 0
    for name, (widget_class, props) in _bound(module).items():
        if widget_class != "QDoubleSpinBox":
            continue
        checked += 1
        assert props.get("decimals") and props.get("singleStep"), f"{module}.{name}: set decimals and singleStep"
        decimals, step = int(props["decimals"]), Decimal(props["singleStep"])
        resolution = Decimal(1).scaleb(-decimals)
        assert step >= resolution and step % resolution == 0, (name, step, decimals)
        low, high = parameters[name][1]["WithinRange"]
        assert step <= Decimal(str(high - low)) / 20, (name, step, (low, high))
        positive = [v for v in values.get(name, []) + [parameters[name][2]] if v is not None and v > 0]
        assert not positive or step <= Decimal(str(min(positive))), (name, step, positive)
    assert checked or module == "RegistrationEvaluation"


def test_a_step_of_one_on_a_unit_range_fails_the_rule():
    """The rule above, on the case it is there for (Qt's default step 1 on a -1..1 range)."""
    assert not Decimal("1") <= Decimal(str(1.0 - -1.0)) / 20


@pytest.mark.parametrize("module", MODULES)
def test_volume_selectors_list_plain_scalar_volumes(module):
    """A qMRMLNodeComboBox for vtkMRMLScalarVolumeNode lists its subclasses (label maps, vector volumes such as the
    DISA descriptor pictures) unless showChildNodeTypes is false."""
    for widget in _ui(module).iter("widget"):
        if widget.get("class") != "qMRMLNodeComboBox":
            continue
        types = [s.text for s in widget.findall("property[@name='nodeTypes']/stringlist/string")]
        if "vtkMRMLScalarVolumeNode" in types:
            assert _properties(widget).get("showChildNodeTypes") == "false", (module, widget.get("name"))


def test_derived_volumes_are_hidden_from_the_input_volume_selectors(scene, gui_stubs):
    from MMRegistrationSlicerLib.module_widget import derived_volume_ids, hide_derived_volumes, mark_derived

    image = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "TRUS")
    heatmap = mark_derived(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "heatmap"), "DISA heatmap")
    pictures = mark_derived(scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "descriptors"), "DISA descriptors")
    assert derived_volume_ids(scene) == [heatmap.GetID(), pictures.GetID()] and image.GetID()
    for module in ("DISASimilarity", "RSORefine", "SINRRegistration"):
        ui = gui_stubs.fake_ui(module)
        selectors = hide_derived_volumes(ui, scene)
        assert {s.property("SlicerParameterName") for s in selectors} == {"fixedVolume", "movingVolume"}
        assert all(s.sortFilterProxyModel().hiddenNodeIDs == [heatmap.GetID(), pictures.GetID()] for s in selectors)
        others = [w for w in vars(ui).values() if hasattr(w, "sortFilterProxyModel") and w not in selectors]
        assert others and all(w.sortFilterProxyModel().hiddenNodeIDs == [] for w in others)


def test_sinr_help_states_the_default_start():
    from MMRegistrationLib.registration.methods import get_method

    help_text = " ".join(re.findall(r'"([^"]*)"', _source("SINRRegistration").split("helpText", 1)[1].split(")\n", 1)[0]))
    assert "centre-of-mass start" not in help_text
    assert f"by default '{get_method('sinr').default_init}'" in help_text, help_text
