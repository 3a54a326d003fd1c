"""The book's structure as its table of contents gives it, and the notebooks' outputs.

The committed outputs are those of fast mode (``pytest --nbval`` re-executes and compares
them); :func:`refresh_outputs` re-creates them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from fcnlib.records import write_text
from fcnlib.runtime import REPO_ROOT

if TYPE_CHECKING:
    from nbformat import NotebookNode

BOOK_DIR = REPO_ROOT / "book"


def toc_documents() -> list[str]:
    """The documents of ``book/_toc.yml``, root first, as paths relative to book/ without suffix."""
    toc = yaml.safe_load((BOOK_DIR / "_toc.yml").read_text())
    documents = [toc["root"]]
    for part in toc.get("parts", []):
        documents += [chapter["file"] for chapter in part["chapters"]]
    return documents


def chapter_notebooks() -> list[Path]:
    """The chapter notebooks in reading order."""
    return [BOOK_DIR / f"{doc}.ipynb" for doc in toc_documents() if doc.startswith("chapters/")]


def notebooks() -> list[Path]:
    """Every notebook of the book, chapters and appendices, in reading order."""
    return [
        BOOK_DIR / f"{doc}.ipynb"
        for doc in toc_documents()
        if (BOOK_DIR / f"{doc}.ipynb").is_file()
    ]


def execute(path: Path, timeout: int = 900) -> tuple[NotebookNode, float]:
    """Run notebook ``path`` in fast mode in a fresh kernel of this Python, in its folder.

    Returns the executed notebook, whose cells' consecutive outputs to one stream are merged
    (the kernel splits a cell's prints when time passes between them, which renders as
    several boxes), and the seconds it took.
    """
    # The book's extra (`pip install -e ".[book]"`) provides these; the package does not need it.
    import nbformat
    from nbclient import NotebookClient
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    os.environ["FCNLIB_MODE"] = "fast"
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(Path(path).parent)}},
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    notebook, _ = CoalesceStreamsPreprocessor().preprocess(notebook, {})
    return notebook, seconds


def refresh_outputs(paths: Iterable[Path] | None = None, timeout: int = 900) -> dict[str, float]:
    """Re-create the committed outputs of ``paths`` (default: :func:`notebooks`) and write each
    notebook back atomically; returns the seconds each took, by name."""
    import nbformat

    seconds = {}
    for path in notebooks() if paths is None else paths:
        notebook, seconds[Path(path).stem] = execute(Path(path), timeout)
        write_text(Path(path), nbformat.writes(notebook) + "\n")
    return seconds
