"""Generating with trajectories: the pipeline's `trajectories=`, the saved records, and `generate --trajectory`."""

import json
from pathlib import Path

import numpy as np
import pytest

from layert2v.cli import main
from layert2v.eval.trajectory import parse_trajectory
from layert2v.models.transformer import LayerRoutedAttnProcessor
from layert2v.trajectory import Trajectories, Trajectory
from layert2v.video import LayeredVideo

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "two_crossing.json"
ARGS = ("a scene", "a sky", ["a ball", "a box"])


def boxes(steps=2, strength=4.0):
    return Trajectories((Trajectory(2, {0: (0.0, 0.0, 0.5, 0.5), 4: (0.5, 0.5, 1.0, 1.0)}),), strength, steps)


def test_without_trajectories_the_default_path_is_untouched(tiny_pipeline):
    ref = tiny_pipeline(*ARGS, seed=1, progress=False)
    steered = tiny_pipeline(*ARGS, seed=1, progress=False, trajectories=boxes())
    after = tiny_pipeline(*ARGS, seed=1, progress=False)
    assert all(type(b.attn2.processor) is LayerRoutedAttnProcessor for b in tiny_pipeline.transformer.blocks)
    assert np.array_equal(after.full, ref.full) and np.array_equal(after.alphas[1], ref.alphas[1])
    assert np.abs(steered.alphas[1] - ref.alphas[1]).max() > 1e-4  # the guidance does something
    assert "trajectory" not in ref.metadata
    # guided processors installed but no guided step: bit-identical to the default path
    zero = tiny_pipeline(*ARGS, seed=1, progress=False, trajectories=boxes(steps=0))
    assert np.array_equal(zero.full, ref.full) and np.array_equal(zero.alphas[1], ref.alphas[1])


def test_guidance_acts_only_during_its_steps(tiny_pipeline):
    seen = {}

    def keep(name):
        def on_step_end(pipe, i, t, tensors):
            seen.setdefault((name, i), tensors["latents"].clone())
            return tensors
        return on_step_end

    tiny_pipeline(*ARGS, seed=1, progress=False, num_inference_steps=3, callback_on_step_end=keep("plain"))
    tiny_pipeline(*ARGS, seed=1, progress=False, num_inference_steps=3, trajectories=boxes(steps=1),
                  callback_on_step_end=keep("one"))
    assert (seen[("one", 0)] - seen[("plain", 0)]).abs().max() > 1e-5  # step 0 steered


def test_cfg_batched_or_split_steer_alike(tiny_pipeline):
    batched = tiny_pipeline(*ARGS, seed=2, progress=False, trajectories=boxes())
    tiny_pipeline.cfg_batch = False
    split = tiny_pipeline(*ARGS, seed=2, progress=False, trajectories=boxes())
    np.testing.assert_allclose(split.alphas[1], batched.alphas[1], atol=1e-4)


def test_the_saved_video_records_and_shows_the_trajectory(tiny_pipeline, tmp_path):
    video = tiny_pipeline(*ARGS, seed=1, progress=False, trajectories=boxes())
    out = video.save(tmp_path / "sample")
    manifest = json.loads((out / "manifest.json").read_text())
    assert Trajectories.from_dict(manifest["trajectory"]) == boxes()
    assert manifest["trajectory_mechanism"] == "guided cross-attention"
    requested = parse_trajectory(json.loads((out / "trajectory.json").read_text()), 5, 2, "t")  # eval's format
    assert requested[2][0] == (0.0, 0.0, 16.0, 16.0) and requested[2][4] == (16.0, 16.0, 32.0, 32.0)
    assert (out / "trajectory.png").stat().st_size > 0
    again = LayeredVideo.load(out)
    assert again.metadata["trajectory"] == manifest["trajectory"]


def test_a_trajectory_that_does_not_fit_is_refused_before_generating(tiny_pipeline):
    with pytest.raises(ValueError, match="names foreground 2 but there are 1"):
        tiny_pipeline("a", "b", ["c"], progress=False, trajectories=boxes())
    with pytest.raises(ValueError, match="key frame 8 is past the clip's last frame 4"):
        tiny_pipeline(*ARGS, progress=False, trajectories=EXAMPLE)


@pytest.fixture()
def saved_model(tiny_pipeline, tmp_path):
    return tiny_pipeline.save_pretrained(tmp_path / "model")


def test_cli_generate_with_a_trajectory_file(saved_model, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "x", "--bg", "sky", "--fg", "a ball", "--fg", "a box", "--model", str(saved_model),
                 "--out", str(out), "--steps", "2", "--frames", "9", "--trajectory", str(EXAMPLE)])
    assert code == 0
    assert "trajectory: foreground(s) [1, 2] follow their boxes (guided cross-attention, strength" in \
        capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["trajectory"] == Trajectories.load(EXAMPLE).to_dict()
    assert (out / "trajectory.json").is_file() and (out / "trajectory.png").is_file()


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, [], "key frame 8 is past the clip's last frame 4"),  # the model's 5 frames
        (None, ["--fg", "one"], "names foreground 2 but there are 1"),
        ({"format": "layert2v-trajectories", "version": 1, "foregrounds": [
            {"foreground": 1, "keyframes": [{"frame": 0, "box": [0.1, 0.1, 1.5, 0.3]}]}]}, [], "leaves the frame"),
        ({"format": "layert2v-trajectories", "version": 1, "foregrounds": [
            {"foreground": 1, "keyframes": [{"frame": 3, "box": [0.1, 0.1, 0.3, 0.3]},
                                            {"frame": 1, "box": [0.1, 0.1, 0.3, 0.3]}]}]}, [], "increasing order"),
        ("{", [], "is not valid JSON"),
        ("missing", [], "does not exist"),
    ],
)
def test_cli_bad_trajectory_gets_one_line_and_writes_nothing(saved_model, tmp_path, capsys, content, extra, message):
    path = EXAMPLE
    if content == "missing":
        path = tmp_path / "missing.json"
    elif content is not None:
        path = tmp_path / "traj.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    out = tmp_path / "bad"
    fgs = extra or ["--fg", "a", "--fg", "b"]
    code = main(["generate", "x", "--bg", "sky", *fgs, "--model", str(saved_model), "--out", str(out),
                 "--steps", "1", "--trajectory", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not out.exists() and not list(tmp_path.glob(".bad*"))
