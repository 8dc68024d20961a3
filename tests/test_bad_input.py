"""Hostile and careless input (issue 19): refused up front in one line, never silently wrong, never read from
outside its directory, never unbounded. The training-side cases live with the trainer's tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_TRANSFORMER, TINY_VAE, toy_clip

from layert2v import cli
from layert2v.cli import BUILTIN_MODEL, main
from layert2v.video import LayeredVideo

P = "a red circle moving right over a blue striped background"
ROOT = Path(__file__).parent.parent


def one_line_error(capsys) -> str:
    """The error line; anything else on stderr may only be progress bars."""
    err = capsys.readouterr().err.strip()
    bar = re.compile(r"\|\s*\d+/\d+ \[[^\]]*\]")  # a tqdm progress bar
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and not bar.search(line)]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def argparse_refuses(argv: list[str], capsys) -> str:
    """argparse's refusal: exit 2 and one line on stderr (no usage block), pointing at --help for the rest."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "usage:" not in err, err
    assert "--help" in err
    return err.strip()


@pytest.fixture()
def saved_model(tiny_pipeline, tmp_path):
    return tiny_pipeline.save_pretrained(tmp_path / "model")


@pytest.fixture()
def no_loading(monkeypatch):
    """Fail the test if a model would be built or loaded: the check must come first."""
    from layert2v.models.transformer import LayeredWanTransformer
    from layert2v.pipeline import LayerT2VPipeline

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(LayerT2VPipeline, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(LayeredWanTransformer, "from_config", classmethod(refuse))


# ------------------------------------------------------------------------------------------ silently wrong
@pytest.mark.parametrize("flag, value", [("--frames", "0"), ("--size", "0x0"), ("--steps", "0"), ("--steps", "-3"),
                                         ("--guidance", "nan"), ("--guidance", "inf"), ("--seed", str(2**70)),
                                         ("--seed", "-1"), ("--device", "potato")])
def test_out_of_range_arguments_are_refused_not_replaced_by_defaults(flag, value, tmp_path, capsys):
    last = argparse_refuses(["generate", P, "--out", str(tmp_path / "o"), flag, value], capsys)
    assert f"argument {flag}" in last
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"num_frames": 0}, "--frames"), ({"height": 0, "width": 0}, "--size"), ({"num_inference_steps": 0}, "--steps"),
    ({"guidance_scale": float("nan")}, "--guidance"), ({"guidance_scale": float("inf")}, "--guidance"),
    ({"seed": 2**70}, "--seed"), ({"num_frames": 65}, "rope_max_seq_len"),
])
def test_the_api_refuses_what_it_used_to_replace_or_crash_on(tiny_pipeline, kwargs, message, monkeypatch):
    calls = []
    monkeypatch.setattr(tiny_pipeline.text_encoder, "encode", calls.append)  # nothing may be encoded
    with pytest.raises(ValueError, match=message):
        tiny_pipeline("a", "b", ["c"], progress=False, **kwargs)
    assert calls == []


def test_sequence_longer_than_the_rope_table_is_refused_up_front(tmp_path, capsys, no_loading):
    """The built-in model's RoPE table has 64 positions: 33 frames with one foreground (4 x 17) and 17 frames with
    three (8 x 9) exceed it; the message gives the largest frame count that fits."""
    assert main(["generate", P, "--out", str(tmp_path / "o"), "--frames", "33"]) == 2
    assert "rope_max_seq_len); pass --frames 31 or fewer" in one_line_error(capsys)
    assert main(["generate", P, "--out", str(tmp_path / "o"), "--frames", "17", "--fg", "a", "--fg", "b",
                 "--fg", "c"]) == 2
    assert "pass --frames 15 or fewer" in one_line_error(capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, says", [
    (["generate", P, "--out", "o", "--frames", "0"], "argument --frames: expected a whole number >= 1"),
    (["generate", P, "--out", "o", "--seed", "-1"], "argument --seed: must be from 0"),
    (["generate", P, "--out", "o", "--guidance", "nan"], "argument --guidance: must be a finite number"),
    (["generate", P], "the following arguments are required: --out"),
    (["generate", P, "--out", "o", "--scheduler", "ddim"], "argument --scheduler: invalid choice"),
    (["decompose", "v.mp4", "--method", "magic", "--out", "o"], "argument --method: invalid choice"),
    (["edit", "d", "--fg", "f", "--out", "o"], "required: --regenerate"),
    (["train"], "required: config"),
    (["info"], "required: PATH"),
    (["eval", "d"], "required: --out"),
    (["data", "build", "v", "--frames", "0"], "argument --frames: expected a positive number"),
    (["data"], "required: data_command"),
    (["ui", "--port", "http"], "argument --port: invalid int value"),
    (["render"], "argument command: invalid choice"),
    ([], "required: command"),
])
def test_argument_errors_are_one_line_in_every_command(argv, says, capsys):
    line = argparse_refuses(argv, capsys)
    assert says in line
    assert line.startswith(f"layert2v{' ' + argv[0] if argv and argv[0] != 'render' else ''}")


def test_overwrite_of_a_foreign_directory_is_refused_before_generating(tmp_path, capsys, no_loading):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert main(["generate", P, "--out", str(out), "--overwrite"]) == 2
    assert "no manifest.json" in one_line_error(capsys)
    assert (out / "thesis.tex").read_text() == "precious"


def test_prompt_longer_than_the_text_window_is_refused(tiny_pipeline):
    long = " ".join(["red"] * 40)  # the fixture's window is 16 tokens
    with pytest.raises(ValueError, match="foreground 1 prompt is 42 tokens long.*at most 16"):
        tiny_pipeline("a", "b", [long], progress=False)
    with pytest.raises(ValueError, match="negative prompt is 42 tokens"):
        tiny_pipeline("a", "b", ["c"], negative_prompt=long, progress=False)


# --------------------------------------------------------------------------------------- outside its directory
@pytest.fixture(scope="module")
def saved_clip(tmp_path_factory) -> Path:
    return toy_clip(0, frames=3, size=32).save(tmp_path_factory.mktemp("clip") / "sample")


@pytest.mark.parametrize("name", ["/etc/passwd", "../other/full.mp4", "sub/full.mp4", "..", "link.mp4"])
def test_load_reads_only_files_inside_the_directory(saved_clip, tmp_path, name):
    sample = tmp_path / "sample"
    shutil.copytree(saved_clip, sample)
    (tmp_path / "other").mkdir()
    shutil.copy(sample / "full.mp4", tmp_path / "other" / "full.mp4")
    (sample / "link.mp4").symlink_to(tmp_path / "other" / "full.mp4")
    (sample / "sub").mkdir()
    shutil.copy(sample / "full.mp4", sample / "sub" / "full.mp4")
    manifest = json.loads((sample / "manifest.json").read_text())
    manifest["files"]["full"] = name
    (sample / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="not a file inside"):
        LayeredVideo.load(sample)


# ------------------------------------------------------------------------------------------------ unbounded
def wan_directory(root: Path, transformer: dict, vae: dict | None = None) -> Path:
    (root / "transformer").mkdir(parents=True)
    (root / "vae").mkdir()
    (root / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    (root / "transformer" / "config.json").write_text(json.dumps({"_class_name": "WanTransformer3DModel",
                                                                  **transformer}))
    vae = vae or {**TINY_VAE, "temperal_downsample": [False, True, True]}
    (root / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLWan", **vae}))
    return root


def test_a_config_without_size_fields_is_refused_not_filled_with_defaults(tmp_path, capsys, no_loading):
    from layert2v.pipeline import LayerT2VPipeline

    model = wan_directory(tmp_path / "wan", {"patch_size": [1, 2, 2]})  # diffusers' defaults: the 14 B model
    assert main(["generate", P, "--model", str(model), "--out", str(tmp_path / "o")]) == 2
    assert "lacks or has invalid size field(s) ['num_attention_heads'" in one_line_error(capsys)
    with pytest.raises(AssertionError):  # no_loading: the API path goes through the same check first
        LayerT2VPipeline.from_pretrained(model)


def test_a_model_too_big_for_memory_is_refused_with_what_it_needs(tmp_path, capsys, monkeypatch):
    from layert2v import preflight
    from layert2v.models.transformer import LayeredWanTransformer
    from layert2v.pipeline import LayerT2VPipeline

    def refuse(*args, **kwargs):
        raise AssertionError("built a model that cannot fit")

    monkeypatch.setattr(LayeredWanTransformer, "from_config", classmethod(refuse))
    wan14b = {"patch_size": [1, 2, 2], "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 16,
              "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40,
              "rope_max_seq_len": 1024}
    model = wan_directory(tmp_path / "wan", wan14b)
    monkeypatch.setattr(preflight, "available_memory", lambda: 20 * 2**30)
    with pytest.raises(ValueError, match=r"14\.3 B-parameter model that needs about 10\d\.\d GiB.*20\.0 GiB is free"):
        LayerT2VPipeline.from_pretrained(model)
    assert main(["generate", P, "--model", str(model), "--out", str(tmp_path / "o")]) == 2
    assert "--model with a smaller model" in one_line_error(capsys)


def test_size_estimates_match_the_built_models():
    from diffusers import AutoencoderKLWan

    from layert2v.models.transformer import LayeredWanTransformer
    from layert2v.preflight import transformer_parameters, vae_parameters

    builtin = json.loads((BUILTIN_MODEL / "transformer" / "config.json").read_text())
    for config in (dict(TINY_TRANSFORMER, max_foregrounds=2), dict(TINY_TRANSFORMER, layer_text_embedding=True,
                                                                   cross_attn_norm=False),
                   dict(TINY_TRANSFORMER, box_conditioning=True), builtin):
        model = LayeredWanTransformer.from_config(config)
        assert transformer_parameters(dict(model.config)) == sum(p.numel() for p in model.parameters())
    for config in (TINY_VAE, json.loads((BUILTIN_MODEL / "vae" / "config.json").read_text())):
        vae = AutoencoderKLWan.from_config(config)
        real = sum(p.numel() for p in vae.parameters())
        assert abs(vae_parameters(dict(vae.config)) - real) < 0.2 * real


# ------------------------------------------------------------------------------------- one line, not a traceback
def test_damaged_weights_are_one_line(saved_model, tmp_path, capsys):
    from layert2v.pipeline import LayerT2VPipeline

    weights = saved_model / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or damaged"):
        LayerT2VPipeline.from_pretrained(saved_model)
    assert main(["generate", "a", "--bg", "b", "--fg", "c", "--model", str(saved_model), "--out",
                 str(tmp_path / "o")]) == 2
    assert "cannot read the weights" in one_line_error(capsys)
    weights.write_bytes(b"\xff\xfe not a safetensors file at all")
    assert main(["generate", "a", "--bg", "b", "--fg", "c", "--model", str(saved_model), "--out",
                 str(tmp_path / "o")]) == 2
    assert "cannot read the weights" in one_line_error(capsys)


@pytest.mark.parametrize("config", [{"_class_name": "UNet2DConditionModel", "patch_size": 2},
                                    {"_class_name": "UNet2DConditionModel", "patch_size": None}, "[1, 2]", "{oops"])
def test_another_architecture_or_broken_config_is_one_line(tmp_path, capsys, config):
    model = tmp_path / "other"
    (model / "transformer").mkdir(parents=True)
    (model / "vae").mkdir()
    vae = {"_class_name": "AutoencoderKLWan", **TINY_VAE, "temperal_downsample": [False, True, True]}
    (model / "vae" / "config.json").write_text(json.dumps(vae))
    (model / "layert2v.json").write_text(json.dumps({"format": "layert2v-pipeline", "version": 1, "config": {}}))
    text = config if isinstance(config, str) else json.dumps(config)
    (model / "transformer" / "config.json").write_text(text)
    assert main(["generate", "a", "--model", str(model), "--out", str(tmp_path / "o"), "--frames", "5"]) == 2
    err = one_line_error(capsys)
    assert "not a Wan transformer" in err or "not valid JSON" in err or "not a JSON object" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(tmp_path, capsys, no_loading):
    assert main(["generate", P, "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in one_line_error(capsys)


def test_output_under_a_regular_file_is_one_line(tmp_path, capsys, no_loading):
    (tmp_path / "file.txt").write_text("x")
    assert main(["generate", P, "--out", str(tmp_path / "file.txt" / "out")]) == 2
    assert "file.txt is a file" in one_line_error(capsys)


def test_ctrl_c_exits_130_in_one_line_leaving_nothing(saved_model, tmp_path, capsys, monkeypatch):
    from layert2v.io import layered_dir

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(layered_dir, "contact_sheet", interrupt)  # mid-save: the temp directory exists by now
    out = tmp_path / "out"
    assert main(["generate", "a", "--bg", "b", "--fg", "c", "--model", str(saved_model), "--out", str(out),
                 "--steps", "1"]) == 130
    assert "interrupted; nothing was written" in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    def boom(args):
        raise RuntimeError("something nobody foresaw\nover two lines")

    monkeypatch.setitem(cli.COMMANDS, "generate", boom)
    assert main(["generate", P, "--out", str(tmp_path / "o")]) == 1
    err = one_line_error(capsys)
    assert err.startswith("layert2v generate: error: RuntimeError: something nobody foresaw over two lines")
    assert err.endswith("(run with --debug for the traceback)")
    for argv in (["--debug", "generate", P, "--out", "o"], ["generate", P, "--out", "o", "--debug"]):
        with pytest.raises(RuntimeError, match="nobody foresaw"):
            main(argv)


def test_version(capsys):
    from layert2v import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"layert2v {__version__}"


def test_argument_errors_come_before_the_heavy_imports():
    """A bad --frames is answered without importing torch or diffusers (they take seconds)."""
    code = ("import sys; from layert2v.cli import main; rc = main(['generate', 'a red circle', '--out', 'o', "
            "'--frames', '8']); print(rc, 'torch' in sys.modules, 'diffusers' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.stdout.split() == ["2", "False", "False"], done.stdout + done.stderr
    assert "--frames must be 2k+1" in done.stderr


# ---------------------------------------------------------------------------------------------- odd corners
def test_info_recognises_a_vae_stage_output(tmp_path, capsys):
    from diffusers import AutoencoderKLWan

    AutoencoderKLWan(**TINY_VAE).save_pretrained(tmp_path / "final" / "vae")
    assert main(["info", str(tmp_path / "final")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"].startswith("training stage output") and info["vae"]["base_dim"] == TINY_VAE["base_dim"]


def test_help_texts_cite_only_files_that_exist(capsys):
    parser = cli.build_parser()
    texts = [parser.format_help()]
    for command in cli.COMMANDS:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        texts.append(capsys.readouterr().out)
    cited = set(re.findall(r"[\w./-]+\.(?:md|yaml|json)\b", " ".join(texts)))
    cited -= {"report.json", "report.md", "trajectory.json", "manifest.json"}  # files the command writes or reads
    assert cited, "expected the help to cite at least one document"
    assert [c for c in cited if not (ROOT / c).exists()] == []


def test_outputs_follow_the_umask_like_generate(tmp_path):
    """One permissions policy: training outputs and checkpoints (atomic_directory) are 0755/0644 under umask 022,
    as generate's are, not 0700."""
    from layert2v.output_dirs import atomic_directory

    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "final") as tmp:
            (tmp / "weights.bin").write_bytes(b"x")
        video = toy_clip(1, frames=3, size=16).save(tmp_path / "video")
    finally:
        os.umask(old)
    for directory in (tmp_path / "final", video):
        assert directory.stat().st_mode & 0o777 == 0o755
        assert all(f.stat().st_mode & 0o777 == 0o644 for f in directory.iterdir())


def test_save_pretrained_replaces_only_a_saved_pipeline(tiny_pipeline, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"no layert2v.json"):
        tiny_pipeline.save_pretrained(home)
    assert [p.name for p in home.iterdir()] == ["notes.txt"]
    tiny_pipeline.save_pretrained(tmp_path / "model")
    tiny_pipeline.save_pretrained(tmp_path / "model")  # an earlier pipeline is replaced


def test_unknown_pipeline_config_keys_are_refused(saved_model):
    from layert2v.pipeline import LayerT2VPipeline

    meta = json.loads((saved_model / "layert2v.json").read_text())
    meta["config"]["num_frame"] = 9  # a typo would be silently ignored
    (saved_model / "layert2v.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['num_frame'\]"):
        LayerT2VPipeline.from_pretrained(saved_model)


def test_clean_inputs_still_generate(tiny_pipeline):
    video = tiny_pipeline("a", "b", ["c"], num_frames=5, num_inference_steps=1, progress=False)
    assert video.num_frames == 5 and np.isfinite(video.full).all()


# ------------------------------------------------------------------------------ what a new user hit (issue 29)
@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory) -> Path:
    from helpers import save_tiny_wan

    return save_tiny_wan(tmp_path_factory.mktemp("wan21"))


def test_a_wan_directory_without_layer_weights_is_refused_unless_asked_for(tiny_wan, tmp_path, capsys, monkeypatch):
    """Without --layer-weights the layer modules would be untrained: refused in one line naming the flag, before
    loading; --untrained-layers runs it on purpose and the manifest records that."""
    from layert2v.pipeline import LayerT2VPipeline

    small = ["--size", "32x32", "--frames", "5", "--steps", "1"]
    loads, load = [], LayerT2VPipeline.from_pretrained
    monkeypatch.setattr(LayerT2VPipeline, "from_pretrained", lambda *a, **k: loads.append(a) or load(*a, **k))
    assert main(["generate", P, "--model", str(tiny_wan), "--out", str(tmp_path / "o"), *small]) == 2
    line = one_line_error(capsys)
    assert "needs --layer-weights FILE" in line and "--untrained-layers" in line
    assert loads == [] and not (tmp_path / "o").exists()
    lw = tmp_path / "layers.safetensors"
    lw.write_bytes(b"")
    assert main(["generate", P, "--model", str(tiny_wan), "--layer-weights", str(lw), "--untrained-layers",
                 "--out", str(tmp_path / "o"), *small]) == 2
    assert "not both" in one_line_error(capsys)
    assert main(["generate", P, "--model", str(tiny_wan), "--untrained-layers", "--out", str(tmp_path / "o"),
                 *small]) == 0
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["untrained_layers"] is True
    assert main(["generate", P, "--untrained-layers", "--out", str(tmp_path / "b")]) == 2  # the built-in model
    assert "drop --untrained-layers" in one_line_error(capsys)


def test_layer_weights_that_are_a_directory_or_missing_say_so(tiny_wan, tmp_path, capsys, no_loading):
    final = tmp_path / "final"
    final.mkdir()
    argv = ["generate", P, "--model", str(tiny_wan), "--out", str(tmp_path / "o"), "--layer-weights"]
    assert main([*argv, str(final)]) == 2
    line = one_line_error(capsys)
    assert "is a directory, not a layer-weights file" in line and "does not exist" not in line
    (final / "layer_weights.safetensors").write_bytes(b"x")
    assert main([*argv, str(final)]) == 2
    assert f"pass the file in it: --layer-weights {final / 'layer_weights.safetensors'}" in one_line_error(capsys)
    assert main([*argv, str(tmp_path / "nowhere.safetensors")]) == 2
    assert "does not exist" in one_line_error(capsys)
    assert main([*argv, str(final / "layer_weights.safetensors")]) == 2  # one byte: checked from its header
    assert "no complete safetensors header" in one_line_error(capsys)
    assert not (tmp_path / "o").exists()


def test_pickled_weights_are_refused_before_anything_loads_them(saved_model, tmp_path, capfd):
    """A diffusers loader falls back to a pickled .bin, saying "Defaulting to unsafe serialization" first: the
    refusal must come before any loader runs, and be the only line."""
    from safetensors.torch import load_file

    weights = saved_model / "transformer" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), saved_model / "transformer" / "diffusion_pytorch_model.bin")
    weights.unlink()
    assert main(["generate", "a", "--bg", "b", "--fg", "c", "--model", str(saved_model), "--out",
                 str(tmp_path / "o"), "--steps", "1"]) == 2
    out, err = capfd.readouterr()
    assert err.strip().splitlines() == [err.strip()] and "unsafe" not in out + err, out + err
    assert "holds pickled weights (diffusion_pytorch_model.bin)" in err and not (tmp_path / "o").exists()


def test_foregrounds_read_from_the_prompt_are_not_called_fg_flags(tmp_path, capsys, no_loading):
    four = "a red circle, a blue square, a green ball and a white star over a grey sky"
    assert main(["generate", four, "--out", str(tmp_path / "o")]) == 2
    line = one_line_error(capsys)
    assert "the prompt names 4 objects" in line and "pass fewer --fg" not in line
    assert main(["generate", "x", "--bg", "b", "--fg", "1", "--fg", "2", "--fg", "3", "--fg", "4", "--out",
                 str(tmp_path / "o")]) == 2
    assert "pass fewer --fg" in one_line_error(capsys)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare to mount a small tmpfs privately")
def test_a_real_full_disk_is_one_line_and_leaves_nothing(saved_model, tmp_path):
    """A real 64 KiB tmpfs, mounted in a private namespace for one command: every write fails once the disk is full,
    the flushes of the other open files too, and the first error is still the one said (it was a raw OSError)."""
    (tmp_path / "disk").mkdir()
    script = 'mount -t tmpfs -o size=64k layert2v-test-disk disk || exit 99; "$@"'
    argv = [sys.executable, "-m", "layert2v.cli", "generate", "a", "--bg", "b", "--fg", "c", "--model",
            str(saved_model), "--steps", "1", "--size", "64x64", "--out", "disk/out"]
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script + "; rc=$?; ls -A disk; exit $rc", "sh", *argv],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    if proc.returncode == 99:
        pytest.skip("no tmpfs could be mounted here (unshare -rm)")
    lines = [line for line in proc.stderr.replace("\r", "\n").splitlines()
             if line.strip() and "%|" not in line]  # progress bars aside
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("layert2v generate: error: no space left on layert2v-test-disk"), lines[0]
    assert proc.stdout.strip() == ""  # the disk was left empty


def test_a_full_disk_is_one_line_naming_the_device_and_leaves_nothing(saved_model, tmp_path, capsys, monkeypatch):
    """The disk fills during the save (ENOSPC from the encoder, as FFmpeg raises it): exit 2, one line with the
    device, what the output needs and the fix, and no partial directory."""
    import errno

    from layert2v import output_dirs
    from layert2v.io import codec

    real = codec.VideoWriter.write
    calls = []

    def fills_up(writer, frames):  # the third file's encoder finds the disk full
        if not isinstance(writer.path, Path):  # sizing the result in memory, not writing it
            return real(writer, frames)
        calls.append(writer.path)
        if len(calls) == 3:
            Path(writer.path).write_bytes(b"\0" * 1000)  # a partial file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(writer.path))
        return real(writer, frames)

    monkeypatch.setattr(codec.VideoWriter, "write", fills_up)
    monkeypatch.setattr(output_dirs, "free_bytes", lambda mount: 50_000)  # what the full disk has left
    argv = ["generate", "a", "--bg", "b", "--fg", "c", "--model", str(saved_model), "--steps", "1", "--out"]
    assert main([*argv, str(tmp_path / "runs" / "o")]) == 2
    line = one_line_error(capsys)
    assert len(calls) == 3 and list((tmp_path / "runs").iterdir()) == []  # the partial directory is gone
    device, mount = output_dirs._mount_of(tmp_path)
    needed = re.fullmatch(rf"layert2v generate: error: no space left on {re.escape(device)} \(mounted at "
                          rf"{re.escape(str(mount))}\); o needs (\d+\.\d) MB and 0\.0 MB is free: free (\d+\.\d) MB "
                          r"or choose another output directory \(--out\); nothing was written", line)
    assert needed, line
    monkeypatch.setattr(codec.VideoWriter, "write", real)  # the same output where there is room: the size it said
    assert main([*argv, str(tmp_path / "room")]) == 0
    written = sum(f.stat().st_size for f in (tmp_path / "room").iterdir())
    assert needed[1] == f"{written / 2**20:.1f}" and needed[2] == f"{(written - 50_000) / 2**20:.1f}"
    video = toy_clip(3, 2)  # the API: the same error, the bytes exact
    written = sum(f.stat().st_size for f in video.save(tmp_path / "toy").iterdir())
    calls.clear()
    monkeypatch.setattr(codec.VideoWriter, "write", fills_up)
    with pytest.raises(output_dirs.NoSpaceError) as e:
        video.save(tmp_path / "again")
    assert (e.value.needed, e.value.free) == (written, 50_000) and not (tmp_path / "again").exists()
