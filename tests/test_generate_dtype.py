"""`layert2v generate --dtype`: the transformer computes in the chosen precision (Wan's fp32 modules stay fp32)."""

import json

import pytest
import torch

from layert2v.cli import main
from layert2v.pipeline import LayerT2VPipeline


@pytest.mark.parametrize("flag, want", [("bf16", torch.bfloat16), ("fp32", torch.float32), (None, torch.float32)])
def test_generate_dtype(tiny_pipeline, tmp_path, monkeypatch, flag, want):
    tiny_pipeline.save_pretrained(tmp_path / "model")
    seen = {}
    call = LayerT2VPipeline.__call__

    def spy(self, *args, **kwargs):
        seen["dtype"] = self.dtype
        seen["fp32_kept"] = {p.dtype for n, p in self.transformer.named_parameters() if "scale_shift_table" in n}
        return call(self, *args, **kwargs)

    monkeypatch.setattr(LayerT2VPipeline, "__call__", spy)
    argv = ["generate", "a red ball on grass", "--bg", "grass", "--fg", "a red ball",
            "--model", str(tmp_path / "model"),
            "--out", str(tmp_path / "out"), "--steps", "1", "--frames", "5", "--size", "32x32"]
    assert main(argv + (["--dtype", flag] if flag else [])) == 0  # the default on a CPU device: fp32
    assert seen["dtype"] == want and seen["fp32_kept"] == {torch.float32}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["dtype"] == (flag or "fp32")
