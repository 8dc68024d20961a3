"""The procedural layered world: determinism, exact layer ground truth, held-out split, captions, readers, datasets."""

from __future__ import annotations

import importlib.util
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from layert2v.data.world import (
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    HELDOUT_BACKGROUNDS,
    HELDOUT_OBJECTS,
    MOTIONS,
    SHAPES,
    ClipSpec,
    WorldDataset,
    generate_clip,
    generate_clip_with_spec,
    heldout_prompts,
    render,
    sample_spec,
    track,
    write_dataset,
)
from layert2v.data.world.captions import parse_background, parse_object
from layert2v.prompts import parse_prompt

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("world_quality", ROOT / "benchmarks" / "world_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wq = _load_benchmark()


# ------------------------------------------------------------------------------------------ vocabulary
def test_vocabulary_is_rich_and_well_separated():
    assert len(SHAPES) >= 5 and len(COLOURS) >= 8 and len(BACKGROUNDS) >= 7 and len(MOTIONS) >= 12
    rgb = np.array(list(COLOURS.values()))
    assert rgb.min() >= 0 and rgb.max() <= 1
    closest = min(np.linalg.norm(a - b) for a, b in itertools.combinations(rgb, 2))
    assert closest > 0.3


# -------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_clip_and_different_seed_different_clip():
    a, b, c = generate_clip(7), generate_clip(7), generate_clip(8)
    for x, y in [(a.full, b.full), (a.background, b.background), *zip(a.alphas, b.alphas),
                 *zip(a.foregrounds, b.foregrounds)]:
        assert np.array_equal(x, y)
    assert a.prompts == b.prompts
    assert not np.array_equal(a.full, c.full)
    assert a.prompts != c.prompts
    assert not np.array_equal(generate_clip(7, split="heldout").full, a.full)


def test_shapes_and_dtypes():
    video, spec = generate_clip_with_spec(3, num_frames=9, height=48, width=80, num_foregrounds=2)
    assert video.full.shape == (9, 48, 80, 3) and video.full.dtype == np.float32
    assert video.num_foregrounds == 2 == len(spec.objects) == len(video.prompts["foregrounds"])
    assert video.alphas[0].shape == (9, 48, 80)
    for arr in [video.full, video.background, *video.foregrounds, *video.alphas]:
        assert arr.min() >= 0 and arr.max() <= 1
    counts = {len(sample_spec(s).objects) for s in range(60)}
    assert counts == {1, 2, 3}


# ------------------------------------------------------------------------------------ layer ground truth
@pytest.mark.parametrize("seed", range(12))
def test_full_equals_composite_of_layers(seed):
    video = generate_clip(seed, height=64 if seed % 2 else 96, width=96 if seed % 3 else 64)
    assert np.abs(video.composite() - video.full).max() <= 1 / 255


def test_alpha_is_anti_aliased_and_objects_stay_in_frame():
    for seed in range(20):
        video = generate_clip(seed)
        for alpha in video.alphas:
            assert ((alpha > 0) & (alpha < 1)).any(), "edges must have fractional coverage"
            assert (alpha == 1).any() and (alpha == 0).any()
            border = np.concatenate([alpha[:, 0], alpha[:, -1], alpha[:, :, 0], alpha[:, :, -1]], axis=1)
            assert border.max() < 0.05, "objects stay inside the frame"


def test_layers_are_the_objects_own_and_background_is_clean():
    spec = sample_spec(11, num_foregrounds=3)
    video = render(spec)
    clean = render(replace(spec, objects=spec.objects[:1]))
    assert np.array_equal(video.background, clean.background), "background does not depend on the objects"
    for k, obj in enumerate(spec.objects):
        alone = render(replace(spec, objects=[obj]))
        assert np.array_equal(video.alphas[k], alone.alphas[0]), "alpha is the object's own, not occluded"
        fg, a = video.foregrounds[k], video.alphas[k]
        assert np.allclose(fg[a > 0], COLOURS[obj.colour]) and (fg[a == 0] == 0).all()


def test_objects_occlude_in_layer_order():
    # Find a clip where two objects overlap; the top layer's colour must win in the full video there.
    for seed in range(200):
        spec = sample_spec(seed, num_foregrounds=2)
        video = render(spec)
        both = (video.alphas[0] == 1) & (video.alphas[1] == 1)
        if both.any():
            assert np.allclose(video.full[both], COLOURS[spec.objects[1].colour], atol=1e-6)
            return
    pytest.fail("no overlapping objects in 200 clips")


def test_background_colours_and_object_colours_differ():
    for seed in range(300):
        spec = sample_spec(seed)
        colours = [o.colour for o in spec.objects]
        assert spec.background.colour not in colours and len(set(colours)) == len(colours)


def test_motions_are_large():
    seen = set()
    for seed in range(300):
        spec = sample_spec(seed, height=64, width=96)
        for obj in spec.objects:
            seen.add(obj.motion)
            x, y, r = track(obj, spec.num_frames, spec.height, spec.width)
            if obj.motion in DIRECTIONS:
                dx, dy = (x[-1] - x[0]) / spec.width, (y[-1] - y[0]) / spec.height
                assert max(abs(dx), abs(dy)) >= 1 / 3
                ex, ey = DIRECTIONS[obj.motion]
                assert np.sign(dx) == ex and np.sign(dy) == ey
            elif obj.motion in ("growing", "shrinking"):
                assert max(r) / min(r) >= 2 and (r[-1] > r[0]) == (obj.motion == "growing")
            else:
                assert np.ptp(y) / spec.height >= 1 / 3
    assert seen == set(MOTIONS)


def test_background_pans():
    moving = next(s for s in map(sample_spec, range(100)) if s.background.pan and s.background.kind == "stripes")
    bg = render(moving).background
    assert not np.array_equal(bg[0], bg[-1])
    static = next(s for s in map(sample_spec, range(100)) if s.background.pan is None)
    bg = render(static).background
    assert np.array_equal(bg[0], bg[-1])


def test_spec_round_trips_through_a_dict():
    spec = sample_spec(5)
    again = ClipSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert np.array_equal(render(again).full, render(spec).full)


# --------------------------------------------------------------------------------------------- held out
def test_heldout_combinations_never_in_train_and_always_in_heldout():
    for seed in range(1500):
        assert sample_spec(seed, split="train").heldout_combinations == []
    seen: set[tuple[str, str]] = set()
    for spec in heldout_prompts(300):
        found = spec.heldout_combinations
        assert found, f"held-out clip {spec.seed} has no held-out combination"
        seen.update(found)
    assert seen == set(HELDOUT_OBJECTS) | set(HELDOUT_BACKGROUNDS)


def test_heldout_prompts_are_deterministic_with_prompts():
    a, b = heldout_prompts(5, seed=3), heldout_prompts(5, seed=3)
    assert a == b and all(s.split == "heldout" and s.prompts["full"] for s in a)


# --------------------------------------------------------------------------------------------- captions
def test_captions_name_every_attribute():
    for seed in range(300):
        spec = sample_spec(seed)
        prompts = spec.prompts
        for obj, caption in zip(spec.objects, prompts["foregrounds"]):
            assert parse_object(caption) == {"colour": obj.colour, "shape": obj.shape, "motion": obj.motion}, caption
            assert caption in prompts["full"]
        bg = parse_background(prompts["background"])
        assert bg == {"kind": spec.background.kind, "colour": spec.background.colour, "pan": spec.background.pan}
        assert prompts["background"] in prompts["full"]


def test_captions_vary_with_synonyms():
    captions = {sample_spec(s, num_foregrounds=1).prompts["foregrounds"][0].split(" ", 2)[2] for s in range(400)}
    assert any(c.startswith("disc") for c in captions) and any(c.startswith("circle") for c in captions)


def test_parse_prompt_round_trips_generated_captions():
    for seed in range(300):
        prompts = sample_spec(seed, split="heldout" if seed % 2 else "train").prompts
        parsed = parse_prompt(prompts["full"])
        assert parsed["background"] == prompts["background"]
        assert parsed["foregrounds"] == prompts["foregrounds"]
        assert parsed["full"] == prompts["full"]


def test_parse_prompt_is_forgiving():
    assert parse_prompt("a cat") == {"full": "a cat", "background": "a plain background", "foregrounds": ["a cat"]}
    p = parse_prompt("A dog, a cat, and a bird over a sunny beach.")
    assert p["foregrounds"] == ["A dog", "a cat", "a bird"] and p["background"] == "a sunny beach"
    p = parse_prompt("a red kite in front of grey clouds over the sea")
    assert p["foregrounds"] == ["a red kite"] and p["background"] == "grey clouds over the sea"
    assert parse_prompt("")["foregrounds"] and parse_prompt("a ball over ")["background"] == "a plain background"


# ---------------------------------------------------------------------------------------------- readers
def test_readers_read_ground_truth():
    acc = wq.validate_readers(n=100, seed=1000)
    assert all(v >= 0.98 for v in acc.values()), acc
    acc = wq.validate_readers(n=30, seed=0, split="heldout", height=96, width=96, num_frames=9)
    assert all(v >= 0.98 for v in acc.values()), acc


def test_readers_notice_wrong_layers():
    spec = next(s for s in map(sample_spec, range(100)) if s.objects[0].motion == "right")
    video = render(spec)
    alpha = video.alphas[0]
    assert wq.read_motion(alpha) == "right" and wq.read_motion(alpha[::-1]) == "left"
    assert wq.read_shape(alpha) == spec.objects[0].shape
    other = "circle" if spec.objects[0].shape != "circle" else "square"
    assert wq.read_shape(render(replace(spec, objects=[replace(spec.objects[0], shape=other)])).alphas[0]) == other
    wrong = next(c for c in COLOURS if c != spec.objects[0].colour)
    assert wq.read_foreground_colour(np.where(alpha[..., None] > 0, COLOURS[wrong], 0.0), alpha) == wrong
    assert wq.read_background(video.background) == (spec.background.kind, spec.background.colour)
    flat = np.broadcast_to(np.float32(COLOURS["green"]), video.background.shape)
    assert wq.read_background(flat) == ("plain", "green")


def test_quality_metrics_separate_good_and_bad_layers():
    video = generate_clip(4)
    assert wq.recomposite_psnr(video) >= 60 and wq.object_in_background(video) == 0.0 and wq.alpha_hardness(video) > 0.9
    broken = replace(video, full=np.clip(video.full + 0.1, 0, 1), background=video.full.copy())
    assert wq.recomposite_psnr(broken) < 30
    assert wq.object_in_background(broken) > 0.5, "objects painted into the background count"
    assert wq.alpha_hardness(replace(video, alphas=[a * 0 + 0.5 for a in video.alphas])) < 0.05


def test_benchmark_runs_on_ground_truth(tmp_path):
    assert wq.main(["--ground-truth", "--n", "6", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    summary = result["summary"]
    assert summary["clips"] == 6 and summary["recomposite_psnr"] >= 60
    assert all(summary[k] >= 0.98 for k in wq.ACCURACIES)
    assert (tmp_path / "results.md").read_text().startswith("###")


# --------------------------------------------------------------------------------------------- datasets
def test_world_dataset_is_deterministic():
    ds = WorldDataset(50, seed=0)
    assert len(ds) == 50
    assert np.array_equal(ds[3].full, ds[3].full) and np.array_equal(ds[3].full, generate_clip(3).full)
    assert np.array_equal(ds[-1].full, ds[49].full)
    assert not np.array_equal(WorldDataset(50, seed=1)[3].full, ds[3].full)
    with pytest.raises(IndexError):
        ds[50]
    small = WorldDataset(4, num_frames=9, height=32, width=48, num_foregrounds=2, split="heldout")
    assert small[0].full.shape == (9, 32, 48, 3) and small[0].num_foregrounds == 2
    assert small.spec(0).heldout_combinations


def test_generation_is_fast():
    generate_clip(0, num_foregrounds=3)
    times = []
    for seed in range(20):
        start = time.perf_counter()
        generate_clip(seed, num_frames=17, height=64, width=64, num_foregrounds=3)
        times.append(time.perf_counter() - start)
    assert np.median(times) < 0.05


def test_write_dataset_and_folder_dataset(tmp_path):
    pytest.importorskip("av")
    from layert2v.data.folder import REQUIRED_KEYS, FolderDataset, read_metadata

    root = write_dataset(tmp_path / "world", 2, num_frames=5, height=32, width=32)
    records = read_metadata(root)
    assert [r["id"] for r in records] == ["000000", "000001"]
    assert all(set(REQUIRED_KEYS) <= set(r) for r in records)
    assert records[0]["size"] == [32, 32] and records[0]["frames"] == 5
    ds, world = FolderDataset(root), WorldDataset(2, num_frames=5, height=32, width=32)
    assert len(ds) == 2 and [ds.num_foregrounds(i) for i in range(2)] == [r["num_foregrounds"] for r in records]
    for i in range(2):
        loaded, truth = ds[i], world[i]
        assert loaded.prompts == truth.prompts == records[i]["prompts"]
        assert loaded.num_foregrounds == truth.num_foregrounds
        assert np.abs(loaded.alphas[0] - truth.alphas[0]).max() < 0.02
    with pytest.raises(FileExistsError):
        write_dataset(root, 1)


def test_benchmark_calls_the_pipeline_with_its_signature():
    import inspect

    pipeline = pytest.importorskip("layert2v.pipeline")
    spec = heldout_prompts(1)[0]
    calls = []

    def fake_pipe(**kwargs):
        calls.append(kwargs)
        return render(spec)

    video = wq.generate(fake_pipe, spec.prompts, 3, num_frames=9, height=32, width=32)
    assert video.num_foregrounds == len(spec.objects)
    inspect.signature(pipeline.LayerT2VPipeline.__call__).bind(None, **calls[0])  # raises if the call is wrong
    assert calls[0]["foreground_prompts"] == spec.prompts["foregrounds"] and calls[0]["seed"] == 3


def test_a_still_is_the_first_frame_of_its_clip():
    """Stills (num_frames=1) pretrain the VAE on images; they are the clip's opening frame."""
    for seed in range(6):
        still, clip = generate_clip(seed, num_frames=1), generate_clip(seed, num_frames=9)
        assert still.full.shape == (1, 64, 64, 3)
        np.testing.assert_allclose(still.full[0], clip.full[0], atol=1e-6)
        np.testing.assert_allclose(still.alphas[0][0], clip.alphas[0][0], atol=1e-6)
