"""The demo's recipes: which data gets which, and where a shipped model for a dataset would live."""
import pytest

from wmfast.train.recipes import ATARI_RECIPE, DEMO_RECIPE, demo_recipe, pretrained_name


def steps_and_overrides(recipe):
    return {stage: (cfg.steps, over) for stage, (cfg, over) in recipe.items()}


def test_atari_footage_gets_the_atari_recipe_and_everything_else_the_demos():
    atari = {s: (t["steps"], m) for s, (t, m) in ATARI_RECIPE.items()}
    plain = {s: (t["steps"], m) for s, (t, m) in DEMO_RECIPE.items()}
    assert steps_and_overrides(demo_recipe(1.0, "atari:Pong")) == atari
    assert steps_and_overrides(demo_recipe(1.0, "game:maze")) == plain
    assert steps_and_overrides(demo_recipe(1.0)) == plain
    assert atari["actions"][1]["encoder_frames"] == 4 and atari != plain


def test_an_atari_recording_on_disk_gets_the_atari_recipe(tmp_path):
    pytest.importorskip("ale_py")
    from wmfast.data.atari import generate_atari_dataset

    path = generate_atari_dataset("Breakout", 1, size=32, seed=2, max_steps=10, out=tmp_path / "b.h5", progress=False)
    assert demo_recipe(0.1, path)["actions"][1] == ATARI_RECIPE["actions"][1]
    assert demo_recipe(0.1, path)["tokenizer"][0].steps == round(0.1 * ATARI_RECIPE["tokenizer"][0]["steps"])


@pytest.mark.parametrize("spec, name", [("game:maze", "maze"), ("atari:Pong", "atari-pong"),
                                        ("atari:Breakout", "atari-breakout"),
                                        ("game:maze:50", None), ("atari:Pong:5", None), ("data/pong.h5", None)])
def test_pretrained_names(spec, name):
    assert pretrained_name(spec) == name


def test_atari_pong_ships_a_model_and_breakout_does_not():
    from wmfast.train.recipes import pretrained_run

    assert pretrained_run(pretrained_name("atari:Pong")).endswith("atari-pong")
    assert pretrained_run(pretrained_name("atari:Breakout")) is None
