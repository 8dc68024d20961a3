"""Reconstruction quality of a model's VAE and alpha path on held-out world clips: the ceiling for everything the
transformer generates, since every layer it makes is decoded by them. Two temporal rows: the worst frame's
full-clip PSNR, and how much an error in one latent frame reaches the next one's frames through the causal
decoder (noise of std 0.3 added to latent frame k; PSNR of latent frame k+1's frames against the clean decode).
Two reader rows: the share of objects whose shape and motion world_quality's readers still read right from a
round-tripped matte (through the alpha path, and through the plain RGB VAE as a grey video), i.e. the ceiling of
world_quality's fg shape and motion for any transformer on top of this VAE.

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
from layert2v.preflight import compression
from layert2v.training.trainer import to_tensor


@torch.no_grad()
def measure(model: Path, n: int, frames: int, size: int) -> dict[str, float]:
    from world_quality import read_motion, read_shape  # the benchmark whose ceiling the reader rows give

    vae = AutoencoderKLWan.from_pretrained(model / "vae", torch_dtype=torch.float32).eval()
    alpha_path = AlphaPath.from_pretrained(model / "alpha_path").float().eval()
    scores: dict[str, list[float]] = {"full": [], "background": [], "foreground (premultiplied)": [],
                                      "alpha": [], "alpha IoU@0.5": [], "full, worst frame": [],
                                      "error carried to the next latent frame": [],
                                      "shape read after the alpha path": [], "shape read after the RGB VAE": [],
                                      "motion read after the alpha path": []}
    generator = torch.Generator().manual_seed(0)
    for spec in heldout_prompts(n, seed=0, num_frames=frames, height=size, width=size):
        clip = render(spec)
        x = to_tensor(clip.full)
        z = encode_rgb(vae, x)
        clean = decode_rgb(vae, z)
        scores["full, worst frame"].append(min(psnr(clean[:, :, f].numpy(), x[:, :, f].numpy())
                                               for f in range(x.shape[2])))
        scores["error carried to the next latent frame"].append(carried_error(vae, z, clean, generator))
        scores["full"].append(psnr(clean.numpy(), x.numpy()))
        for name, frames_ in (("background", clip.background), ("foreground (premultiplied)", clip.premultiplied(1))):
            x = to_tensor(frames_)
            scores[name].append(psnr(decode_rgb(vae, encode_rgb(vae, x)).numpy(), x.numpy()))
        a = torch.from_numpy(clip.alphas[0])[None, None]
        rec = alpha_path.decode(vae, alpha_path.encode(vae, a)).numpy()
        scores["alpha"].append(psnr(rec, a.numpy()))
        scores["alpha IoU@0.5"].append(iou(rec, a.numpy()))
        mattes = torch.stack([torch.from_numpy(m) for m in clip.alphas])[:, None]
        through_path = alpha_path.decode(vae, alpha_path.encode(vae, mattes))[:, 0].numpy()
        through_rgb = decode_rgb(vae, encode_rgb(vae, mattes.expand(-1, 3, -1, -1, -1))).mean(1).numpy()
        for obj, path_matte, rgb_matte in zip(spec.objects, through_path, through_rgb):
            scores["shape read after the alpha path"].append(read_shape(path_matte) == obj.shape)
            scores["shape read after the RGB VAE"].append(read_shape(rgb_matte) == obj.shape)
            scores["motion read after the alpha path"].append(read_motion(path_matte) == obj.motion)
    return {k: float(np.mean(v)) for k, v in scores.items()}


def latent_frame_pixels(vae: AutoencoderKLWan, index: int) -> list[int]:
    """The pixel frames decoded from latent frame ``index`` (Wan's causal VAE: the first alone, then chunks)."""
    t = compression(vae.config)[0]
    return [0] if index == 0 else list(range((index - 1) * t + 1, index * t + 1))


def carried_error(vae: AutoencoderKLWan, z: torch.Tensor, clean: torch.Tensor, generator: torch.Generator,
                  sigma: float = 0.3) -> float:
    """Mean PSNR, over k, of latent frame k+1's pixels after noise on latent frame k (high: errors stay put)."""
    values = []
    for k in range(z.shape[2] - 1):
        noisy = z.clone()
        noisy[:, :, k] += sigma * torch.randn(noisy[:, :, k].shape, generator=generator)
        out = decode_rgb(vae, noisy)
        nxt = latent_frame_pixels(vae, k + 1)
        values.append(psnr(out[:, :, nxt].numpy(), clean[:, :, nxt].numpy()))
    return float(np.mean(values))


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
        exact = "IoU" in key or "read" in key
        print(f"| {key} | {value:.3f} |" if exact else f"| {key} PSNR (dB) | {value:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
