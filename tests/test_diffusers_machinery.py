"""diffusers' machinery on the layered path: group offloading, first-block cache, LoRA scale, attention processors,
regional and whole-model compilation and torch.export act on a layered forward as they do on plain Wan."""

import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig
from helpers import TINY_TRANSFORMER

from layert2v.layout import LayerLayout
from layert2v.models.transformer import LayeredWanTransformer


def make(num_layers: int = 3) -> LayeredWanTransformer:
    torch.manual_seed(0)
    model = LayeredWanTransformer(**{**TINY_TRANSFORMER, "num_layers": num_layers}, max_foregrounds=2).eval()
    with torch.no_grad():
        model.layer_adaln.normal_(0, 0.1)
    return model


def inputs(layout: LayerLayout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, layout.num_segments * 2, 4, 4, generator=g)
    ctx = torch.randn(2, layout.num_prompts, 6, 384, generator=g)
    return x, torch.tensor([400.0, 800.0]), ctx


def run(model, x, t, ctx, layout, **kw) -> torch.Tensor:
    """A layered forward, or a plain Wan one (first prompt only) when ``layout`` is None."""
    with torch.no_grad():
        if layout is None:
            return model(x, t, ctx[:, 0], **kw).sample
        return model(x, t, ctx, layout=layout, **kw).sample


@pytest.mark.parametrize("offload_type", ["block_level", "leaf_level"])
def test_group_offloading_equals_no_offloading(offload_type, tmp_path):
    model, layout = make(), LayerLayout(2)
    x, t, ctx = inputs(layout)
    ref, ref_plain = run(model, x, t, ctx, layout), run(model, x, t, ctx, None)
    # On a CPU the offload that shows is to disk: offloaded weights become uninitialised tensors, and each module's
    # weights must be read back just before it runs.
    model.enable_group_offload(torch.device("cpu"), offload_type=offload_type, num_blocks_per_group=1,
                               offload_to_disk_path=str(tmp_path))
    for _ in range(2):  # onload, offload, onload again
        out = run(model, x, t, ctx, layout)
        assert (out - ref).abs().max() <= 1e-5, (out - ref).abs().max()
    assert (run(model, x, t, ctx, None) - ref_plain).abs().max() <= 1e-5


def test_first_block_cache_skips_blocks_and_stays_close():
    """Tolerance: a step that the cache skips may differ from the uncached output by at most 2% of its largest
    value (a skip reuses the previous step's residual of blocks 2..N, so it is an approximation by design)."""
    model, layout = make(num_layers=3), LayerLayout(2)
    x, t, ctx = inputs(layout)
    tail_calls = []
    model.blocks[-1].attn1.register_forward_pre_hook(lambda module, args: tail_calls.append(1))
    near, far = t - 2.0, t - 300.0
    ref = run(model, x, near, ctx, layout)
    model.enable_cache(FirstBlockCacheConfig(threshold=0.05))
    with model.cache_context("cond"):
        run(model, x, t, ctx, layout)  # the first call runs every block and keeps the residual of the rest
        tail_calls.clear()
        out = run(model, x, near, ctx, layout)  # first block's residual barely moved: blocks 2..3 are skipped
        assert tail_calls == []
        run(model, x, far, ctx, layout)  # it moved a lot: everything runs again
        assert tail_calls == [1]
    model.disable_cache()
    assert (out - ref).abs().max() <= 0.02 * ref.abs().max(), (out - ref).abs().max() / ref.abs().max()
    assert torch.equal(run(model, x, near, ctx, layout), ref)  # disabled: back to the exact forward


@pytest.mark.parametrize("layered", [True, False], ids=["layered", "plain"])
def test_lora_scale_is_honoured(layered):
    from peft import LoraConfig

    model, layout = make(num_layers=2), LayerLayout(2)
    x, t, ctx = inputs(layout)
    layout = layout if layered else None
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                 target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    full = run(model, x, t, ctx, layout)
    half = run(model, x, t, ctx, layout, attention_kwargs={"scale": 0.5})
    zero = run(model, x, t, ctx, layout, attention_kwargs={"scale": 0.0})
    assert torch.equal(run(model, x, t, ctx, layout, attention_kwargs={"scale": 1.0}), full)  # scale restored
    model.disable_lora()
    off = run(model, x, t, ctx, layout)
    model.enable_lora()
    assert (full - half).abs().max() > 1e-3 and (half - off).abs().max() > 1e-3
    assert torch.allclose(zero, off, atol=1e-6, rtol=0), (zero - off).abs().max()


def test_custom_attn2_processor_is_called_with_the_layout_and_per_call_kwargs():
    from layert2v.models.transformer import LayerRoutedAttnProcessor

    class Recording(LayerRoutedAttnProcessor):
        def __init__(self):
            super().__init__()
            self.layouts = []

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None,
                     layout=None, gain=1.0):
            self.layouts.append(layout)
            return gain * super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb,
                                           layout)

    model, layout = make(num_layers=2), LayerLayout(2)
    x, t, ctx = inputs(layout)
    ref = run(model, x, t, ctx, layout)
    recording = Recording()
    model.set_attn_processor({name: recording if ".attn2." in name else proc
                              for name, proc in model.attn_processors.items()})
    assert torch.equal(run(model, x, t, ctx, layout), ref)
    assert recording.layouts == [layout, layout]  # once per block
    muted = run(model, x, t, ctx, layout, attention_kwargs={"gain": 0.0})  # per-call inputs reach the processor
    assert (muted - ref).abs().max() > 1e-3

    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    model.blocks[0].attn2.set_processor(WanAttnProcessor())
    with pytest.raises(TypeError, match="LayerRoutedAttnProcessor"):
        run(model, x, t, ctx, layout)


@pytest.mark.parametrize("method", ["compile_repeated_blocks", "compile_blocks"])
def test_regional_compile_fullgraph_with_a_fresh_layout_and_no_recompile(method):
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model = make(num_layers=2)
    x, t, ctx = inputs(LayerLayout(2))
    eager = run(model, x, t, ctx, LayerLayout(2))
    counter = CompileCounter()  # dynamo only, no code generation: fast on CPU
    getattr(model, method)(backend=counter, fullgraph=True, dynamic=False)
    compiled = run(model, x, t, ctx, LayerLayout(2))  # a layout never seen before
    graphs = counter.frame_count
    assert graphs >= 1  # the blocks the layered forward runs are the compiled ones
    with torch._dynamo.config.patch(error_on_recompile=True):
        again = run(model, x, t, ctx, LayerLayout(2))  # an equal layout reuses the graph
    assert counter.frame_count == graphs
    assert torch.allclose(compiled, eager, atol=1e-6, rtol=0) and torch.equal(again, compiled)
    torch._dynamo.reset()


def test_whole_model_compile_of_the_layered_forward_does_not_recompile():
    """torch.compile of the whole transformer (as diffusers' tests compile plain Wan): a second call with an equal,
    freshly made layout reuses the graph."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model = make(num_layers=1)  # compiled before any eager call: nothing cached on the model yet
    x, t, ctx = inputs(LayerLayout(2))
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=False)
    first = run(compiled, x, t, ctx, LayerLayout(2))
    assert counter.frame_count == 1
    with torch._dynamo.config.patch(error_on_recompile=True):
        again = run(compiled, x, t, ctx, LayerLayout(2))
    assert counter.frame_count == 1
    eager = run(model, x, t, ctx, LayerLayout(2))
    assert torch.allclose(first, eager, atol=1e-6, rtol=0) and torch.equal(again, first)
    torch._dynamo.reset()


def test_torch_export_takes_the_layout_and_the_program_saves_and_loads(tmp_path):
    """torch.export of ``forward(..., layout=)``: the layout is a pytree node whose context (K, the given segments)
    serialises with the program; the loaded program runs that layout and refuses another."""
    model, layout = make(num_layers=1), LayerLayout(2, conditions=("background",))
    x, t, ctx = inputs(layout)
    t = layout.segment_timesteps(t)
    program = torch.export.export(model, (x, t, ctx), {"layout": layout, "return_dict": False})
    torch.export.save(program, tmp_path / "layered.pt2")
    loaded = torch.export.load(tmp_path / "layered.pt2").module()
    with torch.no_grad():
        out = loaded(x, t, ctx, layout=LayerLayout(2, conditions=("background",)), return_dict=False)[0]
    assert torch.allclose(out, run(model, x, t, ctx, layout), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="tree spec"):
        loaded(x, t, ctx, layout=LayerLayout(2), return_dict=False)


def test_offload_asks_for_an_accelerator(tiny_pipeline, tmp_path, capsys):
    """Offloading runs on an accelerator (the equality of its hooks is checked above, on the transformer): on the
    CPU both the pipeline and the CLI refuse it with a one-line error, before any weights load."""
    from layert2v.cli import main

    with pytest.raises(ValueError, match="choose from block, leaf, model"):
        tiny_pipeline.enable_memory_savers(offload="disk", device="cuda")
    with pytest.raises(ValueError, match="on the CPU it saves nothing"):
        tiny_pipeline.enable_memory_savers(offload="block", device="cpu")
    assert tiny_pipeline._execution_device is None
    code = main(["generate", "a red circle", "--out", str(tmp_path / "o"), "--offload", "leaf"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--device cuda" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
