"""Seconds per training step and peak memory of the layered transformer for each Wan stage of configs/wan, in one
process and under each multi-GPU engine of configs/accelerate (DDP, FSDP2, DeepSpeed ZeRO-2).

Real shapes: the Wan2.1-T2V-1.3B transformer (random weights), LoRA rank 128 + LayerAdaLN trainable, bf16 autocast,
each stage's frames, size, foreground count and per-GPU batch, UMT5's 512-token prompts; gradient checkpointing off
and on. One step = forward, L_FM, backward, AdamW step on random latents (VAE encoding and the text encoder are not
timed: a latent cache removes them). `--device cuda` measures the real shapes; on CPU the script runs a reduced
shape (2 of the 30 blocks, frames and sides quartered, batch 1, fp32) and says so.

Engines: on CPU, each engine runs stage 2a's reduced shape in 2 processes (gloo, set up as `accelerate launch` sets
them up from configs/accelerate: tests/helpers.start_cpu_process), batch 1 each. On GPUs, launch the script with the
engine's file and --engine to measure the real shapes of every stage (checkpointing on, as the configs train):

    python benchmarks/train_step.py [--device cuda] [--steps 3]
    accelerate launch --config_file configs/accelerate/fsdp.yaml benchmarks/train_step.py --engine fsdp2
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
sys.path.insert(0, str(ROOT / "tests"))  # helpers.start_cpu_process: several CPU processes as the launcher's

from layert2v.layer_weights import add_transformer_lora  # noqa: E402
from layert2v.layout import LayerLayout  # noqa: E402
from layert2v.models.configs import UMT5_DIM, UMT5_SEQUENCE_LENGTH, WAN21_T2V_1_3B_TRANSFORMER  # noqa: E402
from layert2v.models.transformer import LayeredWanTransformer  # noqa: E402

# (name, frames, height, width, foregrounds, per-GPU batch) of configs/wan's transformer stages
STAGES = [("2a_layered_192x336", 9, 192, 336, 1, 8), ("2b_layered_384x672", 41, 384, 672, 1, 4),
          ("3_multi_384x672", 41, 384, 672, 3, 1)]


def shapes(frames: int, height: int, width: int, batch: int, reduced: bool) -> tuple[dict, int, int, int, int, int]:
    """The transformer config, frames, height, width, batch and prompt length to measure (reduced on CPU)."""
    config = dict(WAN21_T2V_1_3B_TRANSFORMER)
    prompt_len = UMT5_SEQUENCE_LENGTH
    if reduced:
        config["num_layers"] = 2
        frames, height, width, batch, prompt_len = (frames - 1) // 4 + 1, height // 4, width // 4, 1, 64
        frames += (1 - frames) % 4  # back to 4k+1
        height, width = height // 16 * 16, width // 16 * 16
    return config, frames, height, width, batch, prompt_len


def layered_model(config: dict, k: int, checkpointing: bool) -> LayeredWanTransformer:
    """The stage's transformer: frozen base, LoRA rank 128 + LayerAdaLN trainable."""
    torch.manual_seed(0)
    model = LayeredWanTransformer(**config, max_foregrounds=k)
    model.requires_grad_(False)
    add_transformer_lora(model, 128)
    model.layer_adaln.requires_grad_(True)
    if checkpointing:
        model.enable_gradient_checkpointing()
    return model.train()


def timed_steps(model, optimizer, k: int, frames: int, height: int, width: int, batch: int, prompt_len: int,
                device: torch.device, steps: int, backward=None) -> float:
    """Seconds per step over ``steps`` steps after one warm-up step (``backward``: the engine's, if any)."""
    layout = LayerLayout(k)
    t_lat = (frames - 1) // 4 + 1
    shape = (batch, 16, layout.num_segments * t_lat, height // 8, width // 8)
    context = torch.randn(batch, layout.num_prompts, prompt_len, UMT5_DIM, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    times = []
    for _ in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        z0, z1 = torch.randn(shape, device=device), torch.randn(shape, device=device)
        t = torch.rand(batch, device=device)
        t_seg = layout.segment_timesteps(t)
        z_t = (1 - t.view(-1, 1, 1, 1, 1)) * z0 + t.view(-1, 1, 1, 1, 1) * z1
        with autocast:
            v = model(z_t, t_seg * 1000, context, layout=layout).sample
        loss = F.mse_loss(v.float(), z1 - z0)
        (backward or torch.Tensor.backward)(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / steps


def peak_memory(device: torch.device) -> float:
    """GiB: peak allocated on a GPU, the process's peak resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(name: str, frames: int, height: int, width: int, k: int, batch: int, checkpointing: bool,
            device: torch.device, steps: int, reduced: bool) -> str:
    config, frames, height, width, batch, prompt_len = shapes(frames, height, width, batch, reduced)
    model = layered_model(config, k, checkpointing).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step = timed_steps(model, optimizer, k, frames, height, width, batch, prompt_len, device, steps)
    peak = f"{peak_memory(device):.{1 if device.type == 'cuda' else 2}f} GiB " + (
        "peak allocated" if device.type == "cuda" else "process peak RSS")
    tokens = LayerLayout(k).num_segments * ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)
    return (f"{name:<20} {frames}x{height}x{width} K={k} batch {batch} ({tokens} tokens/sample) checkpointing "
            f"{'on ' if checkpointing else 'off'}: {step:.2f} s/step, {peak}")


# ------------------------------------------------------------------------------------------------------- engines
ENGINE_NAMES = {"ddp": "DDP", "fsdp2": "FSDP2", "zero2": "DeepSpeed ZeRO-2"}


def engine_step(engine: str, stage: tuple, checkpointing: bool, steps: int, reduced: bool) -> tuple[float, float]:
    """(s/step, peak GiB) of ``stage`` under the accelerator this process was launched with, in every process."""
    from accelerate import Accelerator

    from layert2v.training.config import TrainConfig
    from layert2v.training.trainer import check_engine

    name, frames, height, width, k, batch = stage
    config, frames, height, width, batch, prompt_len = shapes(frames, height, width, batch, reduced)
    accelerator = Accelerator(mixed_precision="no" if reduced else "bf16")
    model = layered_model(config, k, checkpointing)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    cfg = TrainConfig.from_yaml(ROOT / "configs" / "wan" / f"{name}.yaml")
    cfg.train.batch_size = batch
    check_engine(cfg, accelerator, model)  # FSDP: the layered stage; DeepSpeed: its batch from the stage config
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step = timed_steps(model, optimizer, k, frames, height, width, batch, prompt_len, device, steps,
                       backward=accelerator.backward)
    peak = torch.tensor([peak_memory(device)], device=device)
    return step, float(accelerator.reduce(peak, "max"))  # the largest process's


def _cpu_engine(rank: int, engine: str, port: int, env: dict, steps: int, out: str) -> None:
    from helpers import start_cpu_process

    start_cpu_process(engine, rank, 2, port, env)
    step, peak = engine_step(engine, STAGES[0], False, steps, reduced=True)
    if rank == 0:
        Path(out).write_text(f"{step} {peak}")
    torch.distributed.destroy_process_group()


def cpu_engine_row(engine: str, steps: int) -> str:
    """``engine`` at stage 2a's reduced shape in 2 CPU processes (gloo), batch 1 each."""
    import tempfile

    import torch.multiprocessing as mp
    from helpers import free_port, launcher_env

    label = f"{ENGINE_NAMES[engine]:<17} 2 processes, {STAGES[0][0]} reduced, batch 1 each"
    if engine == "zero2":
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            return f"{label}: not measured, DeepSpeed is not installed (pip install -e '.[deepspeed]')"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result"
        mp.spawn(_cpu_engine, args=(engine, free_port(), launcher_env(engine, 2), steps, str(out)), nprocs=2)
        step, peak = map(float, out.read_text().split())
    return f"{label}: {step:.2f} s/step, {peak:.2f} GiB peak RSS (largest process)"


def launched_engine(engine: str, steps: int) -> None:
    """Under `accelerate launch` on GPUs: ``engine`` at the real shapes of every stage, checkpointing on."""
    from accelerate import PartialState

    for stage in STAGES:
        step, peak = engine_step(engine, stage, True, steps, reduced=False)
        if PartialState().is_main_process:
            print(f"{ENGINE_NAMES[engine]:<17} {PartialState().num_processes} GPUs, {stage[0]} batch {stage[5]} per "
                  f"GPU, checkpointing on: {step:.2f} s/step, {peak:.1f} GiB peak allocated (largest GPU)",
                  flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per case (after one warm-up step)")
    parser.add_argument("--engine", choices=sorted(ENGINE_NAMES),
                        help="under accelerate launch with that engine's configs/accelerate file: the real shapes")
    args = parser.parse_args(argv)
    if args.engine:
        launched_engine(args.engine, args.steps)
        return 0
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
    if reduced:
        print("Engines (configs/accelerate) on CPU, gloo, checkpointing off; real shapes on GPUs: accelerate launch "
              "--config_file configs/accelerate/{ddp,fsdp,deepspeed_zero2}.yaml benchmarks/train_step.py "
              "--engine {ddp,fsdp2,zero2}")
        for engine in ENGINE_NAMES:
            print(cpu_engine_row(engine, args.steps), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
