"""Reconstruction quality of a model's VAE and alpha path on held-out world clips: the ceiling for everything the
transformer generates, since every layer it makes is decoded by them.

    python benchmarks/vae_quality.py --model layert2v/weights/world --n 16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from layert2v.data.world import heldout_prompts, render
from layert2v.eval.layers import iou, psnr
from layert2v.models.vae import AlphaPath, decode_rgb, encode_rgb
from layert2v.training.trainer import to_tensor


@torch.no_grad()
def measure(model: Path, n: int, frames: int, size: int) -> dict[str, float]:
    vae = AutoencoderKLWan.from_pretrained(model / "vae", torch_dtype=torch.float32).eval()
    alpha_path = AlphaPath.from_pretrained(model / "alpha_path").float().eval()
    scores: dict[str, list[float]] = {"full": [], "background": [], "foreground (premultiplied)": [],
                                      "alpha": [], "alpha IoU@0.5": []}
    for spec in heldout_prompts(n, seed=0, num_frames=frames, height=size, width=size):
        clip = render(spec)
        for name, frames_ in (("full", clip.full), ("background", clip.background),
                              ("foreground (premultiplied)", clip.premultiplied(1))):
            x = to_tensor(frames_)
            scores[name].append(psnr(decode_rgb(vae, encode_rgb(vae, x)).numpy(), x.numpy()))
        a = torch.from_numpy(clip.alphas[0])[None, None]
        rec = alpha_path.decode(vae, alpha_path.encode(vae, a)).numpy()
        scores["alpha"].append(psnr(rec, a.numpy()))
        scores["alpha IoU@0.5"].append(iou(rec, a.numpy()))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a directory with vae/ and alpha_path/")
    parser.add_argument("--n", type=int, default=16, help="held-out clips (case seeds 0 .. n-1)")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    if not (args.model / "vae").is_dir() or not (args.model / "alpha_path").is_dir():
        sys.exit(f"error: {args.model} needs vae/ and alpha_path/ subdirectories (a saved LayerT2V pipeline)")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    result = measure(args.model, args.n, args.frames, args.size)
    print(f"| {args.model} ({args.n} held-out clips, {args.frames}x{args.size}x{args.size}) | value |")
    print("|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value:.3f} |" if "IoU" in key else f"| {key} PSNR (dB) | {value:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
