"""The widget mixin shared by the modules: connecting, replacing and dropping the parameter node (with stand-ins
for the GUI parts that need Qt)."""

from __future__ import annotations

import pytest

from MMRegistrationSlicerLib.module_widget import ParameterNodeWidgetMixin

vtk = pytest.importorskip("vtk")


class FakeParameterNode:
    def __init__(self, name):
        self.name, self.connected = name, False

    def connectGui(self, ui):
        self.connected = True
        return f"tag-{self.name}"

    def disconnectGui(self, tag):
        assert tag == f"tag-{self.name}"
        self.connected = False


class FakeWidget(ParameterNodeWidgetMixin):
    def __init__(self, node):
        self.ui, self.observed, self.checks = object(), [], 0
        self.logic = type("Logic", (), {"getParameterNode": lambda _self: node})()
        self.parent = type("Parent", (), {"isEntered": True})()

    def addObserver(self, obj, event, callback):
        self.observed.append((obj, event))

    def removeObserver(self, obj, event, callback):
        self.observed.remove((obj, event))

    def removeObservers(self):
        self.observed.clear()

    def _checkCanApply(self, caller=None, event=None):
        self.checks += 1

    def hideDerivedVolumes(self):
        self.hidden = getattr(self, "hidden", 0) + 1


def test_parameter_node_is_connected_replaced_and_dropped():
    first, second = FakeParameterNode("a"), FakeParameterNode("b")
    widget = FakeWidget(first)
    widget.enter()
    assert first.connected and widget.observed == [(first, vtk.vtkCommand.ModifiedEvent)] and widget.checks == 1
    assert widget.hidden == 1  # entering the module filters the derived volumes out of its input selectors
    widget.setParameterNode(second)  # a new node: the old one is released first
    assert not first.connected and second.connected
    assert widget.observed == [(second, vtk.vtkCommand.ModifiedEvent)]
    widget.onSceneStartClose(None, None)
    assert not second.connected and widget.observed == [] and widget._parameterNode is None
    widget.onSceneEndClose(None, None)  # the module is shown: its parameter node comes back
    assert first.connected
    widget.exit()
    assert not first.connected and widget.observed == []


def test_cancellable_run_state():
    from types import SimpleNamespace

    from MMRegistrationSlicerLib.module_widget import CancellableRunWidgetMixin

    class RunWidget(CancellableRunWidgetMixin):
        def __init__(self):
            self.ui = SimpleNamespace(cancelButton=SimpleNamespace(enabled=False), progressBar=SimpleNamespace(value=40),
                                      statusLabel=SimpleNamespace(text=""))
            self.checks = 0

        def _checkCanApply(self):
            self.checks += 1

    widget = RunWidget()
    widget._setRunning(True)
    assert widget._running and widget.ui.cancelButton.enabled and widget.ui.progressBar.value == 0
    widget.onCancelButton()
    assert widget._cancelRequested and widget.ui.statusLabel.text == "Cancelling..."
    widget._setRunning(False)
    assert not widget._running and not widget._cancelRequested and not widget.ui.cancelButton.enabled
    assert widget.checks == 2


def test_options_from_parameters_pass_set_numbers_explicit_choices_and_non_blank_text():
    from types import SimpleNamespace

    from MMRegistrationSlicerLib.module_widget import options_from_parameters

    p = SimpleNamespace(iterations=-1, learningRate=0.002, trainable="coarse", weights="  ", weightsFile=" w.pt ")
    options = options_from_parameters(p, {"iterations": "iterations", "learningRate": "learning_rate"},
                                      {"trainable": "trainable"}, {"weights": "weights", "weightsFile": "file"})
    assert options == {"learning_rate": 0.002, "trainable": "coarse", "file": "w.pt"}
