import numpy as np
import pytest
import torch
from helpers import toy_clip

from layert2v.layout import LayerLayout
from layert2v.models.vae import encode_rgb
from layert2v.pipeline import video_multiples


def test_generate_shapes_and_metadata(tiny_pipeline):
    video = tiny_pipeline("a scene", "a sky", ["a ball", "a box"], seed=3, progress=False)
    assert video.full.shape == (5, 32, 32, 3) and len(video.alphas) == 2 and video.alphas[0].shape == (5, 32, 32)
    assert video.prompts["foregrounds"] == ["a ball", "a box"] and video.seed == 3
    assert 0.0 <= video.alphas[0].min() and video.alphas[0].max() <= 1.0
    again = tiny_pipeline("a scene", "a sky", ["a ball", "a box"], seed=3, progress=False)
    assert np.array_equal(video.full, again.full)  # one seed, one result
    other = tiny_pipeline("a scene", "a sky", ["a ball", "a box"], seed=4, progress=False)
    assert not np.array_equal(video.full, other.full)


def test_euler_scheduler_and_no_cfg(tiny_pipeline):
    video = tiny_pipeline("a", "b", ["c"], scheduler="euler", guidance_scale=1.0, progress=False)
    assert video.num_foregrounds == 1


def test_video_multiples_read_the_vae_and_the_patch(tiny_pipeline):
    wan21 = {"dim_mult": [1, 2, 4, 4], "temperal_downsample": [False, True, True]}
    assert video_multiples(wan21, {"patch_size": [1, 2, 2]}) == (4, 16)
    builtin = {"dim_mult": [1, 2, 4], "temperal_downsample": [False, True]}
    assert video_multiples(builtin, {"patch_size": [1, 4, 4]}) == (2, 16)
    assert tiny_pipeline.video_multiples == (4, 16)  # 8x VAE, 2x2 patches: the defaults, as Wan2.1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_frames": 6}, "4k\\+1"),
        ({"height": 40}, "multiple of 16"),
        ({"foreground_prompts": ["a", "b", "c"]}, "at most 2"),
        ({"foreground_prompts": []}, "at least one foreground"),
        ({"background_prompt": "  "}, "background prompt is empty"),
        ({"scheduler": "ddim"}, "unknown scheduler"),
    ],
)
def test_bad_input(tiny_pipeline, kwargs, message):
    args = {"prompt": "a", "background_prompt": "b", "foreground_prompts": ["c"], "progress": False, **kwargs}
    with pytest.raises(ValueError, match=message):
        tiny_pipeline(**args)


def test_condition_segments_stay_bit_identical(tiny_pipeline):
    clip = toy_clip(0, num_foregrounds=1)
    layout = LayerLayout(1, conditions=["background"])
    given = encode_rgb(tiny_pipeline.vae, torch.from_numpy(clip.background).permute(3, 0, 1, 2)[None])
    seen = []

    def on_step_end(pipe, i, t, tensors):
        seen.append(layout.split(tensors["latents"])["background"].clone())
        return tensors

    tiny_pipeline("a", "b", ["c"], conditions={"background": clip.background}, progress=False, num_inference_steps=3,
                  callback_on_step_end=on_step_end)
    assert len(seen) == 3
    for z in seen:
        assert torch.equal(z, given)


def test_foreground_condition_needs_alpha(tiny_pipeline):
    clip = toy_clip(0)
    with pytest.raises(ValueError, match="needs its alpha"):
        tiny_pipeline("a", "b", ["c"], conditions={"foreground_1": clip.foregrounds[0]}, progress=False)


def test_save_and_load_pipeline(tiny_pipeline, tmp_path):
    from layert2v.pipeline import LayerT2VPipeline

    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    loaded = LayerT2VPipeline.from_pretrained(tmp_path / "pipe")
    a = tiny_pipeline("a", "b", ["c"], progress=False)
    b = loaded("a", "b", ["c"], progress=False)
    assert np.array_equal(a.full, b.full) and np.array_equal(a.alphas[0], b.alphas[0])


def test_scheduler_is_a_component_and_generator_and_latents_are_accepted(tiny_pipeline):
    """As in diffusers pipelines: `pipe.scheduler` is swapped by assignment, each call samples with a fresh copy,
    and the starting noise comes from `seed`, a `generator` or `latents` alike."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    pipe = tiny_pipeline
    run = dict(num_frames=5, num_inference_steps=2, progress=False)
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
    first = pipe("a", "b", ["c"], seed=7, **run)
    again = pipe("a", "b", ["c"], seed=7, **run)  # the component's state does not leak between calls
    assert first.metadata["scheduler"] == "unipc" and np.array_equal(first.full, again.full)
    from_generator = pipe("a", "b", ["c"], generator=torch.Generator().manual_seed(7), **run)
    assert np.array_equal(first.full, from_generator.full) and from_generator.seed == 7
    shape = (1, 4, 4 * 2, 32 // 8, 32 // 8)  # z, 4 segments x 2 latent frames, 32 px / 8
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    assert np.array_equal(first.full, pipe("a", "b", ["c"], latents=noise, **run).full)
    with pytest.raises(ValueError, match="latents have shape"):
        pipe("a", "b", ["c"], latents=noise[:, :, :4], **run)

    pipe.scheduler = pipe.make_scheduler("euler")
    euler = pipe("a", "b", ["c"], seed=7, **run)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and euler.metadata["scheduler"] == "euler"
    assert not np.array_equal(first.full, euler.full)
    pipe.scheduler = pipe.make_scheduler("unipc")
    assert np.array_equal(pipe("a", "b", ["c"], scheduler="euler", seed=7, **run).full, euler.full)


# ------------------------------------------------------------------------------ diffusers' pipeline conventions
def test_callback_on_step_end_has_diffusers_signature_and_can_replace_the_latents(tiny_pipeline):
    from diffusers.callbacks import PipelineCallback

    run = dict(num_inference_steps=2, progress=False, guidance_scale=1.0)
    ref = tiny_pipeline("a", "b", ["c"], **run)
    seen = []

    def watch(pipe, i, t, tensors):
        seen.append((pipe, i, float(t), sorted(tensors)))
        return tensors

    same = tiny_pipeline("a", "b", ["c"], callback_on_step_end=watch, **run)
    assert np.array_equal(same.full, ref.full)
    timesteps = tiny_pipeline.make_scheduler("unipc")
    timesteps.set_timesteps(2)
    assert seen == [(tiny_pipeline, i, float(t), ["latents"]) for i, t in enumerate(timesteps.timesteps)]

    class Zero(PipelineCallback):  # diffusers' callback class: its tensor_inputs are what it is given
        tensor_inputs = ["latents"]

        def callback_fn(self, pipe, i, t, tensors):
            return {"latents": torch.zeros_like(tensors["latents"])}

    zeroed = tiny_pipeline("a", "b", ["c"], callback_on_step_end=Zero(), **run)
    assert not np.array_equal(zeroed.full, ref.full)
    with pytest.raises(ValueError, match=r"callback_on_step_end_tensor_inputs \['prompt_embeds'\]"):
        tiny_pipeline("a", "b", ["c"], callback_on_step_end=watch,
                      callback_on_step_end_tensor_inputs=["prompt_embeds"], **run)


def test_progress_bar_config_and_per_call_switch(tiny_pipeline, capsys):
    run = dict(num_inference_steps=2, guidance_scale=1.0)
    tiny_pipeline("a", "b", ["c"], **run)
    assert "denoising" in capsys.readouterr().err
    tiny_pipeline("a", "b", ["c"], progress=False, **run)
    assert "denoising" not in capsys.readouterr().err
    tiny_pipeline.set_progress_bar_config(disable=True)
    tiny_pipeline("a", "b", ["c"], **run)
    assert "denoising" not in capsys.readouterr().err
    tiny_pipeline.set_progress_bar_config(desc="layers")
    tiny_pipeline("a", "b", ["c"], **run)
    assert "layers" in capsys.readouterr().err


def test_to_takes_a_device_and_a_dtype_in_either_order(tiny_pipeline):
    tiny_pipeline.to("cpu", torch.bfloat16)
    assert tiny_pipeline.dtype == torch.bfloat16 and tiny_pipeline.transformer.layer_adaln.dtype == torch.float32
    tiny_pipeline.to(torch.float32)
    assert tiny_pipeline.dtype == torch.float32 and tiny_pipeline.device.type == "cpu"


def test_model_cpu_offload_chains_the_models_and_changes_nothing(tiny_pipeline):
    """enable_model_cpu_offload asks for an accelerator; its hook chain (text encoder -> transformer -> VAE), run
    here with the CPU as the execution device, gives the same video."""
    with pytest.raises(ValueError, match="on the CPU it saves nothing"):
        tiny_pipeline.enable_model_cpu_offload(device="cpu")
    run = dict(num_inference_steps=2, progress=False, seed=3)
    ref = tiny_pipeline("a", "b", ["c"], **run)
    tiny_pipeline._chain_offload(torch.device("cpu"))
    hooked = [tiny_pipeline.text_encoder.model, tiny_pipeline.transformer, tiny_pipeline.vae]
    assert all(hasattr(m, "_hf_hook") for m in hooked) and len(tiny_pipeline._offload_hooks) == 3
    out = tiny_pipeline("a", "b", ["c"], **run)
    assert np.array_equal(out.full, ref.full) and np.array_equal(out.alphas[0], ref.alphas[0])
    with pytest.raises(ValueError, match="offloaded"):
        tiny_pipeline.to("cuda")


def test_the_readme_python_snippet_runs_from_any_directory(tmp_path, monkeypatch):
    """README.md's Python block, as written, run from a directory that is not the repository: the built-in model is
    found by name (layert2v.BUILTIN_MODEL). Sampling is cut to 2 steps of 3 frames of 32x32 after loading, to keep
    it short."""
    import dataclasses
    import re
    from pathlib import Path

    from layert2v.pipeline import LayerT2VPipeline

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    snippet = re.search(r"^## Python\n\n```python\n(.*?)^```", readme, re.S | re.M)[1]
    load = LayerT2VPipeline.from_pretrained

    def shortened(*args, **kwargs):
        pipe = load(*args, **kwargs)
        pipe.config = dataclasses.replace(pipe.config, num_inference_steps=2, num_frames=3, height=32, width=32)
        return pipe

    monkeypatch.setattr(LayerT2VPipeline, "from_pretrained", shortened)
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    assert (tmp_path / "out" / "api" / "manifest.json").is_file()
