"""The built-in model's editing pictures in docs/images/ (MODEL_CARD.md, README):

* decomposition_example.png: a held-out world clip written as an mp4, split into layers by `layert2v decompose`;
  columns are frames 0, 4, 8, rows the input, background, foreground over a checkerboard, alpha and the true alpha;
* trajectory_example.png: `layert2v generate --trajectory docs/examples/two_crossing.json` (the command of
  docs/TRAJECTORIES.md), its trajectory.png.

    python scripts/editing_figures.py [--case 0] [--work out/figures]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from layert2v.data.world import heldout_prompts, render
from layert2v.io.codec import write_video
from layert2v.io.layered_dir import checkerboard
from layert2v.video import LayeredVideo

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
FRAMES = (0, 4, 8)
ROWS = ("input (given)", "background", "foreground", "alpha", "true alpha")
SCALE = 3


def decomposition(case: int, work: Path) -> Path:
    spec = heldout_prompts(case + 1, num_frames=9, height=64, width=64, num_foregrounds=1)[case]
    clip, prompts = render(spec), spec.prompts
    write_video(work / "input.mp4", clip.full, fps=8)
    fgs = [arg for fg in prompts["foregrounds"] for arg in ("--fg", fg)]
    subprocess.run(["layert2v", "decompose", str(work / "input.mp4"), "--bg", prompts["background"], *fgs,
                    "--out", str(work / "layers")], check=True)
    layers = LayeredVideo.load(work / "layers")
    h, w = layers.size
    columns = []
    for t in FRAMES:
        a = layers.alphas[0][t][..., None]
        over_checker = layers.foregrounds[0][t] * a + checkerboard(h, w) * (1 - a)
        tiles = [layers.full[t], layers.background[t], over_checker, np.repeat(a, 3, -1),
                 np.repeat(clip.alphas[0][t][..., None], 3, -1)]
        columns.append(np.pad(np.concatenate(tiles), ((0, 0), (2, 2), (0, 0)), constant_values=1.0))
    grid = np.concatenate(columns, axis=1)
    image = Image.fromarray((np.clip(grid, 0, 1) * 255).astype(np.uint8))
    image = image.resize((image.width * SCALE, image.height * SCALE), Image.NEAREST)
    sheet = Image.new("RGB", (image.width + 120, image.height), "white")
    sheet.paste(image, (120, 0))
    draw = ImageDraw.Draw(sheet)
    for i, name in enumerate(ROWS):
        draw.text((6, (i + 0.5) * h * SCALE - 6), name, fill="black")
    out = IMAGES / "decomposition_example.png"
    sheet.save(out)
    return out


def trajectory(work: Path) -> Path:
    subprocess.run(["layert2v", "generate", "a red circle moving right and a blue square moving down-left over a "
                    "green striped background", "--bg", "a green striped background", "--fg",
                    "a red circle moving right", "--fg", "a blue square moving down-left", "--trajectory",
                    "docs/examples/two_crossing.json", "--out", str(work / "crossing")], check=True)
    out = IMAGES / "trajectory_example.png"
    shutil.copyfile(work / "crossing" / "trajectory.png", out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", type=int, default=0, help="held-out one-object world case to decompose")
    parser.add_argument("--work", type=Path, default=Path("out/figures"), help="directory for the runs (replaced)")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    print(decomposition(args.case, args.work))
    print(trajectory(args.work))


if __name__ == "__main__":
    main()
