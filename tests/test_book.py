"""The rendered book: it builds offline without warnings, and each page works in a real browser.

The book is built into a temporary folder, served on 127.0.0.1 and opened in Debian's
chromium through Playwright. Screenshots land in test-output/screenshots/ for a person to see.
"""

import functools
import http.server
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import pytest

from fcnlib.book import BOOK_DIR as BOOK
from fcnlib.book import chapter_notebooks, notebooks, refresh_outputs, toc_documents
from fcnlib.runtime import REPO_ROOT

SCREENSHOTS = REPO_ROOT / "test-output" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", "--warningiserror", "--nitpick", "--keep-going"]
    result = subprocess.run(
        [*command, "--path-output", str(out), str(BOOK)], capture_output=True, text=True
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "WARNING" not in log, log[-4000:]
    return out / "_build" / "html"


@pytest.fixture(scope="session")
def server(built_book):
    handler = functools.partial(QuietHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def chromium_path() -> str:
    path = os.environ.get("FCNLIB_CHROMIUM") or shutil.which("chromium")
    if not path:
        message = "chromium is not installed (apt-get install chromium, or set FCNLIB_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A loaded page with what it asked the network for and what it logged."""

    def __init__(self, browser, url: str):
        self.outside, self.errors = [], []
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))

        def route(request_route):
            if request_route.request.url.startswith(origin):
                request_route.continue_()
            else:
                self.outside.append(request_route.request.url)
                request_route.abort()

        self.page.route("**/*", route)
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on(
            "response", lambda r: r.status >= 400 and self.errors.append(f"{r.status} {r.url}")
        )
        self.page.goto(url, wait_until="networkidle")
        # MathJax typesets asynchronously after the load event.
        self.page.evaluate("() => window.MathJax?.startup?.promise")


@pytest.mark.parametrize("doc", toc_documents())
def test_page_renders_offline(browser, server, doc):
    loaded = Page(browser, f"{server}/{doc}.html")
    page = loaded.page
    assert loaded.outside == [], f"{doc} asked for resources outside the local server"
    assert loaded.errors == [], f"{doc} logged errors in the browser console"

    equations = page.locator("span.math, div.math").count()
    assert page.locator("mjx-container").count() == equations
    assert page.locator("mjx-merror").count() == 0, "MathJax could not typeset an equation"

    images = page.locator("article img")
    unloaded = page.evaluate(
        "[...document.querySelectorAll('article img')]"
        ".filter(img => !img.complete || img.naturalWidth === 0).map(img => img.src)"
    )
    assert unloaded == [], f"{doc} has images that did not load"
    if doc.startswith("chapters/"):
        assert images.count() > 0, f"{doc} shows no figure"
        heading = page.locator("article h1").first.inner_text()
        assert heading[0].isdigit(), f"{doc} is not a numbered chapter: {heading!r}"

    # Nothing is cut off: every code and output block fits its box at a 1400-px width.
    overflowing = page.evaluate(
        "[...document.querySelectorAll('article pre')]"
        ".filter(block => block.scrollWidth > block.clientWidth + 1)"
        ".map(block => block.innerText.split('\\n')"
        ".reduce((a, b) => (b.length > a.length ? b : a)))"
    )
    assert overflowing == [], f"{doc}: blocks wider than their box, e.g. {overflowing[:3]}"

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{doc.replace('/', '-')}.png", full_page=True)
    page.close()


class LinkParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if "id" in attributes:
            self.ids.add(attributes["id"])
        for name in ("href", "src"):
            if attributes.get(name):
                self.links.append(attributes[name])


def test_internal_links_resolve(built_book):
    parsed = {}
    for html in built_book.rglob("*.html"):
        if html.relative_to(built_book).parts[0] == "_static":
            continue  # the theme's own templates, not pages of the book
        parser = LinkParser()
        parser.feed(html.read_text())
        parsed[html] = parser
    broken = []
    for html, parser in parsed.items():
        for link in parser.links:
            if urlsplit(link).scheme or link.startswith(("mailto:", "//", "data:")):
                continue
            target, fragment = urldefrag(link)
            path = (html.parent / urlsplit(target).path).resolve() if target else html
            if not path.exists():
                broken.append(f"{html.relative_to(built_book)} -> {link}")
            elif fragment and path.suffix == ".html" and fragment not in parsed[path].ids:
                broken.append(f"{html.relative_to(built_book)} -> {link} (no such anchor)")
    assert broken == []


@pytest.mark.parametrize("path", notebooks(), ids=lambda path: path.stem)
def test_figures_have_captions_and_no_cell_is_removed(path):
    import nbformat

    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        tags = set(cell.metadata.get("tags", []))
        assert not {"remove-input", "remove-cell", "remove-output"} & tags, (
            f"cell {index} is removed from the page: collapse it with hide-input"
        )
        caption = cell.metadata.get("mystnb", {}).get("figure", {}).get("caption")
        if cell.cell_type != "code":
            assert not caption and not tags, f"markdown cell {index} carries code-cell metadata"
            continue
        shows_figure = any("image/png" in output.get("data", {}) for output in cell.outputs)
        assert bool(caption) == shows_figure, f"cell {index}: a caption belongs to a figure"


@pytest.mark.parametrize("path", chapter_notebooks(), ids=lambda path: path.stem)
def test_chapter_states_its_goals_and_ends_with_exercises(path):
    import nbformat

    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    assert "You will learn" in cells[0].source, "the first cell says what the reader will learn"
    headings = [i for i, c in enumerate(cells) if c.source.startswith("## Exercises")]
    assert headings, "the chapter ends with an Exercises section"
    exercises = "\n".join(cell.source for cell in cells[headings[-1] :])
    assert ":class: dropdown" in exercises, "solutions hide behind a toggle"


def test_receptive_field_calculator_answers_sliders_like_fcnlib(browser, server):
    """Drive the static page's sliders as a reader would and check the readout against fcnlib."""
    import random

    from torch import nn

    from fcnlib.receptive import receptive_field

    loaded = Page(browser, f"{server}/chapters/receptive-fields.html")
    page = loaded.page
    calculator = page.locator(".fcnlib-rf-calculator")
    assert calculator.count() == 1, "the static page shows the calculator"

    def slide(label: str, index: int, value: int) -> None:
        # A reader drags the slider: the value changes and an input event fires.
        calculator.locator(f"input[aria-label='{label}']").nth(index).evaluate(
            "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", value
        )

    limits = {"kernel": (1, 7), "stride": (1, 4), "padding": (0, 6), "dilation": (1, 4)}
    chooser = random.Random(0)
    for _ in range(6):
        count = chooser.randint(1, calculator.locator("input[aria-label='kernel']").count())
        slide("layers", 0, count)
        layers = [{name: chooser.randint(*limits[name]) for name in limits} for _ in range(count)]
        for index, layer in enumerate(layers):
            for name, value in layer.items():
                slide(name, index, value)
        stack = nn.Sequential(
            *(
                nn.Conv2d(
                    1, 1, layer["kernel"], layer["stride"], layer["padding"], layer["dilation"]
                )
                for layer in layers
            )
        )
        geometry = receptive_field(stack).h
        summary = calculator.locator("p").first.inner_text()
        assert summary.startswith(f"r = {geometry.r}, S = {geometry.S}, P = {geometry.P}:"), (
            layers,
            summary,
        )
    assert loaded.errors == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    calculator.screenshot(path=SCREENSHOTS / "receptive-fields-calculator.png")
    page.close()


def test_chapters_come_in_the_order_the_book_teaches():
    stems = [path.stem for path in chapter_notebooks()]
    assert stems == [
        "first-look",
        "receptive-fields",
        "downsampling",
        "coarse-output",
        "deconvolution",
        "skip-fusion",
        "three-nets",
        "data",
        "training",
        "evaluation",
    ]
    assert all(path.is_file() for path in chapter_notebooks())
    assert toc_documents()[0] == "intro"


def exercise_numbers(path: Path) -> list[int]:
    """The numbers of a chapter's exercises, as its Exercises section lists them."""
    cells = json.loads(path.read_text())["cells"]
    start = next(i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## Exercises"))
    text = "\n".join("".join(c["source"]) for c in cells[start:] if c["cell_type"] == "markdown")
    return [int(n) for n in re.findall(r"^(\d+)\. ", text, re.MULTILINE)]


def test_the_intro_and_the_teacher_plan_cover_every_chapter_and_exercise():
    chapters = chapter_notebooks()
    intro = (BOOK / "intro.md").read_text()
    assert re.findall(r"^(\d+)\. \*\*", intro, re.MULTILINE) == [
        str(n) for n in range(1, len(chapters) + 1)
    ], "intro.md's chapter plan has one numbered entry per chapter"
    plan = (BOOK / "running-in-class.md").read_text()
    rows = plan.split("| chapter | goals | in class | homework |")[1].split("\n\n")[0]
    rows = [row.split("|")[1:-1] for row in rows.strip().splitlines()[1:]]
    assert len(rows) == len(chapters), "the teacher plan has one row per chapter"
    for (name, _, in_class, homework), path in zip(rows, chapters, strict=True):
        listed = [int(n) for n in re.findall(r"\d+", in_class + homework)]
        assert sorted(listed) == exercise_numbers(path), (
            f"{name.strip()}: the plan lists exercises {listed}, {path.name} has "
            f"{exercise_numbers(path)}"
        )


@pytest.mark.parametrize("path", notebooks(), ids=lambda path: path.stem)
def test_each_cell_prints_into_one_box(path):
    # The kernel splits a cell's prints when time passes between them; nbval compares them
    # merged, but the book would render each piece in a box of its own.
    notebook = json.loads(path.read_text())
    for index, cell in enumerate(notebook["cells"]):
        kinds = [(o["output_type"], o.get("name")) for o in cell.get("outputs", [])]
        split = [a == b and a[0] == "stream" for a, b in itertools.pairwise(kinds)]
        assert not any(split), f"{path.name} cell {index}: refresh with fcnlib.book.refresh_outputs"


def test_refreshed_outputs_are_merged_per_stream(tmp_path):
    import nbformat

    path = tmp_path / "two-prints.ipynb"
    source = "import sys, time\nprint('one', flush=True)\ntime.sleep(0.5)\nprint('two')"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]), path)
    seconds = refresh_outputs([path], timeout=60)
    (cell,) = nbformat.read(path, as_version=4).cells
    assert [o["text"] for o in cell.outputs] == ["one\ntwo\n"] and seconds["two-prints"] > 0.5
