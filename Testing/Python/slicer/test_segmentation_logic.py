"""The "Segment prostate" action on a real slicer-core scene (``MMRegistrationSlicerLib.segmentation_logic``) and its
buttons in SINR Registration and RSO Refine (Qt replaced by ``gui_stubs.py``).

Test networks (no shipped weights needed): a tiny U-Net trained for 60 steps on one bright ball of the test volume
(it finds a ball there), and U-Nets whose weights are zero but for the last bias, so their logit is the same
everywhere: positive, the mask is the network's cubic field of view; negative, there is no gland."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from MMRegistrationSlicerLib import bridge
from MMRegistrationSlicerLib.segmentation_logic import (PROSTATE, prostate_segment_ids, segment_prostate,
                                                        segmentation_of_volume)
from MMRegistrationSlicerLib.segments import segment_names

slicer = pytest.importorskip("slicer")
torch = pytest.importorskip("torch")
pytest.importorskip("monai")

CENTER_LPS = np.array([-12.0, 30.0, 48.0])
GLAND_LPS = CENTER_LPS + np.array([3.0, -2.0, 1.5])
GLAND_RADIUS_MM = 15.0


def volume_image():
    """An oblique, anisotropic, non-zero-origin image (LPS) of a bright ball (the gland) in a dark background."""
    from MMRegistrationLib.core.grid import Grid
    from MMRegistrationLib.core.image import Image

    direction = Rotation.from_euler("xyz", (14, -9, 23), degrees=True).as_matrix()
    spacing, size = np.array([1.6, 1.2, 2.5]), np.array([40, 48, 24])  # (i, j, k): 64 x 58 x 60 mm
    origin = CENTER_LPS - direction @ (spacing * (size - 1) / 2)
    grid = Grid.from_geometry(tuple(size[::-1]), spacing, origin, direction)
    inside = np.linalg.norm(grid.world_points() - GLAND_LPS, axis=-1) <= GLAND_RADIUS_MM
    return Image(np.where(inside, 150.0, 30.0).astype(np.float32), grid)


def _config(modality: str, spacing_mm: float):
    from MMRegistrationLib.segmentation.network import SegNetConfig

    return SegNetConfig(modality=modality, channels=(4, 8), strides=(2,), grid_size=16, grid_spacing_mm=spacing_mm)


def trained_weights(path, image):
    """A TRUS network fitted (60 Adam steps, seeded) to the gland of ``image``, saved at ``path``."""
    from MMRegistrationLib.segmentation.network import build_network, segmentation_grid
    from MMRegistrationLib.segmentation.predict import network_input
    from MMRegistrationLib.segmentation.weights import save_segmentation_net

    torch.manual_seed(0)
    config = _config("trus", 4.0)
    network = build_network(config)
    grid = segmentation_grid(config, image.grid)
    x = network_input(image, grid)
    target = torch.as_tensor(np.linalg.norm(grid.world_points() - GLAND_LPS, axis=-1) <= GLAND_RADIUS_MM,
                             dtype=torch.float32)[None, None]
    optimiser = torch.optim.Adam(network.parameters(), lr=0.03)
    for _ in range(60):
        optimiser.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(network(x), target).backward()
        optimiser.step()
    save_segmentation_net(network, config, path)
    return path


def constant_weights(path, modality: str, logit: float, spacing_mm: float = 2.0):
    """A network whose logit is ``logit`` everywhere on its 16^3 grid of ``spacing_mm`` (zero weights, last bias)."""
    from MMRegistrationLib.segmentation.network import build_network
    from MMRegistrationLib.segmentation.weights import save_segmentation_net

    config = _config(modality, spacing_mm)
    network = build_network(config)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.zero_()
        network.model[-1][-1].conv.unit0.conv.bias.fill_(logit)  # the last convolution: its output is the logit
    save_segmentation_net(network, config, path)
    return path


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("segmentation_networks")
    image = volume_image()
    return SimpleNamespace(
        trained=trained_weights(folder / "trained_trus.pt", image),
        cube=constant_weights(folder / "cube_trus.pt", "trus", 10.0),  # a 32 mm cube inside the image: plausible
        none=constant_weights(folder / "none_trus.pt", "trus", -10.0),
        too_large=constant_weights(folder / "large_trus.pt", "trus", 10.0, spacing_mm=5.0),  # 80 mm: cut by the FOV
        cube_mr=constant_weights(folder / "cube_mr.pt", "mr", 10.0),
    )


@pytest.fixture
def shipped(monkeypatch, tmp_path):
    """The shipped networks' paths, pointed at ``shipped.paths`` (missing files until a test puts them there)."""
    from MMRegistrationLib.segmentation import weights

    paths = {"trus": tmp_path / "prostate_trus.pt", "mr": tmp_path / "prostate_mr.pt"}
    monkeypatch.setattr(weights, "default_segmentation_weights", lambda modality: paths[modality])
    return SimpleNamespace(paths=paths)


def _linear_transform(scene):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "probe pose")
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("zyx", (8, -5, 12), degrees=True).as_matrix()
    matrix[:3, 3] = (4.0, -7.5, 11.0)
    node.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    return node


def _volume(scene, image=None, name="TRUS"):
    return bridge.volume_from_image(image if image is not None else volume_image(), scene, name)


def _exported(scene, segmentation_node, volume_node, include_parent_transform=False):
    """The "prostate" segment exported on the volume's grid: an engine label map (LPS)."""
    ids = prostate_segment_ids(segmentation_node)
    image, _ = bridge.labelmap_from_segmentation(segmentation_node, scene, ids, reference_volume=volume_node,
                                                 include_parent_transform=include_parent_transform)
    return image


def _ids(scene) -> set:
    return bridge.scene_node_ids(scene)


# ---- the logic ---------------------------------------------------------------------------------------------------
def test_segment_is_the_engines_mask_voxel_for_voxel_on_an_oblique_volume(scene, networks, shipped):
    from MMRegistrationLib.segmentation.predict import segment_image

    image = volume_image()
    volume = _volume(scene, image)
    volume.SetAndObserveTransformNodeID(_linear_transform(scene).GetID())
    reports = []
    node, warnings = segment_prostate(scene, volume, "trus", weights=networks.trained, device="cpu",
                                      progress=lambda f, m: reports.append(f), argument="fixed volume")
    expected = segment_image(image, "trus", networks.trained).mask.array
    assert 0.5 * (4 / 3 * np.pi * GLAND_RADIUS_MM ** 3) < expected.sum() * np.prod(image.grid.spacing)  # a ball
    assert not expected[0].any() and not expected[-1].any()  # (inside the image: no border warning)

    assert node.IsA("vtkMRMLSegmentationNode") and node.GetName() == "TRUS prostate"
    assert list(segment_names(node).values()) == [PROSTATE] and warnings == []
    assert node.GetDisplayNode() is not None
    assert node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()) == volume.GetID()
    assert node.GetTransformNodeID() == volume.GetTransformNodeID()  # shown where the volume is
    exported = _exported(scene, node, volume)
    assert exported.grid.same_as(image.grid) and np.array_equal(exported.array, expected)
    world = _exported(scene, node, volume, include_parent_transform=True)  # in world: on the volume's world grid
    assert world.grid.same_as(bridge.image_from_volume(volume).grid) and not world.grid.same_as(image.grid)
    assert reports[0] == 0.0 and reports[-1] == 1.0 and reports == sorted(reports)


def test_a_volume_under_a_grid_transform_is_segmented_on_its_own_grid(scene, networks, shipped):
    """The moving volume after a registration: under a non-linear transform, which the segmentation shares."""
    from MMRegistrationLib.segmentation.predict import segment_image
    from MMRegistrationLib.spatial.displacement import DisplacementField

    image = volume_image()
    volume = _volume(scene, image, "MR")
    grid = image.grid
    field = DisplacementField(grid, np.broadcast_to(np.array([1.5, -2.0, 0.5]), (*grid.shape, 3)).copy())
    transform = bridge.transform_node_from_engine(field, scene, "SINR result")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    node, _ = segment_prostate(scene, volume, "trus", weights=networks.trained, device="cpu")
    assert node.GetTransformNodeID() == transform.GetID()
    assert np.array_equal(_exported(scene, node, volume).array, segment_image(image, "trus", networks.trained).mask.array)


def test_replacing_keeps_one_prostate_segment_and_the_other_segments(scene, networks, shipped, gui_stubs):
    volume = _volume(scene)
    existing = gui_stubs.segmentation(scene, "mine", ["Bladder", "Prostate", "rectum", "prostate "])
    segmentation = existing.GetSegmentation()
    segmentation.GetSegment(segmentation.GetNthSegmentID(1)).SetColor(0.1, 0.2, 0.3)
    nodes = _ids(scene)
    node, _ = segment_prostate(scene, volume, "trus", weights=networks.cube, device="cpu", segmentation_node=existing)
    display = node.GetDisplayNode()
    assert node is existing and display is not None  # shown (it had no display node)
    assert _ids(scene) == nodes | {display.GetID()}  # no other new node (no temporary left either)
    nodes = _ids(scene)
    assert list(segment_names(node).values()) == ["Bladder", PROSTATE, "rectum"]  # in the first one's place
    prostate = segmentation.GetSegment(prostate_segment_ids(node)[0])
    assert np.allclose(prostate.GetColor(), (0.1, 0.2, 0.3))
    assert node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()) == volume.GetID()
    first = _exported(scene, node, volume).array
    again, _ = segment_prostate(scene, volume, "trus", weights=networks.trained, device="cpu", segmentation_node=node)
    assert list(segment_names(again).values()) == ["Bladder", PROSTATE, "rectum"] and _ids(scene) == nodes
    assert not np.array_equal(_exported(scene, node, volume).array, first)  # the new mask, not the old one
    with pytest.raises(ValueError, match="under another transform"):
        existing.SetAndObserveTransformNodeID(_linear_transform(scene).GetID())
        segment_prostate(scene, volume, "trus", weights=networks.cube, device="cpu", segmentation_node=existing)


def test_cancel_at_any_point_leaves_the_scene_as_it_was(scene, networks, shipped, gui_stubs):
    from MMRegistrationLib.core.errors import Cancelled

    volume = _volume(scene)
    existing = gui_stubs.segmentation(scene, "mine", ["prostate", "bladder"])
    for target in (None, existing):
        nodes, names = _ids(scene), segment_names(existing)
        for stop_at in range(1, 50):
            calls = []

            def cancel():
                calls.append(1)
                return len(calls) >= stop_at

            try:
                segment_prostate(scene, volume, "trus", weights=networks.cube, device="cpu", cancel=cancel,
                                 segmentation_node=target)
            except Cancelled:
                assert _ids(scene) == nodes and segment_names(existing) == names, stop_at
                continue
            break
        assert stop_at > 3, "the run should be cancellable at several points"
        assert len(calls) < stop_at  # the finished run was asked fewer times than this: every point was tried


def test_no_gland_is_a_readable_error_and_adds_nothing(scene, networks, shipped):
    volume = _volume(scene)
    nodes = _ids(scene)
    with pytest.raises(ValueError, match=r"^Prostate segmentation: fixed volume: no prostate found by the TRUS "
                                         r"segmentation network: check that the image shows the prostate"):
        segment_prostate(scene, volume, "trus", weights=networks.none, device="cpu", argument="fixed volume")
    assert _ids(scene) == nodes


def test_the_other_modalitys_network_is_named_when_it_finds_the_gland(scene, networks, shipped):
    import shutil

    from MMRegistrationLib.networks.weights import sidecar_path

    for suffix in (lambda p: p, sidecar_path):  # the shipped MR network: one that finds a plausible gland
        shutil.copy(suffix(networks.cube_mr), suffix(shipped.paths["mr"]))
    volume = _volume(scene)
    with pytest.raises(ValueError, match=r"is this a MR image\? \(modality of the fixed volume: trus was given\)"):
        segment_prostate(scene, volume, "trus", weights=networks.none, device="cpu", argument="fixed volume")


def test_warnings_are_returned(scene, networks, shipped):
    volume = _volume(scene)
    node, warnings = segment_prostate(scene, volume, "trus", weights=networks.too_large, device="cpu")
    assert any("touches the border" in w for w in warnings), warnings
    assert list(segment_names(node).values()) == [PROSTATE]


def test_missing_shipped_network_and_bad_input_are_refused_before_anything_runs(scene, networks, shipped):
    volume = _volume(scene)
    nodes = _ids(scene)
    with pytest.raises(ValueError, match=r"the TRUS segmentation network is not installed \(.*prostate_trus\.pt"):
        segment_prostate(scene, volume, "trus", device="cpu")
    with pytest.raises(ValueError, match="modality 'ct'"):
        segment_prostate(scene, volume, "ct", weights=networks.cube, device="cpu")
    with pytest.raises(ValueError, match="^moving volume: no volume was selected"):
        segment_prostate(scene, None, "mr", argument="moving volume")
    with pytest.raises(ValueError, match="segments TRUS images, not MR"):  # another modality's network
        segment_prostate(scene, volume, "mr", weights=networks.cube, device="cpu")
    assert _ids(scene) == nodes


def test_the_button_writes_only_into_that_volumes_own_segmentation(scene, networks, shipped, gui_stubs):
    fixed, moving = _volume(scene), _volume(scene, name="MR")
    node, _ = segment_prostate(scene, fixed, "trus", weights=networks.cube, device="cpu")
    assert segmentation_of_volume(fixed, node) is node
    assert segmentation_of_volume(fixed, node, other_selected=node) is None  # the other side's selection
    assert segmentation_of_volume(moving, node) is None  # the fixed volume's, auto-selected for the moving side
    assert segmentation_of_volume(fixed, gui_stubs.segmentation(scene, "loaded", ["prostate"])) is None
    assert segmentation_of_volume(fixed, None) is None
    node.SetAndObserveTransformNodeID(_linear_transform(scene).GetID())
    assert segmentation_of_volume(fixed, node) is None  # not where the volume is


# ---- the buttons of the modules --------------------------------------------------------------------------------
MODULES = ("SINRRegistration", "RSORefine")


def _widget(gui, module: str, **parameters):
    loaded = gui.stubs.load_module_file(module)
    widget = getattr(loaded, f"{module}Widget")()
    widget.ui = gui.stubs.fake_ui(module)
    widget.logic = getattr(loaded, f"{module}Logic")()
    widget.setupSegmentMapping()
    widget.setupSegmentProstate()
    values = dict(fixedVolume=None, movingVolume=None, fixedSegmentation=None, movingSegmentation=None,
                  fixedLandmarks=None, movingLandmarks=None, roi=None, device="cpu")
    widget._parameterNode = SimpleNamespace(**{**values, **parameters})
    return widget


def _buttons(widget) -> tuple:
    return widget.ui.fixedSegmentProstateButton.enabled, widget.ui.movingSegmentProstateButton.enabled


@pytest.fixture
def dialogs(monkeypatch):
    """Recorders for the confirmation and warning message boxes (``confirm``: the answer)."""
    shown = SimpleNamespace(asked=[], warnings=[], confirm=True)

    def confirm(text, *args, **kwargs):
        shown.asked.append(text)
        return shown.confirm

    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", confirm)
    monkeypatch.setattr(slicer.util, "warningDisplay", lambda text, **kwargs: shown.warnings.append(text))
    return shown


@pytest.mark.parametrize("module", MODULES)
def test_buttons_follow_the_volumes_and_the_run(gui, module, networks, shipped):
    widget = _widget(gui, module)
    widget._checkCanApply()
    assert _buttons(widget) == (False, False)
    assert widget.ui.fixedSegmentProstateButton.toolTip == "Select the fixed volume first"
    widget._parameterNode.fixedVolume = _volume(gui.scene)
    widget._checkCanApply()
    assert _buttons(widget) == (True, False) and "TRUS network" in widget.ui.fixedSegmentProstateButton.toolTip
    widget._parameterNode.movingVolume = _volume(gui.scene, name="MR")
    widget._setRunning(True)  # another run (a registration): no segmentation meanwhile
    assert _buttons(widget) == (False, False)
    widget._setRunning(False)
    assert _buttons(widget) == (True, True) and "MR network" in widget.ui.movingSegmentProstateButton.toolTip


@pytest.mark.parametrize("module", MODULES)
def test_segment_buttons_fill_the_selectors_and_show_warnings(gui, module, networks, shipped, dialogs):
    import shutil

    from MMRegistrationLib.networks.weights import sidecar_path

    for source, modality in ((networks.too_large, "trus"), (networks.cube_mr, "mr")):  # as the shipped networks
        for suffix in (lambda p: p, sidecar_path):
            shutil.copy(suffix(source), suffix(shipped.paths[modality]))
    fixed, moving = _volume(gui.scene), _volume(gui.scene, name="MR")
    widget = _widget(gui, module, fixedVolume=fixed, movingVolume=moving)
    widget._checkCanApply()
    states = []
    gui.app.on_process_events = lambda: states.append(_buttons(widget))
    widget.ui.fixedSegmentProstateButton.emit("clicked(bool)")
    p = widget._parameterNode
    assert gui.errors == [] and p.fixedSegmentation is not None and p.fixedSegmentation.GetName() == "TRUS prostate"
    assert states and all(s == (False, False) for s in states), "buttons enabled while segmenting"
    assert _buttons(widget) == (True, True)
    assert len(dialogs.warnings) == 1 and "touches the border" in dialogs.warnings[0]
    assert "TRUS prostate" in widget.ui.statusLabel.text and "warning" in widget.ui.statusLabel.text

    p.movingSegmentation = p.fixedSegmentation  # what a selector without "None" picks by itself
    widget.ui.movingSegmentProstateButton.emit("clicked(bool)")
    assert p.movingSegmentation.GetName() == "MR prostate" and p.fixedSegmentation.GetName() == "TRUS prostate"
    assert dialogs.asked == [] and len(dialogs.warnings) == 1  # a plausible gland: no warning

    count = gui.scene.GetNumberOfNodes()
    dialogs.confirm = False  # the fixed volume's own segmentation has a prostate: asked first; declined, kept
    widget.ui.fixedSegmentProstateButton.emit("clicked(bool)")
    assert len(dialogs.asked) == 1 and "Replace the 'prostate' segment of 'TRUS prostate'" in dialogs.asked[0]
    assert widget.ui.statusLabel.text.startswith("Not segmented") and gui.scene.GetNumberOfNodes() == count
    dialogs.confirm = True
    kept = p.fixedSegmentation
    widget.ui.fixedSegmentProstateButton.emit("clicked(bool)")
    assert p.fixedSegmentation is kept and gui.scene.GetNumberOfNodes() == count
    assert list(segment_names(kept).values()) == [PROSTATE] and gui.errors == []


@pytest.mark.parametrize("module", MODULES)
def test_no_gland_and_cancel_show_a_message_and_add_nothing(gui, module, networks, shipped, dialogs):
    import shutil

    from MMRegistrationLib.networks.weights import sidecar_path

    for suffix in (lambda p: p, sidecar_path):
        shutil.copy(suffix(networks.none), suffix(shipped.paths["trus"]))
    widget = _widget(gui, module, fixedVolume=_volume(gui.scene))
    widget._checkCanApply()
    count = gui.scene.GetNumberOfNodes()
    widget.onSegmentFixedProstate()
    assert len(gui.errors) == 1 and gui.errors[0].startswith("Prostate segmentation of the fixed volume failed.")
    assert "fixed volume: no prostate found by the TRUS segmentation network" in gui.errors[0]
    assert "Traceback" not in gui.errors[0]
    assert gui.scene.GetNumberOfNodes() == count and widget._parameterNode.fixedSegmentation is None
    assert _buttons(widget) == (True, False)

    for suffix in (lambda p: p, sidecar_path):
        shutil.copy(suffix(networks.cube), suffix(shipped.paths["trus"]))
    gui.app.on_process_events = widget.onCancelButton  # Cancel pressed during the run
    widget.onSegmentFixedProstate()
    assert widget.ui.statusLabel.text.startswith("Cancelled") and len(gui.errors) == 1
    assert gui.scene.GetNumberOfNodes() == count and widget._parameterNode.fixedSegmentation is None
    assert _buttons(widget) == (True, False)


@pytest.mark.parametrize("module", MODULES)
def test_module_declares_and_wires_the_buttons(module):
    """Static: both buttons are push buttons of the .ui beside the segmentation selectors; the widget calls the
    mixin's setup and updates them with the other buttons."""
    import ast
    import xml.etree.ElementTree as ET

    from conftest import REPO_ROOT

    folder = REPO_ROOT / "MMRegistration" / module
    root = ET.parse(folder / "Resources" / "UI" / f"{module}.ui").getroot()
    for side in ("fixed", "moving"):
        layout = root.find(f".//layout[@name='{side}SegmentationLayout']")
        names = {w.get("name"): w.get("class") for w in layout.iter("widget")}
        assert names == {f"{side}SegmentationSelector": "qMRMLNodeComboBox",
                         f"{side}SegmentProstateButton": "QPushButton"}, names
    tree = ast.parse((folder / f"{module}.py").read_text(encoding="utf-8"))
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Widget")
    assert "SegmentProstateWidgetMixin" in [ast.unparse(b) for b in widget.bases]
    calls = {f.name: {ast.unparse(c.func) for c in ast.walk(f) if isinstance(c, ast.Call)}
             for f in widget.body if isinstance(f, ast.FunctionDef)}
    assert "self.setupSegmentProstate" in calls["setup"]
    assert "self.updateSegmentProstateButtons" in calls["_checkCanApply"]

