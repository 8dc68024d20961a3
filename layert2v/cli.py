"""`layert2v` command line: generate, train, info, eval."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

BUILTIN_MODEL = Path(__file__).parent / "weights" / "world"


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like WIDTHxHEIGHT (e.g. 64x64), got {text!r}") from None
    return w, h


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layert2v", description="Layered text-to-video generation.")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate a layered video from prompts",
                       description="Generate the full video, a clean background, foreground layers and alpha "
                                   "mattes in one denoising pass. Without --bg/--fg the layer prompts are derived "
                                   "from the full prompt (see docs/CLI.md).")
    g.add_argument("prompt", help="the full-video prompt")
    g.add_argument("--bg", help="background prompt")
    g.add_argument("--fg", action="append", default=None, help="foreground prompt; repeat for more layers")
    g.add_argument("--negative", default=None, help="negative prompt for every layer")
    g.add_argument("--out", required=True, help="output directory (must be new or empty, or use --overwrite)")
    g.add_argument("--model", default=None, help="pipeline directory saved by `layert2v train`, or a Wan2.1-T2V "
                                                 "diffusers directory (default: the built-in model)")
    g.add_argument("--layer-weights", default=None, help="LayerT2V layer-weights file for a Wan2.1 --model")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    g.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    g.add_argument("--frames", type=int, default=None,
                   help="frames per layer: 4k+1 for Wan2.1, 2k+1 for the built-in model (default: the model's)")
    g.add_argument("--size", type=parse_size, default=None, help="WIDTHxHEIGHT, multiples of 16 (VAE factor x patch)")
    g.add_argument("--scheduler", choices=("unipc", "euler"), default="unipc")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    g.add_argument("--offload", choices=("block", "leaf", "model"), default=None,
                   help="small GPUs: keep the transformer in CPU memory and run it on --device one block / one "
                        "layer / whole while denoising (exact; see docs/performance.md)")
    g.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    g.add_argument("--trajectory", default=None, metavar="FILE",
                   help="JSON file of key-frame boxes for one or more foregrounds (docs/TRAJECTORIES.md); steered "
                        "by guided cross-attention, boxes drawn in OUT/trajectory.png")

    t = sub.add_parser("train", help="train one stage from a YAML config (resumes from its checkpoint)")
    t.add_argument("config", help="stage config, e.g. configs/stage2_layered.yaml")

    i = sub.add_parser("info", help="describe a checkpoint, pipeline or output directory")
    i.add_argument("path")

    e = sub.add_parser("eval", help="evaluate saved layered videos and write a report")
    try:
        from .eval.command import add_eval_arguments
    except ImportError:  # pragma: no cover - eval is part of the package
        add_eval_arguments = None
    if add_eval_arguments is not None:
        add_eval_arguments(e)
    return parser


def derive_prompts(prompt: str, bg: str | None, fgs: list[str] | None) -> tuple[str, list[str]]:
    """Fill in missing layer prompts from the full prompt (the procedural world's rule)."""
    if bg and fgs:
        return bg, fgs
    from .data.world import parse_prompt

    parsed = parse_prompt(prompt)
    return bg or parsed["background"], fgs or parsed["foregrounds"]


def cmd_generate(args: argparse.Namespace) -> int:
    from .pipeline import LayerT2VPipeline, check_video_shape, saved_video_multiples
    from .utils import check_output_directory

    if not args.prompt.strip():
        raise ValueError("the prompt is empty; describe the video to generate")
    if any(not f.strip() for f in args.fg or []):
        raise ValueError("a --fg prompt is empty; describe each foreground layer")
    if args.bg is not None and not args.bg.strip():
        raise ValueError("the --bg prompt is empty; describe the background or leave --bg out")
    if args.offload and args.device == "cpu":
        raise ValueError("--offload keeps the transformer in CPU memory and runs it on an accelerator; pass "
                         "--device cuda, or drop --offload on the CPU")
    width, height = args.size if args.size else (None, None)
    model = Path(args.model) if args.model else BUILTIN_MODEL
    multiples = saved_video_multiples(model)
    if multiples is not None and (args.frames is not None or args.size is not None):  # before loading weights
        check_video_shape(args.frames or 1, height or multiples[1], width or multiples[1], *multiples)
    check_output_directory(args.out, args.overwrite)
    if args.model is None and not (model / "layert2v.json").is_file():
        raise FileNotFoundError(f"no built-in model at {model}; pass --model DIR (a directory saved by "
                                "`layert2v train`)")
    bg, fgs = derive_prompts(args.prompt, args.bg, args.fg)
    supported = supported_foregrounds(model)
    if supported is not None and len(fgs) > supported:
        raise ValueError(f"this model supports at most {supported} foreground layer(s), got {len(fgs)}; pass "
                         "fewer --fg")
    trajectories = None
    if args.trajectory:  # checked against the clip before the model loads
        from .trajectory import Trajectories

        trajectories = Trajectories.load(args.trajectory)
        native = model / "layert2v.json"
        frames = args.frames or (json.loads(native.read_text())["config"]["num_frames"] if native.is_file() else None)
        trajectories.check(frames, len(fgs))

    start = time.perf_counter()
    pipe = LayerT2VPipeline.from_pretrained(model, layer_weights=args.layer_weights)
    if args.offload:  # the exact memory savers with it; the transformer never goes to the device whole
        pipe.enable_memory_savers(vae_tiling=False, offload=args.offload, device=args.device)
    else:
        pipe.to(args.device)
    load_s = time.perf_counter() - start
    video = pipe(args.prompt, bg, fgs, negative_prompt=args.negative, num_frames=args.frames, height=height,
                 width=width, num_inference_steps=args.steps, guidance_scale=args.guidance, seed=args.seed,
                 scheduler=args.scheduler, trajectories=trajectories)
    video.metadata["timings"]["load_model_s"] = load_s
    video.metadata["model_path"] = str(model)
    out = video.save(args.out, overwrite=args.overwrite)
    print(f"wrote {video.num_foregrounds} foreground layer(s), {video.num_frames} frames "
          f"{video.size[0]}x{video.size[1]} to {out} in {time.perf_counter() - start:.1f}s")
    print(f"  background: {bg}")
    for k, f in enumerate(fgs, 1):
        print(f"  foreground {k}: {f}")
    if trajectories is not None:
        print(f"  trajectory: foreground(s) {trajectories.foregrounds} steered (strength {trajectories.strength}, "
              f"first {trajectories.steps} steps); boxes in {out / 'trajectory.png'}")
    return 0


def supported_foregrounds(model: Path) -> int | None:
    """Read the layer count a saved model supports from its config, before loading any weights."""
    cfg = model / "transformer" / "config.json"
    if not cfg.is_file():
        return None
    return json.loads(cfg.read_text()).get("max_foregrounds", 1)


def cmd_train(args: argparse.Namespace) -> int:
    from .training.trainer import train_from_config

    out = train_from_config(args.config)
    print(f"stage done: {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    info: dict = {"path": str(path)}
    if (path / "manifest.json").is_file():
        info["kind"] = "layered video"
        info.update(json.loads((path / "manifest.json").read_text()))
    elif (path / "layert2v.json").is_file():
        info["kind"] = "layert2v pipeline"
        info.update(json.loads((path / "layert2v.json").read_text()))
        info["transformer"] = _config_summary(path / "transformer" / "config.json")
        info["vae"] = _config_summary(path / "vae" / "config.json")
    elif (path / "model_index.json").is_file():
        info["kind"] = "diffusers pipeline (Wan2.1 layout)"
        info["transformer"] = _config_summary(path / "transformer" / "config.json")
    elif (path / "checkpoint" / "progress.json").is_file() or (path / "progress.json").is_file():
        ckpt = path / "checkpoint" if (path / "checkpoint").is_dir() else path
        progress = json.loads((ckpt / "progress.json").read_text())
        info["kind"] = "training checkpoint"
        info.update({"stage": progress["stage"], "step": progress["step"],
                     "steps": progress["config"]["train"]["steps"]})
    else:
        raise ValueError(f"{path} is not a layered video, a pipeline or a training checkpoint")
    print(json.dumps(info, indent=2, default=str))
    return 0


def _config_summary(path: Path) -> dict:
    if not path.is_file():
        return {"missing": str(path)}
    cfg = json.loads(path.read_text())
    keys = ("_class_name", "num_layers", "num_attention_heads", "attention_head_dim", "text_dim", "max_foregrounds",
            "layer_text_embedding", "z_dim", "base_dim")
    return {k: cfg[k] for k in keys if k in cfg}


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval.command import run_eval

    return run_eval(args)


COMMANDS = {"generate": cmd_generate, "train": cmd_train, "info": cmd_info, "eval": cmd_eval}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as e:
        print(f"layert2v {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
