import os

import pytest

from fcnlib.runtime import data_root


def provided(name: str):
    """The folder ``name`` under the data root: CI must have it; elsewhere its tests skip."""
    folder = data_root() / name
    if not folder.is_dir():
        message = f"{name} is not at {folder}: download it or set FCNLIB_DATA_ROOT"
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the data: {message}")
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def camvid_root():
    return provided("camvid")


@pytest.fixture(scope="session")
def voc_sample_root():
    return provided("voc-sample")
