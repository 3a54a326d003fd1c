import os

import pytest

from fcnlib.runtime import data_root


@pytest.fixture(scope="session")
def camvid_root():
    """The CamVid folder under the data root; CI must have it, elsewhere its tests are skipped."""
    folder = data_root() / "camvid"
    if not folder.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide CamVid at {folder} (set FCNLIB_DATA_ROOT)")
        pytest.skip(f"CamVid is not at {folder}; download it or set FCNLIB_DATA_ROOT")
    return folder


@pytest.fixture(scope="session")
def voc_sample_root():
    """The one-image PASCAL VOC sample under the data root."""
    folder = data_root() / "voc-sample"
    if not folder.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the VOC sample at {folder} (set FCNLIB_DATA_ROOT)")
        pytest.skip(f"the VOC sample is not at {folder}; set FCNLIB_DATA_ROOT")
    return folder
