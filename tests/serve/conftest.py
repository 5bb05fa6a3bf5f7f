"""Fixtures of tests/serve: tiny random-weight runs and a live server on 127.0.0.1."""
import pytest

from serve_helpers import make_run, start_server


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture(scope="session")
def tiny_latent_run(tmp_path_factory):
    """The same kind of run without an action map: the page sends raw latent codes."""
    return make_run(tmp_path_factory.mktemp("tiny-latent-run"), with_map=False, seed=1)


@pytest.fixture(scope="module")
def server(tiny_run, tiny_latent_run):
    with start_server({"tiny": tiny_run, "latent": tiny_latent_run}, max_sessions=6, idle_timeout_s=30) as s:
        yield s
