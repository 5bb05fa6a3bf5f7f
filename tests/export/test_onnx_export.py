"""ONNX export, the onnxruntime backend and parity against eager PyTorch (CPU EP).

Exports are slow (torch.export with symbolic shapes), so the configs are tiny (one block, 8 px
frames) and one exported run is shared by the tests of this module."""
import dataclasses
import json
import os
import shutil

import onnx
import pytest
import torch

import wmfast
from wmfast.checkpoint import save_model
from wmfast.cli import main as cli_main
from wmfast.errors import WmfastError
from wmfast.export import OnnxBackend, check_parity, export_run
from wmfast.export.manifest import sha256_file
from wmfast.export.parity import eager_graphs, parity_inputs, run_eager
from wmfast.nn.kv_cache import KVCache
from wmfast.models import (DynamicsConfig, DynamicsModel, LatentActionConfig, LatentActionModel, TokenizerConfig,
                           VideoTokenizer)
from wmfast.rollout import World, reference_rollout

TINY = dict(frame_size=8, patch_size=4, embed_dim=16, num_heads=2, hidden_dim=32, num_blocks=1)


def save_tiny_run(run, tokenizer=None, actions=None, dynamics=True, seed=0):
    """A random-init run; tokenizer / actions: config overrides, or False to leave the stage out."""
    torch.manual_seed(seed)
    if tokenizer is not False:
        save_model(VideoTokenizer(TokenizerConfig(latent_dim=3, num_bins=4, **TINY, **(tokenizer or {}))),
                   os.path.join(run, "tokenizer"))
    if actions is not False:
        save_model(LatentActionModel(LatentActionConfig(n_actions=4, **TINY, **(actions or {}))),
                   os.path.join(run, "actions"))
    if dynamics:
        save_model(DynamicsModel(DynamicsConfig(latent_dim=3, num_bins=4, conditioning_dim=2, context_length=3, **TINY)),
                   os.path.join(run, "dynamics"))
    return str(run)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = save_tiny_run(tmp_path_factory.mktemp("onnx-run") / "run")
    manifest = export_run(run, check=False, progress=False)
    manifest["parity"] = check_parity(run, progress=False, reps=0)
    return run, os.path.join(run, "onnx"), manifest


@pytest.fixture(scope="module")
def backend(exported):
    run, onnx_dir, _ = exported
    return OnnxBackend(onnx_dir, run_dir=run)


def test_export_writes_checked_graphs_with_dynamic_dims(exported):
    run, onnx_dir, manifest = exported
    assert set(manifest["graphs"]) == {"tokenizer_encoder", "tokenizer_decoder", "token_latents", "action_encoder",
                                       "action_latents", "dynamics", "dynamics_prefill", "maskgit_step",
                                       "maskgit_step_sampled", "dynamics_commit", "decoder_prefill", "decoder_extend"}
    assert manifest["opset"] == 20 and manifest["dtype"] == "fp32" and manifest["batch"] == "dynamic"
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime", "onnxscript", "wmfast"}
    on_disk = json.load(open(os.path.join(onnx_dir, "manifest.json")))
    assert on_disk["run"]["dynamics"]["config"]["context_length"] == 3
    for name, g in manifest["graphs"].items():
        path = os.path.join(onnx_dir, g["file"])
        assert sha256_file(path) == g["sha256"]
        onnx.checker.check_model(path, full_check=True)
        proto = onnx.load(path)
        assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
        first = proto.graph.input[0].type.tensor_type.shape.dim
        assert first[0].dim_param, f"{name}: batch was specialised"
        if name in ("tokenizer_encoder", "tokenizer_decoder", "token_latents", "action_encoder", "dynamics",
                    "dynamics_prefill", "decoder_prefill"):
            assert first[1].dim_param, f"{name}: the frame axis was specialised"
        cache = {i.name: i.type.tensor_type.shape.dim for i in proto.graph.input}.get("cache_k")
        if cache is not None:
            assert cache[1].dim_param and cache[4].dim_param, f"{name}: batch or slots of the cache specialised"
    # Beside the standard graphs: their onnxruntime-fused forms, with the same dynamic interface.
    for name in ("tokenizer_encoder", "tokenizer_decoder", "action_encoder", "maskgit_step", "decoder_extend"):
        fused = manifest["graphs"][name]["onnxruntime"]
        path = os.path.join(onnx_dir, fused["file"])
        assert fused["file"] == f"{name}.ort.onnx" and sha256_file(path) == fused["sha256"]
        proto = onnx.load(path)
        assert "com.microsoft" in {n.domain for n in proto.graph.node} and fused["fusions"]["attention"] >= 1
        assert [i.name for i in proto.graph.input] == [i["name"] for i in manifest["graphs"][name]["inputs"]]
        assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param, f"{name}: batch was specialised"
    encoder = manifest["graphs"]["tokenizer_encoder"]["onnxruntime"]["fusions"]
    assert encoder["rms_normalization"] == 3 and encoder["attention_over_time_unfused"] == 1   # 1 block
    assert manifest["graphs"]["maskgit_step"]["onnxruntime"]["fusions"]["bool_counts_in_float"] == 2
    step = onnx.load(os.path.join(onnx_dir, "maskgit_step.ort.onnx"))
    made_by = {out: n for n in step.graph.node for out in n.output}
    int64_counts = [n.name for n in step.graph.node if n.op_type == "ReduceSum" and n.input[0] in made_by
                    and made_by[n.input[0]].op_type == "Cast" and made_by[n.input[0]].attribute[0].i == onnx.TensorProto.INT64]
    assert not int64_counts, "MaskGIT's ranks still count in int64"
    assert "onnxruntime" not in manifest["graphs"]["token_latents"]      # nothing to fuse: no second file


def test_parity_report_passes_with_tight_errors(exported):
    report = exported[2]["parity"]
    assert report["passed"]
    rows = {(r["graph"], r["output"]): r for r in report["graphs"]}
    assert rows[("dynamics", "logits")]["max_abs"] <= 1e-4 and rows[("dynamics", "logits")]["tokens_pct"] == 100
    assert rows[("tokenizer_decoder", "frames")]["max_abs"] <= 1e-4
    assert rows[("tokenizer_encoder", "indices")]["unexplained"] == 0
    assert rows[("token_latents", "latents")]["max_abs"] == 0
    for graph in ("dynamics_prefill", "dynamics_commit", "decoder_prefill"):
        assert rows[(graph, "k")]["max_abs"] <= 1e-4 and rows[(graph, "v")]["max_abs"] <= 1e-4
    for graph in ("maskgit_step", "maskgit_step_sampled"):
        assert rows[(graph, "next_tokens")]["max_abs"] == 0 and rows[(graph, "next_masked")]["max_abs"] == 0
    assert rows[("decoder_extend", "frames")]["max_abs"] <= 1e-4
    assert report["rollout"]["passed"] and report["rollout"]["eager_loop_vs_reference_max_abs"] <= 1e-6


@pytest.mark.parametrize("batch", [1, 3])
def test_one_graph_runs_batch_1_and_3(exported, backend, batch):
    run = exported[0]
    model = wmfast.load(run)
    eager = eager_graphs(model)
    inputs = parity_inputs(model, batch, 4, torch.Generator().manual_seed(batch))
    for name, args in inputs.items():
        want, got = run_eager(eager, name, *args), backend.graph(name)(*args)
        assert len(want) == len(got)
        for w, g in zip(want, got):
            assert g.shape == w.shape and g.dtype == w.dtype, name
            if w.is_floating_point():
                assert (g - w).abs().max() <= 1e-4, name
    # Token outputs: exact here (random inputs are nowhere near a rounding tie at 1e-7).
    assert torch.equal(backend.encode(inputs["tokenizer_encoder"][0]), run_eager(eager, "tokenizer_encoder",
                                                                                 inputs["tokenizer_encoder"][0])[0])


@pytest.mark.parametrize("mode,temperature,fused", [("compat", 0.0, True), ("fast", 0.0, True), ("compat", 1.0, True),
                                                   ("fast", 1.0, True), ("compat", 0.0, False)])
def test_world_with_onnx_backend_gives_the_eager_tokens_every_frame(exported, mode, temperature, fused):
    run = exported[0]
    model = wmfast.load(run)
    g = torch.Generator().manual_seed(3)
    context = torch.rand(2, 3, 3, 8, 8, generator=g) * 2 - 1
    ids = torch.randint(0, 4, (2, 5), generator=g)                     # 5 frames: the ring wraps in fast mode
    kwargs = dict(device="cpu", mode=mode, steps=4, temperature=temperature, seed=5)
    eager = World.load(run, backend="eager", **kwargs).reset(context)
    if fused:   # the registry's backend: the onnxruntime-fused graphs, the CPU default
        onnx_world = World.load(run, backend="onnx", **kwargs).reset(context)
    else:       # the standard graphs
        backend = OnnxBackend(os.path.join(run, "onnx"), run_dir=run, fused=False)
        onnx_world = World(model, backend=backend, **kwargs).reset(context)
    step_graph = onnx_world.backend.graph("maskgit_step").path
    assert step_graph.endswith("maskgit_step.ort.onnx" if fused else "maskgit_step.onnx")
    for i in range(ids.shape[1]):
        want, got = eager.step(ids[:, i]), onnx_world.step(ids[:, i])
        assert torch.equal(onnx_world.tokens, eager.tokens), f"frame {i}"
        assert (got - want).abs().max() <= 1e-4
    if mode == "compat" and temperature == 0:
        assert (onnx_world.reset(context).rollout(ids) - reference_rollout(model, context, ids, steps=4)).abs().max() <= 1e-4


def test_corrupted_onnx_file_gives_a_clear_error(exported, tmp_path):
    onnx_dir = str(tmp_path / "onnx")
    shutil.copytree(exported[1], onnx_dir)
    path = os.path.join(onnx_dir, "dynamics.onnx")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data[: len(data) - 100]))
    with pytest.raises(WmfastError, match="sha256.*does not match the manifest"):
        OnnxBackend(onnx_dir)
    # A broken file whose hash was (wrongly) recorded: onnxruntime's refusal becomes one clear line.
    manifest = json.load(open(os.path.join(onnx_dir, "manifest.json")))
    manifest["graphs"]["dynamics"]["sha256"] = sha256_file(path)
    json.dump(manifest, open(os.path.join(onnx_dir, "manifest.json"), "w"))
    with pytest.raises(WmfastError, match="dynamics.onnx: onnxruntime cannot load this graph"):
        OnnxBackend(onnx_dir, fused=False)
    # The onnxruntime-fused form (what the CPU backend runs by default) is checked the same way.
    fused = os.path.join(onnx_dir, manifest["graphs"]["dynamics"]["onnxruntime"]["file"])
    open(fused, "wb").write(open(fused, "rb").read()[:-100])
    with pytest.raises(WmfastError, match="dynamics.ort.onnx: sha256.*does not match the manifest"):
        OnnxBackend(onnx_dir)
    manifest["graphs"]["dynamics"]["onnxruntime"]["sha256"] = sha256_file(fused)
    json.dump(manifest, open(os.path.join(onnx_dir, "manifest.json"), "w"))
    with pytest.raises(WmfastError, match="dynamics.ort.onnx: onnxruntime cannot load this graph"):
        OnnxBackend(onnx_dir)
    os.remove(os.path.join(onnx_dir, "manifest.json"))
    with pytest.raises(WmfastError, match="no manifest.json"):
        OnnxBackend(onnx_dir)


def test_export_that_does_not_match_the_run_is_refused(exported, tmp_path):
    run = str(tmp_path / "run")
    shutil.copytree(exported[0], run)
    OnnxBackend(os.path.join(run, "onnx"), run_dir=run)                  # the copy matches
    cfg_path = os.path.join(run, "dynamics", "config.json")
    cfg = json.load(open(cfg_path))
    cfg["context_length"] = 5
    json.dump(cfg, open(cfg_path, "w"))
    with pytest.raises(WmfastError, match="dynamics config context_length=3 in the export but 5 in the run"):
        OnnxBackend(os.path.join(run, "onnx"), run_dir=run)
    with pytest.raises(WmfastError, match="re-export"):
        OnnxBackend.for_run(run)
    cfg["context_length"] = 3
    json.dump(cfg, open(cfg_path, "w"))
    save_tiny_run(run, tokenizer=False, actions=False, seed=1)          # new dynamics weights, same config
    with pytest.raises(WmfastError, match="dynamics weights changed since the export"):
        OnnxBackend(os.path.join(run, "onnx"), run_dir=run)


def test_bad_inputs_to_a_graph_are_clear_errors(backend):
    with pytest.raises(WmfastError, match="tokenizer_encoder: frames must have shape"):
        backend.encode(torch.zeros(1, 2, 3, 16, 16))
    with pytest.raises(WmfastError, match="dynamics: latents must have shape"):
        backend.graph("dynamics")(torch.zeros(1, 3, 4, 3), torch.zeros(1, 1, 2))
    with pytest.raises(WmfastError, match="maskgit_step: inputs disagree on batch"):
        cache = backend.new_cache("dynamics", 2, 3)
        backend.maskgit_step(torch.zeros(1, 1, 4, 3), torch.ones(1, 4, dtype=torch.bool), torch.zeros(1, 4).long(),
                             torch.tensor(2), torch.zeros(1, 1, 2), cache, torch.zeros(1, 16), torch.tensor(0.0))


def test_cli_parity_exits_zero_on_a_good_export(exported, capsys):
    assert cli_main(["parity", "--run", exported[0], "--reps", "0"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_static_batch_export_and_bad_arguments(tmp_path):
    run = save_tiny_run(tmp_path / "run", actions=False, dynamics=False)
    manifest = export_run(run, str(tmp_path / "onnx2"), batch=2, graphs=["token_latents"], progress=False)
    assert manifest["graphs"]["token_latents"]["inputs"][0]["shape"][0] == 2
    assert manifest["parity"]["passed"] and os.path.exists(tmp_path / "onnx2" / "parity.json")   # export checks by default
    proto = onnx.load(str(tmp_path / "onnx2" / "token_latents.onnx"))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    backend = OnnxBackend(str(tmp_path / "onnx2"))
    assert backend.latents(torch.zeros(2, 3, 4, dtype=torch.long)).shape == (2, 3, 4, 3)
    with pytest.raises(WmfastError, match="token_latents: indices must have shape"):
        backend.latents(torch.zeros(3, 3, 4, dtype=torch.long))
    with pytest.raises(WmfastError, match="no 'maskgit_step' graph"):
        backend.maskgit_step(torch.zeros(2, 1, 4, 3), None, None, None, None, KVCache(1, 2, 4, 2, 3, 8), None, None)
    with pytest.raises(WmfastError, match="batch must be"):
        export_run(run, batch="big")
    with pytest.raises(WmfastError, match="has no dynamics stage"):
        export_run(run, graphs=["dynamics"])


def test_vq_tokenizer_exports_through_the_vq_lookup_translation(tmp_path):
    pytest.importorskip("wmfast.nn.vq")
    run = save_tiny_run(tmp_path / "run", tokenizer={"quantizer": "vq", "codebook_size": 16}, actions=False,
                        dynamics=False)
    export_run(run, graphs=["tokenizer_encoder", "token_latents"], check=False, progress=False)
    report = check_parity(run, progress=False, reps=1)
    assert report["passed"], report["graphs"]


def test_windowed_lam_exports_through_the_pair_attention_translation(tmp_path):
    if "use_windowed_attention" not in {f.name for f in dataclasses.fields(LatentActionConfig)}:
        pytest.skip("LatentActionConfig has no use_windowed_attention yet")
    run = save_tiny_run(tmp_path / "run", tokenizer=False, actions={"use_windowed_attention": True}, dynamics=False)
    export_run(run, graphs=["action_encoder"], check=False, progress=False)
    report = check_parity(run, progress=False, reps=1)
    assert report["passed"], report["graphs"]


# What a World with temperature 0 runs (OnnxBackend); a frame-wise tokenizer adds no decoder caches.
WORLD_GRAPHS = ("tokenizer_encoder", "tokenizer_decoder", "token_latents", "action_encoder", "action_latents",
                "dynamics_prefill", "maskgit_step", "dynamics_commit")


def test_frame_wise_tokenizer_run_exports_without_decoder_caches_and_plays_the_eager_tokens(tmp_path):
    from wmfast.export.graphs import graph_specs

    run = save_tiny_run(tmp_path / "run", tokenizer={"temporal_attention": False})
    model = wmfast.load(run)
    specs = graph_specs({"tokenizer": model.tokenizer.config, "actions": model.lam.config,
                         "dynamics": model.dynamics.config})         # what a full export of this run writes
    assert "tokenizer_decoder" in specs and set(WORLD_GRAPHS) <= set(specs)
    assert not {"decoder_prefill", "decoder_extend"} & set(specs)   # no temporal decoder: no cache
    # Only the World's graphs: the full dynamics graph and the sampled MaskGIT step are those of
    # `exported` (the same dynamics config, checked there).
    manifest = export_run(run, check=False, progress=False, graphs=WORLD_GRAPHS)
    assert set(manifest["graphs"]) == set(WORLD_GRAPHS)
    assert check_parity(run, progress=False, reps=0)["passed"]
    g = torch.Generator().manual_seed(3)
    context, ids = torch.rand(2, 3, 3, 8, 8, generator=g) * 2 - 1, torch.randint(0, 4, (2, 7), generator=g)
    for kwargs in (dict(mode="fast", steps=2), dict(mode="fast", steps=2, stream=True), dict(mode="compat", steps=2)):
        eager = World.load(run, backend="eager", device="cpu", **kwargs).reset(context)
        onnx_world = World.load(run, backend="onnx", device="cpu", **kwargs).reset(context)
        for i in range(ids.shape[1]):
            want, got = eager.step(ids[:, i]), onnx_world.step(ids[:, i])
            assert torch.equal(onnx_world.tokens, eager.tokens), (kwargs, i)
            assert (got - want).abs().max() <= 1e-4
