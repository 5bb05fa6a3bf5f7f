"""The models reproduce tinyworlds' outputs on the shared parity fixture (weights loaded
directly from its state dicts; the importer has its own tests)."""
from pathlib import Path

import pytest
import torch

from wmfast.models import DynamicsConfig, DynamicsModel, LatentActionConfig, LatentActionModel, \
    TokenizerConfig, VideoTokenizer, WorldModel

FIXTURE = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "tinyworlds-small"
pytestmark = pytest.mark.skipif(not (FIXTURE / "expected.pt").exists(), reason="shared fixture not found")


@pytest.fixture(scope="module")
def fixture():
    exp = torch.load(FIXTURE / "expected.pt", weights_only=True)
    c, st = exp["config"], exp["stage"]
    common = dict(frame_size=c["frame_size"], patch_size=c["patch_size"])
    tok = VideoTokenizer(TokenizerConfig(**common, latent_dim=c["latent_dim"], num_bins=c["num_bins"],
                                         **st["video_tokenizer"]))
    lam = LatentActionModel(LatentActionConfig(**common, n_actions=c["n_actions"], **st["latent_actions"]))
    dyn = DynamicsModel(DynamicsConfig(**common, latent_dim=c["latent_dim"], num_bins=c["num_bins"],
                                       conditioning_dim=lam.config.action_dim, **st["dynamics"]))
    for model, stage in ((tok, "video_tokenizer"), (lam, "latent_actions"), (dyn, "dynamics")):
        sd = torch.load(FIXTURE / exp["checkpoints"][stage] / "model_state_dict.pt", weights_only=True)
        model.load_state_dict(sd, strict=True)
        model.eval()
    return WorldModel(tok, lam, dyn), exp


def test_tokenizer_matches(fixture):
    m, e = fixture
    idx = m.tokenizer.encode(e["frames"])
    assert torch.equal(idx, e["token_indices"])
    lat = m.tokenizer.latents(idx)
    torch.testing.assert_close(lat, e["token_latents"], atol=1e-5, rtol=0)
    torch.testing.assert_close(m.tokenizer.decode(lat), e["decoded"], atol=1e-5, rtol=0)
    with torch.no_grad():
        recon, loss, _ = m.tokenizer(e["frames"])
    torch.testing.assert_close(recon, e["vt_recon"], atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, e["vt_loss"], atol=1e-6, rtol=0)


def test_latent_actions_match(fixture):
    m, e = fixture
    with torch.no_grad():
        torch.testing.assert_close(m.lam.encoder(e["frames"]), e["action_pre_quant"], atol=1e-5, rtol=0)
    act = m.lam.encode(e["frames"])
    torch.testing.assert_close(act, e["action_latents"], atol=1e-5, rtol=0)
    assert torch.equal(m.lam.indices(act), e["action_indices"])
    assert torch.equal(m.lam.latents(e["action_indices"]), act)
    torch.testing.assert_close(m.lam.decode(e["frames"], act), e["lam_pred"], atol=1e-5, rtol=0)


def test_dynamics_matches(fixture):
    m, e = fixture
    with torch.no_grad():
        logits = m.dynamics(e["token_latents"], e["action_latents"])
    torch.testing.assert_close(logits, e["dynamics_logits"], atol=1e-5, rtol=0)
    out = m.dynamics.generate(e["token_latents"][:, :3], e["action_latents"], horizon=1, steps=8,
                              temperature=0.0, schedule_k=5.0)
    assert torch.equal(out, e["rollout_latents"])
