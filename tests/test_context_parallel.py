"""Context parallelism on CPU: two gloo processes must reproduce the single-process layered forward."""

import os
import socket
import sys
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with the gloo backend is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_ring_attention() -> None:
    """Ring attention merges partial softmaxes by their log-sum-exp; diffusers' native (SDPA) op does not return
    one, and its LSE-returning backends are CUDA-only. Give the native op a CPU kernel that returns it, so the
    ring exchange itself runs here (test-only)."""
    import diffusers.models.attention_dispatch as ad

    from layert2v.models import context_parallel

    def forward_op(ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False, return_lse=False, _save_ctx=True, _parallel_config=None):
        q, k, v = (t.transpose(1, 2) for t in (query, key, value))
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p, is_causal,
                                                                               scale=scale)
        out, lse = out.transpose(1, 2), lse.transpose(1, 2)
        return (out, lse) if return_lse else out

    ad._native_attention_forward_op = forward_op
    context_parallel.RING_BACKENDS = (*context_parallel.RING_BACKENDS, "None")


def _worker(rank: int, port: int) -> None:
    """Runs both checks, then leaves with os._exit: the exit code is the verdict.

    Tearing gloo down at interpreter exit sometimes aborts ("terminate called without an active exception",
    seen once in CI) after every check had passed; skipping the C++ teardown keeps that out of the result."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        for mode in ("ulysses", "ring"):  # one spawn for both: starting the processes is most of the cost
            _check_mode(rank, mode)
        dist.barrier()  # neither rank leaves while the other still needs it
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


def _check_mode(rank: int, mode: str) -> None:
    from helpers import TINY_TRANSFORMER

    from layert2v.layout import LayerLayout
    from layert2v.models.context_parallel import enable_context_parallel
    from layert2v.models.transformer import LayeredWanTransformer

    if mode == "ring":
        _cpu_ring_attention()
    torch.manual_seed(0)  # identical weights and inputs on every rank
    model = LayeredWanTransformer(**TINY_TRANSFORMER, max_foregrounds=2, layer_text_embedding=True).eval()
    with torch.no_grad():
        model.layer_adaln.normal_(0, 0.1)
        model.layer_prompt_embedding.normal_(0, 0.1)
    layout = LayerLayout(2, conditions=("background",))
    x = torch.randn(2, 4, layout.num_segments * 2, 4, 6)  # CFG-sized batch; 12 tokens per segment
    ctx = torch.randn(2, layout.num_prompts, 5, 384)
    t = layout.segment_timesteps(torch.tensor([700.0, 300.0]))
    with torch.no_grad():
        ref = model(x, t, ctx, layout=layout).sample

    enable_context_parallel(model, mode)
    seen = []
    model.blocks[0].attn1.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    with torch.no_grad():
        out = model(x, t, ctx, layout=layout).sample
    assert seen == [layout.num_segments * 12 // WORLD], seen  # each rank attends from its half of the tokens
    err = (out - ref).abs().max().item()
    assert out.shape == ref.shape and err < 1e-5, f"{mode} rank {rank}: max abs diff {err}"

    if mode == "ulysses":
        with torch.no_grad(), pytest.raises(NotImplementedError, match="pass a layout"):
            model(x, t[:, 0], ctx[:, 0])
        with torch.no_grad(), pytest.raises(ValueError, match="divisible by 2"):
            model(x[:, :, ::2, :2, :2], t, ctx, layout=layout)  # 1 frame of 1 patch: 1 token per segment


def test_ulysses_and_ring_equal_single_process():
    mp.spawn(_worker, args=(_free_port(),), nprocs=WORLD, join=True)


def test_enable_checks_its_arguments():
    from helpers import TINY_TRANSFORMER

    from layert2v.models.context_parallel import enable_context_parallel
    from layert2v.models.transformer import LayeredWanTransformer

    model = LayeredWanTransformer(**TINY_TRANSFORMER)
    with pytest.raises(ValueError, match="unknown context-parallel mode"):
        enable_context_parallel(model, "tensor")
    with pytest.raises(RuntimeError, match="init_process_group"):
        enable_context_parallel(model, "ulysses")
