import os

import numpy as np
import pytest
from hypothesis import settings

# CI draws the same examples every run, so a red CI is reproducible and no unrelated change
# turns it red; elsewhere each run explores new ones (and Hypothesis keeps the failures it finds).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
