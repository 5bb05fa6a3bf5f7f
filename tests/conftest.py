import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
FIXTURE = SHARED / "fixtures" / "tinyworlds-small"


# The suite's models are tiny: one intra-op thread is faster than two and avoids OpenMP
# spin-waits when the machine is busy. Tests of threaded kernels set their own count.
torch.set_num_threads(int(os.environ.get("WMFAST_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _deterministic_cpu():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_game_cache(tmp_path_factory):
    """Generated datasets go to a per-session cache so tests never touch the user's cache."""
    path = tmp_path_factory.mktemp("wmfast-cache")
    os.environ["WMFAST_CACHE"] = str(path)
    return path


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
