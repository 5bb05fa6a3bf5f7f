"""Data: embedded games, Atari (ALE) episodes, dataset files and readers, clip sampling.

    ds = load_dataset("game:pong")            # or a .h5 file, a video/PNG folder, "atari:Pong"
    train_eps, val_eps = ds.split(0.1)
    frames, actions = ClipSampler(ds, clip_len=8, episodes=train_eps).sample(16)
"""
from wmfast.data.clips import ClipSampler, labelled_frames  # noqa: F401
from wmfast.data.dataset import Dataset, read_h5, write_dataset  # noqa: F401
from wmfast.data.games import DEFAULT_GAME, GAMES, generate_game_dataset, make_game  # noqa: F401
from wmfast.data.load import cache_dir, convert_dataset, dataset_info, load_dataset  # noqa: F401
from wmfast.data.metrics import action_agreement  # noqa: F401
from wmfast.data.atari import generate_atari_dataset  # noqa: F401
