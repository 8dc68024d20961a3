"""Seconds per training step and peak memory of the layered transformer for each Wan stage of configs/wan.

Real shapes: the Wan2.1-T2V-1.3B transformer (random weights), LoRA rank 128 + LayerAdaLN trainable, bf16 autocast,
each stage's frames, size, foreground count and per-GPU batch, UMT5's 512-token prompts; gradient checkpointing off
and on. One step = forward, L_FM, backward, AdamW step on random latents (VAE encoding and the text encoder are not
timed: a latent cache removes them). `--device cuda` measures the real shapes; on CPU the script runs a reduced
shape (2 of the 30 blocks, frames and sides quartered, batch 1, fp32) and says so.

    python benchmarks/train_step.py [--device cuda] [--steps 3]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from layert2v.layer_weights import add_transformer_lora  # noqa: E402
from layert2v.layout import LayerLayout  # noqa: E402
from layert2v.models.configs import UMT5_DIM, UMT5_SEQUENCE_LENGTH, WAN21_T2V_1_3B_TRANSFORMER  # noqa: E402
from layert2v.models.transformer import LayeredWanTransformer  # noqa: E402

# (name, frames, height, width, foregrounds, per-GPU batch) of configs/wan's transformer stages
STAGES = [("2a_layered_192x336", 9, 192, 336, 1, 8), ("2b_layered_384x672", 41, 384, 672, 1, 4),
          ("3_multi_384x672", 41, 384, 672, 3, 1)]


def measure(name: str, frames: int, height: int, width: int, k: int, batch: int, checkpointing: bool,
            device: torch.device, steps: int, reduced: bool) -> str:
    config = dict(WAN21_T2V_1_3B_TRANSFORMER)
    prompt_len = UMT5_SEQUENCE_LENGTH
    if reduced:
        config["num_layers"] = 2
        frames, height, width, batch, prompt_len = (frames - 1) // 4 + 1, height // 4, width // 4, 1, 64
        frames += (1 - frames) % 4  # back to 4k+1
        height, width = height // 16 * 16, width // 16 * 16
    torch.manual_seed(0)
    model = LayeredWanTransformer(**config, max_foregrounds=k).to(device)
    model.requires_grad_(False)
    add_transformer_lora(model, 128)
    model.layer_adaln.requires_grad_(True)
    if checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    layout = LayerLayout(k)
    t_lat = (frames - 1) // 4 + 1
    shape = (batch, 16, layout.num_segments * t_lat, height // 8, width // 8)
    context = torch.randn(batch, layout.num_prompts, prompt_len, UMT5_DIM, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        z0, z1 = torch.randn(shape, device=device), torch.randn(shape, device=device)
        t = torch.rand(batch, device=device)
        t_seg = layout.segment_timesteps(t)
        z_t = (1 - t.view(-1, 1, 1, 1, 1)) * z0 + t.view(-1, 1, 1, 1, 1) * z1
        with autocast:
            v = model(z_t, t_seg * 1000, context, layout=layout).sample
        loss = F.mse_loss(v.float(), z1 - z0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB peak allocated"
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB process peak RSS"
    tokens = layout.num_segments * t_lat * (height // 16) * (width // 16)
    step = sum(times[1:]) / steps
    return (f"{name:<20} {frames}x{height}x{width} K={k} batch {batch} ({tokens} tokens/sample) checkpointing "
            f"{'on ' if checkpointing else 'off'}: {step:.2f} s/step, {peak}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per case (after one warm-up step)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    reduced = device.type != "cuda"
    if reduced:
        print("CPU: reduced shapes (2 of 30 blocks, frames and sides / 4, batch 1, 64-token prompts, fp32); "
              "run with --device cuda for the real ones")
    import multiprocessing

    for stage in STAGES:
        for checkpointing in (False, True):
            case = (*stage, checkpointing, device, args.steps, reduced)
            if device.type == "cuda":
                print(measure(*case), flush=True)
                continue
            # one fresh process per case, so each peak RSS is that case's own
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                print(pool.apply(measure, case), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
