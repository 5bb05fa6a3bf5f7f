"""Training for the three stages (tokenizer -> actions -> dynamics)."""
from wmfast.train.presets import PRESETS  # noqa: F401
from wmfast.train.trainer import TrainConfig, train_stage  # noqa: F401
from wmfast.train.recipes import demo_recipe, pretrained_run  # noqa: F401,E402
