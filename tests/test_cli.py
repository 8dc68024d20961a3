"""`layert2v` command line: generation end to end with a saved tiny model, and bad input caught up front."""

import json

import pytest

from layert2v.cli import main


@pytest.fixture()
def saved_model(tiny_pipeline, tmp_path):
    return tiny_pipeline.save_pretrained(tmp_path / "model")


def test_generate_writes_a_layered_directory(saved_model, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "a red circle moving right over a blue striped background", "--model",
                 str(saved_model), "--out", str(out), "--steps", "2", "--seed", "7"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    # --bg/--fg derived from the full prompt by the documented rule
    assert manifest["prompts"]["background"] == "a blue striped background"
    assert manifest["prompts"]["foregrounds"] == ["a red circle moving right"]
    assert manifest["seed"] == 7 and manifest["steps"] == 2
    for name in ("full.mp4", "background.mp4", "foreground_1.mov", "foreground_1.webm", "alpha_1.mp4",
                 "composite.mp4", "preview.png"):
        assert (out / name).is_file(), name
    assert main(["info", str(out)]) == 0
    assert '"layered video"' in capsys.readouterr().out


def test_two_fg_flags_give_two_layers(saved_model, tmp_path):
    out = tmp_path / "two"
    assert main(["generate", "x", "--bg", "sky", "--fg", "a ball", "--fg", "a box", "--model", str(saved_model),
                 "--out", str(out), "--steps", "1"]) == 0
    assert json.loads((out / "manifest.json").read_text())["num_foregrounds"] == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--frames", "8"], "4k+1"),
        (["--size", "40x32"], "multiple of 16"),
        (["--fg", "a", "--fg", "b", "--fg", "c"], "at most 2"),
        (["--bg", " "], "--bg prompt is empty"),
    ],
)
def test_bad_generate_input_exits_with_one_line(saved_model, tmp_path, capsys, extra, message):
    out = tmp_path / "bad"
    code = main(["generate", "a red circle", "--model", str(saved_model), "--out", str(out), "--steps", "1", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".bad*"))  # nothing half-written


def test_unknown_model_and_other_architecture(tmp_path, capsys):
    assert main(["generate", "a", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    other = tmp_path / "other"
    (other / "transformer").mkdir(parents=True)
    (other / "layert2v.json").write_text(json.dumps({"format": "layert2v-pipeline", "version": 1, "config": {}}))
    (other / "transformer" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    assert main(["generate", "a", "--model", str(other), "--out", str(tmp_path / "o")]) == 2
    assert "not a Wan transformer" in capsys.readouterr().err


def test_frame_and_size_rules_come_from_the_model(tmp_path, capsys):
    """The built-in VAE halves time where Wan's quarters it: 7 frames are fine for it, 8 are refused (before any
    weights load), and the message names its own rule."""
    assert main(["generate", "a red circle", "--out", str(tmp_path / "bad"), "--frames", "8"]) == 2
    assert "--frames must be 2k+1" in capsys.readouterr().err
    assert main(["generate", "a red circle", "--out", str(tmp_path / "bad"), "--size", "40x40"]) == 2
    assert "multiple of 16" in capsys.readouterr().err
    out = tmp_path / "seven"
    assert main(["generate", "a red circle moving right over a blue striped background", "--out", str(out),
                 "--frames", "7", "--steps", "1"]) == 0
    assert json.loads((out / "manifest.json").read_text())["frames"] == 7


def test_non_empty_output_needs_overwrite(saved_model, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["generate", "a", "--model", str(saved_model), "--out", str(out), "--steps", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"


def test_empty_prompt_and_bad_size_syntax(tmp_path, capsys):
    assert main(["generate", "  ", "--out", str(tmp_path / "o")]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "a", "--size", "big", "--out", str(tmp_path / "o")])


def test_train_command_rejects_bad_config(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stage: layered\noutput_dir: x\nmodel: {a: 1}\ndata: {frames: 6}\n")
    assert main(["train", str(cfg)]) == 2
    assert "4k+1" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2


def test_without_model_the_built_in_model_generates(tmp_path):
    """The default-model path: the shipped weights load and give every layer at the model's native size."""
    from diffusers import AutoencoderKLWan

    from layert2v.cli import BUILTIN_MODEL
    from layert2v.preflight import compression

    weights = sorted(BUILTIN_MODEL.rglob("*.safetensors"))
    assert {p.parent.name for p in weights} == {"transformer", "vae", "alpha_path"}
    assert sum(p.stat().st_size for p in weights) <= 60e6  # the budget for weights in the repo
    native = json.loads((BUILTIN_MODEL / "layert2v.json").read_text())["config"]
    vae = AutoencoderKLWan.from_config(AutoencoderKLWan.load_config(BUILTIN_MODEL / "vae"))
    scale = (vae.config.scale_factor_temporal, vae.config.scale_factor_spatial)
    assert compression(vae.config) == scale  # tiling reads these
    out = tmp_path / "out"
    assert main(["generate", "a red circle moving right over a blue striped background", "--out", str(out),
                 "--steps", "2", "--fg", "a red circle moving right", "--fg", "a green square moving up"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_id"] == native["model_id"]
    assert manifest["frames"] == native["num_frames"] and manifest["size"] == [native["width"], native["height"]]
    assert manifest["num_foregrounds"] == 2 and (out / "alpha_2.mp4").is_file()


def test_every_command_and_argument_has_help_text():
    """`layert2v CMD --help` describes the command and every argument it takes."""
    import argparse

    from layert2v.cli import build_parser

    def parsers(parser: argparse.ArgumentParser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    undescribed, unexplained = [], []
    for parser in parsers(build_parser()):
        if parser.prog != "layert2v" and not parser.description:
            undescribed.append(parser.prog)
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction) and action.help is None:
                unexplained.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    assert undescribed == [] and unexplained == []
