"""The VidLayer reader on small samples written by the tests in the (assumed) release layout."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import toy_clip

from layert2v.data.fit import ClipShape, fit_clip
from layert2v.data.vidlayer import VidLayerDataset, VidLayerSampleError, check, write_vidlayer
from layert2v.video import LayeredVideo

SHAPE = ClipShape(frames=5, height=16, width=16, seed=0)
TOL = 0.03  # mean absolute error H.264 (crf 12) leaves on these small clips


def as_released(video, foreground_clip: bool):
    """What the reader should give for a clip written as VidLayer: the foreground is the clip's colour where there
    is a foreground clip, else the original video (so premultiplied: video x mask)."""
    fgs = video.foregrounds if foreground_clip else [video.full] * video.num_foregrounds
    return replace(video, foregrounds=fgs)


def banded_clip() -> LayeredVideo:
    """A uniformly coloured foreground (straight colour everywhere) that is opaque in a square and half
    transparent in a wide band around it, over a gradient."""
    t, h, w = 12, 32, 32
    bg = np.zeros((t, h, w, 3), np.float32)
    bg[..., 0] = np.linspace(0, 1, w)[None, None, :]
    alpha = np.zeros((t, h, w), np.float32)
    alpha[:, 6:26, 6:26] = 0.5
    alpha[:, 12:20, 12:20] = 1.0
    fg = np.broadcast_to(np.float32([0.1, 0.8, 0.3]), (t, h, w, 3)).copy()
    full = fg * alpha[..., None] + bg * (1 - alpha[..., None])
    return LayeredVideo(full=full, background=bg, foregrounds=[fg], alphas=[alpha], fps=8,
                        prompts={"full": "a green square", "background": "a red ramp", "foregrounds": ["a square"]})


@pytest.fixture(scope="module")
def clips():
    return [toy_clip(10, frames=12), toy_clip(11, num_foregrounds=2, frames=12), banded_clip()]


@pytest.fixture(scope="module")
def root(tmp_path_factory, clips):
    root = tmp_path_factory.mktemp("vidlayer")
    write_vidlayer(root, clips[:2], source="VIDGEN")
    write_vidlayer(root, [clips[2]], source="GOT-10K")
    write_vidlayer(root, [clips[2]], foreground_clips=True, source="MOSEv2")
    return root


def assert_close(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < TOL


def test_samples_are_found_with_their_prompts_and_foreground_counts(root, clips):
    ds = VidLayerDataset(root, SHAPE)
    assert [s.name for s in ds.samples] == ["GOT-10K/000000", "MOSEv2/000000", "VIDGEN/000000", "VIDGEN/000001"]
    assert [ds.num_foregrounds(i) for i in range(len(ds))] == [1, 1, 1, 2]
    assert ds.samples[3].prompts == clips[1].prompts  # foreground prompts bottom to top
    assert ds.samples[1].foregrounds[0] is not None and ds.samples[0].foregrounds == (None,)


@pytest.mark.parametrize("index, source, foreground_clip", [(2, 0, False), (3, 1, False), (1, 2, True)])
def test_a_sample_reads_as_its_layers_fitted_to_the_shape(root, clips, index, source, foreground_clip):
    ds = VidLayerDataset(root, SHAPE)
    got = ds.load(index, draw=4)
    want = fit_clip(as_released(clips[source], foreground_clip), SHAPE, draw=4)
    assert (got.num_frames, got.size, got.num_foregrounds) == (5, (16, 16), clips[source].num_foregrounds)
    assert got.metadata["source_frames"] == [int(i) for i in got.metadata["source_frames"]]
    assert_close(got.full, want.full)
    assert_close(got.background, want.background)
    for k in range(1, got.num_foregrounds + 1):
        assert_close(got.alphas[k - 1], want.alphas[k - 1])
        assert_close(got.premultiplied(k), want.premultiplied(k))


def test_foreground_clip_is_used_where_there_is_one(root, clips):
    """At the clip's half-transparent edge the original video is half background; the foreground clip is not."""
    ds = VidLayerDataset(root)  # no shape: every frame at the stored size
    without, with_clip = ds.load(0, draw=0), ds.load(1, draw=0)
    band = np.zeros(clips[2].alphas[0].shape, bool)
    band[:, 8:24, 8:10] = True  # inside the half-transparent band, away from its edges
    truth = clips[2].foregrounds[0][band]
    assert np.abs(with_clip.foregrounds[0][band] - truth).mean() < TOL
    assert np.abs(without.foregrounds[0][band] - truth).mean() > 0.1
    np.testing.assert_allclose(without.foregrounds[0][band], without.full[band], atol=1e-5)


def test_trainer_call_is_the_same_clip_in_a_fresh_reader(root):
    clip = VidLayerDataset(root, SHAPE)(5, 2)
    again = VidLayerDataset(root, SHAPE)(5, 2)
    assert clip.num_foregrounds == 2 and clip.metadata["vidlayer_sample"] == "VIDGEN/000001"
    np.testing.assert_array_equal(clip.full, again.full)
    windows = {tuple(VidLayerDataset(root, SHAPE)(i, 2).metadata["source_frames"]) for i in range(6)}
    assert len(windows) > 1  # later passes over the sample read other windows of it


def broken(tmp_path, root, how):
    """A copy of one good sample, broken one way."""
    sample = tmp_path / "data" / "VIDGEN" / "000001"
    shutil.copytree(root / "VIDGEN" / "000001", sample)
    how(sample)
    return tmp_path / "data"


@pytest.mark.parametrize("how, message", [
    (lambda s: (s / "background.mp4").unlink(), "no background"),
    (lambda s: (s / "mask_2.mp4").rename(s / "mask_3.mp4"), r"masks are numbered \[1, 3\]"),
    (lambda s: (s / "metadata.json").write_text("{not json"), "metadata.json is not valid JSON"),
    (lambda s: (s / "metadata.json").write_text(json.dumps({"captions": {"full": "a", "background": "b",
                                                                         "foreground": "c"}})),
     r"2 foreground mask\(s\) but foreground prompt"),
    (lambda s: (s / "metadata.json").write_text(json.dumps({"captions": {"full": "a", "foreground": ["b", "c"]}})),
     "no background prompt"),
])
def test_incomplete_sample_stops_the_reader_with_one_line(tmp_path, root, how, message):
    data = broken(tmp_path, root, how)
    with pytest.raises(VidLayerSampleError, match=message) as e:
        VidLayerDataset(data, SHAPE)
    assert str(e.value).startswith("VidLayer sample VIDGEN/000001: ") and "\n" not in str(e.value)
    assert check(data) == [str(e.value)]


def test_corrupt_files_stop_the_read_of_that_sample(tmp_path, root):
    data = broken(tmp_path, root, lambda s: (s / "mask_1.mp4").write_bytes(b"\0" * 512))
    ds = VidLayerDataset(data, SHAPE)  # the files are all there
    with pytest.raises(VidLayerSampleError, match="VidLayer sample VIDGEN/000001: mask_1.mp4 cannot be opened") as e:
        ds(0, 2)
    assert "\n" not in str(e.value) and "remove its directory" in str(e.value)
    assert len(check(data)) == 1


def test_layers_of_different_lengths_are_refused(tmp_path, root, clips):
    from layert2v.io.codec import write_video

    short = lambda s: write_video(s / "background.mp4", clips[1].background[:7], 8)  # noqa: E731
    ds = VidLayerDataset(broken(tmp_path, root, short), SHAPE)
    with pytest.raises(VidLayerSampleError, match="background.mp4 has 7 frames, full_video.mp4 12"):
        ds.load(0, draw=0)


def test_missing_directory_or_no_samples_says_where_to_point(tmp_path):
    with pytest.raises(FileNotFoundError, match="point data.path at the unpacked release"):
        VidLayerDataset(tmp_path / "nowhere")
    (tmp_path / "empty" / "VIDGEN").mkdir(parents=True)
    with pytest.raises(ValueError, match="no VidLayer sample under"):
        VidLayerDataset(tmp_path / "empty")


def test_read_frames_keeps_only_the_asked_frames(root):
    from layert2v.io.codec import read_frames, read_video, video_info

    path = root / "VIDGEN" / "000000" / "full_video.mp4"
    assert video_info(path) == (12, 8.0, 32, 32)
    np.testing.assert_array_equal(read_frames(path, [3, 0, 3, 11]), read_video(path)[[3, 0, 3, 11]])
    with pytest.raises(ValueError, match="has 12 decodable frames; frame 12 was asked for"):
        read_frames(path, [12])


def test_training_opens_the_source_by_kind(root, tmp_path):
    from layert2v.training.config import TrainConfig
    from layert2v.training.data import build_data

    def config(kind: str) -> TrainConfig:
        return TrainConfig.from_dict({"stage": "vae", "output_dir": str(tmp_path / "out"),
                                      "data": {"kind": kind, "path": str(root), "frames": 5, "height": 16,
                                               "width": 16}})

    source = build_data(config("vidlayer"))
    assert isinstance(source, VidLayerDataset) and source.shape == SHAPE
    with pytest.raises(ValueError, match="data.kind must be world, folder or vidlayer, got 'webdataset'"):
        build_data(config("webdataset"))


# ------------------------------------------------------------------ the authors' other forms (issue 29 item 8)
def assert_same_clip(got: LayeredVideo, want: LayeredVideo) -> None:
    np.testing.assert_array_equal(got.full, want.full)
    np.testing.assert_array_equal(got.background, want.background)
    np.testing.assert_array_equal(got.alphas[0], want.alphas[0])
    np.testing.assert_array_equal(got.foregrounds[0], want.foregrounds[0])
    assert got.prompts == want.prompts


LAYER_FILES = [("full_video", "full_video.mp4"), ("background_video", "background.mp4"), ("mask_video", "mask.mp4")]


def moved_files(root, tmp_path, files: Path) -> tuple[Path, Path]:
    """A new dataset root holding GOT-10K/000000 (one foreground) with its three videos moved to ``files`` as
    clip_<name>, its metadata.json left alone: (the root, the sample directory)."""
    data = tmp_path / "data"
    sample = data / "GOT-10K" / "000000"
    shutil.copytree(root / "GOT-10K" / "000000", sample)
    files.mkdir(parents=True, exist_ok=True)
    for _key, name in LAYER_FILES:
        (sample / name).rename(files / f"clip_{name}")
    return data, sample


def name_paths(sample: Path, prefix: str) -> None:
    meta = json.loads((sample / "metadata.json").read_text())
    meta["paths"] = {key: f"{prefix}/clip_{name}" for key, name in LAYER_FILES}
    (sample / "metadata.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("prefix", ["store/got", "GOT-10K/000000/../../store/got"])  # up and back in: inside
def test_metadata_paths_name_files_kept_elsewhere_under_the_root(root, tmp_path, prefix):
    data, sample = moved_files(root, tmp_path, tmp_path / "data" / "store" / "got")
    name_paths(sample, prefix)
    ds = VidLayerDataset(data, SHAPE)
    assert [s.name for s in ds.samples] == ["GOT-10K/000000"] and ds.samples[0].full.name == "clip_full_video.mp4"
    assert_same_clip(ds.load(0, draw=3), VidLayerDataset(root, SHAPE).load(0, draw=3))
    assert check(data) == []


def test_paths_outside_the_root_need_the_flag(root, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    data, sample = moved_files(root, tmp_path, elsewhere)
    for prefix in (str(elsewhere), "../elsewhere"):  # absolute, and relative but leaving the root
        name_paths(sample, prefix)
        with pytest.raises(VidLayerSampleError, match=r"GOT-10K/000000: paths.full_video .* is outside the dataset "
                                                      r"root .*allow_absolute_paths") as e:
            VidLayerDataset(data, SHAPE)
        assert "\n" not in str(e.value) and check(data) == [str(e.value)]
        ds = VidLayerDataset(data, SHAPE, allow_absolute_paths=True)
        assert_same_clip(ds.load(0, draw=3), VidLayerDataset(root, SHAPE).load(0, draw=3))
    (data / "store").symlink_to(elsewhere)  # a link inside the root that points out of it: outside
    name_paths(sample, "store")
    with pytest.raises(VidLayerSampleError, match="is outside the dataset root"):
        VidLayerDataset(data, SHAPE)


def index_line(sample: str, prompts: dict, prefix: str = "") -> str:
    return json.dumps({"vid": f"{prefix}{sample}/full_video.mp4",
                       "entry": {"pha_video_path": f"{prefix}{sample}/mask.mp4",
                                 "bg_path": f"{prefix}{sample}/background.mp4"},
                       "overall_description": prompts["full"], "foreground_prompt": prompts["foregrounds"][0],
                       "background_prompt": prompts["background"]})


def test_a_jsonl_index_reads_as_the_same_samples(root, clips, tmp_path):
    index = root / "index.jsonl"
    index.write_text(index_line("GOT-10K/000000", clips[2].prompts) + "\n\n" +
                     index_line("VIDGEN/000000", clips[0].prompts) + "\n")
    try:
        ds = VidLayerDataset(index, SHAPE)
        assert [s.name for s in ds.samples] == ["index.jsonl:1", "index.jsonl:3"]
        by_dir = VidLayerDataset(root, SHAPE)
        assert_same_clip(ds.load(0, draw=2), by_dir.load(0, draw=2))
        assert_same_clip(ds.load(1, draw=2), by_dir.load(2, draw=2))
        assert check(index) == []
    finally:
        index.unlink()


def test_a_jsonl_index_is_confined_to_its_directory_and_names_bad_lines(root, clips, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(root / "GOT-10K", data / "GOT-10K")
    index = data / "index.jsonl"
    index.write_text(index_line("GOT-10K/000000", clips[2].prompts, prefix=f"{root}/") + "\n")  # the original root
    with pytest.raises(VidLayerSampleError, match=r"^VidLayer sample index.jsonl:1: vid /.* is outside the dataset "
                                                  r"root .*allow_absolute_paths"):
        VidLayerDataset(index, SHAPE)
    assert len(VidLayerDataset(index, SHAPE, allow_absolute_paths=True)) == 1
    index.write_text(index_line("GOT-10K/000000", clips[2].prompts) + "\n{not json\n")
    with pytest.raises(VidLayerSampleError, match="index.jsonl:2: not valid JSON"):
        VidLayerDataset(index, SHAPE)
    index.write_text(json.dumps({"vid": "GOT-10K/000000/full_video.mp4", "entry": {"bg_path": "x.mp4"}}) + "\n")
    with pytest.raises(VidLayerSampleError, match=r"index.jsonl:1: no entry.pha_video_path"):
        VidLayerDataset(index, SHAPE)
    assert check(index) == ["VidLayer sample index.jsonl:1: no entry.pha_video_path; fix or remove the line"]


def test_training_reads_an_index_and_the_absolute_paths_flag(root, clips, tmp_path):
    from layert2v.training.config import TrainConfig
    from layert2v.training.data import build_data

    index = tmp_path / "index.jsonl"
    index.write_text(index_line("GOT-10K/000000", clips[2].prompts, prefix=f"{root}/") + "\n")

    def config(**data) -> TrainConfig:
        return TrainConfig.from_dict({"stage": "vae", "output_dir": str(tmp_path / "out"),
                                      "data": {"kind": "vidlayer", "path": str(index), "frames": 5, "height": 16,
                                               "width": 16, **data}})

    with pytest.raises(VidLayerSampleError, match="outside the dataset root"):
        build_data(config())
    assert len(build_data(config(allow_absolute_paths=True))) == 1
