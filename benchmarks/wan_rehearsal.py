"""Rehearse the Wan2.1 training route end to end on CPU, in minutes: configs/wan's five stages, chained.

In a scratch directory it writes what a user downloads (a Wan2.1-T2V diffusers directory, here a tiny random one
with a tiny UMT5; a VidLayer-layout dataset, here of procedural clips of 1-3 foregrounds at 64x48 and 16 fps; a
VGG16 weights file, here random) at the paths configs/wan names, then runs `layert2v train` on each configs/wan
config with only its sizes made tiny (frames, height, width, steps, warmup, batch, LoRA ranks, workers; fp32 on
CPU), written through the config files themselves. For each transformer stage it then samples, on one seed, from
Wan + the stage's layer-weights file (`generate --model WAN --layer-weights FILE`'s loading path) and from the
stage's output directory, and prints the largest difference over every layer and every transformer weight;
stage 1 is checked through the alpha path stage 2 carries. The last line reads

    rehearsal: stages 1-3 chained, max |Δ| between base+layer-weights and stage output: X

With real weights the same route is the user's: put Wan2.1-T2V-1.3B-Diffusers, VidLayer and VGG16 weights at
the paths in configs/wan (or edit them) and run `layert2v train` on each config in order.

    python benchmarks/wan_rehearsal.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from layert2v.cli import main as cli  # noqa: E402
from layert2v.pipeline import LayerT2VPipeline  # noqa: E402
from layert2v.training.config import TrainConfig  # noqa: E402

WAN = "checkpoints/Wan2.1-T2V-1.3B-Diffusers"
TINY = {"data": {"frames": 5, "height": 32, "width": 32, "workers": 0},
        "train": {"steps": 3, "batch_size": 1, "gradient_accumulation": 1, "checkpoint_every": 3, "log_every": 1,
                  "warmup": 1, "mixed_precision": "no", "gradient_checkpointing": False},
        "alpha_lora_rank": 2, "lora_rank": 4}
TINY_VAE = {"base_dim": 8, "z_dim": 4, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1,
            "latents_mean": [0.0] * 4, "latents_std": [1.0] * 4}
TINY_TRANSFORMER = {"num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 4, "out_channels": 4,
                    "text_dim": 32, "freq_dim": 32, "ffn_dim": 64, "num_layers": 2, "rope_max_seq_len": 64}


def write_tiny_wan(root: Path) -> None:
    """A random Wan2.1-T2V in the diffusers layout: model_index.json, transformer/, vae/, text_encoder/ (UMT5),
    tokenizer/ (the packaged MiniLM tokenizer stands in for UMT5's, which cannot be downloaded here)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    from layert2v.models.text import minilm_path

    torch.manual_seed(0)
    WanTransformer3DModel(**TINY_TRANSFORMER).save_pretrained(root / "transformer")
    AutoencoderKLWan(**TINY_VAE).save_pretrained(root / "vae")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    tokenizer.save_pretrained(root / "tokenizer")
    umt5 = UMT5Config(vocab_size=tokenizer.vocab_size, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2)
    UMT5EncoderModel(umt5).save_pretrained(root / "text_encoder")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "WanPipeline", "_diffusers_version": "0.35.0",
        "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"],
        "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"]}))


def write_tiny_vidlayer(root: Path) -> None:
    from layert2v.data.vidlayer import write_vidlayer
    from layert2v.data.world import generate_clip

    clips = []
    for i in range(6):
        clip = generate_clip(i, num_frames=9, height=48, width=64, num_foregrounds=1 + i % 3)
        clip.fps = 16
        clips.append(clip)
    write_vidlayer(root, clips)


def write_random_vgg(path: Path) -> None:
    from safetensors.torch import save_file

    from layert2v.models.perceptual import vgg16_features

    torch.manual_seed(0)
    save_file({f"features.{k}": v for k, v in vgg16_features(23).state_dict().items()}, str(path))


def tiny_config(source: Path, target: Path) -> None:
    """configs/wan/X.yaml with its sizes made tiny (nothing else changed), as target."""
    raw = yaml.safe_load(source.read_text())
    for key, value in TINY.items():
        if isinstance(value, dict):
            raw[key] = {**raw.get(key, {}), **value}
        elif key in raw:
            raw[key] = value
    target.write_text(yaml.safe_dump(raw, sort_keys=False))


def sample(pipe: LayerT2VPipeline, k: int) -> dict[str, np.ndarray]:
    video = pipe("a red ball over a meadow", "a meadow", [f"object {i}" for i in range(k)], num_frames=5, height=32,
                 width=32, num_inference_steps=3, guidance_scale=5.0, seed=7, progress=False)
    layers = {"full": video.full, "background": video.background}
    for i, (fg, a) in enumerate(zip(video.foregrounds, video.alphas), 1):
        layers[f"foreground_{i}"], layers[f"alpha_{i}"] = fg, a
    return layers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, default=None, help="work here (kept) instead of a temporary directory")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="wan_rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.perf_counter()
    os.chdir(work)
    write_tiny_wan(Path(WAN))
    write_tiny_vidlayer(Path("data/VidLayer"))
    write_random_vgg(Path("checkpoints/vgg16.safetensors"))
    configs = Path("configs/wan")
    configs.mkdir(parents=True, exist_ok=True)
    for source in sorted((ROOT / "configs" / "wan").glob("*.yaml")):
        tiny_config(source, configs / source.name)
    print(f"scratch directory {work}: tiny Wan2.1, VidLayer (6 samples), VGG16 written")

    worst = 0.0
    for path in sorted(configs.glob("*.yaml")):
        t0 = time.perf_counter()
        if cli(["train", str(path)]) != 0:
            print(f"rehearsal: layert2v train {path} failed")
            return 1
        cfg = TrainConfig.from_yaml(path)
        final = Path(cfg.output_dir) / "final"
        line = f"{path.stem}: trained {cfg.train.steps} steps in {time.perf_counter() - t0:.0f}s"
        if cfg.stage == "layered":
            own = LayerT2VPipeline.from_pretrained(final)
            rebuilt = LayerT2VPipeline.from_pretrained(WAN, layer_weights=final / "layer_weights.safetensors")
            k = cfg.data.num_foregrounds[1]
            a, b = sample(own, k), sample(rebuilt, k)
            delta = max(float(np.abs(a[n] - b[n]).max()) for n in a)
            weights = max(float((own.transformer.state_dict()[n] - w).abs().max())
                          for n, w in rebuilt.transformer.state_dict().items())
            worst = max(worst, delta, weights)
            wan = LayerT2VPipeline.from_pretrained(WAN, untrained_layers=True).transformer.state_dict()
            moved = max(float((own.transformer.state_dict()[n] - w).abs().max()) for n, w in wan.items()
                        if not n.startswith("layer_"))
            line += (f"; {k} foreground(s), backbone moved from Wan by up to {moved:.2e}; max |Δ| video {delta:.2e}, "
                     f"transformer weights {weights:.2e}")
            if cfg.init_dir("alpha_path") is not None and path.stem.startswith("2a"):
                stage1 = LayerT2VPipeline.from_pretrained(final).alpha_path.state_dict()
                from layert2v.models.vae import AlphaPath

                first = AlphaPath.from_pretrained(cfg.init_dir("alpha_path") / "alpha_path").state_dict()
                alpha = max(float((stage1[n] - first[n]).abs().max()) for n in first)
                worst = max(worst, alpha)
                line += f"; stage-1 alpha path carried, max |Δ| {alpha:.2e}"
        print(line, flush=True)
    print(f"(total {time.perf_counter() - start:.0f}s)")
    print(f"rehearsal: stages 1-3 chained, max |Δ| between base+layer-weights and stage output: {worst:.2e}")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
