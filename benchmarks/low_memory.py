"""Low-memory running of the layered transformer: diffusers' group offloading and first-block cache, measured.

The real Wan2.1-T2V-1.3B transformer config with random weights (speed and memory do not depend on the values),
one layered denoising step = one CFG-batched forward over full | background | foreground | alpha, and one
512 x 4096 embedding per prompt (UMT5-XXL's output shape). Rows:

* no offloading, block-level and leaf-level group offloading: peak memory while denoising and seconds per step.
  On a CPU the weights are offloaded to disk (``offload_to_disk_path``), the one offload that lowers a CPU
  process's resident memory; on CUDA they wait in CPU memory and stream in (``use_stream``).
* first-block cache: seconds per step over a short flow-matching schedule and the max difference of the final
  latents against the same schedule uncached.

The model is built once, saved to a temporary directory, and every row loads it in a fresh process, so one row's
peak never hides another's. Peak RSS is sampled while the steps run (loading is not counted); on CUDA the peak is
``torch.cuda.max_memory_allocated``. The rows run with glibc's ``MALLOC_MMAP_THRESHOLD_=65536``: otherwise glibc
raises its mmap threshold after the first large free, later weight tensors come from the heap, and memory the
offloading frees stays resident, which would measure the allocator rather than the offloading.

    python benchmarks/low_memory.py                                  # CPU, toy size (minutes)
    python benchmarks/low_memory.py --device cuda --frames 41 --size 672x384 --dtype bf16   # Table 4's size
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from layert2v.layout import LayerLayout
from layert2v.models.configs import UMT5_DIM, UMT5_SEQUENCE_LENGTH, WAN21_T2V_1_3B_TRANSFORMER
from layert2v.models.transformer import LayeredWanTransformer

MODES = ("none", "block", "leaf", "first-block-cache")


class PeakRSS:
    """The largest resident set size seen while the context runs, sampled every 2 ms from /proc/self/statm."""

    def __enter__(self) -> PeakRSS:
        self.peak, self._stop = rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def inputs(args: argparse.Namespace, device: torch.device, dtype: torch.dtype):
    layout = LayerLayout(1)
    width, height = (int(v) for v in args.size.split("x"))
    t_lat = (args.frames - 1) // 4 + 1
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, layout.num_segments * t_lat, height // 8, width // 8, generator=g)
    context = torch.randn(2, layout.num_prompts, UMT5_SEQUENCE_LENGTH, UMT5_DIM, generator=g)
    return layout, latents.to(device), context.to(device, dtype)


def denoise(model, layout, latents, context, steps: int, dtype: torch.dtype, per_step: list[float]) -> torch.Tensor:
    """Euler flow matching over ``steps`` evenly spaced times with CFG (guidance 5): the pipeline's loop, bare."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    for i in range(steps):
        start = time.perf_counter()
        t = torch.full((2,), float(sigmas[i]) * 1000, device=latents.device)
        with model.cache_context("denoise"):
            v = model(torch.cat([latents] * 2).to(dtype), layout.segment_timesteps(t), context,
                      layout=layout).sample.float()
        v_uncond, v_cond = v.chunk(2)
        latents = latents + (sigmas[i + 1] - sigmas[i]) * (v_uncond + 5.0 * (v_cond - v_uncond))
        if latents.device.type == "cuda":
            torch.cuda.synchronize()
        per_step.append(time.perf_counter() - start)
    return latents


def run_row(args: argparse.Namespace) -> dict:
    """One row, in this (fresh) process: load, set the mode up, warm up, measure."""
    from diffusers.hooks import FirstBlockCacheConfig

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model = LayeredWanTransformer.from_pretrained(args.row_model, torch_dtype=dtype).eval().requires_grad_(False)
    cuda = device.type == "cuda"
    if args.row in ("block", "leaf"):
        offload = {"offload_to_disk_path": args.row_offload_dir} if not cuda else {"use_stream": True}
        model.enable_group_offload(device, offload_device=torch.device("cpu"), num_blocks_per_group=1,
                                   offload_type=f"{args.row}_level", **offload)
    else:
        model.to(device)
    layout, latents, context = inputs(args, device, dtype)
    if args.row == "first-block-cache":
        times: list[float] = []
        residuals = []  # first block's residual per step: what the cache compares against its threshold
        hook = model.blocks[0].register_forward_hook(lambda module, args, out: residuals.append(out - args[0]))
        with torch.no_grad():
            ref = denoise(model, layout, latents, context, args.fbc_steps, dtype, times)
        hook.remove()
        changes = [float((b - a).abs().mean() / a.abs().mean()) for a, b in zip(residuals, residuals[1:])]
        with torch.no_grad():
            model.enable_cache(FirstBlockCacheConfig(threshold=args.fbc_threshold))
            tail_runs = []  # the last block's attention runs only in steps the cache does not skip
            model.blocks[-1].attn1.register_forward_pre_hook(lambda module, inputs: tail_runs.append(1))
            cached_times: list[float] = []
            out = denoise(model, layout, latents, context, args.fbc_steps, dtype, cached_times)
        return {"s_per_step": sum(cached_times) / len(cached_times), "s_per_step_uncached": sum(times) / len(times),
                "max_abs_diff": float((out - ref).abs().max()), "max_abs": float(ref.abs().max()),
                "steps": args.fbc_steps, "skipped": args.fbc_steps - len(tail_runs), "threshold": args.fbc_threshold,
                "residual_changes": [round(c, 3) for c in changes]}
    times = []
    with torch.no_grad():
        denoise(model, layout, latents, context, 1, dtype, [])  # warm-up (and first onload)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        with PeakRSS() as rss:
            denoise(model, layout, latents, context, args.steps, dtype, times)
    return {"s_per_step": sum(times) / len(times), "peak_rss_gb": rss.peak / 1e9,
            "peak_cuda_gb": torch.cuda.max_memory_allocated(device) / 1e9 if cuda else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16",
                   help="transformer weights (Wan's modulation tables and norms stay fp32)")
    p.add_argument("--frames", type=int, default=5, help="frames per layer (4k+1)")
    p.add_argument("--size", default="64x64", help="WIDTHxHEIGHT per layer, multiples of 16")
    p.add_argument("--steps", type=int, default=2, help="measured steps per offloading row")
    p.add_argument("--fbc-steps", type=int, default=10, help="steps of the first-block-cache schedule")
    p.add_argument("--fbc-threshold", type=float, default=0.2,
                   help="FirstBlockCacheConfig threshold (diffusers' default 0.05 skips nothing at 10 random-weight "
                        "steps)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--row", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--row-model", help=argparse.SUPPRESS)
    p.add_argument("--row-offload-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.row:  # child process: one row, JSON on the last line
        print(json.dumps(run_row(args)))
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but this torch sees no CUDA device; run on a GPU or use --device cpu")

    with tempfile.TemporaryDirectory(prefix="layert2v-low-memory-") as tmp:
        print(f"building the Wan2.1-T2V-1.3B transformer config once (random weights, {args.dtype}) ...", flush=True)
        torch.manual_seed(0)
        model = LayeredWanTransformer(**WAN21_T2V_1_3B_TRANSFORMER).eval()
        params = sum(t.numel() for t in model.parameters())
        model.cast_keeping_fp32(getattr(torch, args.dtype)).save_pretrained(Path(tmp) / "model")
        del model
        tokens = LayerLayout(1).num_segments * ((args.frames - 1) // 4 + 1) * (int(args.size.split("x")[0]) // 16) \
            * (int(args.size.split("x")[1]) // 16)
        print(f"{params / 1e9:.2f} B parameters; {args.frames} frames {args.size}, K=1: {tokens} tokens, CFG batch 2, "
              f"3 prompts x {UMT5_SEQUENCE_LENGTH} text tokens; {args.device}, {torch.get_num_threads()} thread(s)")
        results = {}
        for row in MODES:
            command = [sys.executable, __file__, "--row", row, "--row-model", str(Path(tmp) / "model"),
                       "--row-offload-dir", str(Path(tmp) / f"offload-{row}"), "--device", args.device,
                       "--dtype", args.dtype, "--frames", str(args.frames), "--size", args.size,
                       "--steps", str(args.steps), "--fbc-steps", str(args.fbc_steps),
                       "--fbc-threshold", str(args.fbc_threshold)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode:
                raise SystemExit(f"row {row} failed:\n{done.stderr[-3000:]}")
            results[row] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  {row}: {results[row]}", flush=True)

    memory = "peak CUDA GB" if args.device.startswith("cuda") else "peak RSS GB (while denoising)"
    print(f"\n| offloading | {memory} | s/step |\n|---|---|---|")
    for row, name in (("none", "none"), ("block", "block-level"), ("leaf", "leaf-level")):
        r = results[row]
        peak = r["peak_cuda_gb"] if args.device.startswith("cuda") else r["peak_rss_gb"]
        print(f"| {name} | {peak:.2f} | {r['s_per_step']:.2f} |")
    r = results["first-block-cache"]
    print(f"\nfirst-block cache (threshold {r['threshold']}, {r['skipped']} of {r['steps']} steps skipped, no "
          f"offloading): {r['s_per_step']:.2f} s/step vs {r['s_per_step_uncached']:.2f} uncached; final latents "
          f"max abs diff {r['max_abs_diff']:.3g} (max abs latent {r['max_abs']:.3g}); first-block residual change "
          f"per step, uncached: {r['residual_changes']}")


if __name__ == "__main__":
    main()
