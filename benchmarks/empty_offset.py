"""Does a layered model keep a foreground's empty area at the latent of black?

A premultiplied foreground is black outside its object, so its latent there is the VAE's latent of black. This
noises ground-truth world clips to t, takes the model's x0-prediction (z_t - t v) of foreground 1, and prints its
mean offset from the black latent over the cells where the ground truth is empty, per latent channel. Eq. 10's
literal latent composite (see ``flow.composite_latents``) taught models to pull those cells toward minus the black
latent, more so at high t and with more foregrounds; a model trained with the corrected composite stays near 0.

    python benchmarks/empty_offset.py --model layert2v/weights/world --n 12
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from layert2v.data.world import generate_clip
from layert2v.flow import NUM_TRAIN_TIMESTEPS
from layert2v.layout import LayerLayout
from layert2v.models.vae import empty_latent
from layert2v.training.trainer import encode_layers


@torch.no_grad()
def measure(model: Path, n: int, levels: tuple[float, ...] = (0.3, 0.6, 0.9)) -> dict[str, list[float]]:
    from layert2v.pipeline import LayerT2VPipeline

    pipe = LayerT2VPipeline.from_pretrained(model)
    cfg = pipe.config
    black = empty_latent(pipe.vae, cfg.num_frames, cfg.height, cfg.width)
    results = {}
    for k in range(1, pipe.max_foregrounds + 1):
        layout = LayerLayout(k)
        clips = [generate_clip(9100 + i, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width,
                               num_foregrounds=k, split="heldout") for i in range(n)]
        z0 = encode_layers(pipe.vae, pipe.alpha_path, clips, layout, pipe.device)
        context = torch.stack([pipe.encode_prompts(layout.layer_prompts(c.prompts["full"], c.prompts["background"],
                                                                        c.prompts["foregrounds"])) for c in clips])
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
        truth = layout.split(z0)["foreground_1"]
        empty = ((truth - black).abs().amax(1, keepdim=True) < 0.2).float()
        for t in levels:
            z_t = (1 - t) * z0 + t * noise
            v = pipe.transformer(z_t, torch.full((n, layout.num_segments), t * NUM_TRAIN_TIMESTEPS), context,
                                 layout=layout).sample
            x0 = layout.split(z_t - t * v)["foreground_1"]
            offset = ((x0 - black) * empty).sum((0, 2, 3, 4)) / empty.sum()
            results[f"K={k} t={t}"] = [round(x, 3) for x in offset.tolist()]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a directory LayerT2VPipeline can load")
    parser.add_argument("--n", type=int, default=12, help="held-out clips per foreground count")
    args = parser.parse_args(argv)
    for key, offset in measure(args.model, args.n).items():
        print(f"{key}: mean |offset| {sum(abs(x) for x in offset) / len(offset):.3f}, per channel {offset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
