"""onnxruntime's CUDA EP (`make gpu-check`): strict providers (no node may fall back to the CPU),
parity with eager PyTorch, and World(backend="onnx") with CUDA graphs giving the eager tokens."""
import os

import pytest
import torch

pytestmark = pytest.mark.gpu


def test_cuda_ep_strict_parity_and_world_with_cuda_graphs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: "
                    f"{ort.get_available_providers()}); install onnxruntime-gpu (pip install 'wmfast[gpu]')")
    from test_onnx_export import save_tiny_run

    from wmfast import World
    from wmfast.export import OnnxBackend, check_parity, export_run

    run = save_tiny_run(tmp_path / "run")
    export_run(run, check=False, progress=False)
    backend = OnnxBackend(os.path.join(run, "onnx"), device="cuda", strict=True, run_dir=run)
    report = check_parity(run, device="cuda", strict=True, progress=False, reps=0, backend=backend)
    assert report["passed"], report["graphs"]
    g = torch.Generator().manual_seed(3)
    context = (torch.rand(2, 3, 3, 8, 8, generator=g) * 2 - 1).cuda()
    ids = torch.randint(0, 4, (2, 4), generator=g).cuda()
    for mode in ("compat", "fast"):
        eager = World.load(run, device="cuda", backend="eager", mode=mode, steps=4).reset(context)
        onnx = World.load(run, device="cuda", backend="onnx", mode=mode, steps=4).reset(context)
        assert onnx.backend.graphs["maskgit_step"].cuda_graph
        for i in range(ids.shape[1]):
            a, b = eager.step(ids[:, i]), onnx.step(ids[:, i])
            assert torch.equal(onnx.tokens, eager.tokens), (mode, i)
            assert (a - b).abs().max() <= 1e-3
