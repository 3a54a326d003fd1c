"""Test-session settings shared by the unit tests and by ``pytest --nbval`` over the notebooks."""

import os
from pathlib import Path

# The committed notebook outputs are those of fast mode, so every machine compares in fast mode.
os.environ["FCNLIB_MODE"] = "fast"

# Notebook kernels run in their own folder: a relative data root must not depend on it.
if os.environ.get("FCNLIB_DATA_ROOT"):
    os.environ["FCNLIB_DATA_ROOT"] = str(Path(os.environ["FCNLIB_DATA_ROOT"]).resolve())
