"""Property-based fuzzing (hypothesis) of config loading and of the public shape checks.

The property everywhere: bad input is a WmfastError (one line), never another exception; good
input gives a result of the documented shape. Configs: whatever JSON a config.json holds,
from_dict returns a config whose every field has its annotated type and satisfies its rule, or
refuses it. Ops and models: random shapes, dtypes and non-finite values either run and give the
shape the docstring promises, or are refused."""
import dataclasses
import json
import math
import typing

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from wmfast.config import FIELD_RULES, Range  # noqa: E402
from wmfast.errors import WmfastError  # noqa: E402
from wmfast.models import (DynamicsConfig, DynamicsModel, LatentActionConfig, TokenizerConfig,  # noqa: E402
                           VideoTokenizer)
from wmfast.ops import pair_attention, vq_lookup  # noqa: E402
from wmfast.train import TrainConfig  # noqa: E402

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONFIGS = [TokenizerConfig, DynamicsConfig, LatentActionConfig, TrainConfig]

# JSON values a hand-edited config.json could hold: small ints (often valid), odd numbers, the
# wrong types, nesting.
json_values = st.one_of(
    st.integers(-3, 70), st.integers(-2 ** 40, 2 ** 40), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.none(), st.text(max_size=6), st.sampled_from(["fsq", "vq", "auto", "cpu", "tiny", "32"]),
    st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def field_names(cls):
    return [f.name for f in dataclasses.fields(cls)]


def assert_valid(cfg):
    """Every field has its annotated type and satisfies its rule (the validator's contract)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v, hint = getattr(cfg, f.name), hints[f.name]
        if hint is bool:
            assert isinstance(v, bool), f.name
        elif hint is int:
            assert isinstance(v, int) and not isinstance(v, bool), f.name
        elif hint is float:
            assert isinstance(v, float) and math.isfinite(v), f.name
        elif hint is str:
            assert isinstance(v, str), f.name
        rule = FIELD_RULES.get(f.name)
        if isinstance(rule, Range):
            assert rule.ok(v), (f.name, v)
        elif isinstance(rule, tuple):
            assert v in rule, (f.name, v)
    if hasattr(cfg, "patch_size"):
        assert cfg.frame_size % cfg.patch_size == 0 and cfg.embed_dim % cfg.num_heads == 0


@FAST
@given(cls=st.sampled_from(CONFIGS), data=st.data())
def test_from_dict_accepts_only_valid_configs(cls, data):
    keys = st.sampled_from(field_names(cls) + ["bogus"])
    d = data.draw(st.dictionaries(keys, json_values, max_size=6))
    d = json.loads(json.dumps(d, allow_nan=True))          # what a config.json round trip gives
    try:
        cfg = cls.from_dict(d, source="config.json")
    except WmfastError as e:
        msg = str(e)
        assert msg.startswith("config.json: ") and "\n" not in msg
        return
    assert "bogus" not in d
    assert_valid(cfg)
    again = cls.from_dict(json.loads(json.dumps(cfg.to_dict())))      # saving and loading is stable
    assert again == cfg


@FAST
@given(d=st.one_of(st.lists(st.integers()), st.integers(), st.text(), st.none(), st.booleans()))
def test_a_config_that_is_not_an_object_is_refused(d):
    with pytest.raises(WmfastError, match="must be a JSON object"):
        TokenizerConfig.from_dict(d)


@FAST
@given(field=st.sampled_from(field_names(TokenizerConfig)), value=json_values)
def test_constructor_and_from_dict_agree(field, value):
    """The Python constructor runs the same checks as from_dict."""
    outcomes = []
    for build in (lambda: TokenizerConfig(**{field: value}), lambda: TokenizerConfig.from_dict({field: value})):
        try:
            outcomes.append(build())
        except WmfastError:
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1]


# -- models and ops: shape / dtype / finiteness checks -------------------------------------------

@pytest.fixture(scope="module")
def dyn():
    cfg = DynamicsConfig(frame_size=8, patch_size=4, embed_dim=8, num_heads=2, hidden_dim=16, num_blocks=1,
                         latent_dim=2, num_bins=3, conditioning_dim=2)
    return DynamicsModel(cfg).eval()


DTYPES = [torch.float32, torch.float64, torch.float16, torch.int64, torch.bool]


@FAST
@given(B=st.integers(0, 3), Ba=st.integers(0, 3), T=st.integers(1, 4), Ta=st.integers(0, 5), P=st.sampled_from([4, 3]),
       L=st.sampled_from([2, 3]), A=st.sampled_from([2, 1]), dtype=st.sampled_from(DTYPES),
       poison=st.sampled_from([None, float("nan"), float("inf")]))
def test_dynamics_forward_runs_or_refuses(dyn, B, Ba, T, Ta, P, L, A, dtype, poison):
    lat = torch.zeros(B, T, P, L).to(dtype)
    act = torch.zeros(Ba, Ta, A).to(dtype)
    poisoned = poison is not None and lat.numel() > 0 and lat.is_floating_point()   # an empty batch holds no value
    if poisoned:
        lat.view(-1)[0] = poison
    try:
        out = dyn(lat, act)
    except WmfastError as e:
        assert "\n" not in str(e)
        return
    # Accepted: exactly the documented contract, nothing broadcast or silently NaN.
    assert (B, P, L, A) == (Ba, 4, 2, 2) and Ta in (T - 1, T) and dtype.is_floating_point and not poisoned
    assert out.shape == (B, T, 4, dyn.config.codebook_size) and out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())


def test_float64_inputs_are_promoted_to_the_same_answer(dyn):
    lat, act = torch.randn(2, 3, 4, 2), torch.randn(2, 2, 2)
    torch.testing.assert_close(dyn(lat.double(), act.double()), dyn(lat, act))


@FAST
@given(B=st.integers(0, 2), T=st.integers(0, 3), S=st.sampled_from([8, 6]), C=st.sampled_from([3, 1]),
       dtype=st.sampled_from(DTYPES), scale=st.sampled_from([1.0, 3.0, float("nan")]))
def test_tokenizer_encode_runs_or_refuses(B, T, S, C, dtype, scale):
    tok = VideoTokenizer(TokenizerConfig(frame_size=8, patch_size=4, embed_dim=8, num_heads=2, hidden_dim=16,
                                         num_blocks=1, latent_dim=2, num_bins=3)).eval()
    frames = (torch.rand(B, T, C, S, S) * 2 - 1) * scale
    try:
        idx = tok.encode(frames.to(dtype))
    except WmfastError as e:
        assert "\n" not in str(e)
        return
    assert (S, C) == (8, 3) and (scale == 1.0 or B == 0) and dtype.is_floating_point and T >= 1
    assert idx.shape == (B, T, 4) and idx.dtype == torch.int64 and (idx.numel() == 0 or int(idx.max()) < 9)


@FAST
@given(N=st.integers(0, 5), K=st.integers(0, 4), D=st.integers(0, 3), Dz=st.integers(0, 3),
       zdt=st.sampled_from([torch.float32, torch.float64, torch.int64]),
       cdt=st.sampled_from([torch.float32, torch.float64]), poison=st.booleans())
def test_vq_lookup_runs_or_refuses(N, K, D, Dz, zdt, cdt, poison):
    z, cb = torch.randn(N, Dz).to(zdt), torch.randn(K, D).to(cdt)
    if poison and z.numel() and z.is_floating_point():
        z[0, 0] = float("nan")
    try:
        idx = vq_lookup(z, cb)[0]
    except WmfastError as e:
        assert "\n" not in str(e)
        return
    assert K >= 1 and D >= 1 and Dz == D and zdt == cdt and not (poison and N and D)
    assert idx.shape == (N,)
    if N:   # the chosen code is a nearest one (float64 reference distances)
        dist = torch.cdist(z.double(), cb.double())
        assert torch.allclose(dist.gather(1, idx[:, None])[:, 0], dist.min(-1).values, atol=1e-5)


@FAST
@given(B=st.integers(1, 2), T=st.integers(0, 3), P=st.integers(1, 3), H=st.integers(1, 2), D=st.integers(1, 4),
       other=st.sampled_from(["same", "shape", "dtype", "ndim"]), pool=st.booleans())
def test_pair_attention_runs_or_refuses(B, T, P, H, D, other, pool):
    q = torch.randn(B, T, P, H, D)
    k = {"same": q.clone(), "shape": torch.randn(B, T, P, H, D + 1), "dtype": q.double(), "ndim": q[0]}[other]
    try:
        out = pair_attention(q, k, q, pool=pool)
    except WmfastError as e:
        assert "\n" not in str(e)
        return
    assert other == "same" and T >= 2
    assert out.shape == ((B, T - 1, H, D) if pool else (B, T - 1, 2 * P, H, D))
    assert bool(torch.isfinite(out).all())
