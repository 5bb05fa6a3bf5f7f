"""ONNX export of the LAPA latent-action VQ-VAE (wmfast.models.lapa) and its parity check.

    export_lapa("runs/breakout")          # -> runs/breakout/onnx/lapa_encoder.onnx, lapa_decoder.onnx,
                                          #    lapa_manifest.json, lapa_parity.json
    check_lapa_parity("runs/breakout", "runs/breakout/onnx")

Graphs (batch dynamic unless a static batch is asked for; frames RGB float in [0, 1], converted to
grey inside the graph for grayscale models):
    lapa_encoder: frame_t, frame_t1 [B, 3, H, W] -> codes [B, 7, 5] int64 ([B] pooled)
    lapa_decoder: frame_t [B, 3, H, W], codes    -> frame_t1 [B, C, H, W] in [0, 1]
The nearest-code search goes through the same vq_lookup translation as the world-model export
(export/translations.py), so plain onnxruntime runs both graphs. `wmfast export` / `wmfast parity`
call these for a run that holds a lapa/ folder.
"""
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn

from wmfast.config import save_json
from wmfast.errors import WmfastError

ENCODER, DECODER, MANIFEST, PARITY = "lapa_encoder.onnx", "lapa_decoder.onnx", "lapa_manifest.json", "lapa_parity.json"
DECODER_ATOL = {"fp32": 1e-4}
MIN_CODE_AGREEMENT = 0.99   # exact ties in the nearest-code search may resolve differently


class EncoderGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, frame_t, frame_t1):
        return self.model.encode(frame_t, frame_t1, check=False)              # [B, 7, 5] int64


class DecoderGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, frame_t, codes):
        return self.model.decode(frame_t, codes, check=False)                 # [B, C, H, W]


def has_lapa(run_dir) -> bool:
    return os.path.isfile(os.path.join(os.fspath(run_dir), "lapa", "config.json"))


def has_world_model(run_dir) -> bool:
    return any(os.path.isdir(os.path.join(os.fspath(run_dir), s)) for s in ("tokenizer", "actions", "dynamics"))


def _inputs(model, batch: int, seed: int = 0):
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    frame_t = torch.rand(batch, 3, cfg.height, cfg.width, generator=g)
    frame_t1 = frame_t.clone()
    frame_t1[:, :, cfg.height // 2:cfg.height // 2 + 8, cfg.width // 3:cfg.width // 3 + 8] = 1.0   # something moved
    codes = torch.randint(0, cfg.num_codes, (batch, *cfg.code_shape), generator=g)
    return frame_t, frame_t1, codes


def export_lapa(run_dir, out_dir=None, opset: int = 20, batch="dynamic", check: bool = True,
                progress: bool = True) -> dict:
    """Export the run's LAPA encoder and decoder; returns (and writes) lapa_manifest.json."""
    from wmfast.export.exporter import parse_batch, quiet_exporter
    from wmfast.export.translations import translation_table
    from wmfast.checkpoint import load_lapa

    batch = parse_batch(batch)
    if not isinstance(opset, int) or opset < 18:
        raise WmfastError(f"opset must be an integer >= 18, got {opset!r}")
    model = load_lapa(run_dir).eval()
    out_dir = out_dir or os.path.join(os.fspath(run_dir), "onnx")
    os.makedirs(out_dir, exist_ok=True)
    frame_t, frame_t1, codes = _inputs(model, 2 if batch == "dynamic" else batch)
    B = torch.export.Dim("batch", min=1, max=4096) if batch == "dynamic" else None
    graphs = {
        ENCODER: (EncoderGraph(model), (frame_t, frame_t1), ["frame_t", "frame_t1"], ["codes"]),
        DECODER: (DecoderGraph(model), (frame_t, codes), ["frame_t", "codes"], ["frame_t1"]),
    }
    entries = {}
    for name, (module, args, ins, outs) in graphs.items():
        shapes = {k: {0: B} for k in ins} if B is not None else None       # keys = forward's argument names
        t0 = time.perf_counter()
        with quiet_exporter(), torch.no_grad():
            try:
                program = torch.onnx.export(module, args, dynamo=True, opset_version=opset, external_data=False,
                                            optimize=True, input_names=ins, output_names=outs,
                                            dynamic_shapes=shapes,
                                            custom_translation_table=translation_table(), verbose=False)
            except Exception as e:
                raise WmfastError(f"exporting {name} failed: {str(e.__cause__ or e).strip().splitlines()[0]}") from e
        path = os.path.join(out_dir, name)
        program.save(path + ".tmp", external_data=False)
        os.replace(path + ".tmp", path)
        import onnx

        try:
            onnx.checker.check_model(path, full_check=True)
        except onnx.checker.ValidationError as e:
            raise WmfastError(f"{path}: exported graph fails onnx.checker: {str(e).splitlines()[0]}") from e
        proto = onnx.load(path)
        entries[name] = {"inputs": ins, "outputs": outs, "nodes": len(proto.graph.node), "bytes": os.path.getsize(path),
                         "export_s": round(time.perf_counter() - t0, 2)}
    manifest = {"format": "wmfast-lapa-onnx", "opset": opset, "batch": batch, "config": model.config.to_dict(),
                "graphs": entries}
    save_json(manifest, os.path.join(out_dir, MANIFEST))
    if check:
        manifest["parity"] = check_lapa_parity(run_dir, out_dir)
    return manifest


def check_lapa_parity(run_dir, onnx_dir=None, batch: int = 2, seed: int = 0) -> dict:
    """Eager PyTorch vs onnxruntime on the same inputs: code agreement of the encoder, max |diff| of
    the decoder fed the same codes; report["passed"] and lapa_parity.json."""
    import onnxruntime as ort

    from wmfast.checkpoint import load_lapa

    onnx_dir = onnx_dir or os.path.join(os.fspath(run_dir), "onnx")
    paths = {n: os.path.join(onnx_dir, n) for n in (ENCODER, DECODER, MANIFEST)}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise WmfastError(f"{onnx_dir}: no LAPA export ({os.path.basename(missing[0])} missing); run `wmfast export`")
    manifest = json.load(open(paths[MANIFEST]))
    if isinstance(manifest["batch"], int):
        batch = manifest["batch"]
    model = load_lapa(run_dir).eval()
    frame_t, frame_t1, _ = _inputs(model, batch, seed)
    sessions = {n: ort.InferenceSession(paths[n], providers=["CPUExecutionProvider"]) for n in (ENCODER, DECODER)}
    with torch.no_grad():
        eager_codes = EncoderGraph(model)(frame_t, frame_t1)
        eager_frames = DecoderGraph(model)(frame_t, eager_codes)
    onnx_codes = sessions[ENCODER].run(None, {"frame_t": frame_t.numpy(), "frame_t1": frame_t1.numpy()})[0]
    onnx_frames = sessions[DECODER].run(None, {"frame_t": frame_t.numpy(), "codes": eager_codes.numpy()})[0]
    agreement = float((torch.from_numpy(onnx_codes) == eager_codes).float().mean())
    max_diff = float(np.abs(onnx_frames - eager_frames.numpy()).max())
    report = {"batch": batch, "encoder_code_agreement": agreement, "decoder_max_abs_diff": max_diff,
              "decoder_atol": DECODER_ATOL["fp32"], "min_code_agreement": MIN_CODE_AGREEMENT,
              "shapes": {"codes": list(onnx_codes.shape), "frame_t1": list(onnx_frames.shape)}}
    report["passed"] = agreement >= MIN_CODE_AGREEMENT and max_diff <= DECODER_ATOL["fp32"] and \
        list(onnx_codes.shape) == list(eager_codes.shape)
    save_json(report, os.path.join(onnx_dir, PARITY))
    return report


def print_lapa_report(report: dict):
    status = "PASS" if report["passed"] else "FAIL"
    print(f"lapa parity {status}: encoder codes agree {100 * report['encoder_code_agreement']:.2f}% "
          f"(need {100 * report['min_code_agreement']:.0f}%), decoder max |diff| {report['decoder_max_abs_diff']:.2e} "
          f"(atol {report['decoder_atol']:.0e}), batch {report['batch']}")

