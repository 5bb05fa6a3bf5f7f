"""LAPA-style latent actions on Atari frames (model: wmfast.models.lapa).

    from wmfast.lapa import train_lapa, evaluate_lapa, extract_codes, train_classifier, load_lapa
    train_lapa("runs/breakout", "breakout.h5", config="lapa-breakout-small")   # -> runs/breakout/lapa/
    evaluate_lapa("runs/breakout", split="test")
    extract_codes("runs/breakout", "breakout.h5", "codes.h5")
    m = wmfast.load("runs/breakout"); m.lapa.encode(frame_t, frame_t1)
"""
from wmfast.lapa.data import PairData, split_episodes  # noqa: F401
from wmfast.checkpoint import load_lapa  # noqa: F401
from wmfast.lapa.train import LapaTrainConfig, train_lapa  # noqa: F401
from wmfast.lapa.evaluate import evaluate_lapa  # noqa: F401
from wmfast.lapa.extract import extract_codes  # noqa: F401
from wmfast.lapa.classifier import train_classifier  # noqa: F401
