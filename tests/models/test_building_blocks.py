"""Positional encodings, FSQ, patchify and model shapes against hand-computed cases."""
import math

import pytest
import torch

from wmfast.errors import WmfastError
from wmfast.models import DynamicsConfig, DynamicsModel, LatentActionConfig, LatentActionModel, \
    TokenizerConfig, VideoTokenizer
from wmfast.models.dynamics import unmask_targets
from wmfast.nn import FSQ, patchify, sincos_1d, spatial_pe, split_dims, temporal_pe, unpatchify


def test_sincos_is_interleaved():
    pe = sincos_1d(5, 4)
    for i in range(5):
        for j in range(2):
            angle = i / 10000 ** (2 * j / 4)
            assert pe[i, 2 * j].item() == pytest.approx(math.sin(angle), abs=1e-7)
            assert pe[i, 2 * j + 1].item() == pytest.approx(math.cos(angle), abs=1e-7)


@pytest.mark.parametrize("embed,expected", [(24, (8, 8, 8)), (128, (42, 44, 42)), (64, (22, 22, 20)), (10, (4, 4, 2))])
def test_width_split(embed, expected):
    # t = (E // 3) rounded down to even; x = ((E - t) // 2) rounded down to even; y = the rest
    assert split_dims(embed) == expected


def test_spatial_and_temporal_pe_layout():
    E, hp, wp = 24, 2, 3
    x_dim, y_dim, t_dim = split_dims(E)
    pe = spatial_pe(hp, wp, E)[0]                                   # [P, E]
    assert pe.shape == (hp * wp, E)
    p = 1 * wp + 2                                                  # row 1, column 2
    torch.testing.assert_close(pe[p, :x_dim], sincos_1d(wp, x_dim)[2])
    torch.testing.assert_close(pe[p, x_dim:x_dim + y_dim], sincos_1d(hp, y_dim)[1])
    assert torch.all(pe[:, x_dim + y_dim:] == 0)
    tpe = temporal_pe(4, E)
    assert torch.all(tpe[:, :E - t_dim] == 0)
    torch.testing.assert_close(tpe[3, E - t_dim:], sincos_1d(4, t_dim)[3])


def test_fsq_values_and_indices():
    fsq = FSQ(dim=2, levels=4)
    z = torch.tensor([[-10.0, 10.0], [0.0, 0.2]])
    q = fsq.quantize(z)
    # tanh(+-10) -> +-1 -> levels 0 / 3; tanh(0)=0 -> 1.5 -> round half to even = 2 -> 1/3; tanh(.2) -> 1.79 -> 2
    torch.testing.assert_close(q, torch.tensor([[-1.0, 1.0], [1 / 3, 1 / 3]]))
    idx = fsq.indices(q)
    assert idx.tolist() == [0 + 3 * 4, 2 + 2 * 4]                   # dimension 0 least significant
    torch.testing.assert_close(fsq.latents(idx), q)
    all_idx = torch.arange(fsq.codebook_size)
    assert torch.equal(fsq.indices(fsq.latents(all_idx)), all_idx)


def test_fsq_straight_through_gradient():
    fsq = FSQ(3, 5)
    z = torch.randn(7, 3, requires_grad=True)
    fsq.quantize(z).sum().backward()
    expected = (1 - torch.tanh(z.detach()) ** 2) * 0.5 * 4 * 2 / 4    # d/dz of the unrounded map
    torch.testing.assert_close(z.grad, expected)


def test_patchify_channel_major_order_and_inverse():
    B, T, C, H, W, S = 1, 1, 3, 4, 6, 2
    x = torch.arange(B * T * C * H * W, dtype=torch.float32).reshape(B, T, C, H, W)
    p = patchify(x, S)                                              # [1, 1, 6, 12]
    assert p.shape == (1, 1, (H // S) * (W // S), C * S * S)
    # patch 4 = row 1, column 1 of the 2x3 grid; entry c*S*S + r*S + col
    for c in range(C):
        for r in range(S):
            for col in range(S):
                assert p[0, 0, 4, c * S * S + r * S + col] == x[0, 0, c, 1 * S + r, 1 * S + col]
    x_sq = torch.randn(2, 3, 3, 8, 8)
    assert torch.equal(unpatchify(patchify(x_sq, 4), 4, 8, 8), x_sq)


@pytest.mark.parametrize("frame,patch", [(32, 8), (16, 4)])
def test_model_shapes(frame, patch):
    B, T, P = 2, 3, (frame // patch) ** 2
    tok = VideoTokenizer(TokenizerConfig(frame_size=frame, patch_size=patch, embed_dim=16, num_heads=2,
                                         hidden_dim=32, num_blocks=1, latent_dim=3, num_bins=3)).eval()
    lam = LatentActionModel(LatentActionConfig(frame_size=frame, patch_size=patch, embed_dim=16, num_heads=2,
                                               hidden_dim=32, num_blocks=1, n_actions=4)).eval()
    dyn = DynamicsModel(DynamicsConfig(frame_size=frame, patch_size=patch, embed_dim=16, num_heads=2,
                                       hidden_dim=32, num_blocks=1, latent_dim=3, num_bins=3,
                                       conditioning_dim=2)).eval()
    frames = torch.rand(B, T, 3, frame, frame) * 2 - 1
    idx = tok.encode(frames)
    assert idx.shape == (B, T, P) and idx.dtype == torch.int64 and int(idx.max()) < 27
    lat = tok.latents(idx)
    assert lat.shape == (B, T, P, 3)
    assert tok.decode(lat).shape == (B, T, 3, frame, frame)
    act = lam.encode(frames)
    assert act.shape == (B, T - 1, 2)
    aidx = lam.indices(act)
    assert aidx.shape == (B, T - 1) and torch.equal(lam.latents(aidx), act)
    assert lam.decode(frames, act).shape == (B, T - 1, 3, frame, frame)
    assert dyn(lat, act).shape == (B, T, P, 27)
    out = dyn.generate(lat[:, :2], act, horizon=1, steps=4)
    assert out.shape == (B, T, P, 3)
    assert torch.equal(out[:, :2], lat[:, :2])
    assert torch.equal(tok.quantizer.latents(tok.quantizer.indices(out[:, 2])), out[:, 2])   # valid codes


def test_unmask_schedule():
    # ceil(N * expm1(k m / M) / expm1(k)), last step everything
    N, M, k = 64, 8, 5.0
    want = [math.ceil(N * math.expm1(k * m / M) / math.expm1(k)) for m in range(M - 1)] + [N]
    assert unmask_targets(N, M, k) == want


def test_generate_multi_frame_horizon_fills_everything():
    dyn = DynamicsModel(DynamicsConfig(frame_size=16, patch_size=4, embed_dim=16, num_heads=2, hidden_dim=32,
                                       num_blocks=1, latent_dim=2, num_bins=4, conditioning_dim=2)).eval()
    lat = dyn.fsq.latents(torch.randint(0, 16, (2, 2, 16)))
    act = torch.randn(2, 3, 2)
    out = dyn.generate(lat, act, horizon=2, steps=3)
    assert out.shape == (2, 4, 16, 2)
    assert not torch.isclose(out[:, 2:], dyn.mask_token.expand(2, 2, 16, 2)).all(-1).any()


def test_bad_inputs_name_the_problem():
    tok = VideoTokenizer(TokenizerConfig(frame_size=16, patch_size=4, embed_dim=16, num_heads=2, hidden_dim=32,
                                         num_blocks=1, latent_dim=2, num_bins=4))
    with pytest.raises(WmfastError, match="5 dims"):
        tok.encode(torch.zeros(2, 3, 16, 16))
    with pytest.raises(WmfastError, match="16, 16"):
        tok.encode(torch.zeros(1, 2, 3, 32, 32))
    with pytest.raises(WmfastError, match="dtype"):
        tok.encode(torch.zeros(1, 2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(WmfastError, match=r"\[-1, 1\]"):
        tok.encode(torch.full((1, 2, 3, 16, 16), 3.0))
    bad = torch.zeros(1, 2, 3, 16, 16)
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(WmfastError, match="NaN"):
        tok.encode(bad)
    with pytest.raises(WmfastError, match="token indices"):
        tok.latents(torch.full((1, 1, 16), 99))
    with pytest.raises(WmfastError, match="power of 2"):
        LatentActionConfig(n_actions=6)
    with pytest.raises(WmfastError, match="divisible"):
        VideoTokenizer(TokenizerConfig(embed_dim=10, num_heads=4))
