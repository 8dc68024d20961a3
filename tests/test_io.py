"""layert2v.io: save/load of layered videos (codecs, alpha fidelity, preview, manifest, atomicity and error messages)
and the codec functions on their own."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from layert2v.io import codec, layered_dir
from layert2v.io.codec import read_video, read_video_rgba, write_video
from layert2v.io.layered_dir import checkerboard, contact_sheet, save_layered_video
from layert2v.layout import LayerLayout
from layert2v.video import LayeredVideo

T, H, W = 9, 32, 48


def smooth_rgb(phase: float, t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """Smooth moving colour fields: what 4:2:0 H.264 should reproduce at high PSNR."""
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    return np.stack([
        0.5 + 0.4 * np.sin(xx / 9 + tt / 3 + phase),
        0.5 + 0.4 * np.cos(yy / 7 + phase),
        0.5 + 0.3 * np.sin((xx + yy) / 11 + phase),
    ], axis=-1).astype(np.float32)


def soft_disc(k: int, t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """A moving disc with a solid core, a soft edge and exact zeros outside: all three alpha regimes."""
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    cx, cy = 12 + 8 * k + tt, 10 + 4 * k
    return np.clip(1.6 - np.hypot(xx - cx, yy - cy) / 6, 0, 1).astype(np.float32)


def make_video(k: int, **metadata) -> LayeredVideo:
    return LayeredVideo(
        full=smooth_rgb(0.0),
        background=smooth_rgb(1.0),
        foregrounds=[smooth_rgb(2.0 + i) for i in range(k)],
        alphas=[soft_disc(i) for i in range(k)],
        fps=8,
        prompts={"full": "a cat on a sofa", "background": "a sofa", "foregrounds": [f"thing {i}" for i in range(k)]},
        seed=1234 + k,
        metadata={"steps": 30, "guidance": 6.0, "model_id": "test/model", "timings": {"total_s": 1.5}, **metadata},
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.fixture(scope="module", params=[1, 2], ids=["K1", "K2"])
def saved(request, tmp_path_factory) -> tuple[LayeredVideo, Path]:
    video = make_video(request.param)
    out = save_layered_video(video, tmp_path_factory.mktemp(f"k{request.param}") / "sample")
    return video, out


# ---------------------------------------------------------------------------------------------- round trip
def test_round_trip(saved):
    video, out = saved
    loaded = LayeredVideo.load(out)
    assert loaded.num_foregrounds == video.num_foregrounds
    assert loaded.full.shape == video.full.shape and loaded.full.dtype == np.float32
    assert psnr(loaded.full, video.full) > 35
    assert psnr(loaded.background, video.background) > 35
    for k in range(video.num_foregrounds):
        assert np.abs(loaded.alphas[k] - video.alphas[k]).max() <= 2 / 255
        solid = video.alphas[k] > 0.5
        assert solid.any()
        assert np.abs(loaded.foregrounds[k] - video.foregrounds[k])[solid].max() <= 3 / 255
    assert loaded.fps == video.fps
    assert loaded.prompts == video.prompts
    assert loaded.seed == video.seed
    assert loaded.metadata == video.metadata


def test_load_via_dataclass_methods(tmp_path):
    video = make_video(1)
    out = video.save(tmp_path / "s")
    assert out == (tmp_path / "s").absolute()
    assert LayeredVideo.load(out).num_frames == T


# ----------------------------------------------------------------------------------------- files, codecs
def _probe(path: Path) -> tuple[str, str, int, dict]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        return s.codec_context.name, s.codec_context.pix_fmt, n, dict(s.metadata)


def test_files_and_codecs(saved):
    video, out = saved
    k = video.num_foregrounds
    expected = {"full.mp4", "background.mp4", "composite.mp4", "preview.png", "manifest.json"}
    for i in range(1, k + 1):
        expected |= {f"foreground_{i}.mov", f"foreground_{i}.webm", f"alpha_{i}.mp4"}
    assert {p.name for p in out.iterdir()} == expected

    for name in ["full.mp4", "background.mp4", "composite.mp4", *(f"alpha_{i}.mp4" for i in range(1, k + 1))]:
        codec, pix_fmt, n, _ = _probe(out / name)
        assert (codec, pix_fmt, n) == ("h264", "yuv420p", T), name
    for i in range(1, k + 1):
        codec, pix_fmt, n, _ = _probe(out / f"foreground_{i}.mov")
        assert codec == "prores" and "a" in pix_fmt.removeprefix("yuv") and n == T
        with av.open(str(out / f"foreground_{i}.mov")) as c:
            assert c.streams.video[0].codec_context.profile == "4444"
        codec, _, n, meta = _probe(out / f"foreground_{i}.webm")
        assert codec == "vp9" and n == T
        assert meta.get("alpha_mode") == "1"
        # ffmpeg's native vp9 decoder reports yuv420p; libvpx sees the alpha plane.
        with av.open(str(out / f"foreground_{i}.webm")) as c:
            dec = av.codec.CodecContext.create("libvpx-vp9", "r")
            fmts = {f.format.name for p in c.demux(c.streams.video[0]) for f in dec.decode(p)}
        assert fmts == {"yuva420p"}


def test_webm_alpha_survives(saved):
    video, out = saved
    for i, a in enumerate(video.alphas, start=1):
        rgb, alpha = read_video_rgba(out / f"foreground_{i}.webm")
        assert alpha.shape == a.shape and rgb.shape == video.foregrounds[i - 1].shape
        err = np.abs(alpha - a)
        assert err.mean() < 2 / 255 and err.max() < 16 / 255  # lossy VP9, but clearly the same matte
        assert alpha[a == 0].max() < 0.05 and alpha[a == 1].min() > 0.95


def test_alpha_matte_and_composite(saved):
    video, out = saved
    for i, a in enumerate(video.alphas, start=1):
        matte = read_video(out / f"alpha_{i}.mp4")
        assert np.abs(matte - a[..., None]).max() < 8 / 255
    assert psnr(read_video(out / "composite.mp4"), video.composite()) > 35


def test_preview(saved):
    video, out = saved
    with Image.open(out / "preview.png") as im:
        w, h = im.size
    ncols = 2 + 2 * video.num_foregrounds
    assert ncols * 64 < w <= 1600
    assert h > 4 * 64  # four frame rows of at least 64 px cells


def test_preview_scales_down_and_shows_layers():
    k = 3
    big = LayeredVideo(
        full=np.full((2, 360, 640, 3), 0.2, np.float32), background=np.full((2, 360, 640, 3), 0.4, np.float32),
        foregrounds=[np.ones((2, 360, 640, 3), np.float32)] * k, alphas=[np.zeros((2, 360, 640), np.float32)] * k)
    sheet = np.asarray(contact_sheet(big))
    assert sheet.shape[1] <= 1600
    gray = sheet.mean(axis=-1)
    # a fully transparent foreground cell shows the checkerboard (two distinct greys); an alpha cell is black.
    fg_cell = gray[40:120, 470:520]  # column 3 = fg 1
    assert len(np.unique(np.round(fg_cell / 10))) >= 2
    assert gray[40:120, sheet.shape[1] - 60:sheet.shape[1] - 10].max() < 10  # last column = alpha 3


def test_manifest(saved):
    video, out = saved
    k = video.num_foregrounds
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "layert2v-layered-video" and m["version"] == 1
    assert m["prompts"] == video.prompts and m["seed"] == video.seed and m["fps"] == 8
    assert m["frames"] == T and m["size"] == [W, H] and m["num_foregrounds"] == k
    assert m["layer_order"] == LayerLayout(k).names
    assert m["premultiplied"] is False
    assert m["steps"] == 30 and m["model_id"] == "test/model" and m["timings"] == {"total_s": 1.5}
    for layer in LayerLayout(k).names:
        assert (out / m["files"][layer]).is_file()
    assert m["files"]["foreground_1"] == "foreground_1.mov" and m["files"]["alpha_1"] == "alpha_1.mp4"


def test_numpy_metadata_is_serialised(tmp_path):
    out = save_layered_video(make_video(1, steps=np.int64(50), sigmas=np.linspace(0, 1, 3)), tmp_path / "s")
    m = json.loads((out / "manifest.json").read_text())
    assert m["steps"] == 50 and m["sigmas"] == [0.0, 0.5, 1.0]


# ----------------------------------------------------------------------------------------- atomicity
def test_refuses_non_empty_dir_without_overwrite(tmp_path):
    target = tmp_path / "s"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match=r"not empty; pass overwrite=True \(CLI: --overwrite\)"):
        save_layered_video(make_video(1), target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_empty_existing_dir_is_used(tmp_path):
    target = tmp_path / "s"
    target.mkdir()
    save_layered_video(make_video(1), target)
    assert (target / "manifest.json").is_file()


def test_overwrite_replaces(tmp_path):
    target = tmp_path / "s"
    save_layered_video(make_video(1), target)
    (target / "stale.txt").write_text("old")
    save_layered_video(make_video(2), target, overwrite=True)
    assert LayeredVideo.load(target).num_foregrounds == 2
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temp or backup siblings left


def test_creates_missing_parents_and_follows_symlinks(tmp_path):
    out = save_layered_video(make_video(1), tmp_path / "a" / "b" / "s")
    assert (out / "manifest.json").is_file() and out.parent == tmp_path / "a" / "b"
    (tmp_path / "link").symlink_to(out, target_is_directory=True)
    save_layered_video(make_video(2), tmp_path / "link", overwrite=True)
    assert (tmp_path / "link").is_symlink() and LayeredVideo.load(out).num_foregrounds == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["s"]


def test_overwrite_refuses_foreign_directory(tmp_path):
    target = tmp_path / "home"
    target.mkdir()
    (target / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match=r"not what this command writes \(no manifest.json\)"):
        save_layered_video(make_video(1), target, overwrite=True)
    assert (target / "notes.txt").read_text() == "x"


def _failing_after(n: int):
    """VideoWriter.write that fails from its (n+1)-th call on: a layer file half written."""
    calls = {"n": 0}
    real = codec.VideoWriter.write

    def write(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n:
            raise RuntimeError("disk on fire")
        return real(self, *args, **kwargs)

    return write


def test_failure_mid_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(codec.VideoWriter, "write", _failing_after(3))
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_layered_video(make_video(2), tmp_path / "s")
    assert list(tmp_path.iterdir()) == []


def test_failure_during_overwrite_keeps_old(tmp_path, monkeypatch):
    target = tmp_path / "s"
    save_layered_video(make_video(1), target)
    before = sorted(p.name for p in target.iterdir())
    monkeypatch.setattr(layered_dir, "contact_sheet", lambda *a, **k: (_ for _ in ()).throw(OSError("no space")))
    with pytest.raises(OSError, match="no space"):
        save_layered_video(make_video(2), target, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == before
    assert LayeredVideo.load(target).num_foregrounds == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_invalid_input_fails_before_touching_disk(tmp_path):
    odd = LayeredVideo(np.zeros((2, 33, 48, 3)), np.zeros((2, 33, 48, 3)), [np.zeros((2, 33, 48, 3))],
                       [np.zeros((2, 33, 48))])
    with pytest.raises(ValueError, match="even width and height"):
        save_layered_video(odd, tmp_path / "odd")
    nan = make_video(1)
    nan.alphas[0][0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="alpha_1 contains NaN"):
        save_layered_video(nan, tmp_path / "nan")
    with pytest.raises(ValueError, match="clash"):
        save_layered_video(make_video(1, fps=30), tmp_path / "clash")
    with pytest.raises(TypeError, match="not JSON serialisable"):
        save_layered_video(make_video(1, obj=object()), tmp_path / "obj")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_parent(tmp_path, monkeypatch):
    monkeypatch.setattr(layered_dir.os, "access", lambda *a, **k: False)
    with pytest.raises(PermissionError, match="cannot write to"):
        save_layered_video(make_video(1), tmp_path / "s")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_parent_for_real(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            save_layered_video(make_video(1), locked / "s")
    finally:
        locked.chmod(0o755)


# ---------------------------------------------------------------------------------------------- load errors
def test_load_errors(saved, tmp_path):
    video, out = saved
    with pytest.raises(FileNotFoundError, match="no such directory"):
        LayeredVideo.load(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match=r"not a saved layered video \(no manifest.json\)"):
        LayeredVideo.load(tmp_path / "plain")

    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "foreground_1.mov").unlink()
    with pytest.raises(FileNotFoundError, match="foreground_1.mov"):
        LayeredVideo.load(broken)

    mismatched = tmp_path / "mismatched"
    shutil.copytree(out, mismatched)
    m = json.loads((mismatched / "manifest.json").read_text())
    m["frames"] = T + 1
    (mismatched / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=f"full.mp4 decodes to {T} frames"):
        LayeredVideo.load(mismatched)
    m["frames"], m["num_foregrounds"] = T, video.num_foregrounds + 1
    (mismatched / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="layer_order"):
        LayeredVideo.load(mismatched)
    m["format"] = "something-else"
    (mismatched / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="not a layered-video manifest"):
        LayeredVideo.load(mismatched)
    (mismatched / "manifest.json").write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        LayeredVideo.load(mismatched)


# ------------------------------------------------------------------------------------------ small helpers
def test_write_read_video_uint8_and_float(tmp_path):
    frames = (smooth_rgb(0.5, t=3, h=64, w=64) * 255).round().astype(np.uint8)
    write_video(tmp_path / "u8.mp4", frames, fps=12)
    back = read_video(tmp_path / "u8.mp4")
    assert back.shape == (3, 64, 64, 3) and back.dtype == np.float32
    assert psnr(back, frames / 255.0) > 35
    rgba = np.concatenate([frames / 255.0, np.full((3, 64, 64, 1), 0.25)], axis=-1)
    write_video(tmp_path / "a.mov", rgba, fps=12, codec="prores_ks")
    rgb, alpha = read_video_rgba(tmp_path / "a.mov")
    assert np.abs(alpha - 0.25).max() < 1 / 1023 + 1e-6
    assert np.abs(rgb - frames / 255.0).max() < 2 / 255
    with pytest.raises(ValueError, match="no alpha channel"):
        read_video_rgba(tmp_path / "u8.mp4")


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="cannot store alpha"):
        write_video(tmp_path / "x.mp4", np.zeros((1, 8, 8, 4)), fps=8)
    with pytest.raises(ValueError, match="even width and height"):
        write_video(tmp_path / "x.mp4", np.zeros((1, 9, 8, 3)), fps=8)
    with pytest.raises(ValueError, match="unsupported codec"):
        write_video(tmp_path / "x.mp4", np.zeros((1, 8, 8, 3)), fps=8, codec="mpeg2")
    write_video(tmp_path / "odd.mov", np.zeros((1, 9, 7, 3)), fps=8, codec="prores_ks")  # 4:4:4 has no parity rule
    assert read_video(tmp_path / "odd.mov").shape == (1, 9, 7, 3)


def test_checkerboard():
    board = checkerboard(5, 20, tile=4)
    assert board.shape == (5, 20, 3) and board.dtype == np.float32
    assert board[0, 0, 0] != board[0, 4, 0] and board[0, 0, 0] == board[0, 8, 0] == board[4, 4, 0]
    assert set(np.unique(board)) == {np.float32(0.6), np.float32(0.8)}


def test_a_video_written_in_chunks_reads_back_as_the_one_saved_whole(tmp_path):
    """LayeredWriter, the streaming writer behind decompose's engine, gives the files save_layered_video gives."""
    from layert2v.io.layered_dir import LayeredWriter

    video = make_video(2)
    whole = save_layered_video(video, tmp_path / "whole")
    with LayeredWriter(tmp_path / "chunks", 2, video.num_frames, video.size, video.fps) as writer:
        for lo, hi in [(0, 2), (2, 3), (3, video.num_frames)]:
            writer.add(dataclasses.replace(video, full=video.full[lo:hi], background=video.background[lo:hi],
                                           foregrounds=[f[lo:hi] for f in video.foregrounds],
                                           alphas=[a[lo:hi] for a in video.alphas]))
        writer.finish(video.prompts, video.seed, video.metadata)
    a, b = LayeredVideo.load(whole), LayeredVideo.load(tmp_path / "chunks")
    for x, y in [(a.full, b.full), (a.background, b.background), *zip(a.foregrounds, b.foregrounds),
                 *zip(a.alphas, b.alphas)]:
        assert np.array_equal(x, y)
    assert (whole / "manifest.json").read_text() == (tmp_path / "chunks" / "manifest.json").read_text()
    assert (whole / "preview.png").read_bytes() == (tmp_path / "chunks" / "preview.png").read_bytes()


def test_a_chunked_write_left_unfinished_or_short_leaves_nothing(tmp_path):
    from layert2v.io.layered_dir import LayeredWriter

    video = make_video(1)
    with pytest.raises(RuntimeError, match="without finish"):
        with LayeredWriter(tmp_path / "s", 1, video.num_frames, video.size, video.fps) as writer:
            writer.add(video)
    with pytest.raises(ValueError, match="frames were written to a video opened for"):
        with LayeredWriter(tmp_path / "s", 1, video.num_frames + 1, video.size, video.fps) as writer:
            writer.add(video)
            writer.finish(video.prompts, video.seed, video.metadata)
    assert list(tmp_path.iterdir()) == []


def test_the_same_frames_give_the_same_bytes_whatever_was_encoded_before(tmp_path):
    """Saved files are reproducible (what `generate --prompts` relies on for resuming and for its workers): x264's
    mb-tree lookahead read memory it had not written, so a clip's bytes depended on the clips encoded before it,
    and Matroska wrote a random segment id into every .webm."""
    rng = np.random.default_rng(0)
    clips = [smooth_rgb(p, 9, h, w) for p, (h, w) in zip(range(6), [(96, 96), (64, 128), (64, 64)] * 2)]
    for name, suffix in [("libx264", "mp4"), ("libvpx-vp9", "webm"), ("prores_ks", "mov")]:
        first: dict[int, bytes] = {}
        for _ in range(4 if name == "libx264" else 1):
            for k in rng.permutation(len(clips)):
                frames = clips[k] if name == "libx264" else np.concatenate([clips[k], clips[k][..., :1]], -1)
                data = write_video(tmp_path / f"clip.{suffix}", frames, 8, name).read_bytes()
                assert first.setdefault(k, data) == data, f"{name}: clip {k} encoded to other bytes"
        if name != "libx264":  # once more in the same order: only the container could differ
            for k in range(len(clips)):
                frames = np.concatenate([clips[k], clips[k][..., :1]], -1)
                assert write_video(tmp_path / f"clip.{suffix}", frames, 8, name).read_bytes() == first[k], name
