"""A tiny Atari dataset trains all three stages end to end (issue 9)."""
import numpy as np
import pytest

pytest.importorskip("ale_py")


def test_tiny_atari_dataset_trains_three_stages(tmp_path):
    import wmfast
    from wmfast.data import ClipSampler, load_dataset
    from wmfast.data.atari import generate_atari_dataset
    from wmfast.train import TrainConfig, train_stage

    data = generate_atari_dataset("Pong", 3, size=32, max_steps=12, seed=0, out=tmp_path / "pong.h5",
                                  progress=False)
    cfg = TrainConfig(steps=2, batch_size=2, warmup_steps=1, preset="tiny", clip_len=3, log_every=1,
                      save_every=10, val_fraction=0.34, progress=False)
    run = tmp_path / "run"
    results = {stage: train_stage(stage, str(run), data, cfg) for stage in ("tokenizer", "actions", "dynamics")}
    assert all(r["step"] == 2 and np.isfinite(r["loss"]) for r in results.values())
    assert 0.0 <= results["actions"]["action_nmi"] <= 1.0  # latent vs true ALE actions
    # The trained model runs on held-out Atari episodes.
    ds = load_dataset(data)
    _, val = ds.split(0.34, seed=0)
    m = wmfast.load(str(run))
    frames, _ = ClipSampler(ds, clip_len=3, frame_size=32, episodes=val).episode_clip(val[0], 0)
    assert m.lam.indices(m.lam.encode(frames)).shape == (1, 2)
