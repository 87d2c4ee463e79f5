"""Stand-ins for what PyPI ``slicer-core`` lacks of Slicer's GUI (``qt``, ``slicer.ScriptedLoadableModule``,
``slicer.parameterNodeWrapper``, ``slicer.app``), just enough to import the scripted module files and drive the
Qt-free code of their widgets and self-tests on a real MRML scene.

Used in-process by the tests (through fixtures that undo :func:`install`) and in subprocesses where torch cannot be
imported (run as a file: the stubs are loaded by path, this folder is not a package).

The parameter node wrapper stand-in knows ``parameterNodeWrapper``, ``WithinRange`` and ``Choice`` only: the
annotations Slicer's wrapper consumes when it reads a parameter node class (a module importing anything else from it,
such as ``Decimals``, fails here).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
MODULES_DIR = REPO_ROOT / "MMRegistration"


# ---- qt ------------------------------------------------------------------------------------------------------
class QTableWidgetItem:
    def __init__(self, text=""):
        self._text, self._data = text, {}

    def text(self):
        return self._text

    def setData(self, role, value):
        self._data[role] = value

    def data(self, role):
        return self._data.get(role)


class QComboBox:
    def __init__(self):
        self.items, self.currentIndex = [], -1

    def addItem(self, text, data=None):
        self.items.append((text, data))
        if self.currentIndex < 0:
            self.currentIndex = 0

    def findData(self, data):
        return next((n for n, (_, d) in enumerate(self.items) if d == data), -1)

    def setCurrentIndex(self, index):
        self.currentIndex = index

    @property
    def currentData(self):
        return self.items[self.currentIndex][1] if self.currentIndex >= 0 else None

    @property
    def currentText(self):
        return self.items[self.currentIndex][0] if self.currentIndex >= 0 else ""

    def choose(self, text):
        """What a user does: pick the entry showing ``text``."""
        self.currentIndex = [t for t, _ in self.items].index(text)


class QTableWidget:
    def __init__(self):
        self.rows, self.columns, self.selected = [], [], None

    def setColumnCount(self, count):
        self.columns = self.columns[:count] + [""] * (count - len(self.columns))

    def setHorizontalHeaderLabels(self, labels):
        self.columns = list(labels)

    def selectRow(self, row):
        self.selected = row

    def currentRow(self):
        return -1 if self.selected is None else self.selected

    @property
    def rowCount(self):
        return len(self.rows)

    def setRowCount(self, count):
        self.rows = self.rows[:count] + [{} for _ in range(count - len(self.rows))]

    def insertRow(self, row):
        self.rows.insert(row, {})

    def setItem(self, row, column, item):
        self.rows[row][column] = item

    def item(self, row, column):
        return self.rows[row].get(column)

    def setCellWidget(self, row, column, widget):
        self.rows[row][column] = widget

    def cellWidget(self, row, column):
        return self.rows[row].get(column)

    def shown(self) -> list:
        """``[(fixed name, chosen moving text)]`` as the table shows them."""
        return [(r[0].text(), r[1].currentText) for r in self.rows]


class QTimer:
    @staticmethod
    def singleShot(msec, callback):
        callback()


def qt_module() -> types.ModuleType:
    qt = types.ModuleType("qt")
    qt.Qt = types.SimpleNamespace(UserRole=32, WaitCursor=3)
    qt.QTableWidgetItem, qt.QComboBox, qt.QTableWidget, qt.QTimer = QTableWidgetItem, QComboBox, QTableWidget, QTimer
    qt.QFileDialog = types.SimpleNamespace(getExistingDirectory=lambda *args: "")
    return qt


# ---- widgets of a .ui file -----------------------------------------------------------------------------------
class Widget(types.SimpleNamespace):
    """A .ui widget: its ``SlicerParameterName`` property, enabled/toolTip/text, Qt-style ``connect``."""

    def __init__(self, parameter=None, **attributes):
        super().__init__(enabled=True, toolTip="", text="", value=0, **attributes)
        self._parameter, self._slots = parameter, {}

    def property(self, name):
        return self._parameter if name == "SlicerParameterName" else None

    def connect(self, signal, slot):
        self._slots.setdefault(signal, []).append(slot)

    def emit(self, signal, *args):
        for slot in self._slots.get(signal, []):
            slot(*args)


class NodeSelector(Widget):
    def __init__(self, parameter=None):
        super().__init__(parameter)
        self._node = None
        self._proxy = types.SimpleNamespace(hiddenNodeIDs=[])

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node):
        self._node = node
        self.emit("currentNodeChanged(vtkMRMLNode*)", node)

    def sortFilterProxyModel(self):
        return self._proxy


def fake_ui(module: str) -> types.SimpleNamespace:
    """Stand-ins for every widget of ``MMRegistration/<module>/Resources/UI/<module>.ui``, by object name."""
    ui_file = MODULES_DIR / module / "Resources" / "UI" / f"{module}.ui"
    ui = types.SimpleNamespace()
    for element in ET.parse(ui_file).getroot().iter("widget"):
        parameter = element.find("property[@name='SlicerParameterName']/string")
        parameter = None if parameter is None else parameter.text
        kind = element.get("class")
        widget = (NodeSelector(parameter) if kind == "qMRMLNodeComboBox" else QTableWidget()
                  if kind == "QTableWidget" else Widget(parameter))
        setattr(ui, element.get("name"), widget)
    return ui


# ---- slicer's GUI modules ---------------------------------------------------------------------------------------
class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent if parent is not None else types.SimpleNamespace(isEntered=True)


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        pass

    def getParameterNode(self):
        return None


class ScriptedLoadableModuleTest:
    def __init__(self, *args):
        self.messages = []

    def delayDisplay(self, message, msec=None):
        self.messages.append(message)


class App:
    """``slicer.app``: testing mode as ctest runs it; processEvents calls ``on_process_events`` (if set)."""

    def __init__(self, testing=True):
        self.testing, self.on_process_events = testing, None
        self.selection = types.SimpleNamespace(SetActiveTableID=lambda node_id: None)

    def testingEnabled(self):
        return self.testing

    def processEvents(self):
        if self.on_process_events is not None:
            self.on_process_events()

    def layoutManager(self):
        return types.SimpleNamespace(setLayout=lambda layout: None)

    def applicationLogic(self):
        return types.SimpleNamespace(GetSelectionNode=lambda: self.selection, PropagateTableSelection=lambda: None)


def error_display(errors: list):
    """A ``slicer.util.tryWithErrorDisplay`` stand-in: the error is appended to ``errors`` (what the message box
    would show) and not raised, as in Slicer outside testing mode."""

    @contextlib.contextmanager
    def try_with_error_display(message=None, show=True, waitCursor=False):
        try:
            yield
        except Exception as error:  # noqa: BLE001 - what the message box catches
            errors.append(f"{message} {error}")

    return try_with_error_display


def install(slicer, scene, testing: bool = True) -> tuple:
    """Put the stand-ins in place (``sys.modules`` and attributes of the ``slicer`` package). Returns ``(app,
    errors, undo)``: the fake ``slicer.app``, the list the error display appends to, and a function that restores
    everything."""
    errors = []
    saved_modules = {name: sys.modules.get(name) for name in
                     ("qt", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper")}
    saved_attributes = {name: getattr(slicer, name, None) for name in
                        ("app", "mrmlScene", "ScriptedLoadableModule", "parameterNodeWrapper")}
    saved_try = slicer.util.tryWithErrorDisplay
    app = App(testing)
    sys.modules["qt"] = qt_module()
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(scripted, cls.__name__, cls)
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    wrapper.WithinRange = wrapper.Choice = lambda *args, **kwargs: (args, kwargs)
    sys.modules["slicer.ScriptedLoadableModule"], sys.modules["slicer.parameterNodeWrapper"] = scripted, wrapper
    slicer.app, slicer.mrmlScene = app, scene
    slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper = scripted, wrapper
    slicer.util.tryWithErrorDisplay = error_display(errors)

    def undo():
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        for name, value in saved_attributes.items():
            if value is None:
                if hasattr(slicer, name):
                    delattr(slicer, name)
            else:
                setattr(slicer, name, value)
        slicer.util.tryWithErrorDisplay = saved_try

    return app, errors, undo


def load_module_file(module: str) -> types.ModuleType:
    """Import ``MMRegistration/<module>/<module>.py`` (under a private name, so each call gets a fresh module)."""
    path = MODULES_DIR / module / f"{module}.py"
    spec = importlib.util.spec_from_file_location(f"_mmreg_module_{module}", path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


_SEGMENTATION_LOGICS = []


def segmentation(scene, name: str, segment_names):
    """A segmentation node with empty segments named ``segment_names``; returns the node."""
    import slicer

    if not _SEGMENTATION_LOGICS:
        _SEGMENTATION_LOGICS.append(slicer.vtkSlicerSegmentationsModuleLogic())
    _SEGMENTATION_LOGICS[0].SetMRMLScene(scene)  # registers the segment representation converters
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    for segment_name in segment_names:
        node.GetSegmentation().AddEmptySegment("", segment_name)
    return node
