"""`layert2v data build INPUT --out DATASET` and `layert2v data composite --fg DIR --bg DIR --out DATASET`: the
CLI face of :mod:`layert2v.data.engine`.

The CLI calls :func:`add_data_arguments` on its ``data`` sub-parser and :func:`run_data` with the parsed args.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like WIDTHxHEIGHT (e.g. 832x480), got {text!r}") from None
    if w < 2 or h < 2 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"--size needs even width and height >= 2, got {text!r}")
    return w, h


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value
    return parse


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True)
    b = sub.add_parser("build", help="turn a directory of videos into a layered dataset",
                       description="Run captions, segmentation, matting, foreground removal and the quality check "
                                   "on every video under INPUT and write a folder dataset (docs/DATA_ENGINE.md). "
                                   "Rerunning with the same INPUT and config resumes.")
    b.add_argument("input", metavar="INPUT", help="directory of videos, with optional <name>.json / <name>.txt "
                                                  "sidecars")
    b.add_argument("--out", required=True, metavar="DATASET", help="dataset directory (new, empty, or an earlier "
                                                                    "run's to resume)")
    b.add_argument("--config", metavar="ENGINE_YAML", help="backends and quality bar (default: all weight-free; "
                                                           "examples in configs/engine/)")
    b.add_argument("--size", type=_size, help="resize every sample to WIDTHxHEIGHT (default: the input's)")
    b.add_argument("--frames", type=_positive(int), help="frames per sample, the first N (default: all)")
    b.add_argument("--fps", type=_positive(float), help="resample to this frame rate (default: the input's)")
    b.add_argument("--address", help="join the Ray cluster at this address (default: start a local Ray)")
    b.add_argument("--local", action="store_true", help="run in this process, without Ray (small runs)")

    c = sub.add_parser("composite", help="paste RGBA foreground clips over background videos (LayerFlow)",
                       description="Copy-paste synthesis: each sample is a background video with K RGBA foreground "
                                   "clips pasted at random places, scales and straight-line motions; the layers are "
                                   "exact. Captions come from <name>.txt sidecars (docs/DATA_ENGINE.md).")
    c.add_argument("--fg", required=True, metavar="RGBA_DIR", help="ProRes 4444 .mov / VP9 .webm with alpha, or "
                                                                   "directories of RGBA .png frames")
    c.add_argument("--bg", required=True, metavar="VIDEOS_DIR", help="background videos")
    c.add_argument("--out", required=True, metavar="DATASET", help="dataset directory (new, empty, or to resume)")
    c.add_argument("--config", metavar="ENGINE_YAML", help="max_foregrounds and the composite: section")
    c.add_argument("--size", type=_size, help="resize every sample to WIDTHxHEIGHT (default: the background's)")
    c.add_argument("--frames", type=_positive(int), help="frames per sample, the first N (default: all)")
    c.add_argument("--fps", type=_positive(float), help="resample to this frame rate (default: the background's)")
    c.add_argument("--address", help="join the Ray cluster at this address (default: start a local Ray)")
    c.add_argument("--local", action="store_true", help="run in this process, without Ray (small runs)")


def run_data(args: argparse.Namespace) -> int:
    from .build import REJECTS, build, summary_text
    from .config import load_config

    if args.local and args.address:
        raise ValueError("--local runs without Ray; drop --address or --local")
    config = load_config(args.config).with_resampling(args.size, args.frames, args.fps)
    executor = "local" if args.local else "ray"
    if args.data_command == "composite":
        from .composite import composite

        summary = composite(args.fg, args.bg, args.out, config, executor=executor, address=args.address)
    else:
        summary = build(args.input, args.out, config, executor=executor, address=args.address)
    print(summary_text(summary, Path(args.out)))
    if not summary.accepted:  # a dataset of nothing is a failed run, not a result
        raise ValueError(f"no sample was written: every clip ({len(summary.rejected)}) was rejected; the reasons are "
                         f"in {Path(args.out) / REJECTS}")
    return 0
