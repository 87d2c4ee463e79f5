"""A Slicer without the engine's dependencies (torch, SciPy, matplotlib...: a fresh install, an extension build
machine): the module files import, the segment mapping tables fill when segmentations are chosen, and the self-tests
skip with a message instead of failing. Run in a subprocess whose import system refuses those packages (this
process has them imported already) and records every attempt to import them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("slicer")

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
ABSENT = ("torch", "scipy", "skimage", "matplotlib", "nibabel", "monai")

SCRIPT = r'''
import importlib.abc, importlib.machinery, importlib.util, json, sys

ABSENT = set(sys.argv[2].split(","))
attempts, probing = [], []


class WithoutAbsent(importlib.abc.MetaPathFinder):
    """The path finder, blind to the absent packages: they are not installed, as in a fresh Slicer. An import of
    one is recorded (a lookup through importlib.util.find_spec, the dependency check's, is not)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            if not probing:
                attempts.append(name)
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)


original_find_spec = importlib.util.find_spec


def find_spec(name, package=None):
    probing.append(name)
    try:
        return original_find_spec(name, package)
    finally:
        probing.pop()


importlib.util.find_spec = find_spec
sys.meta_path[:] = [WithoutAbsent() if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
spec = importlib.util.spec_from_file_location("gui_stubs", sys.argv[1])
stubs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stubs)
import slicer

scene = slicer.vtkMRMLScene()
app, errors, undo = stubs.install(slicer, scene, testing=True)
import MMRegistrationSlicerLib.dependencies, MMRegistrationSlicerLib.module_widget
import MMRegistrationSlicerLib.option_widgets, MMRegistrationSlicerLib.segment_mapping_table
import MMRegistrationSlicerLib.segments, MMRegistrationSlicerLib.segmentation_logic
out = {"skips": {}, "tables": {}, "mappings": {}}
fixed = stubs.segmentation(scene, "TRUS segmentation", ["Prostate", "Bladder", "Urethra"])
moving = stubs.segmentation(scene, "MR segmentation", ["prostate", "bladder", "rectum"])
for name in ("DISASimilarity", "RegistrationEvaluation", "RSORefine", "SINRRegistration"):
    module = stubs.load_module_file(name)
    test = getattr(module, name + "Test")()
    test.runTest()
    out["skips"][name] = test.messages
    widget = getattr(module, name + "Widget")()
    widget.ui = stubs.fake_ui(name)
    widget.hideDerivedVolumes()
    if name == "RSORefine":
        widget.logic = module.RSORefineLogic()
        widget.updateHistory()
    if hasattr(widget, "setupSegmentMapping"):
        widget.setupSegmentMapping()
        widget.ui.fixedSegmentationSelector.setCurrentNode(fixed)
        widget.ui.movingSegmentationSelector.setCurrentNode(moving)
        out["tables"][name] = widget.ui.mappingTable.shown()
        names = {**MMRegistrationSlicerLib.segments.segment_names(fixed),
                 **MMRegistrationSlicerLib.segments.segment_names(moving)}
        out["mappings"][name] = {names[f]: names[m] for f, m in widget.segmentMapping().items()}
out["attempts"] = attempts
out["errors"] = errors
print("RESULT " + json.dumps(out))
'''


@pytest.fixture(scope="module")
def without_engine():
    env_path = [str(REPO_ROOT / "MMRegistration"), str(REPO_ROOT)]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(HERE / "gui_stubs.py"), ",".join(ABSENT)],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
        env={"PYTHONPATH": ":".join(env_path), "PATH": "/usr/bin:/bin"},
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_nothing_the_widgets_and_self_tests_touch_imports_torch(without_engine):
    """Module files, widget helpers, mapping tables, history table and self-tests never even try to import them."""
    assert without_engine["attempts"] == []
    assert without_engine["errors"] == []


def test_mapping_tables_fill_and_map_by_name_without_the_engine(without_engine):
    expected = [["Prostate", "prostate"], ["Bladder", "bladder"]]  # (JSON: lists)
    for module in ("RegistrationEvaluation", "RSORefine", "SINRRegistration"):
        unused = "(not evaluated)" if module == "RegistrationEvaluation" else "(not used)"
        assert without_engine["tables"][module] == expected + [["Urethra", unused]], module
        assert without_engine["mappings"][module] == dict(expected), module


def test_self_tests_skip_with_a_message_naming_what_is_missing(without_engine):
    for module, messages in without_engine["skips"].items():
        assert len(messages) == 1 and messages[0].startswith("Self-test skipped"), (module, messages)
        assert "torch>=2.1" in messages[0] and "scipy" in messages[0], messages[0]
