"""ONNX export of the LAPA encoder and decoder through `wmfast export`, checked by `wmfast parity`."""
import json
import os

import pytest
import torch

from wmfast.cli import main
from wmfast.checkpoint import save_model
from wmfast.models.lapa import LapaModel

from lapa_synth import tiny_config


@pytest.mark.parametrize("kw", [{"grayscale": True, "background": True}])   # the CPU recipe's learned background too
def test_export_and_parity_through_the_cli(tmp_path, capsys, kw):
    torch.manual_seed(0)
    model = LapaModel(tiny_config(**kw)).eval()
    with torch.no_grad():   # as after training: the background starts as zeros and the last layer at zero
        torch.nn.init.normal_(model.decoder.ups[-1][0].weight, std=0.05)
        model.decoder.background.uniform_(0, 1)
    save_model(model, tmp_path / "run" / "lapa")
    run, out = str(tmp_path / "run"), str(tmp_path / "onnx")
    assert main(["export", "--run", run, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "lapa_encoder.onnx" in printed and "lapa parity PASS" in printed
    report = json.load(open(os.path.join(out, "lapa_parity.json")))
    assert report["encoder_code_agreement"] >= 0.99 and report["decoder_max_abs_diff"] <= 1e-4
    assert report["shapes"] == {"codes": [2, 7, 5], "frame_t1": [2, 1, 210, 160]}
    assert main(["parity", "--run", run, "--onnx", out]) == 0
    # A decoder whose weights no longer match the exported graph fails the check.
    with torch.no_grad():
        model.decoder.ups[-1][0].bias.add_(0.5)
    save_model(model, tmp_path / "run" / "lapa")
    assert main(["parity", "--run", run, "--onnx", out]) == 1
