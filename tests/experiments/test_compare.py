"""experiments/compare.py: every variant trained per seed and scored by THE evaluator, mean ± std table."""
import dataclasses
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))   # the clone
import experiments.compare  # noqa: E402  (not installed: experiments live beside the package)
from experiments.compare import VARIANTS, available_variants, main, summarize  # noqa: E402
from wmfast.errors import WmfastError  # noqa: E402
from wmfast.models.latent_actions import LatentActionConfig  # noqa: E402

DATA = "game:maze:3"
HAS_CONV = "architecture" in {f.name for f in dataclasses.fields(LatentActionConfig)}


def test_summary_is_mean_and_population_std_over_seeds():
    runs = {"legacy": {0: {"lam_train": {"loss": 1.0}, "dynamics_train": {}, "eval": {"action_nmi": 0.2}},
                       1: {"lam_train": {"loss": 3.0}, "dynamics_train": {}, "eval": {"action_nmi": 0.6}}}}
    s = summarize(runs)["legacy"]
    assert s["lam_loss"]["mean"] == 2.0 and s["lam_loss"]["std"] == 1.0
    assert s["action_nmi"]["mean"] == pytest.approx(0.4) and s["action_nmi"]["std"] == pytest.approx(0.2)
    assert np.isnan(s["controllability_gap"]["mean"])                   # missing everywhere: n/a, not 0


def test_unknown_variant_is_a_one_line_error():
    with pytest.raises(WmfastError, match="unknown variant"):
        available_variants(["legacy", "bogus"])
    assert set(VARIANTS) == {"legacy", "windowed", "conv"}


def test_compare_lam_cli_passes_seeds_and_variants(monkeypatch, capsys):
    seen = {}

    def fake(data, steps, out, **kw):
        seen.update(data=data, steps=steps, out=out, **kw)
        return {"markdown": f"{out}/report.md", "variants": kw["variants"]}

    monkeypatch.setattr(experiments.compare, "compare_lam", fake)
    assert main(["lam", "--data", "game:pong", "--steps", "7", "--seeds", "0,1,2", "--variants",
                 "legacy,conv", "--out", "x"]) == 0
    assert seen["seeds"] == [0, 1, 2] and seen["variants"] == ["legacy", "conv"] and seen["steps"] == 7
    assert main(["lam", "--seeds", "0,a"]) == 2
    assert "argument --seeds: must be comma-separated integers >= 0" in capsys.readouterr().err


def test_compare_lam_two_seeds(tmp_path, tiny_game_cache):
    from experiments.compare import compare_lam

    names = ["legacy", "conv"] if HAS_CONV else ["legacy", "windowed"]
    out = tmp_path / "cmp"
    report = compare_lam(DATA, steps=2, out=str(out), batch_size=2, seeds=[0, 1], variants=names, eval_clips=2,
                         horizon=2, maskgit_steps=2, progress=False, map_steps=10)
    report = json.loads((out / "report.json").read_text())
    assert report["variants"] == names and report["seeds"] == [0, 1]
    for name in names:
        for seed in ("0", "1"):
            ev = report["runs"][name][seed]["eval"]
            assert 0.0 <= ev["action_nmi"] <= 1.0 and len(ev["psnr_autoregressive_per_step"]) == 2
            assert (out / f"seed{seed}" / name / "action_map.json").is_file()
            assert (out / f"seed{seed}" / name / "eval" / "controls.png").is_file()
        cell = report["summary"][name]["action_nmi"]
        assert cell["mean"] == pytest.approx(np.mean(cell["values"]))
    # the variants of one seed share the tokenizer (only the LAM differs)
    a = (out / "seed0" / names[0] / "tokenizer" / "model.safetensors").read_bytes()
    assert a == (out / "seed0" / names[1] / "tokenizer" / "model.safetensors").read_bytes()
    md = (out / "report.md").read_text()
    assert "action NMI, changed transitions" in md and " ± " in md
    for png in ("curves.png", "heldout.png"):
        assert (out / png).stat().st_size > 0


def test_compare_dynamics_trains_each_variant_on_the_same_run_and_leaves_it_unchanged(tmp_path, tiny_game_cache):
    import hashlib

    from experiments.compare import DYNAMICS_VARIANTS, compare_dynamics
    from wmfast.train import TrainConfig, train_stage

    run = tmp_path / "run"
    train = TrainConfig(steps=2, batch_size=2, preset="tiny", progress=False)
    for stage in ("tokenizer", "actions"):
        train_stage(stage, str(run), DATA, train=train)
    digest = lambda: hashlib.sha256((run / "actions" / "model.safetensors").read_bytes()).hexdigest()  # noqa: E731
    before = digest()
    report = compare_dynamics(str(run), DATA, steps=2, out=str(tmp_path / "cmp"), preset="tiny", batch_size=2,
                              variants=["film", "recipe"], eval_clips=2, horizon=2, progress=False)
    assert digest() == before and not (run / "dynamics").exists()
    assert [r["variant"] for r in report["rows"]] == ["film", "recipe"]
    for row in report["rows"]:
        margin = np.array(row["margin_per_step"])
        assert len(margin) == 2 and row["min_margin_over_copy"] == pytest.approx(margin.min(), abs=0.01)
        saved = json.loads((tmp_path / "cmp" / "seed0" / row["variant"] / "dynamics" / "config.json").read_text())
        for key, value in DYNAMICS_VARIANTS[row["variant"]].items():
            assert saved[key] == value
    assert "| recipe | 0 |" in (tmp_path / "cmp" / "report.md").read_text()
    with pytest.raises(WmfastError, match="unknown variant"):
        compare_dynamics(str(run), DATA, variants=["bogus"], out=str(tmp_path / "x"))
    with pytest.raises(WmfastError, match="no trained tokenizer"):
        compare_dynamics(str(tmp_path / "empty"), DATA, out=str(tmp_path / "y"))


def test_compare_dynamics_cli_defaults_to_variants_that_exist(monkeypatch):
    from experiments.compare import DYNAMICS_VARIANTS

    seen = {}
    monkeypatch.setattr(experiments.compare, "compare_dynamics",
                        lambda run, data, steps, out, **kw: seen.update(kw) or {"markdown": f"{out}/report.md"})
    assert main(["dynamics", "--run", "r"]) == 0
    assert seen["variants"] == ["film", "recipe", "action-bias"]
    assert set(seen["variants"]) <= set(DYNAMICS_VARIANTS)      # none of the removed ones (no warning by default)
