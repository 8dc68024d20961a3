"""The data engine end to end with the weight-free backends, on footage with known layers made from a photograph."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from layert2v.cli import main
from layert2v.data.engine.build import Output, build
from layert2v.data.engine.clip import sample_id
from layert2v.data.engine.config import parse_config
from layert2v.data.engine.footage import make_clip, write_footage
from layert2v.data.engine.quality import key_frames, qualified_span
from layert2v.data.engine.stages import Judge
from layert2v.data.fit import fit_frames
from layert2v.data.folder import FolderDataset, read_metadata
from layert2v.eval.layers import iou, psnr

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# What the weight-free backends reach on 32x32 static-camera footage (ProRes input): the bar for
# alpha IoU and clean-plate PSNR, and the engine's own default recomposite bar on the saved (re-encoded) layers.
MIN_IOU, MIN_PLATE_PSNR, MIN_RECOMPOSITE_PSNR = 0.85, 30.0, 30.0


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """Two good clips, and their truths by source name."""
    root = tmp_path_factory.mktemp("footage")
    truths = {}
    for seed in range(2):
        truth = make_clip(seed)
        write_footage(root, f"clip{seed}", truth)
        truths[f"clip{seed}.mov"] = truth
    return root, truths


def copy_input(footage, tmp_path: Path) -> Path:
    root = tmp_path / "in"
    shutil.copytree(footage[0], root)
    return root


def test_weight_free_build_recovers_the_known_layers(footage, tmp_path):
    root, truths = footage
    summary = build(root, tmp_path / "ds", parse_config({}), executor="local", progress=False)
    assert summary.rejected == [] and len(summary.accepted) == 2
    data = FolderDataset(tmp_path / "ds")
    assert len(data) == 2
    for i, record in enumerate(data.records):
        truth, video = truths[record["source"]], data[i]
        assert record["source_frames"] == list(range(9)) and record["frames"] == 9 and record["size"] == [32, 32]
        assert record["backends"] == {"captions": "sidecar", "segmentation": "clean_plate", "matting": "pymatting",
                                      "removal": "temporal_plate"}
        assert record["prompts"] == truth.prompts
        assert {"recomposite_psnr", "coverage_1", "alpha_stability", "fg_leakage"} <= set(record["scores"])
        assert iou(video.alphas[0], truth.alphas[0]) >= MIN_IOU
        assert psnr(video.background, truth.background) >= MIN_PLATE_PSNR
        assert psnr(video.composite(), video.full) >= MIN_RECOMPOSITE_PSNR
        assert video.metadata["source"] == record["source"]  # the manifest carries it too


def test_two_foregrounds_are_tracked_apart(tmp_path):
    truth = make_clip(3, num_foregrounds=2)
    write_footage(tmp_path / "in", "two", truth)
    summary = build(tmp_path / "in", tmp_path / "ds", parse_config({"max_foregrounds": 2}), executor="local",
                    progress=False)
    assert [r["num_foregrounds"] for r in summary.accepted] == [2], summary.rejected
    video = FolderDataset(tmp_path / "ds")[0]
    for alpha in video.alphas:  # each engine layer matches one true disc, and not the other
        scores = sorted(iou(alpha, t) for t in truth.alphas)
        assert scores[1] >= MIN_IOU and scores[0] < 0.1


def test_bad_inputs_are_rejected_with_reasons_and_the_rest_completes(footage, tmp_path):
    root = copy_input(footage, tmp_path)
    (root / "garbage.mp4").write_bytes(b"this is not a video" * 10)
    (root / "empty.mp4").write_bytes(b"")
    write_footage(root, "nokeys", make_clip(5))
    (root / "nokeys.json").write_text(json.dumps({"full": "a disc"}))
    write_footage(root, "nocaption", make_clip(6))
    (root / "nocaption.json").unlink()
    write_footage(root, "still", make_clip(7))
    still = make_clip(7)
    from layert2v.io.codec import write_video
    write_video(root / "still.mov", still.background, 8, "prores_ks")  # nothing moves: nothing to segment
    summary = build(root, tmp_path / "ds", parse_config({}), executor="local", progress=False)
    reasons = {r["source"]: r["reason"] for r in read_jsonl(tmp_path / "ds" / "rejects.jsonl")}
    assert sorted(r["source"] for r in summary.accepted) == ["clip0.mov", "clip1.mov"]
    assert set(reasons) == {"garbage.mp4", "empty.mp4", "nokeys.mov", "nocaption.mov", "still.mov"}
    assert reasons["garbage.mp4"].startswith("load: ") and "garbage.mp4" in reasons["garbage.mp4"]
    assert reasons["empty.mp4"].startswith("load: ")
    assert "lacks key(s) ['background', 'foregrounds']" in reasons["nokeys.mov"]
    assert "no captions" in reasons["nocaption.mov"]
    assert "no object found: nothing in the clip differs from its clean plate" in reasons["still.mov"]
    assert all("\n" not in r for r in reasons.values())
    assert len(read_metadata(tmp_path / "ds")) == 2


def test_quality_rejects_carry_their_scores(footage, tmp_path):
    config = parse_config({"quality": {"min_recomposite_psnr": 99.0}})
    build(footage[0], tmp_path / "ds", config, executor="local", progress=False)
    rejects = read_jsonl(tmp_path / "ds" / "rejects.jsonl")
    assert len(rejects) == 2 and read_metadata(tmp_path / "ds") == []
    for r in rejects:
        assert r["reason"].startswith("check: recomposite PSNR") and 25.0 < r["scores"]["recomposite_psnr"] < 99.0
        assert not (tmp_path / "ds" / r["id"]).exists()


def test_rerun_redoes_nothing_and_a_killed_run_resumes(footage, tmp_path):
    root, out = copy_input(footage, tmp_path), tmp_path / "ds"
    write_footage(root, "third", make_clip(2))
    first = build(root, out, parse_config({}), executor="local", progress=False)
    assert len(first.accepted) == 3
    before = (out / "metadata.jsonl").read_text()

    seen = []
    again = build(root, out, parse_config({}), executor="local", progress=False, on_clip=lambda c, r: seen.append(c))
    assert seen == [] and again.skipped == 3 and (out / "metadata.jsonl").read_text() == before

    # a run killed after writing one sample's directory but before its done marker, mid-way through another
    victim = sample_id("third.mov")
    (out / ".engine" / "records" / f"{victim}.json").unlink()
    (out / f".{sample_id('clip0.mov')}.tmp-0123abcd").mkdir()
    resumed = build(root, out, parse_config({}), executor="local", progress=False,
                    on_clip=lambda c, r: seen.append(c.source))
    assert seen == ["third.mov"] and resumed.skipped == 2
    assert (out / "metadata.jsonl").read_text() == before
    assert not list(out.glob(".*.tmp-*")) and len(FolderDataset(out)) == 3


def test_out_with_other_content_or_another_config_is_refused(footage, tmp_path, capsys):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["data", "build", str(footage[0]), "--out", str(out), "--local"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "exists with other content" in err
    assert (out / "notes.txt").read_text() == "mine" and len(list(out.iterdir())) == 1

    out2 = tmp_path / "ds2"
    build(footage[0], out2, parse_config({}), executor="local", progress=False)
    with pytest.raises(FileExistsError, match="another config"):
        build(footage[0], out2, parse_config({"matting": {"band": 3}}), executor="local", progress=False)


@pytest.mark.parametrize("setup, message", [
    ("novideos", "no videos"),
    ("notdir", "not a directory"),
    ("badconfig", "unknown key(s) ['colour']"),
    ("badbackend", "unknown matting backend 'magic'"),
    ("badoption", "unknown option(s) ['radius'] for segmentation backend 'clean_plate'"),
    ("missingconfig", "engine config"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, setup, message):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "readme.txt").write_text("no videos here")
    config = tmp_path / "engine.yaml"
    args = ["data", "build", str(inp), "--out", str(tmp_path / "ds"), "--local"]
    if setup == "notdir":
        args[2] = str(inp / "readme.txt")
    if setup != "novideos" and setup != "notdir":
        (inp / "a.mp4").write_bytes(b"x")  # never decoded: the config fails first
        text = {"badconfig": "colour: red\n", "badbackend": "matting: {backend: magic}\n",
                "badoption": "segmentation: {backend: clean_plate, radius: 3}\n"}.get(setup)
        if text is not None:
            config.write_text(text)
        args += ["--config", str(config)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not (tmp_path / "ds").exists()


def test_a_build_that_writes_no_sample_fails_and_says_where_the_reasons_are(tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.mp4").write_bytes(b"not a video" * 20)
    (inp / "b.mov").write_bytes(b"")
    out = tmp_path / "ds"
    assert main(["data", "build", str(inp), "--out", str(out), "--local"]) == 2
    captured = capsys.readouterr()
    assert "wrote 0 sample(s)" in captured.out  # the summary still prints
    err = captured.err.strip().splitlines()[-1]  # after the progress bar
    assert err == (f"layert2v data: error: no sample was written: every clip (2) was rejected; the reasons are in "
                   f"{out / 'rejects.jsonl'}")
    assert sorted(r["source"] for r in read_jsonl(out / "rejects.jsonl")) == ["a.mp4", "b.mov"]


def test_resampling_records_the_source_frames(footage, tmp_path):
    frames = np.random.default_rng(0).random((10, 8, 12, 3)).astype(np.float32)
    out, indices, fps = fit_frames(frames, 10.0, (6, 4), 3, 5.0)
    assert indices == [0, 2, 4] and fps == 5.0 and out.shape == (3, 4, 6, 3)
    with pytest.raises(ValueError, match="fewer than the 20"):
        fit_frames(frames, 10.0, None, 20, None)

    assert main(["data", "build", str(footage[0]), "--out", str(tmp_path / "ds"), "--local", "--frames", "5",
                 "--fps", "4"]) == 0
    record = read_metadata(tmp_path / "ds")[0]
    assert record["source_frames"] == [0, 2, 4, 6, 8] and record["frames"] == 5 and record["fps"] == 4


def test_judge_rule_keeps_the_longest_qualified_span():
    keys = key_frames(35, 10)
    assert keys == [0, 10, 20, 30, 34]
    scores = {0: (9, 9), 10: (8, 7), 20: (3, 9), 30: (7, 7), 34: (10, 8)}
    assert qualified_span(scores, keys, 7) == (0, 10)
    assert qualified_span({**scores, 20: (7, 7)}, keys, 7) == (0, 34)
    assert qualified_span({k: (6, 9) for k in keys}, keys, 7) is None


class ScriptedJudge(Judge):
    """A judge plug-in (named as tests.test_engine:ScriptedJudge): good scores except on frame 8."""

    seen: list = []

    def score(self, panels, description):
        ScriptedJudge.seen.append((sorted(panels), description, panels[0].size))
        return {t: ((2, 9) if t == 8 else (8, 9)) for t in panels}


def test_a_plugged_in_judge_crops_the_clip_to_its_qualified_frames(footage, tmp_path):
    config = parse_config({"judge": {"backend": "test_engine:ScriptedJudge"}, "quality": {"key_interval": 4}})
    summary = build(footage[0], tmp_path / "ds", config, executor="local", progress=False)
    assert ScriptedJudge.seen[0][0] == [0, 4, 8] and ScriptedJudge.seen[0][2] == (4 * 32, 32)
    for record in summary.accepted:
        assert record["source_frames"] == [0, 1, 2, 3, 4] and record["frames"] == 5
        assert record["scores"]["judge"] == {"0": [8, 9], "4": [8, 9], "8": [2, 9]}
    assert FolderDataset(tmp_path / "ds")[0].num_frames == 5


def test_ray_data_build_and_composite_match_the_local_ones(footage, composite_inputs, tmp_path):
    ray = pytest.importorskip("ray")
    from layert2v.data.engine.composite import composite

    config = parse_config({"max_foregrounds": 2, "composite": {"samples": 2}})
    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False)  # one Ray for both
    try:
        summary = build(footage[0], tmp_path / "ray", config, executor="ray", progress=False)
        mixed = composite(*composite_inputs, tmp_path / "ray_composite", config, executor="ray", progress=False)
    finally:
        ray.shutdown()
    local = build(footage[0], tmp_path / "local", config, executor="local", progress=False)
    assert sorted(r["id"] for r in summary.accepted) == sorted(r["id"] for r in local.accepted)
    assert set(summary.stage_seconds) == {"load", "captions", "segmentation", "matting", "removal", "check", "write"}
    ray_data, local_data = FolderDataset(tmp_path / "ray"), FolderDataset(tmp_path / "local")
    by_id = {r["id"]: i for i, r in enumerate(local_data.records)}
    for i, record in enumerate(ray_data.records):
        a, b = ray_data[i], local_data[by_id[record["id"]]]
        assert np.abs(a.alphas[0] - b.alphas[0]).max() < 1e-3
        assert record["scores"] == local_data.records[by_id[record["id"]]]["scores"]
    assert Output(tmp_path / "ray").done(ray_data.records[0]["id"])["accepted"]["id"] == ray_data.records[0]["id"]

    serial = composite(*composite_inputs, tmp_path / "local_composite", config, executor="local", progress=False)
    assert [r["id"] for r in mixed.accepted] == [r["id"] for r in serial.accepted] and len(serial.accepted) == 2
    assert [r["composite"] for r in mixed.accepted] == [r["composite"] for r in serial.accepted]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_example_configs_are_valid(monkeypatch):
    import inspect

    from layert2v.data.engine.build import validate
    from layert2v.data.engine.config import load_config
    from layert2v.data.engine.stages import backend_class

    configs = Path(__file__).parents[1] / "configs" / "engine"
    written, default = load_config(configs / "weight_free.yaml"), parse_config({})  # "the defaults written out"
    assert (written.quality, written.ray, written.max_foregrounds) == (default.quality, default.ray, 1)
    for stage in default.stages:
        assert written.backend(stage) == default.backend(stage)
        params = inspect.signature(backend_class(stage, default.backend(stage)).__init__).parameters
        assert written.options(stage) == {k: params[k].default for k in written.options(stage)}
    with pytest.raises(FileNotFoundError, match="qwen3vl: no model at /models/Qwen3-VL-30B-A3B-Instruct"):
        validate(load_config(configs / "paper.yaml"))  # every key and option is known; only the weights are missing
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert validate(load_config(configs / "openai_judge.yaml"))["judge"] == "openai"


class ExplodingMatter:
    """A matting plug-in whose weights fail to load."""

    def __init__(self):
        raise OSError("checkpoint truncated")

    def matte(self, frames, masks):
        raise AssertionError("never reached")


def test_a_backend_that_fails_to_load_stops_the_run_once(footage, tmp_path, capsys):
    config = tmp_path / "engine.yaml"
    config.write_text("matting: {backend: 'test_engine:ExplodingMatter'}\n")
    assert main(["data", "build", str(footage[0]), "--out", str(tmp_path / "ds"), "--config", str(config),
                 "--local"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "matting backend 'test_engine:ExplodingMatter' failed to load: OSError: " \
                                    "checkpoint truncated" in err
    assert not list((tmp_path / "ds" / ".engine" / "records").iterdir())


# ----------------------------------------------------------------------------------------------- composite
@pytest.fixture(scope="module")
def composite_inputs(tmp_path_factory):
    """Two RGBA foregrounds (a ProRes 4444 clip, a PNG sequence) and two background videos, with captions."""
    from PIL import Image

    from layert2v.io.codec import write_video

    root = tmp_path_factory.mktemp("composite")
    fg, bg = root / "fg", root / "bg"
    fg.mkdir()
    bg.mkdir()
    disc = make_clip(0, num_frames=5, size=(16, 16))
    write_video(fg / "disc.mov", np.concatenate([disc.foregrounds[0], disc.alphas[0][..., None]], -1), 8, "prores_ks")
    (fg / "disc.txt").write_text("a textured disc\n")
    (fg / "square").mkdir()
    for i in range(3):  # shorter than the backgrounds: it loops
        rgba = np.zeros((12, 8, 4), np.uint8)
        rgba[2:10, 1:7] = (255, 40 * i, 0, 255)
        Image.fromarray(rgba, "RGBA").save(fg / "square" / f"{i:03d}.png")
    (fg / "square.json").write_text(json.dumps({"foreground": "an orange block"}))
    for seed in range(2):
        photo = make_clip(10 + seed)
        write_footage(bg, f"room{seed}", photo)
        (bg / f"room{seed}.json").unlink()
        (bg / f"room{seed}.txt").write_text(f"room number {seed}")
    return fg, bg


def test_composite_pastes_exact_layers_and_resumes(composite_inputs, tmp_path):
    from layert2v.data.engine.composite import composite

    fg, bg = composite_inputs
    config = parse_config({"max_foregrounds": 2, "composite": {"samples": 4, "scale": [0.3, 0.5], "seed": 1}})
    summary = composite(fg, bg, tmp_path / "ds", config, executor="local", progress=False)
    assert len(summary.accepted) == 4 and summary.rejected == []
    data = FolderDataset(tmp_path / "ds")
    counts = set()
    for i, record in enumerate(data.records):
        video = data[i]
        counts.add(video.num_foregrounds)
        assert record["source"]["background"] == f"room{i % 2}.mov" and record["frames"] == 9
        assert record["prompts"]["full"].endswith(f" in front of room number {i % 2}")
        assert set(record["prompts"]["foregrounds"]) <= {"a textured disc", "an orange block"}
        assert psnr(video.composite(), video.full) > MIN_RECOMPOSITE_PSNR  # exact, up to full.mp4's 4:2:0 chroma
        for alpha in video.alphas:
            area = (alpha > 0.5).sum(axis=(1, 2))
            assert (area > 0).any() and area.max() < 0.5 * 32 * 32
    assert counts == {1, 2}

    again = composite(fg, bg, tmp_path / "ds", config, executor="local", progress=False)
    assert again.skipped == 4 and again.processed == 0 and len(again.accepted) == 4


def test_composite_without_captions_is_one_line(composite_inputs, tmp_path, capsys):
    fg, bg = composite_inputs
    bare = tmp_path / "bare"
    shutil.copytree(bg, bare)
    (bare / "room0.txt").unlink()
    assert main(["data", "composite", "--fg", str(fg), "--bg", str(bare), "--out", str(tmp_path / "ds"),
                 "--local"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "room0.mov has no caption: write it into room0.txt" in err
