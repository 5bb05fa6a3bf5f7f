"""ONNX export of wmfast world models, onnxruntime rollouts and parity against eager PyTorch
(installed as wmfast.export).

    manifest = export_run("run")                      # run/onnx/*.onnx + manifest.json (+ parity.json)
    backend = OnnxBackend("run/onnx", device="cpu")   # the rollout backend protocol over onnxruntime
    report = check_parity("run", "run/onnx")          # eager vs onnxruntime, per graph and rollout
"""
from wmfast.export.exporter import export_run  # noqa: F401
from wmfast.export.parity import check_parity  # noqa: F401
from wmfast.export.runtime import OnnxBackend  # noqa: F401
