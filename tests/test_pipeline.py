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
    tiny_pipeline("a", "b", ["c"], conditions={"background": clip.background}, progress=False, num_inference_steps=3,
                  callback=lambda i, z: seen.append(layout.split(z)["background"].clone()))
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
