"""Tiny models and clips shared by the tests: small enough for 2 CPU cores, same code paths as Wan2.1."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from layert2v.video import LayeredVideo

TINY_VAE = {"base_dim": 8, "z_dim": 4, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1,
            "latents_mean": [0.0] * 4, "latents_std": [1.0] * 4}
TINY_TRANSFORMER = {"num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 4, "out_channels": 4,
                    "text_dim": 384, "freq_dim": 32, "ffn_dim": 64, "num_layers": 2, "rope_max_seq_len": 64}


def toy_clip(seed: int, num_foregrounds: int = 1, frames: int = 5, size: int = 32) -> LayeredVideo:
    """A clip with exact layers: squares moving over a horizontal gradient (fg 1 bottom, K on top)."""
    rng = np.random.default_rng(seed)
    t, h, w = frames, size, size
    bg = np.zeros((t, h, w, 3), np.float32)
    bg[..., 0] = np.linspace(0, 1, w)[None, None, :]
    bg[..., 2] = 0.5
    full = bg.copy()
    fgs, alphas = [], []
    for k in range(num_foregrounds):
        colour = rng.uniform(0.2, 1.0, 3).astype(np.float32)
        alpha = np.zeros((t, h, w), np.float32)
        y = int(rng.integers(0, h - 12))
        for i in range(t):
            x = (int(rng.integers(0, 4)) + 3 * i + 7 * k) % (w - 10)
            alpha[i, y : y + 10, x : x + 10] = 1.0
            alpha[i, y : y + 10, x + 10] = 0.5  # a fractional edge
        fg = np.broadcast_to(colour, (t, h, w, 3)).astype(np.float32) * (alpha[..., None] > 0)
        full = fg * alpha[..., None] + full * (1 - alpha[..., None])
        fgs.append(fg)
        alphas.append(alpha)
    prompts = {"full": f"toy scene {seed}", "background": "a gradient",
               "foregrounds": [f"square {k}" for k in range(num_foregrounds)]}
    return LayeredVideo(full=full, background=bg, foregrounds=fgs, alphas=alphas, fps=8, prompts=prompts, seed=seed)


def save_tiny_wan(root, text_dim: int = 32):
    """A tiny random Wan2.1-T2V in the diffusers layout: model_index.json, transformer/, vae/, text_encoder/ (UMT5)
    and tokenizer/. No real weights can be downloaded here; the layout and classes are Wan's."""
    import json
    from pathlib import Path

    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    from layert2v.models.text import minilm_path

    root = Path(root)
    torch.manual_seed(0)
    WanTransformer3DModel(**{**TINY_TRANSFORMER, "text_dim": text_dim}).save_pretrained(root / "transformer")
    AutoencoderKLWan(**TINY_VAE).save_pretrained(root / "vae")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())  # any tokenizer: UMT5's cannot be downloaded
    tokenizer.save_pretrained(root / "tokenizer")
    config = UMT5Config(vocab_size=tokenizer.vocab_size, d_model=text_dim, d_kv=16, d_ff=64, num_layers=1,
                        num_heads=2)
    UMT5EncoderModel(config).save_pretrained(root / "text_encoder")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "WanPipeline", "_diffusers_version": "0.35.0",
        "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"],
        "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"]}))
    return root


# ------------------------------------------------------------------ several processes on this machine's CPUs
ACCELERATE_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
ENGINES = {"ddp": "ddp.yaml", "fsdp2": "fsdp.yaml", "zero2": "deepspeed_zero2.yaml"}  # engine -> launcher file


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_env(engine: str, processes: int) -> dict[str, str]:
    """What `accelerate launch --config_file configs/accelerate/FILE --num_processes N --mixed_precision no` puts in
    each process's environment (fp32: bf16 is for the GPUs the files are written for)."""
    import os

    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    argv = ["--config_file", str(ACCELERATE_CONFIGS / ENGINES[engine]), "--num_processes", str(processes),
            "--mixed_precision", "no", "-m", "layert2v.cli", "train", "stage.yaml"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    if engine == "zero2":
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        env = prepare_deepspeed_cmd_env(args)[1]
    else:
        env = prepare_multi_gpu_env(args)
    return {k: v for k, v in env.items() if os.environ.get(k) != v}


def start_cpu_process(engine: str, rank: int, processes: int, port: int, env: dict[str, str]) -> None:
    """Make this process rank ``rank`` of ``processes`` on the CPU (gloo), set up for ``engine`` as `accelerate
    launch` with ``env`` (``launcher_env``) sets it up on GPUs. Two things differ, as accelerate has no GPU to find:
    DeepSpeed (its CPU accelerator) gets the gloo backend named, and FSDP, which accelerate switches off on CPU, is
    switched on with the plugin the launcher's environment describes."""
    import os

    import torch

    os.environ.update(env)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(processes),
                      LOCAL_WORLD_SIZE=str(processes), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if engine == "zero2":
        PartialState(backend="gloo")
        return
    os.environ["ACCELERATE_USE_CPU"] = "true"
    if engine == "fsdp2":
        state = Accelerator().state  # the Trainer's Accelerator shares this state
        state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        state.fsdp_plugin = FullyShardedDataParallelPlugin()
