"""When does each latent frame of a generated foreground decide where its object is?

A model that has learned motion settles one trajectory for all frames together; one that has not lets each latent
frame pick a place from its own noise, and the object jumps between frames. This follows the first foreground's
x0-prediction (z_t - t v) through sampling on held-out one-object prompts and finds, per latent frame, the cell
where the object's latent stands out most from an empty layer's. It prints:

* off-line: mean distance, in latent cells, of the final object cells from the straight line fitted through them
  over time, next to the same figure for the ground-truth clips of the same prompts (whose objects mostly move
  in straight lines: circling and bouncing bend them); jump: mean distance between consecutive frames' cells;
* settle t: per latent frame, the noise level from which on its object cell stays within one cell of where it
  ends (mean over cases). Frames that settle at the same t but far apart chose independently.

    python benchmarks/frame_commitment.py --model layert2v/weights/world --n 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from layert2v.data.world import heldout_prompts, render
from layert2v.flow import NUM_TRAIN_TIMESTEPS
from layert2v.layout import LayerLayout
from layert2v.models.vae import empty_latent, encode_rgb
from layert2v.training.trainer import to_tensor


def object_cells(latents: torch.Tensor, empty: torch.Tensor) -> np.ndarray:
    """(1, C, T', H', W') layer latents -> (T', 2) (row, column) of the cell that differs most from ``empty``."""
    energy = (latents.float() - empty.float()).pow(2).sum(1)[0]  # (T', H', W')
    flat = energy.flatten(1).argmax(1)
    width = energy.shape[-1]
    return torch.stack([flat // width, flat % width], dim=1).numpy()


def mean_jump(cells: np.ndarray) -> float:
    """Mean distance between consecutive frames' cells."""
    return float(np.linalg.norm(np.diff(cells.astype(float), axis=0), axis=1).mean())


def off_line(cells: np.ndarray) -> float:
    """Mean distance of the cells from their least-squares straight line over time (0 for uniform motion)."""
    frames = np.arange(len(cells), dtype=float)
    fit = np.stack([np.polyval(np.polyfit(frames, cells[:, i].astype(float), 1), frames) for i in (0, 1)], 1)
    return float(np.linalg.norm(cells - fit, axis=1).mean())


def settle_levels(history: list[tuple[float, np.ndarray]], radius: float = 1.0) -> np.ndarray:
    """Per frame, the highest noise level t from which on the cell stays within ``radius`` of its final cell.

    history: (t, cells (T', 2)) per sampling step, in sampling order (t falling).
    """
    final = history[-1][1].astype(float)
    levels = np.full(len(final), history[-1][0])
    still_near = np.ones(len(final), dtype=bool)
    for t, cells in reversed(history):
        still_near &= np.linalg.norm(cells.astype(float) - final, axis=1) <= radius
        levels = np.where(still_near, t, levels)
    return levels


@torch.no_grad()
def measure(model: Path, n: int, frames: int, size: int, seed: int = 0) -> dict[str, object]:
    from layert2v.pipeline import LayerT2VPipeline

    pipe = LayerT2VPipeline.from_pretrained(model)
    empty = empty_latent(pipe.vae, frames, size, size)
    original = pipe.guided_velocity
    history: list[tuple[float, np.ndarray]] = []

    def recording(latents, t, context, layout, guidance, **kwargs):
        v = original(latents, t, context, layout, guidance, **kwargs)
        level = float(t) / NUM_TRAIN_TIMESTEPS
        history.append((level, object_cells(layout.split(latents - level * v)["foreground_1"], empty)))
        return v

    pipe.guided_velocity = recording
    scores: dict[str, list[float]] = {"off-line": [], "ground-truth off-line": [], "jump": [],
                                      "ground-truth jump": []}
    settles = []
    for spec in heldout_prompts(n, seed=seed, num_frames=frames, height=size, width=size, num_foregrounds=1):
        history.clear()
        p = spec.prompts
        pipe(prompt=p["full"], background_prompt=p["background"], foreground_prompts=list(p["foregrounds"]),
             num_frames=frames, height=size, width=size, seed=seed, progress=False)
        truth = encode_rgb(pipe.vae, to_tensor(render(spec).premultiplied(1)).to(pipe.vae.dtype))
        for prefix, cells in (("", history[-1][1]), ("ground-truth ", object_cells(truth, empty))):
            scores[prefix + "off-line"].append(off_line(cells))
            scores[prefix + "jump"].append(mean_jump(cells))
        settles.append(settle_levels(history))
    return {"cases": n, **{k: round(float(np.mean(v)), 3) for k, v in scores.items()},
            "settle t per latent frame": np.mean(settles, axis=0).round(3).tolist(),
            "latent grid": list(empty.shape[-2:]), "layout": LayerLayout(1).names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a directory LayerT2VPipeline can load")
    parser.add_argument("--n", type=int, default=8, help="held-out one-object cases")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="first case seed and the generation seed")
    args = parser.parse_args(argv)
    for key, value in measure(args.model, args.n, args.frames, args.size, args.seed).items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
