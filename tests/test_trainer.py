import json
import re

import numpy as np
import pytest
import torch
from helpers import TINY_TRANSFORMER, TINY_VAE, toy_clip

from layert2v.layout import LayerLayout
from layert2v.pipeline import LayerT2VPipeline
from layert2v.training.config import TrainConfig
from layert2v.training.data import clip_batch
from layert2v.training.recipes import RECIPES
from layert2v.training.trainer import Trainer, encode_layers


def toy_source(i, k):
    return toy_clip(i, k, frames=5, size=32)


@pytest.fixture()
def toy_data():
    return toy_source


def config(tmp_path, stage="layered", **over):
    raw = {"stage": stage, "output_dir": str(tmp_path / stage), "max_sequence_length": 8,
           "model": {"vae": TINY_VAE, "transformer": TINY_TRANSFORMER}, "data": {"frames": 5},
           "train": {"steps": 4, "batch_size": 1, "warmup": 1, "checkpoint_every": 2, "log_every": 1}}
    for key, value in over.items():
        if isinstance(value, dict) and key in raw:
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return TrainConfig.from_dict(raw)


@pytest.mark.parametrize("stage, num_rgb, num_alphas", [("vae", 4, 0), ("alpha", 0, 2), ("t2v", 1, 0),
                                                        ("layered", 4, 2)])
def test_clip_batch_stacks_what_the_stage_reads(stage, num_rgb, num_alphas):
    clips = [toy_clip(i, 2, frames=5, size=32) for i in range(3)]
    batch = clip_batch(clips, RECIPES[stage].reads)
    assert batch.rgb.shape == (3, num_rgb, 3, 5, 32, 32)
    assert batch.alphas.shape == (3, num_alphas, 1, 5, 32, 32)
    layers = (clips[2].full, clips[2].background, clips[2].premultiplied(1), clips[2].premultiplied(2))
    for i in range(num_rgb):
        assert torch.equal(batch.rgb[2, i], torch.from_numpy(layers[i]).permute(3, 0, 1, 2))
    for i in range(num_alphas):
        assert torch.equal(batch.alphas[1, i, 0], torch.from_numpy(clips[1].alphas[i]))


def test_resume_gives_the_same_loss_as_an_uninterrupted_run(tmp_path, toy_data):
    straight = Trainer(config(tmp_path / "a", lora_rank=0, train={"steps": 4}), data=toy_data).train()
    first = Trainer(config(tmp_path / "b", train={"steps": 4}), data=toy_data)
    first.train(max_steps=2)
    resumed = Trainer(config(tmp_path / "b", train={"steps": 4}), data=toy_data)  # a new process, as after a crash
    assert resumed.step == 2
    rest = resumed.train()
    assert [r["loss"] for r in rest] == [r["loss"] for r in straight[2:]]


def test_checkpoint_is_atomic_and_described(tmp_path, toy_data):
    cfg = config(tmp_path, train={"steps": 2})
    Trainer(cfg).train()
    ckpt = tmp_path / "layered" / "checkpoint"
    assert json.loads((ckpt / "progress.json").read_text())["step"] == 2
    assert not [p for p in (tmp_path / "layered").iterdir() if p.name.startswith(".")]  # no temp leftovers
    log = [json.loads(line) for line in (tmp_path / "layered" / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]


def test_vae_stage_from_scratch_starts_inflated_and_a_vae_init_is_kept(tmp_path, toy_data):
    scratch = Trainer(config(tmp_path, "vae", train={"steps": 1}), data=toy_data)
    assert scratch.vae.decoder.mid_block.resnets[0].conv2.weight.abs().max() == 0  # init_from_scratch ran
    scratch.train()
    again = Trainer(config(tmp_path / "b", "vae", init=str(tmp_path / "vae" / "final")), data=toy_data)
    torch.testing.assert_close(again.vae.state_dict(), scratch.vae.state_dict())  # not re-initialised


def test_all_stages_chain_into_a_pipeline(tmp_path, toy_data):
    Trainer(config(tmp_path, "vae", train={"steps": 2}), data=toy_data).train()
    Trainer(config(tmp_path, "alpha", init=str(tmp_path / "vae" / "final"), train={"steps": 2}), data=toy_data).train()
    Trainer(config(tmp_path, "t2v", init=str(tmp_path / "alpha" / "final"), train={"steps": 2}), data=toy_data).train()
    Trainer(config(tmp_path, "layered", init=str(tmp_path / "t2v" / "final"), lora_rank=4,
                   train={"steps": 2}), data=toy_data).train()
    stage3 = Trainer(config(tmp_path, "layered", init=str(tmp_path / "layered" / "final"), max_foregrounds=2,
                            data={"num_foregrounds": [2, 2]}, train={"steps": 2}, output_dir=str(tmp_path / "s3")),
                     data=toy_data)
    # stage 3 starts its new rows from the trained fg_1 / alpha_1 rows
    table = stage3.model.layer_adaln.detach()
    assert torch.equal(table[4], table[2]) and torch.equal(table[5], table[3])
    stage3.train()
    pipe = LayerT2VPipeline.from_pretrained(tmp_path / "s3" / "final")
    assert pipe.max_foregrounds == 2
    video = pipe("a", "b", ["c", "d"], num_inference_steps=2, progress=False)
    assert video.num_foregrounds == 2
    assert (tmp_path / "layered" / "final" / "layer_weights.safetensors").is_file()


def test_decoder_only_stages_keep_the_latents_and_carry_the_transformer(tmp_path, toy_data):
    """decoder_only: the VAE decoder, then the alpha path's decoder LoRA, train on a finished model; encoder,
    latent statistics and alpha projection stay, so the carried transformer still fits the latents.
    No warmup: a warmup step trains at learning rate 0, and a 1-step stage would change nothing (the VAE's attention
    output starts at zero, so its qkv learn only once an earlier step has moved it)."""
    one = {"steps": 1, "warmup": 0}
    Trainer(config(tmp_path, "vae", train=one), data=toy_data).train()
    Trainer(config(tmp_path, "alpha", init=str(tmp_path / "vae" / "final"), train=one), data=toy_data).train()
    Trainer(config(tmp_path, "layered", init=str(tmp_path / "alpha" / "final"), train=one), data=toy_data).train()
    model = tmp_path / "layered" / "final"
    before = LayerT2VPipeline.from_pretrained(model)
    decoder = Trainer(config(tmp_path, "vae", init=str(model), decoder_only=True, output_dir=str(tmp_path / "dec"),
                             train={"steps": 2, "lr": 1e-3, "warmup": 0}), data=toy_data)
    assert all(n.startswith(("decoder.", "post_quant_conv.")) for n in decoder.trainable_names)
    decoder.train()
    alpha = Trainer(config(tmp_path, "alpha", init=str(tmp_path / "dec" / "final"), decoder_only=True,
                           output_dir=str(tmp_path / "dec_alpha"), train={"steps": 2, "lr": 1e-3, "warmup": 0}),
                    data=toy_data)
    assert alpha.trainable_names and not [n for n in alpha.trainable_names if n.startswith("projection")]
    alpha.train()
    after = LayerT2VPipeline.from_pretrained(tmp_path / "dec_alpha" / "final")
    old_vae, new_vae = before.vae.state_dict(), after.vae.state_dict()
    for name in old_vae:
        same = torch.equal(old_vae[name], new_vae[name])
        assert same == (not name.startswith(("decoder.", "post_quant_conv."))), name
    assert after.vae.config.latents_mean == before.vae.config.latents_mean
    assert after.vae.config.latents_std == before.vae.config.latents_std
    torch.testing.assert_close(after.alpha_path.projection.weight, before.alpha_path.projection.weight)
    assert not torch.equal(after.alpha_path.lora_up["conv_out"], before.alpha_path.lora_up["conv_out"])
    torch.testing.assert_close(after.transformer.state_dict(), before.transformer.state_dict())
    with pytest.raises(ValueError, match="decoder_only"):
        config(tmp_path, "t2v", decoder_only=True, init=str(model))


def test_stage_mismatch_and_bad_config(tmp_path, toy_data):
    Trainer(config(tmp_path, "t2v", train={"steps": 1}), data=toy_data).train()
    with pytest.raises(ValueError, match="holds a t2v checkpoint"):
        Trainer(config(tmp_path, "layered", output_dir=str(tmp_path / "t2v")), data=toy_data)
    with pytest.raises(ValueError, match="4k\\+1"):
        config(tmp_path, data={"frames": 6})
    with pytest.raises(ValueError, match="unknown key"):
        config(tmp_path, data={"colour": 6})  # (fps became a key: data.fps resamples clips)
    with pytest.raises(ValueError, match="data.cache"):
        config(tmp_path, data={"cache": -1})


def _sample(pipe, clip):
    final = {}
    pipe(clip.prompts["full"], clip.prompts["background"], clip.prompts["foregrounds"], guidance_scale=1.0,
         num_inference_steps=20, scheduler="euler", progress=False,
         callback_on_step_end=lambda pipe, i, t, tensors: final.update(z=tensors["latents"]) or tensors)
    return final["z"]


def test_tiny_model_overfits_one_clip_and_samples_it_back(tmp_path):
    """The loss falls >= 10x on one clip, and sampling from fresh noise then returns that clip's layers.

    The clip's ground-truth layers composite exactly to its full video (toy_clip), so layers that come back close
    to them recompose to it. Pixel-level recomposition needs a VAE that reconstructs, which a tiny random one
    does not: benchmarks/world_quality.py measures recomposite PSNR on the trained built-in model."""
    clip = toy_clip(0, 1, frames=5, size=32)
    assert np.abs(clip.composite() - clip.full).max() < 1e-6
    cfg = config(tmp_path, loss={"lambda_mask": 0.0},
                 train={"steps": 400, "lr": 3e-3, "warmup": 10, "weight_decay": 0.0, "checkpoint_every": 1000})
    trainer = Trainer(cfg, data=lambda i, k: clip)
    trainer.save_result()  # the untrained model, as a baseline
    layout = LayerLayout(1)
    pipe = LayerT2VPipeline.from_pretrained(tmp_path / "layered" / "final")
    z0 = encode_layers(pipe.vae, pipe.alpha_path, [clip], layout, torch.device("cpu"))
    before = _sample(pipe, clip)
    losses = [r["loss"] for r in trainer.train()]
    assert np.mean(losses[:10]) > 10 * np.mean(losses[-20:]), (np.mean(losses[:10]), np.mean(losses[-20:]))
    after = _sample(LayerT2VPipeline.from_pretrained(tmp_path / "layered" / "final"), clip)
    for name in layout.names:
        b, a, target = layout.split(before)[name], layout.split(after)[name], layout.split(z0)[name]
        d_before = float((b - target).norm() / target.norm())
        d_after = float((a - target).norm() / target.norm())
        assert d_after < 0.6 and d_after < 0.25 * d_before, (name, d_before, d_after)


def test_latent_cache_encodes_each_clip_once_and_trains_the_same(tmp_path, toy_data):
    def losses(cache, out):
        trainer = Trainer(config(tmp_path / out, data={"cache": cache}, train={"steps": 4, "batch_size": 2}),
                          data=toy_data)
        return trainer, [r["loss"] for r in trainer.train()]

    plain, expected = losses(0, "plain")
    cached, got = losses(2, "cached")
    assert len(cached.latents._encoded) == 2  # encoded up front; steps 1-3 reuse the two clips of step 0
    # same first clips, same noise: the cache changes nothing but reuse (encoded as one batch: float rounding)
    assert got[0] == pytest.approx(expected[0], rel=1e-5)
    assert got[1:] != expected[1:]  # later steps see the cached clips again, not new ones

    assert plain.latents._encoded == {}


def test_cache_encodes_a_clip_on_first_use_only(tmp_path, toy_data, monkeypatch):
    """Without fill_cache (a stage that only evaluates, or the ablation's shared dict), clips encode lazily."""
    trainer = Trainer(config(tmp_path, data={"cache": 2}), data=toy_data)
    calls = []
    original = trainer.recipe.encode
    monkeypatch.setattr(trainer.recipe, "encode", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = trainer.latents.encoded(5, 1)  # clip 5 % 2 = 1
    assert calls == [1] and trainer.latents.encoded(3, 1) is first and calls == [1]
    trainer.latents.encoded(4, 1)  # clip 0: a new one
    assert calls == [1, 1] and sorted(trainer.latents._encoded) == [(0, 1), (1, 1)]


def test_fill_cache_encodes_every_foreground_count_and_prompt_up_front(tmp_path, toy_data):
    trainer = Trainer(config(tmp_path, max_foregrounds=2, data={"cache": 3, "num_foregrounds": [1, 2]}), data=toy_data)
    trainer.fill_cache(batch=2)  # 3 clips per count: a batch of 2 and a batch of 1
    assert sorted(trainer.latents._encoded) == [(i, k) for i in range(3) for k in (1, 2)]
    for (i, k), clip in trainer.latents._encoded.items():
        alone = trainer.latents.encode(trainer.load_clips([i], k), k)[0]
        assert clip.prompts == alone.prompts and torch.equal(clip.alphas, alone.alphas)
        assert torch.allclose(clip.latents, alone.latents, atol=1e-5)  # batched = one at a time
        assert clip.latents.shape[2] % LayerLayout(k).num_segments == 0  # K + 2 RGB + K alpha segments
    prompts = {p for c in trainer.latents._encoded.values() for p in c.prompts} | {""}
    assert prompts <= set(trainer.latents._prompt_cache)
    calls = []
    trainer.text_encoder.encode = lambda ps: calls.append(ps)
    trainer.recipe.encode = lambda *a, **k: calls.append(a)
    trainer.loss(0)
    assert calls == []  # a step encodes nothing: no text, no VAE


def test_cache_made_by_worker_processes_equals_one_made_here(tmp_path):
    """data.workers makes the world's clips in DataLoader processes: the cache and the first loss do not change."""
    def filled(workers):
        trainer = Trainer(config(tmp_path / str(workers), max_foregrounds=2,
                                 data={"kind": "world", "height": 32, "width": 32, "seed": 5, "cache": 3,
                                       "num_foregrounds": [1, 2], "workers": workers}))
        trainer.fill_cache(batch=2)
        return trainer

    here, workers = filled(0), filled(2)
    assert sorted(here.latents._encoded) == sorted(workers.latents._encoded) == [(i, k) for i in range(3)
                                                                                  for k in (1, 2)]
    for key, clip in here.latents._encoded.items():
        other = workers.latents._encoded[key]
        assert clip.prompts == other.prompts and torch.equal(clip.alphas, other.alphas)
        assert torch.equal(clip.latents, other.latents)
    assert here.loss(0)["loss"].item() == workers.loss(0)["loss"].item()
    with pytest.raises(ValueError, match="data.workers"):
        config(tmp_path, data={"workers": -1})


def test_fresh_clips_made_ahead_by_workers_train_as_clips_made_here(tmp_path, monkeypatch):
    """data.cache 0: workers make each step's fresh clips ahead (one VAE call a batch); the losses equal those of
    clips made and encoded one at a time in this process, and no prompt is kept."""
    def trainer(name, workers):
        return Trainer(config(tmp_path / name, max_foregrounds=2, train={"batch_size": 2},
                              data={"kind": "world", "height": 32, "width": 32, "seed": 5, "cache": 0,
                                    "num_foregrounds": [1, 2], "workers": workers}))

    ahead = trainer("ahead", 2)
    streamed = [r["loss"] for r in ahead.train(max_steps=3)]
    assert ahead.latents._prompt_cache == {}
    here = trainer("here", 0)
    monkeypatch.setattr(here, "step_batches", lambda start, end: None)
    one_by_one = [r["loss"] for r in here.train(max_steps=3)]
    assert streamed == pytest.approx(one_by_one, rel=1e-4)
    assert len({round(x, 6) for x in streamed}) == 3  # three different batches, not one repeated


def test_shipped_configs_validate_and_chain():
    """Every YAML under configs/ loads; in configs/world each stage starts from an earlier stage's output."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    # configs/accelerate holds accelerate's launcher files, configs/engine the data engine's (tests/test_engine.py)
    paths = sorted(p for p in root.rglob("*.yaml") if p.parent.name not in ("accelerate", "engine"))
    assert paths
    for path in paths:
        TrainConfig.from_yaml(path)
    outputs = set()
    world = sorted((root / "world").glob("*.yaml"), key=lambda p: int(p.name.split("_")[0]))  # step order
    script = (root.parent / "scripts" / "train_builtin.sh").read_text()
    previous = None
    for path in world:
        cfg = TrainConfig.from_yaml(path)
        if cfg.init == "layert2v/weights/world" and previous:  # the built-in model as exported from the step before
            assert f"export_builtin.py {previous}/final layert2v/weights/world" in script
        elif cfg.init is not None:
            assert cfg.init.removesuffix("/final") in outputs, f"{path.name} starts from {cfg.init}"
        outputs.add(cfg.output_dir)
        previous = cfg.output_dir
    # scripts/train_builtin.sh runs every world step in order and exports the last one
    stages = [s for s in re.search(r"for stage in (.*?); do", script, re.S).group(1).split() if s != "\\"]
    assert stages == [p.stem for p in world]
    assert f"export_builtin.py {cfg.output_dir}/final layert2v/weights/world" in script


def test_vae_stage_resumes_exactly_with_fresh_clips_from_a_loader(tmp_path):
    """The vae stage's fresh clips come from a DataLoader (workers or not), and its posterior samples from torch's
    global generator: the loader must not draw from it, or a resumed run would sample other latents."""
    def trainer(name):
        return Trainer(config(tmp_path / name, "vae", data={"kind": "world", "height": 16, "width": 16, "seed": 3},
                              train={"steps": 4}))

    straight = [r["loss"] for r in trainer("a").train()]
    trainer("b").train(max_steps=2)
    rest = [r["loss"] for r in trainer("b").train()]
    assert rest == straight[2:]


def test_resumed_log_holds_each_step_once(tmp_path, toy_data):
    """An interrupted run logged steps past its last checkpoint; resuming must not log them twice."""
    cfg = config(tmp_path, train={"steps": 4, "checkpoint_every": 2})
    Trainer(cfg, data=toy_data).train(max_steps=3)  # checkpoint at 2, log through 3: then the crash
    Trainer(cfg, data=toy_data).train()
    log = [json.loads(line) for line in (tmp_path / "layered" / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]


@pytest.mark.parametrize("key, value", [("steps", -5), ("steps", 0), ("checkpoint_every", 0), ("batch_size", 0),
                                        ("log_every", 0), ("gradient_accumulation", 0)])
def test_counts_below_one_are_refused(tmp_path, key, value):
    with pytest.raises(ValueError, match=f"train.{key} must be a whole number of at least 1"):
        config(tmp_path, train={key: value})


@pytest.mark.parametrize("damage", ["state/__0_0.distcp", "state/.metadata", "rank0.pt"])
def test_a_damaged_checkpoint_says_how_to_go_on(tmp_path, toy_data, damage):
    cfg = config(tmp_path, train={"steps": 4, "checkpoint_every": 1})
    Trainer(cfg, data=toy_data).train(max_steps=2)
    ckpt, previous = tmp_path / "layered" / "checkpoint", tmp_path / "layered" / "checkpoint_previous"
    assert json.loads((previous / "progress.json").read_text())["step"] == 1
    data = (ckpt / damage).read_bytes()
    (ckpt / damage).write_bytes(data[: len(data) // 2])  # a truncated write
    with pytest.raises(ValueError, match="is damaged.*replace .*checkpoint with .*checkpoint_previous"):
        Trainer(cfg, data=toy_data)
    import shutil

    shutil.rmtree(ckpt)
    previous.rename(ckpt)  # the fix the message names
    assert Trainer(cfg, data=toy_data).step == 1


@pytest.mark.parametrize("text, message", [("stage: [layered\n", "not valid YAML at line"),
                                           ("- stage\n- layered\n", "holds a YAML list, not a mapping"),
                                           ("just words\n", "holds a YAML str, not a mapping")])
def test_bad_yaml_is_one_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        TrainConfig.from_yaml(path)
    assert "\n" not in str(info.value)


def first_step_gradients(trainer):
    """The trainable weights' gradients after one optimizer step's backward (the step itself skipped)."""
    trainer.optimizer.step = lambda *a, **k: None  # keep the weights; look at the gradient
    trainer.train(max_steps=1)
    return {n: p.grad.clone() for n, p in trainer._named_trainable()}


def test_gradient_accumulation_equals_one_large_batch(tmp_path, toy_data):
    """2 micro-batches of 1 clip accumulate the gradient of one batch of 2 clips: the same clips, and each clip's
    noise keyed by its place in the data stream."""
    def grads(batch_size, accumulate):
        cfg = config(tmp_path / f"{batch_size}x{accumulate}", lora_rank=4,
                     train={"batch_size": batch_size, "gradient_accumulation": accumulate, "grad_clip": 0.0})
        return first_step_gradients(Trainer(cfg, data=toy_data))

    one, two = grads(2, 1), grads(1, 2)
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-7)
    assert any(g.abs().max() > 0 for g in one.values())


def test_gradient_checkpointing_recomputes_blocks_and_changes_nothing_else(tmp_path, toy_data):
    def grads(checkpointing):
        cfg = config(tmp_path / str(checkpointing), train={"gradient_checkpointing": checkpointing})
        trainer = Trainer(cfg, data=toy_data)
        calls = []
        trainer.model.blocks[0].ffn.register_forward_hook(lambda *a: calls.append(1))
        grads = first_step_gradients(trainer)
        assert len(calls) == (2 if checkpointing else 1)  # the backward pass ran the block again
        return grads

    plain, checkpointed = grads(False), grads(True)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7)


def test_learning_rate_is_diffusers_cosine_with_warmup(tmp_path, toy_data):
    """diffusers' get_cosine_schedule_with_warmup: warmup rises from 0 (step s of w: s/w; the hand-written schedule
    before it rose from 1/w, (s+1)/w), then the same half cosine to 0 at train.steps."""
    import math

    trainer = Trainer(config(tmp_path, train={"steps": 10, "warmup": 4, "lr": 1.0}), data=toy_data)
    lrs = []
    for _ in range(10):
        lrs.append(trainer.scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.scheduler.step()
    expected = [s / 4 for s in range(4)] + [0.5 * (1 + math.cos(math.pi * (s - 4) / 6)) for s in range(4, 10)]
    assert lrs == pytest.approx(expected, abs=1e-12)


def test_a_checkpoint_resumes_only_as_it_was_launched(tmp_path, toy_data):
    """The data each process reads and the checkpoint's layout depend on the engine and the process count."""
    cfg = config(tmp_path, train={"steps": 2, "checkpoint_every": 1})
    Trainer(cfg, data=toy_data).train(max_steps=1)
    progress = tmp_path / "layered" / "checkpoint" / "progress.json"
    saved = json.loads(progress.read_text())
    assert (saved["engine"], saved["processes"]) == ("single", 1)
    progress.write_text(json.dumps({**saved, "engine": "fsdp2", "processes": 2}))
    with pytest.raises(ValueError, match="written by 2 process\\(es\\) under fsdp2, and this run has 1 under single"):
        Trainer(cfg, data=toy_data)
    progress.write_text(json.dumps({k: v for k, v in saved.items() if k not in ("engine", "processes")}))
    with pytest.raises(ValueError, match="written by an earlier layert2v; finish that run with the version"):
        Trainer(cfg, data=toy_data)  # the layout before every process took part
