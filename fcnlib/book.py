"""The book's structure as its table of contents gives it: pages and chapter notebooks in order."""

from __future__ import annotations

from pathlib import Path

import yaml

from fcnlib.runtime import REPO_ROOT

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
