"""One registry saves and loads every model kind: the round trip gives the same class, config and weights."""
import os

import pytest
import torch

from wmfast.checkpoint import load_config, load_model, save_model
from wmfast.errors import WmfastError
from wmfast.models.policy import POLICY_KINDS, PolicyConfig
from wmfast.models.registry import KINDS, kind_of


def small_config(kind):
    """The kind's default config (a policy's names its architecture; BC predicts one action)."""
    if kind in POLICY_KINDS:
        return PolicyConfig(kind=kind, frame_size=16, chunk=1 if kind == "bc" else 4)
    return KINDS[kind][1]()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_round_trips_through_the_registry(kind, tmp_path):
    model_cls, config_cls = KINDS[kind]
    torch.manual_seed(0)
    model = model_cls(small_config(kind))
    assert kind_of(model) == kind
    save_model(model, tmp_path / kind)
    assert load_config(tmp_path / kind)[0] == kind
    loaded = load_model(tmp_path / kind, kind)
    assert type(loaded) is type(model) and isinstance(loaded, model_cls) and loaded.config == model.config
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_a_folder_of_another_kind_is_refused(tmp_path):
    save_model(KINDS["lapa"][0](KINDS["lapa"][1]()), tmp_path / "lapa")
    with pytest.raises(WmfastError, match="holds a lapa model, expected dynamics"):
        load_model(tmp_path / "lapa", "dynamics")


def test_an_unregistered_module_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(WmfastError, match="not a wmfast model: Linear"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "linear")
    assert not os.path.exists(tmp_path / "linear")


def test_a_policy_class_refuses_a_config_of_another_kind():
    with pytest.raises(WmfastError, match="a bc policy needs PolicyConfig"):
        KINDS["bc"][0](PolicyConfig(kind="act"))


def test_policy_runs_saved_before_the_registry_still_load(tmp_path):
    """Their config.json had "model": "policy" beside the architecture's kind."""
    import json

    model = KINDS["chunk"][0](small_config("chunk"))
    save_model(model, tmp_path / "old")
    cfg_path = tmp_path / "old" / "config.json"
    cfg_path.write_text(json.dumps({"model": "policy", **json.loads(cfg_path.read_text())}))
    assert type(load_model(tmp_path / "old")) is type(model)
