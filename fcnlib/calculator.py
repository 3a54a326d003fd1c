"""An interactive receptive-field calculator that works in a live kernel and in the static book.

The calculator is one JavaScript ES module, ``fcnlib/static/receptive_calculator.js``. In a
live kernel it runs as an anywidget whose ``layers`` and ``unit`` are synchronised with
Python; in the rendered book, where no kernel runs, the same module is inlined into the cell's
``text/html`` output together with a small host script that stands in for the kernel's model.
"""

from __future__ import annotations

import itertools
import json
from functools import reduce
from pathlib import Path

import anywidget
import traitlets

from fcnlib.receptive import AxisGeometry

CALCULATOR_JS = Path(__file__).parent / "static" / "receptive_calculator.js"
# Allowed values for each layer setting, as the module's sliders offer them (see LIMITS there).
LIMITS = {"k": (1, 7), "s": (1, 4), "p": (0, 6), "d": (1, 4)}
DEFAULT_LAYERS = ({"k": 3, "s": 1, "p": 1, "d": 1}, {"k": 2, "s": 2, "p": 0, "d": 1})

# The static page has no kernel: this plain object offers the part of anywidget's model API
# that render() uses, and fires change events when a slider sets a value.
_HOST = """
const state = %(state)s;
const listeners = {};
const model = {
  get: (key) => state[key],
  set: (key, value) => {
    state[key] = value;
    for (const callback of listeners["change:" + key] ?? []) callback();
  },
  on: (event, callback) => (listeners[event] ??= []).push(callback),
  off: (event, callback) => {
    listeners[event] = (listeners[event] ?? []).filter((c) => c !== callback);
  },
  save_changes: () => {},
};
render({ model, el: document.getElementById(%(id)s) });
"""
_ids = itertools.count()


class ReceptiveFieldCalculator(anywidget.AnyWidget):
    """Sliders for a stack of up to ``max_layers`` convolution or pooling layers.

    ``layers`` is a list of ``{"k": kernel, "s": stride, "p": padding, "d": dilation}``;
    ``unit`` is the output unit whose receptive field is drawn. :attr:`geometry` gives r, S and
    P of the current stack, computed by :mod:`fcnlib.receptive`.
    """

    _esm = CALCULATOR_JS
    layers = traitlets.List(traitlets.Dict(), default_value=list(DEFAULT_LAYERS)).tag(sync=True)
    unit = traitlets.Int(2, min=0, max=8).tag(sync=True)
    max_layers = traitlets.Int(6).tag(sync=True)

    @traitlets.validate("layers")
    def _check_layers(self, proposal: dict) -> list[dict]:
        layers = proposal["value"]
        if not 1 <= len(layers) <= self.max_layers:
            raise traitlets.TraitError(f"layers: give 1 to {self.max_layers} layers")
        for i, layer in enumerate(layers):
            if set(layer) != set(LIMITS):
                raise traitlets.TraitError(f"layers[{i}] must have exactly the keys k, s, p, d")
            for key, (low, high) in LIMITS.items():
                if not isinstance(layer[key], int) or not low <= layer[key] <= high:
                    raise traitlets.TraitError(
                        f"layers[{i}][{key!r}] = {layer[key]!r}: must be an int in {low}..{high}"
                    )
        return layers

    @property
    def geometry(self) -> AxisGeometry:
        """r, S and P (input pixels) of the current stack, per fcnlib's recurrences."""
        return reduce(
            lambda g, layer: g.then(layer["k"], layer["s"], layer["p"], layer["d"]),
            self.layers,
            AxisGeometry(),
        )

    def static_html(self) -> str:
        """HTML that runs the calculator without a kernel: the ES module plus the host script."""
        source = CALCULATOR_JS.read_text()
        if "</script" in source:
            raise ValueError(f"{CALCULATOR_JS} must not contain '</script': it is inlined")
        element = f"fcnlib-rf-calculator-{next(_ids)}"
        state = {"layers": self.layers, "unit": self.unit, "max_layers": self.max_layers}
        host = _HOST % {"state": json.dumps(state), "id": json.dumps(element)}
        # Inlined rather than imported: browsers refuse to import modules from file:// pages.
        return f'<div id="{element}"></div>\n<script type="module">\n{source}\n{host}</script>'

    def _repr_mimebundle_(self, **kwargs: object) -> tuple[dict, dict]:
        data, metadata = super()._repr_mimebundle_(**kwargs)
        return {**data, "text/html": self.static_html()}, metadata

    def __repr__(self) -> str:
        return f"ReceptiveFieldCalculator(layers={self.layers}, unit={self.unit})"
