"""wmfast.nn.VectorQuantizer: straight-through gradients, named losses, EMA, entropy term,
dead-code reset, metrics, and the tokenizer / latent action model with quantizer="vq"."""
import math

import pytest
import torch
import torch.nn.functional as F

from wmfast.checkpoint import load_model, save_model
from wmfast.errors import WmfastError
from wmfast.models.latent_actions import LatentActionConfig, LatentActionModel
from wmfast.models.tokenizer import TokenizerConfig, VideoTokenizer
from wmfast.nn import VectorQuantizer, plot_code_usage
from wmfast.nn.quantizers import make_quantizer


def nearest(z, codebook):
    """float64 brute force: z [N, D] -> indices [N]."""
    return torch.cdist(z.double(), codebook.double()).argmin(1)


def test_forward_is_straight_through_with_named_losses():
    vq = VectorQuantizer(16, 4, beta=0.25)
    z = torch.randn(3, 10, 4, requires_grad=True)
    q, loss = vq(z)
    idx = nearest(z.detach().reshape(-1, 4), vq.codebook.detach())
    code = vq.codebook.detach()[idx].reshape(3, 10, 4)
    torch.testing.assert_close(q.detach(), code, rtol=0, atol=1e-6)   # value of the code
    mse = F.mse_loss(z.detach(), code)
    torch.testing.assert_close(vq.last_losses["commitment"], 0.25 * mse)
    torch.testing.assert_close(vq.last_losses["codebook"], mse)
    torch.testing.assert_close(loss.detach(), 1.25 * mse)

    # Gradient of q w.r.t. z is the identity; the losses add their own terms.
    upstream = torch.randn_like(q)
    gz, gc = torch.autograd.grad((q * upstream).sum() + loss, (z, vq.codebook))
    n = z.numel()
    torch.testing.assert_close(gz, upstream + 0.25 * 2 * (z.detach() - code) / n)
    # Only the codebook loss reaches the codebook, row by row through the chosen indices.
    want = torch.zeros_like(vq.codebook).index_add_(0, idx, (2 * (code - z.detach()) / n).reshape(-1, 4))
    torch.testing.assert_close(gc, want)


def test_quantize_indices_latents_round_trip():
    vq = make_quantizer("vq", dim=6, codebook_size=32)
    assert isinstance(vq, VectorQuantizer) and vq.codebook_size == 32
    z = torch.randn(2, 7, 6)
    q = vq.quantize(z)
    idx = vq.indices(q)
    assert idx.shape == (2, 7) and idx.dtype == torch.long
    assert torch.equal(idx, nearest(z.reshape(-1, 6), vq.codebook.detach()).reshape(2, 7))
    torch.testing.assert_close(vq.latents(idx), q, rtol=0, atol=1e-6)


def test_bad_options_raise():
    with pytest.raises(WmfastError, match="codebook_size"):
        make_quantizer("vq", dim=4, codebook_size=0)
    with pytest.raises(WmfastError, match="decay"):
        VectorQuantizer(8, 4, ema=True, decay=1.5)


def test_ema_update_moves_codes_to_their_mean_and_lives_in_state_dict():
    vq = VectorQuantizer(4, 2, ema=True, decay=0.5, eps=0.0)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [10.0, -10.0]]))
        vq.ema_sum.copy_(vq.codebook)
    assert set(vq.state_dict()) == {"codebook", "ema_count", "ema_sum"}
    assert not any(p.requires_grad for p in vq.parameters())
    z = torch.tensor([[1.0, 1.0], [3.0, 1.0], [9.0, 11.0]])         # two rows near code 0, one near code 1
    _, loss = vq(z)
    assert set(vq.last_losses) == {"commitment"}                     # no codebook loss with EMA
    count = torch.tensor([0.5 + 0.5 * 2, 0.5 + 0.5 * 1, 0.5, 0.5])
    torch.testing.assert_close(vq.ema_count, count)
    sums = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]]) + 0.5 * torch.tensor(
        [[4.0, 2.0], [9.0, 11.0], [0.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(vq.ema_sum, sums)
    torch.testing.assert_close(vq.codebook, sums / count[:, None])   # eps = 0: no smoothing
    assert vq.codebook[0, 0] > 0.5                                    # moved towards the mean (2, 1)


def test_dead_codes_are_reset_from_recent_encoder_outputs():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 3, dead_code_every=2, recent_size=64)
    with torch.no_grad():
        vq.codebook[4:] = 1000.0                                      # codes 4..7 can never win
    before = vq.codebook.detach().clone()
    z = torch.randn(2, 20, 3)
    vq(z)
    assert torch.equal(vq.codebook.detach(), before)                  # not yet: every 2 steps
    vq(z)
    after = vq.codebook.detach()
    used = torch.unique(nearest(z.reshape(-1, 3), before))
    for k in range(8):
        if k in used:
            assert torch.equal(after[k], before[k])
        else:                                                         # replaced by one of the recent z rows
            assert (after[k] - z.reshape(-1, 3)).abs().sum(-1).min() < 1e-6
    assert (after[4:] < 100).all()
    assert vq.recent_counts.sum() == 0                                # the window restarts


def test_dead_code_reset_restarts_ema_statistics():
    vq = VectorQuantizer(4, 2, ema=True, dead_code_every=1)
    with torch.no_grad():
        vq.codebook[1:] = 500.0
        vq.ema_sum[1:] = 500.0
    z = torch.randn(10, 2)
    vq(z)
    for k in (1, 2, 3):
        assert vq.ema_count[k] == 1.0
        torch.testing.assert_close(vq.ema_sum[k], vq.codebook[k])


def test_entropy_term_prefers_spread_usage_and_trains_the_codebook():
    vq = VectorQuantizer(4, 2, entropy_weight=1.0, entropy_temperature=0.1)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
    spread = vq.codebook.detach().repeat(8, 1)                        # every code used equally
    collapsed = vq.codebook.detach()[:1].repeat(32, 1)                # one code only
    assert vq.entropy_loss(spread) < vq.entropy_loss(collapsed) - 1.0
    torch.testing.assert_close(vq.entropy_loss(spread), torch.tensor(-math.log(4)), rtol=0, atol=1e-3)
    _, loss = vq(torch.randn(16, 2))
    assert "entropy" in vq.last_losses
    loss.backward()
    assert vq.codebook.grad is not None and torch.isfinite(vq.codebook.grad).all()


def test_usage_metrics_and_histogram_png(tmp_path):
    vq = VectorQuantizer(4, 2)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
    vq(vq.codebook.detach()[[0, 0, 1, 1]])                            # codes 0 and 1, twice each
    usage = vq.code_usage()
    assert torch.equal(usage["counts"], torch.tensor([2.0, 2.0, 0.0, 0.0]))
    assert usage["usage_pct"] == 50.0
    assert usage["perplexity"] == pytest.approx(2.0)
    vq.eval()
    vq(torch.randn(5, 2))                                             # eval does not count
    assert vq.code_usage()["counts"].sum() == 4
    path = plot_code_usage(usage["counts"], tmp_path / "usage.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    vq.reset_usage()
    assert vq.code_usage()["usage_pct"] == 0.0


TINY = dict(frame_size=16, patch_size=4, embed_dim=32, num_heads=2, hidden_dim=64, num_blocks=1)


@pytest.mark.parametrize("make", [
    lambda: VideoTokenizer(TokenizerConfig(**TINY, latent_dim=6, quantizer="vq", codebook_size=64)),
    lambda: LatentActionModel(LatentActionConfig(**TINY, quantizer="vq", n_actions=6, action_dim=4)),
], ids=["tokenizer", "latent_actions"])
def test_models_with_vq_train_and_round_trip_through_checkpoints(make, tmp_path):
    model = make()
    frames = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    _, loss, _ = model(frames)
    loss.backward()
    assert model.quantizer.codebook.grad is not None and model.quantizer.codebook.grad.abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.config.quantizer == "vq"
    assert torch.equal(loaded.quantizer.codebook, model.quantizer.codebook)
    model.eval()
    if isinstance(model, VideoTokenizer):
        assert torch.equal(loaded.encode(frames), model.encode(frames))
    else:
        assert torch.equal(loaded.indices(loaded.encode(frames)), model.indices(model.encode(frames)))
