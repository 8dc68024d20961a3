"""Trajectory following with training-free guidance: does the built-in model put each object in its requested box?

For each held-out case of the procedural world (:func:`layert2v.data.world.heldout_prompts`) the requested
trajectory of every foreground is the box of its ground-truth matte in every frame (``render(spec)``, normalised,
one key frame per frame), so prompt and boxes agree. The model generates the case twice from the same seed: without
trajectories, and with them (guided cross-attention, :mod:`layert2v.models.guidance`) at each ``--strength``. The
generated box is the tight box around alpha > 0.5 and the scores are ``layert2v eval``'s (``eval/trajectory.py``):

* mIoU: mean over (case, object) of the volumetric IoU (summed intersections / summed unions over frames);
* hit-rate@0.5: the share of all requested frames whose generated box has IoU >= 0.5 (pooled over frames).

    python benchmarks/trajectory_follow.py                       # 3 cases, strength 2, 10 guided steps
    python benchmarks/trajectory_follow.py --n 12 --strength 1 2 4 --steps 10 --out results/trajectory.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from layert2v.data.world import heldout_prompts, render
from layert2v.eval.trajectory import HIT_RATE, alpha_tracks, score_object, summarise
from layert2v.eval.variants import keyframe_trajectories
from layert2v.pipeline import LayerT2VPipeline
from layert2v.trajectory import DEFAULT_STEPS, DEFAULT_STRENGTH

BUILTIN = Path(__file__).resolve().parent.parent / "layert2v" / "weights" / "world"


def score(alphas: list[np.ndarray], requested: dict[int, list]) -> list:
    predicted = alpha_tracks(alphas)
    return [score_object(predicted[k], boxes, k) for k, boxes in requested.items()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(BUILTIN))
    p.add_argument("--n", type=int, default=3, help="held-out cases (1-3 foregrounds each)")
    p.add_argument("--seed", type=int, default=0, help="first held-out case; also the generation seed")
    p.add_argument("--strength", type=float, nargs="+", default=[DEFAULT_STRENGTH])
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="guided denoising steps")
    p.add_argument("--frames", type=int, default=None, help="default: the model's")
    p.add_argument("--size", type=int, default=None, help="square size in pixels; default: the model's")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)

    torch.set_num_threads(min(2, torch.get_num_threads()))
    pipe = LayerT2VPipeline.from_pretrained(args.model)
    cfg = pipe.config
    frames, size = args.frames or cfg.num_frames, args.size or cfg.height
    cases = heldout_prompts(args.n, seed=args.seed, num_frames=frames, height=size, width=size)
    arms = ["off"] + [f"strength {s:g}" for s in args.strength]
    objects: dict[str, list] = {a: [] for a in arms}
    start = time.perf_counter()
    print(f"model {cfg.model_id}: {len(cases)} held-out cases (seeds {args.seed}..{args.seed + args.n - 1}), "
          f"{frames} frames {size}x{size}, {cfg.num_inference_steps} steps, CFG {cfg.guidance_scale}, "
          f"generation seed {args.seed}; guided steps {args.steps}", flush=True)
    for i, spec in enumerate(cases):
        truth = render(spec)
        requested = alpha_tracks(truth.alphas)  # in pixels: what the key frames below say, in [0, 1]
        pr = spec.prompts
        for arm, strength in zip(arms, [None, *args.strength]):
            traj = None if strength is None else keyframe_trajectories(truth.alphas, 1, strength, args.steps)
            video = pipe(pr["full"], pr["background"], list(pr["foregrounds"]), num_frames=frames, height=size,
                         width=size, seed=args.seed, progress=False, trajectories=traj)
            objects[arm] += score(video.alphas, requested)
        line = "  ".join(f"{a}: {np.mean([o.viou or 0 for o in objects[a][-len(spec.objects):]]):.2f}" for a in arms)
        print(f"  case {i + 1}/{len(cases)} ({len(spec.objects)} fg, {time.perf_counter() - start:.0f}s) vIoU {line}",
              flush=True)

    rows = {a: summarise(objects[a]) for a in arms}
    print("\n| guidance | mIoU | hit-rate@0.5 | objects | frames |\n|---|---|---|---|---|")
    for a, r in rows.items():
        print(f"| {a} | {r['miou']:.3f} | {r[HIT_RATE]:.3f} | {r['objects']} | {r['frames']} |")
    print("mIoU: mean volumetric IoU per object; hit-rate@0.5: share of requested frames with box IoU >= 0.5 "
          "(eval/trajectory.py)")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"model": cfg.model_id, "cases": args.n, "seed": args.seed, "frames": frames,
                                   "size": size, "guided_steps": args.steps, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
