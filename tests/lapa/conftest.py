"""Fixtures for the LAPA tests (helpers in lapa_synth.py)."""
import pytest
from lapa_synth import ACTIONS, breakout_like

from wmfast.data import write_dataset


@pytest.fixture(scope="session")
def breakout_h5(tmp_path_factory):
    frames, actions, bounds = breakout_like()
    path = tmp_path_factory.mktemp("lapa_data") / "breakout_like.h5"
    return str(write_dataset(path, frames, actions, bounds, len(ACTIONS), ACTIONS, {"source": "synthetic"}))
