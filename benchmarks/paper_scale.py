"""Paper-scale inference cost: LayerT2V's appendix B (Table 4) job, timed and counted.

The paper reports 2 min 31 s and 24 GB peak on one H200 for 384x672, 41 frames per layer, one foreground (full,
background, foreground, alpha: 4 x 11 x 24 x 42 = 44,352 tokens), i.e. 50 steps with CFG and every layer decoded.
This script runs that job with the real shapes and random weights (speed and memory do not depend on the values):
the Wan2.1-T2V-1.3B transformer config, the Wan2.1 VAE config, the alpha path (decoder LoRA rank 128), and one
512 x 4096 embedding per prompt, the shape of UMT5-XXL's output. Text encoding is excluded (not run, not timed):
embeddings are drawn at random, so the figures are denoising + decoding.

It prints total seconds, seconds per step, peak memory, achieved TFLOP/s against the analytic count of
``layert2v.models.flops``, and the layer overhead: one layered forward over the job's tokens against one plain
``WanTransformer3DModel`` forward over the same number of tokens (same weights, one prompt, no routing).

    python benchmarks/paper_scale.py --device cuda                       # Table 4's job
    python benchmarks/paper_scale.py --scale tiny                        # CPU smoke run (seconds)
    python benchmarks/paper_scale.py --device cuda --ablate --steps 10   # each speed-up on and off, with diffs
    python benchmarks/paper_scale.py --device cuda --sweep --steps 5     # K = 1..4 x 41/81 frames
    torchrun --nproc-per-node 2 benchmarks/paper_scale.py --device cuda --context-parallel ulysses
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import sys
import time
import zlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from diffusers import AutoencoderKLWan
from torch.nn.attention import SDPBackend, sdpa_kernel

from layert2v.layout import LayerLayout
from layert2v.models.configs import UMT5_SEQUENCE_LENGTH, WAN21_T2V_1_3B_TRANSFORMER, WAN21_VAE
from layert2v.models.flops import latent_grid, layered_forward_flops, plain_forward_flops, sampling_flops
from layert2v.models.transformer import LayeredWanTransformer
from layert2v.models.vae import AlphaPath
from layert2v.pipeline import LayerT2VPipeline, PipelineConfig, check_video_shape
from layert2v.preflight import compression

PAPER = {"seconds": 151.0, "peak_gb": 24.0, "device": "one NVIDIA H200"}


@dataclass(frozen=True)
class Scale:
    """Model shapes and the default job of a preset."""

    transformer: dict[str, Any]
    vae: dict[str, Any]
    text_len: int
    alpha_rank: int
    frames: int
    width: int
    height: int
    steps: int
    vae_tile: dict[str, int] = field(default_factory=dict)  # enable_tiling() arguments; {} = diffusers' defaults


SCALES = {
    "paper": Scale(WAN21_T2V_1_3B_TRANSFORMER, WAN21_VAE, UMT5_SEQUENCE_LENGTH, 128, 41, 672, 384, 50),
    # Same code paths at toy widths, for CPU; small VAE tiles so tiled decoding really tiles.
    "tiny": Scale(
        {"patch_size": [1, 2, 2], "num_attention_heads": 2, "attention_head_dim": 32, "in_channels": 4,
         "out_channels": 4, "text_dim": 64, "freq_dim": 32, "ffn_dim": 128, "num_layers": 2, "rope_max_seq_len": 64},
        {"base_dim": 8, "z_dim": 4, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1, "latents_mean": [0.0] * 4,
         "latents_std": [1.0] * 4},
        16, 4, 9, 64, 64, 10,
        {"tile_sample_min_height": 32, "tile_sample_min_width": 32, "tile_sample_stride_height": 24,
         "tile_sample_stride_width": 24},
    ),
}


@dataclass
class Options:
    """What one timed job runs with; the ablation ladder varies these."""

    dtype: torch.dtype = torch.bfloat16
    fused_attention: bool = True  # SDPA's flash / memory-efficient kernels, or the math reference
    cfg_batch: bool = True
    vae_slicing: bool = False  # decode one layer at a time (exact)
    vae_tiling: bool = False  # decode in overlapping spatial tiles (blended seams: pixels move)
    compile: bool = False


# ------------------------------------------------------------------------------------------------ building
class RandomTextEncoder:
    """Stands in for UMT5-XXL: a fixed random (text_len, text_dim) embedding per prompt string (encoding excluded)."""

    def __init__(self, text_len: int, text_dim: int, device: torch.device):
        self.model = nn.Identity()  # what the pipeline moves between devices
        self.max_length, self.dim, self.device = text_len, text_dim, device

    def encode(self, prompts: list[str]) -> torch.Tensor:
        out = []
        for p in prompts:
            g = torch.Generator().manual_seed(zlib.crc32(p.encode()))
            out.append(torch.randn(self.max_length, self.dim, generator=g))
        return torch.stack(out).to(self.device)

    def check_lengths(self, named_prompts: list[tuple[str, str]]) -> None:
        """Any prompt fits: each is one fixed-length random embedding."""


def build_pipeline(scale: Scale, max_foregrounds: int, device: torch.device, dtype: torch.dtype) -> LayerT2VPipeline:
    torch.manual_seed(0)  # identical weights on every context-parallel rank
    with torch.device(device):  # initialise on the device: a 1.3B-parameter CPU init is slow
        transformer = LayeredWanTransformer(**scale.transformer, max_foregrounds=max_foregrounds)
        vae = AutoencoderKLWan(**scale.vae)
        alpha_path = AlphaPath.for_vae(vae, rank=scale.alpha_rank)
    transformer.cast_keeping_fp32(dtype)
    encoder = RandomTextEncoder(scale.text_len, scale.transformer["text_dim"], device)
    config = PipelineConfig(text_encoder="random", max_sequence_length=scale.text_len, num_frames=scale.frames,
                            height=scale.height, width=scale.width, num_inference_steps=scale.steps,
                            guidance_scale=5.0, model_id="random-weights")
    return LayerT2VPipeline(transformer, vae, alpha_path, encoder, config)


def configure(pipe: LayerT2VPipeline, scale: Scale, opts: Options) -> None:
    """Apply ``opts`` to a built pipeline (dtype casts go fp32 -> bf16 only; compile is one-way)."""
    if pipe.transformer.dtype != opts.dtype:
        pipe.transformer.cast_keeping_fp32(opts.dtype)
    pipe.cfg_batch = opts.cfg_batch
    pipe.vae.disable_tiling()
    pipe.vae.disable_slicing()
    pipe.enable_memory_savers(vae_tiling=opts.vae_tiling, vae_slicing=opts.vae_slicing, offload_text_encoder=False,
                              cfg_batch=opts.cfg_batch)
    if opts.vae_tiling:
        pipe.vae.enable_tiling(**scale.vae_tile)
    if opts.compile and pipe.transformer.blocks[0]._compiled_call_impl is None:
        pipe.transformer.compile_blocks(dynamic=False)  # the layered and the plain-Wan baseline's forwards


# ------------------------------------------------------------------------------------------------ measuring
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    """Peak allocated GPU memory since the last reset (max over ranks); None on CPU (see peak_rss_gb)."""
    if device.type != "cuda":
        return None
    peak = torch.tensor(float(torch.cuda.max_memory_allocated(device)), device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
    return peak.item() / 1e9


def peak_rss_gb() -> float:
    """High-water resident memory of this process (Linux reports KiB); on CPU the only memory figure."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def prompts_for(k: int) -> dict[str, Any]:
    return {"prompt": "a red fox runs across a snowy meadow", "background_prompt": "a snowy meadow",
            "foreground_prompts": [f"a red fox, layer {i + 1}" for i in range(k)]}


def warm_up(pipe: LayerT2VPipeline, k: int, frames: int, width: int, height: int, opts: Options) -> None:
    """One guided transformer call at the job's shapes: kernel selection, allocator growth and compilation happen
    here instead of in the first timed step."""
    layout = LayerLayout(k)
    z, (temporal, spatial) = pipe.vae.config.z_dim, compression(pipe.vae.config)
    latents = torch.randn(1, z, layout.num_segments * ((frames - 1) // temporal + 1), height // spatial,
                          width // spatial, device=pipe.device)
    ctx = pipe.encode_prompts(["warm-up"] * layout.num_prompts)[None].expand(2, -1, -1, -1)
    with torch.no_grad(), attention_context(opts):
        pipe.guided_velocity(latents, torch.tensor(500.0, device=pipe.device), ctx.to(pipe.device, pipe.dtype),
                             layout, guidance=5.0)
    synchronize(pipe.device)


def attention_context(opts: Options):
    return nullcontext() if opts.fused_attention else sdpa_kernel(SDPBackend.MATH)


def run_job(pipe: LayerT2VPipeline, k: int, frames: int, width: int, height: int, steps: int, opts: Options,
            warmup: bool = True, keep_outputs: bool = False) -> dict[str, Any]:
    """The full job through the pipeline: stub-encode, ``steps`` CFG sampling steps, decode every layer."""
    device = pipe.device
    if warmup:
        warm_up(pipe, k, frames, width, height, opts)
    reset_peak(device)
    step_ends: list[float] = []
    first_latents: list[torch.Tensor] = []

    def on_step(pipe, i: int, t: torch.Tensor, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        synchronize(device)  # so each step's time is its own
        step_ends.append(time.perf_counter())
        if keep_outputs and i == 0:
            first_latents.append(tensors["latents"].float().cpu())
        return tensors

    start = time.perf_counter()
    with attention_context(opts):
        video = pipe(**prompts_for(k), num_frames=frames, width=width, height=height, num_inference_steps=steps,
                     seed=0, progress=False, callback_on_step_end=on_step)
    total = time.perf_counter() - start
    timings = video.metadata["timings"]
    denoise_start = start + timings["encode_prompts_s"] + timings["encode_conditions_s"]
    step_s = np.diff([denoise_start, *step_ends]).tolist()
    layout = LayerLayout(k)
    factors = compression(pipe.vae.config)
    flops = sampling_flops(layered_forward_flops(pipe.transformer.config, layout, frames, height, width,
                                                 pipe.config.max_sequence_length, factors), steps)
    result = {
        "foregrounds": k, "frames": frames, "width": width, "height": height, "steps": steps,
        "tokens": layout.num_segments * math.prod(latent_grid(pipe.transformer.config, frames, height, width, factors)),
        "total_s": total, "denoise_s": sum(step_s), "decode_s": timings["decode_s"],
        "step_s_median": statistics.median(step_s), "step_s_mean": statistics.fmean(step_s),
        "tflops": flops / 1e12, "achieved_tflop_s": flops / 1e12 / sum(step_s),
        "peak_gb": peak_gb(device),
    }
    if keep_outputs:
        result["first_latents"] = first_latents[0]
        result["video"] = np.concatenate([np.asarray(a, np.float32).reshape(-1) for a in
                                          (video.full, video.background, *video.foregrounds, *video.alphas)])
    return result


def layer_overhead(pipe: LayerT2VPipeline, k: int, frames: int, width: int, height: int, opts: Options,
                   reps: int = 3) -> dict[str, float]:
    """Seconds of one layered forward vs one plain Wan forward over the same tokens and batch, same weights."""
    model, device, dtype = pipe.transformer, pipe.device, pipe.dtype
    layout = LayerLayout(k)
    batch = 2 if opts.cfg_batch else 1
    text_len, text_dim = pipe.config.max_sequence_length, model.config.text_dim
    g = torch.Generator().manual_seed(0)
    temporal, spatial = compression(pipe.vae.config)
    x = torch.randn(batch, pipe.vae.config.z_dim, layout.num_segments * ((frames - 1) // temporal + 1),
                    height // spatial, width // spatial, generator=g).to(device, dtype)
    ctx = torch.randn(batch, layout.num_prompts, text_len, text_dim, generator=g).to(device, dtype)
    t = torch.full((batch,), 500.0, device=device)

    def seconds(call) -> float:
        call()  # warm-up (and compilation)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(reps):
            call()
        synchronize(device)
        return (time.perf_counter() - start) / reps

    with torch.no_grad(), attention_context(opts):
        layered = seconds(lambda: model(x, t, ctx, layout=layout))
        plain = seconds(lambda: model(x, t, ctx[:, 0]))  # layout=None: WanTransformer3DModel.forward
    tokens = x.shape[2] * x.shape[3] * x.shape[4] // 4
    return {"layered_forward_s": layered, "plain_forward_s": plain, "overhead": layered / plain,
            "layered_forward_tflops": layered_forward_flops(model.config, layout, frames, height, width,
                                                            text_len).total * batch / 1e12,
            "plain_forward_tflops": plain_forward_flops(model.config, tokens, text_len).total * batch / 1e12}


# ------------------------------------------------------------------------------------------------ modes
def fmt_gb(v: float | None) -> str:
    return "n/a (CPU)" if v is None else f"{v:.1f} GB"


def report_job(r: dict[str, Any], over: dict[str, float] | None, device: torch.device) -> None:
    print(f"job: K={r['foregrounds']} foreground(s), {r['frames']} frames, {r['width']}x{r['height']}, "
          f"{r['tokens']:,} tokens, {r['steps']} steps, CFG")
    print(f"  total            {r['total_s']:.2f} s  (denoise {r['denoise_s']:.2f} s + decode {r['decode_s']:.2f} s;"
          " text encoding excluded)")
    print(f"  per step         {r['step_s_median']:.3f} s median, {r['step_s_mean']:.3f} s mean")
    print(f"  peak memory      {fmt_gb(r['peak_gb'])}" + ("" if device.type == "cuda" else
                                                          f"; process peak RSS {peak_rss_gb():.2f} GB"))
    print(f"  FLOPs            {r['tflops']:.4g} TFLOP (analytic, denoising) -> {r['achieved_tflop_s']:.4g} TFLOP/s")
    if over:
        print(f"  layer overhead   layered forward {over['layered_forward_s']:.4f} s vs plain Wan "
              f"{over['plain_forward_s']:.4f} s at the same tokens: x{over['overhead']:.3f} "
              f"(analytic FLOPs x{over['layered_forward_tflops'] / over['plain_forward_tflops']:.3f})")


def sweep(pipe: LayerT2VPipeline, scale: Scale, args: argparse.Namespace, opts: Options) -> list[dict[str, Any]]:
    """K = 1..4 x (41, 81) frames; an out-of-memory is caught and noted."""
    rows = []
    for frames in args.sweep_frames:
        for k in range(1, args.sweep_max_k + 1):
            try:
                r = run_job(pipe, k, frames, args.width, args.height, args.steps, opts, warmup=not args.no_warmup)
                r["projected_50_step_s"] = r["total_s"] - r["denoise_s"] + 50 * r["step_s_median"]
            except torch.cuda.OutOfMemoryError:
                r = {"foregrounds": k, "frames": frames, "oom": True}
            gc.collect()
            if pipe.device.type == "cuda":
                torch.cuda.empty_cache()
            rows.append(r)
            if is_main():
                print(json.dumps(r), flush=True)
    if is_main():
        print(f"\n| K | frames/layer | tokens | s/step | decode s | total s ({args.steps} steps) | "
              "projected 50-step s | peak GB |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r.get("oom"):
                print(f"| {r['foregrounds']} | {r['frames']} | | OOM | | | | OOM |")
                continue
            peak = "n/a" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
            print(f"| {r['foregrounds']} | {r['frames']} | {r['tokens']:,} | {r['step_s_median']:.3f} | "
                  f"{r['decode_s']:.2f} | {r['total_s']:.2f} | {r['projected_50_step_s']:.1f} | {peak} |")
    return rows


LADDER = [
    ("straightforward: fp32, math SDPA, CFG as 2 forwards, batched untiled decode, eager",
     Options(dtype=torch.float32, fused_attention=False, cfg_batch=False)),
    ("+ fused SDPA kernels (flash / memory-efficient)", Options(dtype=torch.float32, cfg_batch=False)),
    ("+ CFG batched (one batch-2 forward)", Options(dtype=torch.float32)),
    ("+ bf16 transformer (fp32 modulation tables and norms)", Options()),
    ("+ VAE sliced decode (one layer at a time)", Options(vae_slicing=True)),
    ("+ VAE tiled decode (changes pixels at tile seams)", Options(vae_slicing=True, vae_tiling=True)),
    ("+ torch.compile (one graph shared by all blocks)", Options(vae_slicing=True, vae_tiling=True, compile=True)),
]


def ablate(scale: Scale, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Each change added on top of the previous, in one process; outputs compared with the straightforward path."""
    pipe = build_pipeline(scale, args.foregrounds, device, torch.float32)
    ladder = [(name, o) for name, o in LADDER if args.compile or not o.compile]
    if device.type == "cpu" and not args.compile:
        print("(torch.compile rung skipped; add --compile to include it: inductor compiles for about a minute on CPU)")
    rows, ref, prev = [], None, None
    for name, opts in ladder:
        configure(pipe, scale, opts)
        r = run_job(pipe, args.foregrounds, args.frames, args.width, args.height, args.steps, opts,
                    warmup=not args.no_warmup, keep_outputs=True)
        out = {"first_latents": r.pop("first_latents"), "video": r.pop("video")}
        ref, prev = ref or out, prev or out
        r["name"] = name
        r["latents_step1_diff_vs_previous"] = (out["first_latents"] - prev["first_latents"]).abs().max().item()
        r["latents_step1_max_abs"] = out["first_latents"].abs().max().item()  # the scale those diffs are on
        r["video_diff_vs_previous"] = float(np.abs(out["video"] - prev["video"]).max())
        r["video_diff_vs_straightforward"] = float(np.abs(out["video"] - ref["video"]).max())
        prev = out
        rows.append(r)
        print(f"{name}: {r['total_s']:.2f} s, {r['step_s_median']:.4f} s/step, decode {r['decode_s']:.2f} s, "
              f"peak {fmt_gb(r['peak_gb'])}, max|d| vs previous: latents after step 1 "
              f"{r['latents_step1_diff_vs_previous']:.2e}, video {r['video_diff_vs_previous']:.2e}", flush=True)
    print("\n| configuration | total s | s/step | decode s | peak GB | max abs diff vs previous row: latents after "
          "step 1 (max abs latent) | ... decoded video | max abs diff vs first row: decoded video |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        peak = "n/a" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
        print(f"| {r['name']} | {r['total_s']:.2f} | {r['step_s_median']:.4f} | {r['decode_s']:.2f} | {peak} | "
              f"{r['latents_step1_diff_vs_previous']:.2e} ({r['latents_step1_max_abs']:.3g}) | "
              f"{r['video_diff_vs_previous']:.2e} | "
              f"{r['video_diff_vs_straightforward']:.2e} |")
    print("text encoder off the device after encoding: not in this run (encoding is excluded); "
          "LayerT2VPipeline.enable_memory_savers(offload_text_encoder=True) frees its weights for the whole job")
    return rows


# ------------------------------------------------------------------------------------------------ main
def is_main() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", "--config", choices=sorted(SCALES), default="paper",
                   help="paper: Wan2.1-T2V-1.3B shapes (default); tiny: toy widths for CPU")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu | cuda")
    p.add_argument("--dtype", choices=["bf16", "fp32"], help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--frames", type=int, help="frames per layer (4k+1); default: the preset's (paper: 41)")
    p.add_argument("--size", help="WxH; default: the preset's (paper: 672x384)")
    p.add_argument("--foregrounds", type=int, default=1, help="K foreground layers (default 1)")
    p.add_argument("--steps", type=int, help="sampling steps; default: the preset's (paper: 50)")
    p.add_argument("--compile", action="store_true", help="torch.compile the blocks (regional)")
    p.add_argument("--no-cfg-batch", action="store_true", help="CFG as two batch-1 forwards per step")
    p.add_argument("--vae-slicing", action="store_true", help="decode one layer at a time (exact, less memory)")
    p.add_argument("--vae-tiling", action="store_true", help="decode in spatial tiles (less memory; seams blend)")
    p.add_argument("--no-overhead", action="store_true", help="skip the layered-vs-plain forward comparison")
    p.add_argument("--overhead-reps", type=int, help="timed forwards per side (default: paper 3, tiny 20)")
    p.add_argument("--no-warmup", action="store_true", help="time the very first step too")
    p.add_argument("--ablate", action="store_true", help="each speed-up on and off, with output diffs")
    p.add_argument("--sweep", action="store_true", help="K = 1..4 x 41/81 frames: seconds and peak memory")
    p.add_argument("--sweep-frames", type=int, nargs="+", default=[41, 81])
    p.add_argument("--sweep-max-k", type=int, default=4)
    p.add_argument("--context-parallel", choices=["ulysses", "ring"],
                   help="shard tokens over the torchrun processes (launch with torchrun --nproc-per-node N)")
    p.add_argument("--threads", type=int,
                   help="CPU threads for torch (tiny default: 1, toy matmuls only lose to thread hand-offs)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.ablate and (args.sweep or args.context_parallel):
        p.error("--ablate runs alone (one process, its own configurations)")
    scale = SCALES[args.scale]
    args.frames = args.frames or scale.frames
    args.steps = args.steps or scale.steps
    args.width, args.height = (map(int, args.size.lower().split("x")) if args.size else (scale.width, scale.height))
    if args.sweep and not args.size:
        args.width, args.height = scale.width, scale.height
    if args.sweep and args.scale == "tiny" and args.sweep_frames == [41, 81]:
        args.sweep_frames = [9, 17]  # toy lengths on CPU
    check_video_shape(args.frames, args.height, args.width)
    return args


def setup_device(args: argparse.Namespace) -> torch.device:
    threads = args.threads or (1 if args.scale == "tiny" else None)
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(args.device)
    if args.context_parallel:
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    elif device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = setup_device(args)
    scale = SCALES[args.scale]
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("bf16" if device.type == "cuda"
                                                                         else "fp32")]
    opts = Options(dtype=dtype, cfg_batch=not args.no_cfg_batch, vae_slicing=args.vae_slicing,
                   vae_tiling=args.vae_tiling, compile=args.compile)
    if is_main():
        threads = f"CPU, {torch.get_num_threads()} thread(s)"
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else threads
        print(f"paper_scale: --scale {args.scale} on {where}, {str(dtype).removeprefix('torch.')}, "
              f"torch {torch.__version__}; random weights, text encoding excluded")
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    if args.ablate:
        results["ablation"] = ablate(scale, args, device)
    else:
        pipe = build_pipeline(scale, args.sweep_max_k if args.sweep else args.foregrounds, device, dtype)
        configure(pipe, scale, opts)
        if args.context_parallel:
            from layert2v.models.context_parallel import enable_context_parallel

            if args.context_parallel == "ring":
                pipe.transformer.set_attention_backend("_native_cudnn")  # ring merges by log-sum-exp (bf16, CUDA)
            enable_context_parallel(pipe.transformer, args.context_parallel)
        if args.sweep:
            results["sweep"] = sweep(pipe, scale, args, opts)
        else:
            r = run_job(pipe, args.foregrounds, args.frames, args.width, args.height, args.steps, opts,
                        warmup=not args.no_warmup)
            over = None
            if not args.no_overhead and not args.context_parallel:
                reps = args.overhead_reps or (20 if args.scale == "tiny" else 3)
                over = layer_overhead(pipe, args.foregrounds, args.frames, args.width, args.height, opts, reps)
            if is_main():
                report_job(r, over, device)
                if args.scale == "paper" and (args.frames, args.width, args.height, args.foregrounds,
                                              args.steps) == (41, 672, 384, 1, 50):
                    print(f"  paper (Table 4)  {PAPER['seconds']:.0f} s, {PAPER['peak_gb']:.0f} GB peak on "
                          f"{PAPER['device']} (with text encoding; their code and settings)")
            results["job"], results["layer_overhead"] = r, over
    if args.json and is_main():
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
