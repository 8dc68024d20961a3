"""Speed-ups must not change results, and the analytic FLOP count must match what the kernels are asked to do."""

import numpy as np
import pytest
import torch
from diffusers import WanTransformer3DModel
from helpers import TINY_TRANSFORMER
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from layert2v.layout import LayerLayout
from layert2v.models.flops import latent_grid, layered_forward_flops, plain_forward_flops
from layert2v.models.transformer import LayeredWanTransformer

CONFIG = {**TINY_TRANSFORMER, "patch_size": (1, 2, 2)}


def _counted_flops(model, *args, **kwargs) -> int:
    """Matmul + convolution + attention FLOPs as torch counts them (its CPU SDPA kernel registered by hand)."""
    cpu_sdpa = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
                lambda q, k, v, *a, out_val=None, **kw: sdpa_flop_count(q, k, v)}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:
        model(*args, **kwargs)
    return counter.get_total_flops()


def test_analytic_flops_match_counted_flops():
    layout = LayerLayout(2)
    frames, height, width, text_len = 5, 32, 48, 7
    t_lat, h_tok, w_tok = latent_grid(CONFIG, frames, height, width)
    x = torch.randn(1, 4, layout.num_segments * t_lat, h_tok * 2, w_tok * 2)
    ctx = torch.randn(1, layout.num_prompts, text_len, 384)
    layered = LayeredWanTransformer(**TINY_TRANSFORMER, max_foregrounds=2).eval()
    counted = _counted_flops(layered, x, torch.tensor([500.0]), ctx, layout=layout)
    assert counted == layered_forward_flops(CONFIG, layout, frames, height, width, text_len).total

    plain = WanTransformer3DModel(**TINY_TRANSFORMER).eval()
    counted = _counted_flops(plain, x, torch.tensor([500.0]), ctx[:, 0])
    assert counted == plain_forward_flops(CONFIG, x.shape[2] * h_tok * w_tok, text_len).total


def test_compiled_blocks_equal_eager_and_the_forward_builds_no_index_tensor(monkeypatch):
    torch.manual_seed(0)
    model = LayeredWanTransformer(**TINY_TRANSFORMER, max_foregrounds=2).eval()
    with torch.no_grad():
        model.layer_adaln.normal_(0, 0.1)
    layout = LayerLayout(2)
    x = torch.randn(2, 4, layout.num_segments * 2, 4, 4)
    ctx = torch.randn(2, layout.num_prompts, 6, 384)
    t = torch.tensor([400.0, 800.0])
    # the layout's rows are taken as plain ints: no tensor is made from Python data (on a GPU, a copy and a sync)
    made, tensor = [], torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *args, **kwargs: made.append(args) or tensor(*args, **kwargs))
    with torch.no_grad():
        eager = model(x, t, ctx, layout=layout).sample
    assert made == []
    monkeypatch.undo()
    with torch.no_grad():
        # dynamo only (no inductor codegen, so fast on CPU); fullgraph: the block traces with no graph break
        model.compile_blocks(backend="eager", fullgraph=True, dynamic=False)
        compiled = model(x, t, ctx, layout=layout).sample
    assert torch.allclose(eager, compiled, atol=1e-6, rtol=0)


def _video(pipe, **kw) -> np.ndarray:
    v = pipe("a scene", "a background", ["a square", "a circle"], num_inference_steps=2, progress=False, **kw)
    return np.concatenate([np.ravel(a) for a in (v.full, v.background, *v.foregrounds, *v.alphas)])


def test_cfg_unbatched_and_memory_savers_give_the_same_video(tiny_pipeline):
    ref = _video(tiny_pipeline)
    tiny_pipeline.cfg_batch = False
    assert np.abs(_video(tiny_pipeline) - ref).max() < 1e-5
    # slicing is exact, the encoder round trip is exact; tiling is off here (it blends tile seams)
    tiny_pipeline.enable_memory_savers(vae_tiling=False, vae_slicing=True, offload_text_encoder=True, cfg_batch=True)
    tiny_pipeline._prompt_cache.clear()
    assert np.abs(_video(tiny_pipeline) - ref).max() < 1e-5
    assert tiny_pipeline.vae.use_slicing and tiny_pipeline.text_encoder.device.type == "cpu"


def test_bf16_loaded_transformer_keeps_fp32_modules_and_runs(tiny_pipeline, tmp_path):
    tiny_pipeline.transformer.save_pretrained(tmp_path)
    tiny_pipeline.transformer = LayeredWanTransformer.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).eval()
    assert tiny_pipeline.transformer.scale_shift_table.dtype == torch.float32  # Wan keeps its tables in fp32
    assert tiny_pipeline.dtype == torch.bfloat16  # ...and the pipeline still feeds bf16 activations
    video = _video(tiny_pipeline)
    assert np.isfinite(video).all()


def test_pipeline_to_bf16_keeps_the_fp32_modules_as_loading_does(tiny_pipeline):
    tiny_pipeline.to("cpu", dtype=torch.bfloat16)
    transformer = tiny_pipeline.transformer
    assert transformer.scale_shift_table.dtype == transformer.layer_adaln.dtype == torch.float32
    assert transformer.blocks[0].ffn.net[0].proj.weight.dtype == torch.bfloat16
    assert tiny_pipeline.dtype == torch.bfloat16
    assert np.isfinite(_video(tiny_pipeline)).all()


@pytest.mark.parametrize("k", [1, 3])
def test_layered_flops_grow_with_routing(k):
    """The layered forward costs more than a plain one over the same tokens only by its routed text reads."""
    layout = LayerLayout(k)
    layered = layered_forward_flops(CONFIG, layout, 9, 64, 64, 16)
    tokens = layout.num_segments * int(np.prod(latent_grid(CONFIG, 9, 64, 64)))
    plain = plain_forward_flops(CONFIG, tokens, 16)
    assert layered.self_attention_scores == plain.self_attention_scores and layered.ffn == plain.ffn
    assert layered.cross_attention_scores > plain.cross_attention_scores


def test_paper_scale_benchmark_runs_tiny(tmp_path, capsys, monkeypatch):
    """benchmarks/paper_scale.py end to end at toy widths: the job, the layer overhead, the JSON."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "paper_scale.py"
    spec = importlib.util.spec_from_file_location("paper_scale", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "paper_scale", bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    out = tmp_path / "r.json"
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--scale", "tiny", "--steps", "2", "--overhead-reps", "1", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # the tiny preset runs single-threaded
    job = json.loads(out.read_text())["job"]
    assert job["tokens"] == 4 * 3 * 4 * 4 and job["steps"] == 2 and job["achieved_tflop_s"] > 0
    assert "layer overhead" in capsys.readouterr().out
