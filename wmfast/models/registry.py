"""Every model kind wmfast saves: kind (the "kind" field of its config.json) -> (model class, config
class). wmfast.checkpoint saves and loads through it."""
from wmfast.models.action_map import FrameActionMap, FrameActionMapConfig
from wmfast.models.dynamics import DynamicsConfig, DynamicsModel
from wmfast.models.lapa import CodeClassifier, CodeClassifierConfig, LapaConfig, LapaModel
from wmfast.models.latent_actions import LatentActionConfig, LatentActionModel
from wmfast.models.policy import POLICIES, PolicyConfig
from wmfast.models.reward import RewardConfig, RewardHead
from wmfast.models.tokenizer import TokenizerConfig, VideoTokenizer

# The world model's stages, in training order (one folder each in a run directory)
STAGES = {
    "tokenizer": (VideoTokenizer, TokenizerConfig),
    "actions": (LatentActionModel, LatentActionConfig),
    "dynamics": (DynamicsModel, DynamicsConfig),
}
# + LAPA and its code -> game action classifier, the reward / episode-end head, the frame-conditioned
# action map, and one kind per policy architecture (a policy config's own "kind" field names it)
KINDS = {**STAGES, "lapa": (LapaModel, LapaConfig), "lapa_classifier": (CodeClassifier, CodeClassifierConfig),
         "reward": (RewardHead, RewardConfig),
         "frame_action_map": (FrameActionMap, FrameActionMapConfig),
         **{k: (cls, PolicyConfig) for k, cls in POLICIES.items()}}


def kind_of(model) -> str:
    """The registry kind of a model instance (None when it is not a registered model)."""
    for name, (cls, _) in KINDS.items():
        if isinstance(model, cls):
            return name
    return None
