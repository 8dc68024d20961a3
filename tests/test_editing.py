"""Layered editing (issue 16, section 4): given layers come out bit-identical through the pipeline, through save and
load, and through the CLI's decompose / generate --keep / edit; bad input ends in one line before any model loads.

The built-in model at 5 frames of 32x32, one step, no CFG: a few seconds per call on 2 cores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import toy_clip

from layert2v import editing
from layert2v.cli import BUILTIN_MODEL, main
from layert2v.data.fit import fit_video
from layert2v.video import LayeredVideo

FAST = {"num_frames": 5, "height": 32, "width": 32, "num_inference_steps": 1, "guidance_scale": 1.0,
        "progress": False}
FAST_CLI = ["--frames", "5", "--size", "32x32", "--steps", "1", "--guidance", "1"]
BG, FG1, FG2 = "a blue striped background", "a red circle moving right", "a green square moving up"


@pytest.fixture(scope="module")
def builtin():
    from layert2v.pipeline import LayerT2VPipeline

    return LayerT2VPipeline.from_pretrained(BUILTIN_MODEL)


@pytest.fixture(scope="module")
def scene():
    """Two-foreground layers that no model made (exact squares over a gradient)."""
    return toy_clip(3, num_foregrounds=2, frames=5, size=32)


def moving_disc_video(path: Path, frames: int = 31, width: int = 95, height: int = 77, codec: str = "libx264",
                      fps: int = 24) -> Path:
    """A clip no world generator made: a yellow disc crossing a red-blue gradient, odd size and length (4:4:4, so
    odd sides are allowed)."""
    import av

    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        for i in range(frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[..., 0] = (xx * 255 / width).astype(np.uint8)
            img[..., 2] = 120
            cx = 10 + i * (width - 20) / frames
            img[(xx - cx) ** 2 + (yy - height / 2) ** 2 < 100] = (250, 240, 30)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def layer_arrays(video: LayeredVideo) -> dict[str, np.ndarray]:
    out = {"full": video.full, "background": video.background}
    for k in range(1, video.num_foregrounds + 1):
        out[f"foreground_{k}"] = video.foregrounds[k - 1]
        out[f"alpha_{k}"] = video.alphas[k - 1]
    return out


# ------------------------------------------------------------------------------------------ the pipeline API
@pytest.mark.parametrize("given", [
    ["background"],                                   # bg -> fg
    ["foreground_1", "alpha_1"],                      # fg -> bg
    ["full"],                                         # decomposition
    ["background", "foreground_2", "alpha_2"],        # regenerate foreground 1 of two
    ["background", "foreground_1", "alpha_1"],        # regenerate foreground 2 of two
])
def test_given_layers_come_out_bit_identical_for_every_variant(builtin, scene, given):
    conditions = {name: layer_arrays(scene)[name] for name in given}
    video = builtin("a scene", BG, [FG1, FG2], conditions=conditions, seed=1, **FAST)
    out = layer_arrays(video)
    for name in given:
        assert out[name].dtype == np.float32 and np.array_equal(out[name], conditions[name]), name
    assert video.metadata["conditions"] == sorted(given)
    made = [n for n in out if n not in given]
    assert all(not np.array_equal(out[n], layer_arrays(scene)[n]) for n in made)  # the rest is generated


def test_conditions_are_checked_before_anything_is_encoded(builtin, scene, monkeypatch):
    calls = []
    monkeypatch.setattr(builtin.text_encoder, "encode", lambda prompts: calls.append(prompts))
    bad = [({"background": scene.background[:3]}, "expected \\(5, 32, 32, 3\\)"),
           ({"background": scene.background * 2}, "outside \\[0, 1\\]"),
           ({"background": (scene.background * 255).astype(np.uint8)}, "uint8 / 255"),
           ({"foreground_1": scene.foregrounds[0]}, "needs its alpha"),
           ({"sky": scene.background}, "unknown condition")]
    for conditions, message in bad:
        with pytest.raises(ValueError, match=message):
            builtin("a", BG, [FG1, FG2], conditions=conditions, **FAST)
    assert calls == []


def test_a_clip_of_4k_plus_3_frames_is_encoded_whole(builtin):
    """The built-in VAE takes 2k+1 frames, but diffusers encodes 4 frames at a time after the first and drops the
    rest: 7 given frames gave 3 latent frames, not 4, and the call crashed. Padded with the last frame, the latents
    are those of the clip's own frames (the encoder is causal): the same as the first 4 of a longer clip's."""
    import torch

    from layert2v.layout import LayerLayout
    from layert2v.models.vae import encode_rgb

    clip = np.random.default_rng(0).random((9, 32, 32, 3), dtype=np.float32)
    layout = LayerLayout(1, conditions=["background"])
    given = builtin.encode_conditions({"background": clip[:7]}, layout, 7, 32, 32)
    longer = encode_rgb(builtin.vae, torch.from_numpy(clip).permute(3, 0, 1, 2)[None])
    assert torch.allclose(layout.split(given)["background"], longer[:, :, :4], atol=1e-5)


def test_given_layers_brings_a_foregrounds_alpha_and_refuses_unknown_names(scene):
    given = editing.given_layers(scene, ["background", "foreground_2"])
    assert sorted(given) == ["alpha_2", "background", "foreground_2"]
    assert given["alpha_2"] is scene.alphas[1]
    for name, message in [("foreground_3", "no foreground_3 with 2"), ("alpha_1", "keep foreground_1"),
                          ("sky", "unknown layer 'sky'")]:
        with pytest.raises(ValueError, match=message):
            editing.given_layers(scene, [name])


def test_decompose_from_frames_keeps_the_video_and_builds_the_prompt(builtin, scene):
    video = builtin.decompose(scene.full, BG, [FG1, FG2], seed=2, num_inference_steps=1, guidance_scale=1.0,
                              progress=False)
    assert np.array_equal(video.full, scene.full) and video.num_foregrounds == 2
    assert video.prompts["full"] == f"{FG1} and {FG2} over {BG}"
    assert video.metadata["conditions"] == ["full"] and video.metadata["given"]["full"]["from"] == "in memory"
    with pytest.raises(ValueError, match="num_frames=9 but the video has 5"):
        builtin.decompose(scene.full, BG, [FG1], num_frames=9, progress=False)


def test_decompose_from_a_file_fits_it_and_records_the_mapping(builtin, tmp_path):
    path = moving_disc_video(tmp_path / "clip.webm", frames=8, codec="libvpx-vp9")  # 8 frames: 7 taken
    video = editing.decompose(builtin, path, BG, [FG1], height=32, width=32, num_inference_steps=1,
                              guidance_scale=1.0, progress=False)
    fitted = fit_video(path, 7, 32, 32, builtin.video_multiples, fps=builtin.config.fps)
    assert np.array_equal(video.full, fitted.frames) and video.metadata["input"] == fitted.mapping
    assert video.metadata["input"]["frames"] == 7 and video.metadata["given"]["full"]["from"] == str(path)


def test_regenerate_keeps_every_other_layer_and_remakes_one(builtin, scene):
    video = editing.regenerate(builtin, scene, "foreground_2", "a yellow disc bouncing", seed=4,
                               num_inference_steps=1, guidance_scale=1.0, progress=False)
    for name in ("background", "foreground_1", "alpha_1"):
        assert np.array_equal(layer_arrays(video)[name], layer_arrays(scene)[name]), name
    assert not np.array_equal(video.alphas[1], scene.alphas[1])
    assert video.prompts["foregrounds"] == [scene.prompts["foregrounds"][0], "a yellow disc bouncing"]
    assert video.metadata["regenerated"] == "foreground_2"
    assert sorted(video.metadata["given"]) == ["alpha_1", "background", "foreground_1"]
    for layer, message in [("foreground_3", "foregrounds are foreground_1, foreground_2"),
                           ("background", "cannot regenerate 'background'"), ("alpha_2", "regenerate foreground_2")]:
        with pytest.raises(ValueError, match=message):
            editing.regenerate(builtin, scene, layer, "x", progress=False)


# ------------------------------------------------------------------------------------------------ video in
@pytest.mark.parametrize("codec, suffix", [("libx264", "mp4"), ("libvpx-vp9", "webm"), ("libx264", "mov")])
def test_fit_video_fits_any_size_and_length_and_says_how(tmp_path, codec, suffix):
    path = moving_disc_video(tmp_path / f"disc.{suffix}", codec=codec)
    fitted = fit_video(path, 9, 48, 64, (2, 16), fps=8)
    assert fitted.frames.shape == (9, 48, 64, 3) and fitted.frames.dtype == np.float32
    assert 0 <= fitted.frames.min() and fitted.frames.max() <= 1
    m = fitted.mapping
    assert m["source"] == f"disc.{suffix}" and m["source_size"] == [95, 77] and m["source_frames"] == 31
    assert m["source_fps"] == 24 and m["frame_step"] == 3 and m["frame_indices"] == list(range(0, 25, 3))
    assert (m["start_frame"], m["end_frame"]) == (0, 24)
    # 64x48 is 4:3, wider than 95x77: every column, the centred 71 rows (95 * 3/4)
    assert m["crop_box"] == {"left": 0, "top": 3, "width": 95, "height": 71} and m["scale"] == pytest.approx(48 / 71)
    # the disc moves right: its (yellow = red and green high) centre of mass advances frame by frame
    yellow = (fitted.frames[..., 1] > 0.7)
    xs = [np.nonzero(f)[1].mean() for f in yellow]
    assert all(b > a for a, b in zip(xs, xs[1:]))
    # a longer window than the clip spreads over the whole clip; a clip shorter than asked is refused
    assert fit_video(path, 21, 32, 32, (2, 16), fps=8).mapping["end_frame"] == 30
    with pytest.raises(ValueError, match="has 31 frame\\(s\\), fewer than the 33 asked for; pass --frames 31"):
        fit_video(path, 33, 32, 32, (2, 16))
    with pytest.raises(ValueError, match="--frames must be 2k\\+1"):
        fit_video(path, 8, 32, 32, (2, 16))


def test_a_file_that_is_not_a_video_is_refused_in_one_line(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video " * 50)
    with pytest.raises(ValueError, match="cannot decode junk.mp4 as a video .*give an mp4, mov or webm"):
        fit_video(junk, 5, 32, 32, (2, 16))
    good = moving_disc_video(tmp_path / "cut.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(good[: len(good) // 3])  # truncated mid-stream
    with pytest.raises(ValueError, match="cut.mp4"):
        fit_video(tmp_path / "cut.mp4", 21, 32, 32, (2, 16))


# ---------------------------------------------------------------------------------------- save and load
def test_kept_layers_stay_bit_identical_through_save_and_load(builtin, scene, tmp_path):
    """Saving encodes (H.264, ProRes): re-encoding decoded pixels would drift. A layer loaded from a directory and
    kept is copied file for file, so the new directory decodes to exactly the pixels of the old one."""
    source = LayeredVideo.load(scene.save(tmp_path / "source"))
    edited = editing.regenerate(builtin, source, "foreground_2", "a yellow disc bouncing", seed=5,
                                num_inference_steps=1, guidance_scale=1.0, progress=False)
    out = edited.save(tmp_path / "edited")
    again = LayeredVideo.load(out)
    for name in ("background", "foreground_1", "alpha_1"):
        assert np.array_equal(layer_arrays(again)[name], layer_arrays(source)[name]), name
    for file in ("background.mp4", "foreground_1.mov", "foreground_1.webm", "alpha_1.mp4"):
        assert (out / file).read_bytes() == (tmp_path / "source" / file).read_bytes(), file
    for file in ("foreground_2.mov", "full.mp4"):
        assert (out / file).read_bytes() != (tmp_path / "source" / file).read_bytes(), file
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["given"]["background"] == {"from": str((tmp_path / "source").absolute()), "layer": "background"}
    assert manifest["regenerated"] == "foreground_2" and manifest["conditions"] == ["alpha_1", "background",
                                                                                    "foreground_1"]
    # a layer changed after loading is encoded, not copied
    source.background = np.ascontiguousarray(source.background[:, :, ::-1])
    moved = source.save(tmp_path / "moved")
    assert (moved / "background.mp4").read_bytes() != (tmp_path / "source" / "background.mp4").read_bytes()
    assert (moved / "foreground_1.mov").read_bytes() == (tmp_path / "source" / "foreground_1.mov").read_bytes()


# ------------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def saved_scene(scene, tmp_path_factory) -> Path:
    return scene.save(tmp_path_factory.mktemp("scene") / "scene")


@pytest.fixture(scope="module")
def disc_video(tmp_path_factory) -> Path:
    return moving_disc_video(tmp_path_factory.mktemp("video") / "disc.mp4")


def test_edit_regenerates_one_layer_and_keeps_the_rest_bit_identical(saved_scene, tmp_path, capsys):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"format": "layert2v-trajectories", "version": 1, "foregrounds": [
        {"foreground": 2, "keyframes": [{"frame": 0, "box": [0.1, 0.1, 0.4, 0.4]},
                                        {"frame": 4, "box": [0.6, 0.6, 0.9, 0.9]}]}]}))
    out = tmp_path / "edited"
    assert main(["edit", str(saved_scene), "--regenerate", "foreground_2", "--fg", "a white disc bouncing", "--out",
                 str(out), "--steps", "1", "--guidance", "1", "--seed", "3", "--trajectory", str(boxes)]) == 0
    assert "regenerated foreground_2" in capsys.readouterr().out
    before, after = LayeredVideo.load(saved_scene), LayeredVideo.load(out)
    for name in ("background", "foreground_1", "alpha_1"):
        assert np.array_equal(layer_arrays(after)[name], layer_arrays(before)[name]), name
    for name in ("full", "alpha_2"):
        assert not np.array_equal(layer_arrays(after)[name], layer_arrays(before)[name]), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["regenerated"] == "foreground_2" and manifest["seed"] == 3
    assert manifest["given"]["foreground_1"] == {"from": str(saved_scene.absolute()), "layer": "foreground_1"}
    assert manifest["prompts"]["foregrounds"] == ["square 0", "a white disc bouncing"]
    assert manifest["prompts"]["full"] == "square 0 and a white disc bouncing over a gradient"
    assert [t["foreground"] for t in manifest["trajectory"]["foregrounds"]] == [2]
    assert (out / "trajectory.png").is_file()


def test_generate_keep_takes_layers_from_a_directory_and_a_video(saved_scene, disc_video, tmp_path):
    out = tmp_path / "kept"
    assert main(["generate", "x", "--bg", BG, "--fg", FG1, "--fg", FG2, "--keep", f"foreground_2={saved_scene}",
                 "--keep", f"background={disc_video}", "--out", str(out), *FAST_CLI]) == 0
    source, made = LayeredVideo.load(saved_scene), LayeredVideo.load(out)
    assert np.array_equal(made.foregrounds[1], source.foregrounds[1])
    assert np.array_equal(made.alphas[1], source.alphas[1])
    assert (out / "foreground_2.mov").read_bytes() == (saved_scene / "foreground_2.mov").read_bytes()
    fitted = fit_video(disc_video, 5, 32, 32, (2, 16), fps=8).frames
    assert np.abs(made.background - fitted).mean() < 0.02  # from a video: exact in memory, H.264 on disk
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["conditions"] == ["alpha_2", "background", "foreground_2"]
    assert manifest["given"]["background"]["input"]["source"] == "disc.mp4"
    assert manifest["given"]["alpha_2"]["from"] == str(saved_scene.absolute())


def test_decompose_runs_end_to_end_on_a_video_made_outside_the_world(disc_video, tmp_path):
    """31 frames of 95x77 at 24 fps, made with PyAV: fitted to 9 frames of 64x64 at the model's 8 fps."""
    out = tmp_path / "layers"
    assert main(["decompose", str(disc_video), "--method", "model", "--bg", "a red to purple gradient", "--fg",
                 "a yellow circle moving right", "--out", str(out), "--steps", "2", "--guidance", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["source"] == "disc.mp4" and manifest["input"]["frame_indices"] == list(range(0, 25, 3))
    assert manifest["input"]["crop_box"] == {"left": 9, "top": 0, "width": 77, "height": 77}
    assert manifest["frames"] == 9 and manifest["size"] == [64, 64] and manifest["conditions"] == ["full"]
    assert manifest["method"] == "model" and manifest["method_reason"] == "asked for"
    video = LayeredVideo.load(out)
    fitted = fit_video(disc_video, 9, 64, 64, (2, 16), fps=8).frames
    assert np.abs(video.full - fitted).mean() < 0.02 and video.num_foregrounds == 1


# -------------------------------------------------------------------------------------------- bad input
@pytest.fixture()
def no_loading(monkeypatch):
    """Fail the test if a model would be loaded: every check must come first."""
    from layert2v.pipeline import LayerT2VPipeline

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(LayerT2VPipeline, "from_pretrained", classmethod(refuse))


def refused(argv: list[str], out: Path, capsys) -> str:
    """Exit 2, one line on stderr, nothing written next to ``out``."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))
    return err


@pytest.mark.parametrize("method", ["engine", "model"])
@pytest.mark.parametrize("make, message", [
    (lambda d: d.joinpath("junk.mp4").write_bytes(b"not a video" * 100), "cannot decode junk.mp4 as a video"),
    (lambda d: d.joinpath("empty.mp4").write_bytes(b""), "cannot decode empty.mp4 as a video"),
    (lambda d: None, "no video file at"),
])
def test_decompose_refuses_a_file_that_is_not_a_video(tmp_path, capsys, no_loading, make, message, method):
    make(tmp_path)
    name = {"cannot decode junk.mp4 as a video": "junk.mp4", "cannot decode empty.mp4 as a video": "empty.mp4"}
    video = tmp_path / name.get(message, "missing.mp4")
    err = refused(["decompose", str(video), "--method", method, "--bg", "b", "--fg", "f", "--out",
                   str(tmp_path / "o")], tmp_path / "o", capsys)
    assert message in err


@pytest.mark.parametrize("method, message", [
    ("model", "short.mp4 has 6 frame(s), fewer than the 9 asked for; pass --frames 5"),
    ("engine", "short.mp4 has 6 frames at 24 fps, fewer than the 9 asked for; pass fewer --frames"),
])
def test_decompose_refuses_more_frames_than_the_video_has(tmp_path, capsys, no_loading, method, message):
    short = moving_disc_video(tmp_path / "short.mp4", frames=6, width=96, height=78)
    err = refused(["decompose", str(short), "--method", method, "--bg", "b", "--fg", "f", "--frames", "9", "--out",
                   str(tmp_path / "o")], tmp_path / "o", capsys)
    assert message in err


@pytest.mark.parametrize("layer, message", [
    ("foreground_3", "this video's foregrounds are foreground_1, foreground_2; --regenerate one of them"),
    ("background", "cannot regenerate 'background'"),
    ("alpha_1", "regenerate foreground_1: its alpha alpha_1 is made again with it"),
    ("fg2", "cannot regenerate 'fg2'"),
])
def test_edit_refuses_a_layer_that_is_not_a_foreground_of_the_video(saved_scene, tmp_path, capsys, no_loading, layer,
                                                                    message):
    err = refused(["edit", str(saved_scene), "--regenerate", layer, "--fg", "x", "--out", str(tmp_path / "o")],
                  tmp_path / "o", capsys)
    assert message in err


def test_edit_refuses_a_directory_that_is_not_a_layered_video(tmp_path, capsys, no_loading):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    err = refused(["edit", str(tmp_path / "notes"), "--regenerate", "foreground_1", "--fg", "x", "--out",
                   str(tmp_path / "o")], tmp_path / "o", capsys)
    assert "is not a saved layered video (no manifest.json); give a directory written by" in err
    err = refused(["edit", str(tmp_path / "nowhere"), "--regenerate", "foreground_1", "--fg", "x", "--out",
                   str(tmp_path / "o")], tmp_path / "o", capsys)
    assert "no such directory" in err


def test_edit_refuses_a_trajectory_for_a_kept_layer(saved_scene, tmp_path, capsys, no_loading):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"format": "layert2v-trajectories", "version": 1, "foregrounds": [
        {"foreground": 1, "keyframes": [{"frame": 0, "box": [0.1, 0.1, 0.4, 0.4]}]}]}))
    err = refused(["edit", str(saved_scene), "--regenerate", "foreground_2", "--fg", "x", "--trajectory", str(boxes),
                   "--out", str(tmp_path / "o")], tmp_path / "o", capsys)
    assert "steers foreground(s) [1], which are kept; give boxes only for foreground 2" in err


@pytest.fixture(scope="module")
def other_shape(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shapes")
    return {"frames": toy_clip(1, frames=7, size=32).save(root / "seven"),
            "size": toy_clip(1, frames=5, size=48).save(root / "wide")}


@pytest.mark.parametrize("keep, message", [
    ("sky={scene}", "unknown layer 'sky'; keep one of full, background, foreground_1, foreground_2"),
    ("foreground_3={scene}", "there is no foreground_3 with 2 foreground(s)"),
    ("alpha_1={scene}", "keep foreground_1 to keep alpha_1"),
    ("background", "--keep takes LAYER=SOURCE"),
    ("background={seven}", "holds 7 frames of 32x32, this generation makes 5 frames of 32x32; pass --frames 7 "
                           "--size 32x32"),
    ("background={wide}", "holds 5 frames of 48x48, this generation makes 5 frames of 32x32; pass --frames 5 "
                          "--size 48x48"),
    ("foreground_1={video}", "a foreground needs its alpha, so it comes from a layered directory"),
    ("background={missing}", "no such directory or video file"),
    ("background={text}", "is not a video file (mp4, mov, webm ...) nor a layered directory"),
    ("background={notes}", "is not a saved layered video (no manifest.json)"),
])
def test_generate_keep_refuses_bad_layers_before_loading(saved_scene, other_shape, disc_video, tmp_path, capsys,
                                                         no_loading, keep, message):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    keep = keep.format(scene=saved_scene, seven=other_shape["frames"], wide=other_shape["size"], video=disc_video,
                       missing=tmp_path / "missing", text=tmp_path / "notes.txt", notes=tmp_path / "notes")
    out = tmp_path / "o"
    err = refused(["generate", "x", "--bg", BG, "--fg", FG1, "--fg", FG2, "--keep", keep, "--out", str(out),
                   *FAST_CLI], out, capsys)
    assert message in err


def test_generate_keep_refuses_the_same_layer_twice_and_every_layer(saved_scene, tmp_path, capsys, no_loading):
    out = tmp_path / "o"
    err = refused(["generate", "x", "--bg", BG, "--fg", FG1, "--keep", f"background={saved_scene}", "--keep",
                   f"background={saved_scene}", "--out", str(out), *FAST_CLI], out, capsys)
    assert "--keep background is given twice" in err
    keeps = [f"--keep={name}={saved_scene}" for name in ("full", "background", "foreground_1", "foreground_2")]
    err = refused(["generate", "x", "--bg", BG, "--fg", FG1, "--fg", FG2, *keeps, "--out", str(out), *FAST_CLI], out,
                  capsys)
    assert "--keep gives every layer; leave one out" in err


def test_generate_refuses_a_trajectory_for_a_kept_foreground(saved_scene, tmp_path, capsys, no_loading):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"format": "layert2v-trajectories", "version": 1, "foregrounds": [
        {"foreground": 2, "keyframes": [{"frame": 0, "box": [0.1, 0.1, 0.4, 0.4]}]}]}))
    out = tmp_path / "o"
    err = refused(["generate", "x", "--bg", BG, "--fg", FG1, "--fg", FG2, "--keep", f"foreground_2={saved_scene}",
                   "--trajectory", str(boxes), "--out", str(out), *FAST_CLI], out, capsys)
    assert "steers foreground(s) [2], which --keep gives" in err
