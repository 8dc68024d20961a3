"""`layert2v decompose` on footage made of real pictures, by both methods, against the true layers (issue 28).

The footage (:mod:`layert2v.data.engine.footage`, no procedural world): photographs that dependencies ship
(matplotlib's ``grace_hopper.jpg``, scikit-learn's ``china.jpg`` and ``flower.jpg``) as backgrounds, and a real
cut-out with its own alpha (matplotlib's gift-box picture ``Minduka_Present_Blue_Pack.png`` or its logo) moving
over them in a straight line, recorded as an H.264 mp4 (what a camera gives: 4:2:0, lossy). The true layers are the
photograph, the cut-out and its alpha, composited before encoding. The footage has no randomness; the model method
samples from ``--seed``.

Clips (``CLIPS``):

* ``static``: a static camera; the object crosses enough of the frame that every background pixel is seen
  uncovered in most of the clip. The targets hold here: engine alpha IoU >= 0.85 and clean plate >= 30 dB.
* ``refuse``: a clip the weight-free backends cannot handle (the camera pans; one object fills the frame). The
  engine must refuse it with its one-line reason and write nothing; the model method decomposes it anyway.
* ``limit``: a static camera, but the object lingers (it moves less than its own width), so the per-pixel temporal
  median behind it is the object itself. Outside the targets: it shows where the weight-free engine breaks without
  saying so (docs/DATA_ENGINE.md, limits).

Per clip and method: alpha IoU@0.5, background PSNR and recomposite PSNR (the output's own layers composited,
against the true full video), with the definitions ``layert2v eval --gt`` uses
(:func:`layert2v.eval.variants.decomposition_scores`). The engine runs at the clip's size and frame count; the
model method fits the file to the model (``layert2v decompose --method model``'s fitting: its first frames at the
model's rate, centre crop, resize) and is scored against the true layers fitted the same way.

    python benchmarks/decompose_footage.py                       # 256x192, 48 frames at 24 fps; the built-in model
    python benchmarks/decompose_footage.py --size 640x360 --frames 96 --model runs/v10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from layert2v.data.engine.config import parse_config
from layert2v.data.engine.decompose import decompose_video
from layert2v.data.engine.footage import Shot, shot_frames, write_shot
from layert2v.data.fit import fit_video, frames_the_model_takes, resize_layers, take_frames
from layert2v.eval.variants import decomposition_scores
from layert2v.video import LayeredVideo

BUILTIN = Path(__file__).resolve().parent.parent / "layert2v" / "weights" / "world"
IOU_TARGET, PLATE_TARGET = 0.85, 30.0  # engine, static-camera clips (issue 28)

CLIPS: dict[str, tuple[str, Shot]] = {  # name -> (kind, shot)
    "hopper_present": ("static", Shot("grace_hopper", "present", 0.4, (0.2, 0.5), (0.8, 0.5))),
    "hopper_logo": ("static", Shot("grace_hopper", "logo", 0.3, (0.25, 0.7), (0.75, 0.3))),
    "china_logo": ("static", Shot("china", "logo", 0.25, (0.25, 0.3), (0.7, 0.7))),
    "china_present": ("static", Shot("china", "present", 0.35, (0.8, 0.4), (0.2, 0.6))),
    "flower_present": ("static", Shot("flower", "present", 0.4, (0.2, 0.65), (0.8, 0.35))),
    "flower_logo": ("static", Shot("flower", "logo", 0.3, (0.75, 0.3), (0.25, 0.7))),
    "pan": ("refuse", Shot("grace_hopper", "present", 0.4, (0.2, 0.5), (0.8, 0.5), pan=0.3)),
    "fills_frame": ("refuse", Shot("china", "present", 1.6, (0.45, 0.5), (0.55, 0.5))),
    "lingers": ("limit", Shot("flower", "present", 0.5, (0.4, 0.5), (0.6, 0.5))),
}


def prompts(shot: Shot) -> tuple[str, list[str]]:
    return "a photograph", [f"a {shot.cutout}"]


def run_engine(path: Path, out: Path, truth: LayeredVideo) -> tuple[dict[str, float] | str, float]:
    """(scores, or the refusal's reason; seconds)."""
    start = time.perf_counter()
    try:
        decompose_video(path, out, parse_config({}), progress=False)
    except ValueError as e:
        if out.exists() and any(out.iterdir()):
            raise AssertionError(f"a refused clip left files in {out}") from e
        return str(e), time.perf_counter() - start
    seconds = time.perf_counter() - start
    return decomposition_scores(LayeredVideo.load(out), truth), seconds


def run_model(pipe, path: Path, shot: Shot, truth: LayeredVideo, seed: int,
              steps: int | None) -> tuple[dict[str, float], float]:
    cfg = pipe.config
    frames = frames_the_model_takes(truth.num_frames, pipe.video_multiples[0], cfg.num_frames)
    start = time.perf_counter()
    fitted = fit_video(path, frames, cfg.height, cfg.width, pipe.video_multiples, fps=cfg.fps)
    bg, fg = prompts(shot)
    kwargs = {"seed": seed} | ({"num_inference_steps": steps} if steps else {})
    video = pipe.decompose(fitted.frames, bg, fg, **kwargs)
    seconds = time.perf_counter() - start
    fitted_truth = resize_layers(take_frames(truth, fitted.mapping["frame_indices"]), cfg.height, cfg.width)
    return decomposition_scores(video, fitted_truth), seconds


def row(name: str, kind: str, method: str, result: dict[str, float] | str, seconds: float) -> str:
    if isinstance(result, str):
        return f"| {name} | {kind} | {method} | refused | | | {seconds:.1f} | {result} |"
    note = ""
    if method == "engine" and kind == "static":
        met = result["alpha_iou"] >= IOU_TARGET and result["background_psnr"] >= PLATE_TARGET
        note = "targets met" if met else "TARGET MISSED"
    elif method == "engine" and kind == "refuse":
        note = "NOT REFUSED"
    return (f"| {name} | {kind} | {method} | {result['alpha_iou']:.3f} | {result['background_psnr']:.2f} | "
            f"{result['recomposite_psnr']:.2f} | {seconds:.1f} | {note} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256x192", help="footage width x height")
    parser.add_argument("--frames", type=int, default=48, help="footage frames (at --fps)")
    parser.add_argument("--fps", type=float, default=24)
    parser.add_argument("--model", type=Path, default=BUILTIN, help="the model method's pipeline directory")
    parser.add_argument("--seed", type=int, default=0, help="the model method's seed")
    parser.add_argument("--steps", type=int, default=None, help="the model method's steps (default: the model's)")
    parser.add_argument("--only", choices=sorted(CLIPS), action="append", help="run these clips only")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    from layert2v.pipeline import LayerT2VPipeline

    pipe = LayerT2VPipeline.from_pretrained(args.model)
    names = args.only or list(CLIPS)
    print(f"{len(names)} clips of {width}x{height}, {args.frames} frames at {args.fps:g} fps (H.264); engine: "
          f"weight-free backends; model: {args.model} ({pipe.config.width}x{pipe.config.height}, "
          f"{pipe.config.num_frames} frames), seed {args.seed}\n")
    print("| clip | kind | method | alpha IoU | background PSNR (dB) | recomposite PSNR (dB) | s | note |")
    print("|---|---|---|---|---|---|---|---|")
    engine_static: list[dict[str, float]] = []
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            kind, shot = CLIPS[name]
            path = write_shot(Path(tmp) / f"{name}.mp4", shot, (width, height), args.frames, args.fps)
            truth = shot_frames(shot, (width, height), args.frames, fps=args.fps)
            result, seconds = run_engine(path, Path(tmp) / f"{name}_engine", truth)
            print(row(name, kind, "engine", result, seconds), flush=True)
            if kind == "static":
                if isinstance(result, dict):
                    engine_static.append(result)
                failed += not (isinstance(result, dict) and result["alpha_iou"] >= IOU_TARGET
                               and result["background_psnr"] >= PLATE_TARGET)
            if kind == "refuse":
                failed += not isinstance(result, str)
            model_result, seconds = run_model(pipe, path, shot, truth, args.seed, args.steps)
            print(row(name, kind, "model", model_result, seconds), flush=True)
    if engine_static:
        mean = {k: float(np.mean([r[k] for r in engine_static])) for k in engine_static[0]}
        print(f"\nengine, {len(engine_static)} static clips, mean: alpha IoU {mean['alpha_iou']:.3f} (target "
              f">= {IOU_TARGET}), background PSNR {mean['background_psnr']:.2f} dB (target >= {PLATE_TARGET:g}), "
              f"recomposite PSNR {mean['recomposite_psnr']:.2f} dB")
    print(f"targets: {'all met' if not failed else f'{failed} clip(s) missed'} (per static clip: IoU and plate; "
          "per refuse clip: refused)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
