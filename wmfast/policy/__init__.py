"""Image -> action policies (issue 14): training, evaluation and acting inside a world model.
The networks (BC, action chunking with an MLP head, and ACT) are in wmfast.models.policy; they save
and load like every model (wmfast.checkpoint).

    from wmfast.policy import PolicyConfig, build_policy, load_policy
    model = build_policy(PolicyConfig(kind="act"))          # 69,282 parameters
    chunk = model(to_input(frames_uint8))                    # [B, 8, 2] velocities (or class logits)

Training with expert + DAgger data: wmfast.policy.train; evaluation with receding horizons:
wmfast.policy.evaluate; running a policy inside a world model: wmfast.policy.dream.
"""
from wmfast.checkpoint import load_policy  # noqa: F401
from wmfast.models.policy import POLICY_KINDS, ConvTokens, PolicyConfig, build_policy, count_params, to_input  # noqa: F401
