"""Importing the tinyworlds parity fixture reproduces what tinyworlds computed from it.

Expected outputs come from the public tinyworlds code (shared/fixtures/tinyworlds-small/README.md):
indices and the temperature-0 rollout must be identical, float outputs within 1e-5."""
from pathlib import Path

import pytest
import torch

import wmfast
from wmfast.cli import main
from wmfast.compat.tinyworlds import import_tinyworlds, load_tinyworlds, select_checkpoints

FIXTURE = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "tinyworlds-small"
RUN = FIXTURE / "results" / "fixture"
ATOL = 1e-5

pytestmark = pytest.mark.skipif(not (FIXTURE / "expected.pt").exists(), reason="tinyworlds fixture not present")



@pytest.fixture(scope="module")
def expected():
    return torch.load(FIXTURE / "expected.pt", weights_only=True)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The fixture run imported to disk, then loaded back as a wmfast run."""
    out = tmp_path_factory.mktemp("imported") / "run"
    report = import_tinyworlds(RUN, out, progress=False)
    assert [c.step for c in report.checkpoints.values()] == [1000, 1000, 1000]
    return wmfast.load(out)


def assert_parity(m, e):
    frames = e["frames"]
    idx = m.tokenizer.encode(frames)
    assert torch.equal(idx, e["token_indices"])
    lat = m.tokenizer.latents(idx)
    torch.testing.assert_close(lat, e["token_latents"], atol=ATOL, rtol=0)
    torch.testing.assert_close(m.tokenizer.decode(lat), e["decoded"], atol=ATOL, rtol=0)
    with torch.no_grad():
        recon, loss, _ = m.tokenizer(frames)
    torch.testing.assert_close(recon, e["vt_recon"], atol=ATOL, rtol=0)
    torch.testing.assert_close(loss, e["vt_loss"], atol=ATOL, rtol=0)

    act = m.lam.encode(frames)
    torch.testing.assert_close(m.lam.encoder(frames).detach(), e["action_pre_quant"], atol=ATOL, rtol=0)
    torch.testing.assert_close(act, e["action_latents"], atol=ATOL, rtol=0)
    assert torch.equal(m.lam.indices(act), e["action_indices"])
    torch.testing.assert_close(m.lam.latents(e["action_indices"]), e["action_latents"], atol=0, rtol=0)
    torch.testing.assert_close(m.lam.decode(frames, act), e["lam_pred"], atol=ATOL, rtol=0)

    with torch.no_grad():
        logits = m.dynamics(e["token_latents"], e["action_latents"])
    torch.testing.assert_close(logits, e["dynamics_logits"], atol=ATOL, rtol=0)
    rollout = m.dynamics.generate(e["token_latents"][:, :3], e["action_latents"], horizon=1, steps=8,
                                  temperature=0.0, schedule_k=5.0)
    assert torch.equal(rollout, e["rollout_latents"])


def test_imported_run_matches_tinyworlds(imported, expected):
    assert_parity(imported, expected)


def test_imported_configs_follow_each_stage(imported, expected):
    # The fixture's stages differ in depth: each stage's own state.pt config must be used.
    cfg = expected["config"]
    for model, stage in ((imported.tokenizer, "video_tokenizer"), (imported.lam, "latent_actions"),
                         (imported.dynamics, "dynamics")):
        for key, value in {**expected["stage"][stage], "frame_size": cfg["frame_size"],
                           "patch_size": cfg["patch_size"]}.items():
            assert getattr(model.config, key) == value, (stage, key)
    assert imported.dynamics.config.context_length == cfg["context_length"]
    assert imported.dynamics.config.conditioning_dim == 3


def test_wmfast_load_reads_the_tinyworlds_run_directly(expected):
    assert_parity(wmfast.load(RUN), expected)


@pytest.mark.parametrize("where", [RUN.parent, FIXTURE])
def test_parent_folders_resolve_to_the_run(where):
    assert select_checkpoints(where) == select_checkpoints(RUN)


def test_one_checkpoint_folder_loads_one_stage(expected):
    m = load_tinyworlds(FIXTURE / expected["checkpoints"]["video_tokenizer"])
    assert m.lam is None and m.dynamics is None
    assert torch.equal(m.tokenizer.encode(expected["frames"]), expected["token_indices"])


def test_cli_import(tmp_path, expected, capsys):
    out = tmp_path / "run"
    assert main(["import", "tinyworlds", str(RUN), "--out", str(out), "--stages", "tokenizer,actions"]) == 0
    assert "video_tokenizer_step_1000" in capsys.readouterr().out
    m = wmfast.load(out)
    assert m.dynamics is None
    assert torch.equal(m.lam.indices(m.lam.encode(expected["frames"])), expected["action_indices"])
    # A second import into the same folder must not silently replace it.
    assert main(["import", "tinyworlds", str(RUN), "--out", str(out), "--stages", "tokenizer"]) == 2
    assert "--overwrite" in capsys.readouterr().err
