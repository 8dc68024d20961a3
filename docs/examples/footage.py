"""Write a clip of real pictures to try `layert2v decompose` on: matplotlib's gift-box cut-out crossing Grace Hopper's
photograph (both shipped with matplotlib), seen by a static camera, as an H.264 mp4 (README, Edit).

    python docs/examples/footage.py out/present.mp4                 # 640x360, 72 frames at 24 fps
    python docs/examples/footage.py out/hd.mp4 --size 1920x1080 --frames 240   # docs/performance.md's 1080p clip
"""

from __future__ import annotations

import argparse
from pathlib import Path

from layert2v.data.engine.footage import Shot, write_shot

SHOT = Shot("grace_hopper", "present", 0.3, (0.15, 0.45), (0.85, 0.6))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the mp4 to write")
    parser.add_argument("--size", default="640x360", help="width x height")
    parser.add_argument("--frames", type=int, default=72)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    print(write_shot(args.out, SHOT, (width, height), args.frames))


if __name__ == "__main__":
    main()
