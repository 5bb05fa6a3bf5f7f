"""Image -> action policies (issue 14): BC, action chunking with an MLP head, and ACT.

    from wmfast.policy import PolicyConfig, build_policy, load_policy
    model = build_policy(PolicyConfig(kind="act"))          # 69,282 parameters
    chunk = model(to_input(frames_uint8))                    # [B, 8, 2] velocities (or class logits)

Training with expert + DAgger data: wmfast.policy.train; evaluation with receding horizons:
wmfast.policy.evaluate; running a policy inside a world model: wmfast.policy.dream.
"""
from wmfast.policy.cnn import KINDS, ConvTokens, PolicyConfig, to_input  # noqa: F401
from wmfast.policy.io import build_policy, count_params, load_policy, save_policy  # noqa: F401
