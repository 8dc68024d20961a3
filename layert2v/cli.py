"""`layert2v` command line: generate, decompose, edit, train, info, eval, data, ui.

Arguments and config files are checked before torch or diffusers is imported, so a mistake is answered in well
under a second. Every error ends in one line on stderr (exit 2 for bad input, 1 for anything unexpected, 130 for
Ctrl-C); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .editing import METHODS
from .output_dirs import NoSpaceError
from .preflight import BUILTIN_MODEL, ModelCheck
from .prompts import derive_prompts, full_prompt

if TYPE_CHECKING:
    from .trajectory import Trajectories

BAD_INPUT = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
             NoSpaceError)
INTERRUPTED = {"generate": "interrupted; nothing was written", "eval": "interrupted; nothing was written",
               "decompose": "interrupted; nothing was written", "edit": "interrupted; nothing was written",
               "train": "interrupted; run the same command to resume from the last checkpoint"}


# ------------------------------------------------------------------------------------------ argument types
def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like WIDTHxHEIGHT (e.g. 64x64), got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"--size must be positive in both sides, got {text!r}")
    return w, h


def _converted(text: str, convert: Callable[[str], Any], expected: str) -> Any:
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _converted(text, int, "a whole number >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def seed_int(text: str) -> int:
    from .preflight import SEED_RANGE

    value = _converted(text, int, "a whole number")
    if not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise argparse.ArgumentTypeError(f"must be from {SEED_RANGE[0]} to 2**63-1, got {text}")
    return value


def guidance_float(text: str) -> float:
    value = _converted(text, float, "a number")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (1 turns guidance off), got {text!r}")
    return value


def device_name(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return text


# ------------------------------------------------------------------------------------------------ parser
class Parser(argparse.ArgumentParser):
    """argparse with its errors in the one line the CLI promises: what is wrong and where the rest is (--help),
    without the usage block. Sub-commands' parsers are of the same class (argparse makes them so)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}; see `{self.prog} --help`\n")


def add_layer_weights_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer-weights", default=None, metavar="FILE",
                   help="the layer_weights.safetensors of a Wan2.1 --model (written by `layert2v train`); required "
                        "with a Wan2.1 --model")
    p.add_argument("--untrained-layers", action="store_true",
                   help="run a Wan2.1 --model without --layer-weights on purpose (a smoke test): its layer modules "
                        "stay as initialised, and the manifest says so")


def add_sampling_arguments(p: argparse.ArgumentParser, frames: bool) -> None:
    """The output, model and sampling options generate, decompose and edit share (frames and size: not for edit,
    whose clip has its directory's)."""
    p.add_argument("--negative", default=None, help="negative prompt for every layer")
    p.add_argument("--out", required=True, help="output directory (must be new or empty, or use --overwrite)")
    p.add_argument("--model", default=None, help="pipeline directory saved by `layert2v train`, or a Wan2.1-T2V "
                                                 "diffusers directory (default: the built-in model)")
    add_layer_weights_arguments(p)
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the starting noise (0 to 2**63-1)")
    p.add_argument("--steps", type=positive_int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--guidance", type=guidance_float, default=None,
                   help="classifier-free guidance scale (1 turns it off; default: the model's)")
    if frames:
        p.add_argument("--frames", type=positive_int, default=None,
                       help="frames per layer: 4k+1 for Wan2.1, 2k+1 for the built-in model, within the model's "
                            "sequence length (default: the model's)")
        p.add_argument("--size", type=parse_size, default=None,
                       help="WIDTHxHEIGHT, multiples of 16 (VAE factor x patch)")
    p.add_argument("--scheduler", choices=("unipc", "euler"), default="unipc",
                   help="sampler: unipc (UniPC, 2nd order; the default) or euler (flow-matching Euler)")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--offload", choices=("block", "leaf", "model"), default=None,
                   help="small GPUs: keep the transformer in CPU memory and run it on --device one block / one "
                        "layer / whole while denoising (exact; see docs/performance.md)")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default=None,
                   help="transformer compute precision (default: bf16 on CUDA, fp32 elsewhere); Wan's norms and "
                        "modulation stay fp32")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier output directory (one holding a saved layered video)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = Parser(prog="layert2v", description="Layered text-to-video generation.")
    parser.add_argument("--version", action="version", version=f"layert2v {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    common = argparse.ArgumentParser(add_help=False)  # so --debug also works after the command
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", parents=[common], help="generate a layered video from prompts",
                       description="Generate the full video, a clean background, foreground layers and alpha "
                                   "mattes in one denoising pass. Without --bg/--fg the layer prompts are derived "
                                   "from a full prompt of the form '<foreground> [and <foreground>] over "
                                   "<background>' (see README.md). --keep gives layers instead of generating them "
                                   "(docs/EDITING.md). --prompts FILE makes one clip per line of FILE (docs/BATCH.md).")
    g.add_argument("prompt", nargs="?", help="the full-video prompt (or --prompts FILE)")
    g.add_argument("--bg", help="background prompt")
    g.add_argument("--fg", action="append", default=None, help="foreground prompt; repeat for more layers")
    add_sampling_arguments(g, frames=True)
    g.add_argument("--trajectory", default=None, metavar="FILE",
                   help="JSON file of key-frame boxes for one or more foregrounds (docs/TRAJECTORIES.md): given to "
                        "a model trained with boxes (the built-in one), else guided cross-attention; boxes drawn in "
                        "OUT/trajectory.png")
    g.add_argument("--keep", action="append", default=[], metavar="LAYER=SOURCE",
                   help="give LAYER instead of generating it: background=DIR, foreground_K=DIR (with its alpha) or "
                        "full=DIR, DIR a layered output directory of the same frames and size (its files are "
                        "copied, so the layer stays bit-identical); background=VIDEO or full=VIDEO, a video file "
                        "fitted like decompose's; repeat for more layers")
    g.add_argument("--prompts", default=None, metavar="FILE",
                   help="many clips: a .jsonl file, one clip per line (prompt, and optionally bg, fg, seed, frames, "
                        "size, steps, trajectory), or a text file of one prompt per line; every line is checked "
                        "before the model loads. OUT gets a layered directory per line, index.jsonl and "
                        "failed.jsonl; a rerun resumes. --frames, --size and --steps apply to lines without their "
                        "own; a line without a seed gets --seed + line number - 1 (docs/BATCH.md)")
    g.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="with --prompts: workers, each loading the model once (default 1, in this process); more "
                        "than one runs on Ray, one GPU each with --device cuda, one thread each on the CPU")
    g.add_argument("--address", default=None,
                   help="with --prompts: join the Ray cluster at this address (e.g. auto, or HEAD:6379)")

    dc = sub.add_parser("decompose", parents=[common], help="split an existing video into layers",
                        description="Split a video file (anything FFmpeg reads: mp4, mov, webm ...) into a clean "
                                    "background, foregrounds and their alpha mattes, by one of two methods. "
                                    "'engine': the data engine's segmentation, matting and clean plate "
                                    "(docs/DATA_ENGINE.md) at the clip's own size and every frame, streamed in "
                                    "bounded memory; its default backends need no weights and a static camera with "
                                    "a moving object, --engine-config names real models instead; prompts are "
                                    "optional; --frames keeps the first N frames, --size resizes the whole frame. "
                                    "'model': the video is given to the layered model as its full layer and it "
                                    "generates the rest, fitted to the model (its first frames at the model's frame "
                                    "rate, --frames default the model's or fewer for a shorter clip, centre-cropped "
                                    "to the aspect of --size and resized). The default is engine with the built-in "
                                    "model, which knows only its procedural world, and model when --model names a "
                                    "trained model; the manifest records the method and why, and the input mapping "
                                    "(docs/EDITING.md).")
    dc.add_argument("video", help="the video file to decompose")
    dc.add_argument("--method", choices=METHODS, default=None,
                    help="engine or model (default: engine for the built-in model, model for a --model)")
    dc.add_argument("--engine-config", default=None, metavar="ENGINE_YAML",
                    help="engine: the backends and quality bar (default: all weight-free; configs/engine/paper.yaml "
                         "names real models in local directories)")
    dc.add_argument("--bg", default=None, help="background prompt (what is behind the objects); model: required")
    dc.add_argument("--fg", action="append", default=None,
                    help="foreground prompt; repeat for more layers; model: required; engine: the objects to find, "
                         "one layer each (default one), the text prompts of a text-prompted segmenter")
    dc.add_argument("--prompt", default=None,
                    help="full-video prompt (default: built from --fg and --bg as 'fg_1 and fg_2 over bg')")
    add_sampling_arguments(dc, frames=True)
    dc.set_defaults(seed=None, scheduler=None, device=None)  # model options: with the engine, any given is refused

    ed = sub.add_parser("edit", parents=[common], help="regenerate one foreground of a saved layered video",
                        description="Make one foreground layer of a layered output directory again from a new "
                                    "prompt, keeping the background and every other foreground with its alpha "
                                    "bit-identical (their files are copied); the layer's alpha, the full video and "
                                    "the composite are made again. Frames and size are DIR's (docs/EDITING.md).")
    ed.add_argument("dir", metavar="DIR", help="a layered output directory (holds manifest.json)")
    ed.add_argument("--regenerate", required=True, metavar="foreground_K", help="the foreground layer to make again")
    ed.add_argument("--fg", required=True, help="the new prompt of that layer")
    ed.add_argument("--prompt", default=None, help="full-video prompt (default: built from the layer prompts)")
    add_sampling_arguments(ed, frames=False)
    ed.add_argument("--trajectory", default=None, metavar="FILE",
                    help="JSON file of key-frame boxes for the regenerated foreground only (docs/TRAJECTORIES.md)")

    t = sub.add_parser("train", parents=[common], help="train one stage from a YAML config (resumes from its "
                                                       "checkpoint)",
                       description="Train one stage (vae, alpha, t2v or layered) from its YAML config; a run "
                                   "started again with the same config resumes from its last checkpoint "
                                   "(docs/TRAINING.md).")
    t.add_argument("config", help="stage config, e.g. configs/wan/2a_layered_192x336.yaml")
    t.add_argument("--dry-run", action="store_true", help="check the config and the stages it chains from without "
                   "weights (meta device) and print the plan; trains nothing")

    i = sub.add_parser("info", parents=[common], help="describe a checkpoint, pipeline or output directory",
                       description="Print, as JSON, what a directory is and what its files record: a layered "
                                   "output directory, a saved pipeline, a training stage's output or checkpoint, "
                                   "a Wan2.1 diffusers directory.")
    i.add_argument("path", metavar="PATH", help="the directory to describe")

    e = sub.add_parser("eval", parents=[common], help="evaluate saved layered videos and write a report",
                       description="Score saved layered videos per layer (VBench dimensions, matting, layer and "
                                   "trajectory metrics) and write a report directory (docs/EVALUATION.md).")
    from .eval.command import add_eval_arguments

    add_eval_arguments(e)
    d = sub.add_parser("data", parents=[common], help="build a layered dataset from raw videos (the data engine)",
                       description="The data engine: `data build` turns raw videos into a layered training set, "
                                   "`data composite` pastes RGBA foregrounds over background videos "
                                   "(docs/DATA_ENGINE.md).")
    from .data.engine.command import add_data_arguments

    add_data_arguments(d)

    u = sub.add_parser("ui", parents=[common], help="start the local web app (generate, look at layers, recomposite)",
                       description="Serve the web app of docs/UI.md on this machine only, unless --host says "
                                   "otherwise.")
    u.add_argument("--model", default=None, help="model directory, as for generate (default: the built-in model)")
    add_layer_weights_arguments(u)
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    u.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860; 0: any free port)")
    u.add_argument("--open", action="append", default=[], metavar="DIR",
                   help="an output directory to show at start; repeat for more")
    u.add_argument("--out", default="layert2v-ui", help="directory the app saves its generations under")
    return parser


# ---------------------------------------------------------------------------------------------- generate
def model_check(args: argparse.Namespace, frames: int | None, size: tuple[int, int] | None) -> ModelCheck:
    """:func:`layert2v.preflight.check_model` of --model, after the --offload/--device pairing."""
    from .preflight import check_model

    if args.offload and args.device == "cpu":
        raise ValueError("--offload keeps the transformer in CPU memory and runs it on an accelerator; pass "
                         "--device cuda, or drop --offload on the CPU")
    return check_model(args.model, frames, size, args.layer_weights, args.untrained_layers)


def check_generate(args: argparse.Namespace) -> tuple[ModelCheck, str, list[str], Trajectories | None]:
    """Every check `generate` can make from its arguments and the model's config files: nothing heavy loads."""
    from .formats import VIDEO_MANIFEST
    from .output_dirs import check_output_directory

    if not args.prompt.strip():
        raise ValueError("the prompt is empty; describe the video to generate")
    check_layer_prompts(args.bg, args.fg)
    check_output_directory(args.out, args.overwrite, marker=VIDEO_MANIFEST)
    check = model_check(args, args.frames, args.size)
    bg, fgs = derive_prompts(args.prompt, args.bg, args.fg)
    check.check_foregrounds(len(fgs), derived=not args.fg)
    trajectories = None
    if args.trajectory:  # checked against the clip before the model loads
        from .trajectory import Trajectories

        trajectories = Trajectories.load(args.trajectory)
        trajectories.check(check.frames, len(fgs))
    return check, bg, fgs, trajectories


def check_layer_prompts(bg: str | None, fgs: list[str] | None) -> None:
    if any(not f.strip() for f in fgs or []):
        raise ValueError("a --fg prompt is empty; describe each foreground layer")
    if bg is not None and not bg.strip():
        raise ValueError("the --bg prompt is empty; describe the background or leave --bg out")


def load_pipeline(args: argparse.Namespace, model: Path):  # -> LayerT2VPipeline (imported lazily)
    """The pipeline on --device in --dtype (--offload: the transformer streamed), and the dtype's name."""
    from .preflight import check_device

    check_device(args.device)
    import torch

    from .pipeline import LayerT2VPipeline

    dtype = args.dtype or ("bf16" if str(args.device).startswith("cuda") else "fp32")
    pipe = LayerT2VPipeline.from_pretrained(model, layer_weights=args.layer_weights,
                                            untrained_layers=args.untrained_layers)
    pipe.to(dtype={"bf16": torch.bfloat16, "fp32": torch.float32}[dtype])
    if args.offload:  # the exact memory savers with it; the transformer never goes to the device whole
        pipe.enable_memory_savers(vae_tiling=False, offload=args.offload, device=args.device)
    else:
        pipe.to(args.device)
    return pipe, dtype


def sampling_kwargs(args: argparse.Namespace) -> dict:
    return {"negative_prompt": args.negative, "num_inference_steps": args.steps, "guidance_scale": args.guidance,
            "seed": args.seed, "scheduler": args.scheduler}


def save_and_report(video, args: argparse.Namespace, model: Path, dtype: str, load_s: float, start: float,
                    verb: str = "wrote") -> Path:
    video.metadata["timings"]["load_model_s"] = load_s
    video.metadata["model_path"] = str(model)
    video.metadata["dtype"] = dtype
    out = video.save(args.out, overwrite=args.overwrite)
    print(f"{verb} {video.num_foregrounds} foreground layer(s), {video.num_frames} frames "
          f"{video.size[0]}x{video.size[1]} to {out} in {time.perf_counter() - start:.1f}s")
    print(f"  background: {video.prompts['background']}")
    for k, f in enumerate(video.prompts["foregrounds"], 1):
        print(f"  foreground {k}: {f}")
    given = video.metadata.get("given") or {}
    if given:
        kept = ", ".join(f"{name} from {g['from']}" for name, g in given.items() if not name.startswith("alpha_"))
        print(f"  given, not generated: {kept}")
    return out


def cmd_generate(args: argparse.Namespace) -> int:
    if args.prompts is not None or args.workers is not None or args.address is not None:
        from .batch import generate_batch

        return generate_batch(args, check_generate, load_pipeline, sampling_kwargs)
    if args.prompt is None:
        raise ValueError("give the prompt to generate, or --prompts FILE for many")
    check, bg, fgs, trajectories = check_generate(args)
    from .editing import check_keeps

    kept = check_keeps(args.keep, len(fgs), check, (args.trajectory, trajectories) if trajectories else None)
    width, height = args.size if args.size else (None, None)
    if kept is not None:
        width, height = check.size
    start = time.perf_counter()
    pipe, dtype = load_pipeline(args, check.model)
    load_s = time.perf_counter() - start
    video = pipe(args.prompt, bg, fgs, num_frames=check.frames if kept else args.frames, height=height,
                 width=width, trajectories=trajectories, conditions=kept.conditions if kept else None,
                 **sampling_kwargs(args))
    if kept is not None:
        kept.record(video)
    out = save_and_report(video, args, check.model, dtype, load_s, start)
    if trajectories is not None:
        how = video.metadata.get("trajectory_mechanism")
        if how == "guided cross-attention":
            how += f", strength {trajectories.strength}, first {trajectories.steps} steps"
        print(f"  trajectory: foreground(s) {trajectories.foregrounds} follow their boxes ({how}); boxes in "
              f"{out / 'trajectory.png'}")
    return 0


# ------------------------------------------------------------------------------------------- decompose / edit
MODEL_OPTIONS = ("model", "layer_weights", "seed", "steps", "guidance", "negative", "scheduler", "device", "offload",
                 "dtype")


def cmd_decompose(args: argparse.Namespace) -> int:
    from .editing import ENGINE, decompose_method

    method, why = decompose_method(args.method, args.model)
    check_layer_prompts(args.bg, args.fg)
    if args.prompt is not None and not args.prompt.strip():
        raise ValueError("the --prompt is empty; describe the video or leave --prompt out")
    if method == ENGINE:
        return decompose_with_engine(args, why)
    if args.engine_config is not None:
        raise ValueError("--engine-config names the data engine's backends; it goes with --method engine")
    if not args.bg or not args.fg:
        raise ValueError("--method model needs the prompts: --bg (the background) and a --fg per foreground")
    args.seed = 0 if args.seed is None else args.seed
    args.scheduler, args.device = args.scheduler or "unipc", args.device or "cpu"
    return decompose_with_model(args, why)


def decompose_with_engine(args: argparse.Namespace, why: str) -> int:
    from .data.engine.config import load_config
    from .data.engine.decompose import decompose_video

    given = [f"--{name.replace('_', '-')}" for name in MODEL_OPTIONS if getattr(args, name) is not None]
    if given:
        raise ValueError(f"{given[0]} is an option of --method model (the generative decomposition); the engine has "
                         "none: drop it, or pass --method model")
    config = load_config(args.engine_config).with_resampling(args.size, args.frames, None)
    prompts: dict[str, Any] = {}
    if args.prompt or (args.bg and args.fg):
        prompts["full"] = args.prompt or full_prompt(args.bg, args.fg)
    if args.bg:
        prompts["background"] = args.bg
    if args.fg:
        prompts["foregrounds"] = args.fg
    result = decompose_video(args.video, args.out, config, prompts=prompts, object_names=args.fg,
                             metadata={"method_reason": why}, overwrite=args.overwrite)
    print(f"wrote {result.num_foregrounds} foreground layer(s), {result.frames} frames {result.size[0]}x"
          f"{result.size[1]} to {result.path} in {result.seconds:.1f}s")
    print(f"  method: engine ({why})")
    print("  backends: " + ", ".join(f"{stage}={b['backend']}" for stage, b in result.backends.items()))
    print(f"  captions: {result.captions}")
    s = result.scores
    coverage = ", ".join(f"{s[f'coverage_{k}']:.1%}" for k in range(1, result.num_foregrounds + 1))
    print(f"  checks: recomposite {s['recomposite_psnr']:.1f} dB, coverage {coverage}, alpha change per frame "
          f"{s['alpha_stability']:.3f}")
    for failure in result.failures:
        print(f"  warning: {failure} (the layers may be poor; the manifest's engine.failures says so too)")
    return 0


def decompose_with_model(args: argparse.Namespace, why: str) -> int:
    from .data.fit import fit_video, frames_the_model_takes, probe
    from .formats import VIDEO_MANIFEST
    from .output_dirs import check_output_directory

    check_output_directory(args.out, args.overwrite, marker=VIDEO_MANIFEST)
    length = probe(args.video)[0]  # a file that is not a video: one line, before anything else
    check = model_check(args, args.frames, args.size)
    check.check_foregrounds(len(args.fg))
    if check.frames is None or check.size is None:
        raise ValueError("decompose fits the video before the model loads; pass --frames and --size for this model")
    frames = check.frames if args.frames else frames_the_model_takes(length, check.multiples[0], check.frames)
    fitted = fit_video(args.video, frames, check.size[1], check.size[0], check.multiples, fps=check.fps)
    start = time.perf_counter()
    pipe, dtype = load_pipeline(args, check.model)
    load_s = time.perf_counter() - start
    video = pipe.decompose(fitted.frames, args.bg, args.fg, prompt=args.prompt, **sampling_kwargs(args))
    video.metadata["given"] = {"full": {"from": str(Path(args.video).absolute()), "layer": "full"}}
    video.metadata["input"] = fitted.mapping
    video.metadata["method"], video.metadata["method_reason"] = "model", why
    save_and_report(video, args, check.model, dtype, load_s, start)
    print(f"  method: model ({why})")
    m = fitted.mapping
    print(f"  input: {m['source']} {m['source_size'][0]}x{m['source_size'][1]}, frames {m['start_frame']}.."
          f"{m['end_frame']} of {m['source_frames']} (every {m['frame_step']:g}), crop {m['crop_box']}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from .editing import regenerate, regeneration_plan
    from .formats import VIDEO_MANIFEST
    from .io.layered_dir import read_manifest
    from .output_dirs import check_output_directory
    from .video import LayeredVideo

    manifest = read_manifest(Path(args.dir))  # not a layered directory: one line
    regeneration_plan(manifest["num_foregrounds"], args.regenerate)
    if not args.fg.strip():
        raise ValueError(f"the --fg prompt is empty; describe the new {args.regenerate}")
    if args.prompt is not None and not args.prompt.strip():
        raise ValueError("the --prompt is empty; describe the video or leave --prompt out")
    check_output_directory(args.out, args.overwrite, marker=VIDEO_MANIFEST)
    if Path(args.out).absolute() == Path(args.dir).absolute():
        raise ValueError("--out is the directory being edited; write the edit to a new directory")
    size = tuple(manifest["size"])
    check = model_check(args, manifest["frames"], size)
    check.check_foregrounds(manifest["num_foregrounds"])
    trajectories = None
    if args.trajectory:
        from .trajectory import Trajectories

        trajectories = Trajectories.load(args.trajectory)
        trajectories.check(manifest["frames"], manifest["num_foregrounds"])
        regeneration_plan(manifest["num_foregrounds"], args.regenerate, trajectories, args.trajectory)
    source = LayeredVideo.load(args.dir)
    start = time.perf_counter()
    pipe, dtype = load_pipeline(args, check.model)
    load_s = time.perf_counter() - start
    video = regenerate(pipe, source, args.regenerate, args.fg, trajectories=trajectories,
                       full_prompt_text=args.prompt, **sampling_kwargs(args))
    save_and_report(video, args, check.model, dtype, load_s, start, verb=f"regenerated {args.regenerate}; wrote")
    return 0


# ------------------------------------------------------------------------------------------ train / info
def cmd_train(args: argparse.Namespace) -> int:
    if not Path(args.config).is_file():
        raise FileNotFoundError(f"no config file at {args.config}; pass a stage YAML such as "
                                "configs/world/4_layered.yaml")
    if args.dry_run:
        from .training.plan import plan

        print("\n".join(plan(args.config)))
        return 0
    from .training.trainer import train_from_config

    out = train_from_config(args.config)
    print(f"stage done: {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .formats import directory_info

    print(json.dumps(directory_info(args.path), indent=2, default=str))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval.command import run_eval

    return run_eval(args)


def cmd_data(args: argparse.Namespace) -> int:
    from .data.engine.command import run_data

    return run_data(args)


def cmd_ui(args: argparse.Namespace) -> int:
    from .ui import serve

    return serve(Path(args.model) if args.model else BUILTIN_MODEL, args.host, args.port,
                 [Path(d) for d in args.open], Path(args.out), args.layer_weights, args.untrained_layers)


COMMANDS = {"generate": cmd_generate, "decompose": cmd_decompose, "edit": cmd_edit, "train": cmd_train,
            "info": cmd_info, "eval": cmd_eval, "data": cmd_data, "ui": cmd_ui}


# -------------------------------------------------------------------------------------------------- main
def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)) and \
            error.filename is not None and error.strerror:  # a raw OSError: say which path
        text = f"{error.strerror}: {error.filename}"
    return text


def _say(line: str) -> None:
    """Print the error on a line of its own, even when a progress bar was left mid-line."""
    bars = getattr(sys.modules.get("tqdm.std"), "tqdm", None)
    if bars is not None and getattr(bars, "_instances", None):
        print(file=sys.stderr)
    print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = f"layert2v {args.command}"
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as e:
        if args.debug:
            raise
        _say(f"{name}: {str(e) or INTERRUPTED.get(args.command, 'interrupted')}")
        return 130
    except BAD_INPUT as e:
        if args.debug:
            raise
        _say(f"{name}: error: {_one_line(e)}")
        return 2
    except Exception as e:  # anything unforeseen: still one line, the traceback on request
        if args.debug:
            raise
        _say(f"{name}: error: {type(e).__name__}: {_one_line(e)} (run with --debug for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
