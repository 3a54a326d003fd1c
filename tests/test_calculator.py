import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import traitlets
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fcnlib.calculator import LIMITS, ReceptiveFieldCalculator
from fcnlib.receptive import receptive_field_table

NODE_SCRIPT = Path(__file__).with_name("calculator_geometry.mjs")


@pytest.fixture(scope="module")
def node():
    """A node process running the calculator's own JavaScript, answering one line per query."""
    if shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have node (v18 or later) to test the calculator's JavaScript")
        pytest.skip("node is not installed")
    process = subprocess.Popen(
        ["node", str(NODE_SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    limits = json.loads(process.stdout.readline())

    def ask(stacks):
        process.stdin.write(json.dumps(stacks) + "\n")
        process.stdin.flush()
        return json.loads(process.stdout.readline())

    ask.limits = limits
    yield ask
    process.stdin.close()
    process.wait(timeout=10)


def test_javascript_and_python_offer_the_same_slider_ranges(node):
    assert {key: tuple(value) for key, value in node.limits.items()} == LIMITS


layer = st.fixed_dictionaries({key: st.integers(*LIMITS[key]) for key in "kspd"})
stacks = st.lists(st.lists(layer, min_size=1, max_size=6), min_size=10, max_size=10)


@settings(max_examples=10, deadline=None)
@given(stacks=stacks)
def test_javascript_geometry_equals_fcnlib_on_random_stacks(node, stacks):
    answers = node(stacks)  # ten stacks per node round trip
    for stack, rows in zip(stacks, answers, strict=True):
        model = nn.Sequential(*[nn.Conv2d(1, 1, x["k"], x["s"], x["p"], x["d"]) for x in stack])
        expected = receptive_field_table(model)
        assert [(row["r"], row["S"], row["P"]) for row in rows] == [
            (r.r[0], r.S[0], r.P[0]) for r in expected
        ]


def test_widget_geometry_follows_its_sliders():
    calculator = ReceptiveFieldCalculator()
    calculator.layers = [{"k": 3, "s": 2, "p": 1, "d": 1}] * 2 + [{"k": 3, "s": 1, "p": 1, "d": 2}]
    g = calculator.geometry
    assert (g.r, g.S, g.P) == (3 + 2 * 2 + 4 * 4, 4, 1 + 2 + 4)


def test_widget_rejects_bad_layers_by_name():
    with pytest.raises(
        traitlets.TraitError, match=r"layers\[1\]\['s'\] = 0: must be an int in 1..4"
    ):
        ReceptiveFieldCalculator(
            layers=[{"k": 3, "s": 1, "p": 1, "d": 1}, {"k": 3, "s": 0, "p": 1, "d": 1}]
        )
    with pytest.raises(traitlets.TraitError, match="exactly the keys"):
        ReceptiveFieldCalculator(layers=[{"k": 3}])
    with pytest.raises(traitlets.TraitError, match="give 1 to 6 layers"):
        ReceptiveFieldCalculator(layers=[])


def test_static_html_carries_the_module_and_the_state():
    calculator = ReceptiveFieldCalculator(unit=4)
    data, _ = calculator._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data  # a live kernel shows the widget
    html = data["text/html"]
    assert html.startswith('<div id="fcnlib-rf-calculator-')
    assert "export function geometry(layers)" in html and "render({ model, el:" in html
    assert '"unit": 4' in html and json.dumps(calculator.layers) in html
    assert "http" not in html  # nothing to fetch: the static book works offline
