"""LayerFlow's variant mix in the layered stage, and trained box conditioning (transformer, trainer, pipeline)."""

import json
import random
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import TINY_TRANSFORMER, toy_clip
from test_trainer import config

from layert2v.flow import layered_flow_loss
from layert2v.layout import LayerLayout
from layert2v.models.transformer import LayeredWanTransformer
from layert2v.training.trainer import Trainer
from layert2v.training.variants import VARIANTS, VariantSampler, boxes_from_alphas, given_segments
from layert2v.trajectory import Trajectories, Trajectory


def toy_source(i, k):
    return toy_clip(i, k, frames=5, size=32)


def test_each_variant_gives_the_segments_it_names():
    layout = LayerLayout(2)
    rng = random.Random(0)
    assert given_segments("text", layout, rng) == ()
    assert given_segments("background", layout, rng) == ("background",)
    assert given_segments("foregrounds", layout, rng) == ("foreground_1", "alpha_1", "foreground_2", "alpha_2")
    assert given_segments("full", layout, rng) == ("full",)
    seen = set()
    for _ in range(50):
        given = given_segments("all_but_one", layout, rng)
        left = [n for n in layout.names if n not in given]
        assert left[0] == "full" and len(left) == 3  # full and exactly one foreground pair are generated
        assert LayerLayout.alpha_name(int(left[1].split("_")[1])) == left[2]
        seen.add(left[1])
    assert seen == {"foreground_1", "foreground_2"}


def test_the_mix_is_drawn_in_proportion_and_per_sample_deterministically():
    mix = {"text": 2, "full": 1, "all_but_one": 1}
    sampler = VariantSampler(mix, boxes=0.25, seed=3)
    layout = LayerLayout(3)
    draws = [sampler.draw(i, layout) for i in range(4000)]
    counts = Counter(d[0] for d in draws)
    assert set(counts) == {"text", "full", "all_but_one"}
    for name, weight in mix.items():
        assert abs(counts[name] / 4000 - weight / 4) < 0.03, counts
    box_share = np.mean([b for d in draws for b in d[2]])
    assert abs(box_share - 0.25) < 0.02
    again = VariantSampler(mix, boxes=0.25, seed=3)
    assert [again.draw(i, layout) for i in (17, 5, 17)] == [draws[17], draws[5], draws[17]]
    assert VariantSampler(mix, boxes=0.25, seed=4).draw(17, layout) != draws[17] or \
        VariantSampler(mix, boxes=0.25, seed=4).draw(18, layout) != draws[18]
    generated = sampler.generated([0, 1, 2], layout)
    for row, (_, given, _) in zip(generated, draws[:3]):
        assert [bool(v) for v in row] == [n not in given for n in layout.names]


@pytest.mark.parametrize("mix, message", [({"decompose": 1}, "unknown variant"), ({"text": -1}, ">= 0"),
                                          ({"text": 0}, "sum to 0")])
def test_a_bad_mix_is_refused_in_one_line(mix, message):
    with pytest.raises(ValueError, match=message):
        VariantSampler(mix)


def test_config_refuses_variants_with_fixed_conditions_and_boxes_without_conditioning(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        config(tmp_path, variants={"full": 1}, conditions=["background"])
    with pytest.raises(ValueError, match="box_conditioning: true"):
        config(tmp_path, variants={"full": 1}, boxes=0.5)
    with pytest.raises(ValueError, match="layered stage"):
        config(tmp_path, "t2v", variants={"full": 1})
    assert sorted(VARIANTS) == sorted(config(tmp_path, variants=dict.fromkeys(VARIANTS, 1)).variants)


def test_per_sample_loss_leaves_each_samples_given_segments_out():
    layout = LayerLayout(1)
    torch.manual_seed(0)
    z0, z1, v = (torch.randn(2, 4, layout.num_segments * 2, 4, 4) for _ in range(3))
    t_seg = torch.rand(2, layout.num_segments)
    generated = torch.ones(2, layout.num_segments)
    generated[0, layout.index("background")] = 0  # sample 0: background given; sample 1: nothing given
    t_seg = t_seg * generated
    loss = layered_flow_loss(v, z0, z1, z0, t_seg, layout, generated=generated)["fm"]
    bumped = v.clone()
    seg = bumped.shape[2] // layout.num_segments
    bg = layout.index("background")
    bumped[0, :, bg * seg:(bg + 1) * seg] += 5.0  # sample 0's given background: no effect
    assert torch.equal(layered_flow_loss(bumped, z0, z1, z0, t_seg, layout, generated=generated)["fm"], loss)
    bumped[1, :, bg * seg:(bg + 1) * seg] += 5.0  # sample 1's generated background: counts
    assert layered_flow_loss(bumped, z0, z1, z0, t_seg, layout, generated=generated)["fm"] > loss
    # one set for all samples: the same loss as the layout's conditions give
    fixed = LayerLayout(1, conditions=["background"])
    same = torch.tensor(fixed.generated, dtype=torch.float32).expand(2, -1)
    assert torch.allclose(layered_flow_loss(v, z0, z1, z0, t_seg, layout, generated=same)["fm"],
                          layered_flow_loss(v, z0, z1, z0, t_seg, fixed)["fm"])


def boxed_transformer(**over):
    torch.manual_seed(0)
    return LayeredWanTransformer(**{**TINY_TRANSFORMER, "max_foregrounds": 2, "box_conditioning": True, **over}).eval()


def test_boxes_reach_only_their_foreground_and_alpha_tokens():
    model = boxed_transformer(num_layers=0)  # no blocks: a token's output depends on its own input only
    layout = LayerLayout(2)
    x = torch.randn(1, 4, layout.num_segments * 2, 8, 8)
    t = torch.full((1,), 500.0)
    context = torch.randn(1, layout.num_prompts, 8, 384)
    boxes = torch.zeros(1, 2, 2, 8, 8)
    boxes[0, 1, :, 2:6, 2:6] = 1.0
    with torch.no_grad():
        plain = model(x, t, context, layout=layout).sample
        boxed = model(x, t, context, layout=layout, boxes=boxes, box_given=torch.tensor([[0.0, 1.0]])).sample
        unused = model(x, t, context, layout=layout, boxes=boxes, box_given=torch.zeros(1, 2)).sample
    assert torch.equal(unused, plain)  # a box not given adds nothing
    changed = (boxed - plain).abs().amax(dim=(0, 1, 3, 4)).unflatten(0, (layout.num_segments, 2)).amax(1)
    moved = {name for name, c in zip(layout.names, changed) if c > 0}
    assert moved == {"foreground_2", "alpha_2"}


def test_a_model_without_box_conditioning_refuses_boxes():
    model = LayeredWanTransformer(**TINY_TRANSFORMER)
    layout = LayerLayout(1)
    with pytest.raises(ValueError, match="not trained with box conditioning"):
        model(torch.randn(1, 4, layout.num_segments * 2, 4, 4), torch.ones(1), torch.randn(1, 3, 8, 384),
              layout=layout, boxes=torch.ones(1, 1, 2, 4, 4))


def test_boxes_from_alphas_bound_the_matte():
    alpha = np.zeros((2, 10, 20), np.float32)
    alpha[0, 2:5, 4:9] = 1.0
    alpha[0, 6, 15] = 0.4  # below the threshold
    np.testing.assert_allclose(boxes_from_alphas(alpha), [[4 / 20, 2 / 10, 9 / 20, 5 / 10], [0, 0, 0, 0]])


def test_layered_stage_trains_the_variant_mix_with_boxes_and_resumes_exactly(tmp_path):
    """The model sees t = 0 on exactly the segments each sample's draw gives, and boxes where the draw says; a
    resumed run reproduces the losses."""
    over = dict(max_foregrounds=2, variants={"text": 1, "background": 1, "full": 1, "all_but_one": 1},
                box_conditioning=True, boxes=0.5, data={"num_foregrounds": [2, 2]},
                train={"steps": 4, "batch_size": 2})
    trainer = Trainer(config(tmp_path / "a", **over), data=toy_source)
    seen = []
    trainer.recipe.transformer.register_forward_hook(
        lambda m, args, kwargs, out: seen.append((args[1].clone(), kwargs.get("box_given"))), with_kwargs=True)
    straight = [r["loss"] for r in trainer.train()]
    sampler, layout = trainer.recipe.variants, LayerLayout(2)
    for step, (timesteps, box_given) in enumerate(seen):
        indices = [2 * step, 2 * step + 1]
        expected = sampler.generated(indices, layout)
        assert np.array_equal(timesteps.numpy() > 0, expected > 0)
        assert box_given.tolist() == [[float(b) for b in sampler.draw(i, layout)[2]] for i in indices]
    Trainer(config(tmp_path / "b", **over), data=toy_source).train(max_steps=2)
    rest = [r["loss"] for r in Trainer(config(tmp_path / "b", **over), data=toy_source).train()]
    assert rest == straight[2:]
    exported = LayeredWanTransformer.from_pretrained(tmp_path / "a" / "layered" / "final" / "transformer")
    assert exported.box_embedding is not None


def test_pipeline_feeds_trajectories_to_a_box_conditioned_model(tiny_pipeline):
    pipe = tiny_pipeline
    pipe.transformer = boxed_transformer()
    kw = dict(prompt="two squares", background_prompt="grey", foreground_prompts=["red", "blue"], seed=1,
              progress=False)
    traj = Trajectories((Trajectory(2, {0: (0.1, 0.1, 0.5, 0.5), 4: (0.5, 0.5, 0.9, 0.9)}),))
    plain = pipe(**kw)
    boxed = pipe(**kw, trajectories=traj)
    assert boxed.metadata["trajectory_mechanism"] == "trained box conditioning"
    assert not np.array_equal(boxed.alphas[1], plain.alphas[1])
    with torch.no_grad():
        pipe.transformer.box_embedding.weight.zero_()
        pipe.transformer.box_embedding.bias.zero_()
    zeroed = pipe(**kw, trajectories=traj)  # the boxes are the only difference
    np.testing.assert_array_equal(zeroed.alphas[1], plain.alphas[1])


def test_layer_index_prompts_reach_the_text_encoder_in_training_and_sampling(tmp_path, tiny_pipeline):
    layout = LayerLayout(2)
    assert layout.indexed_prompts(["scene", "sky", "a", ""]) == ["1, scene", "2, sky", "3, a", ""]
    trainer = Trainer(config(tmp_path, max_foregrounds=2, layer_index_prompts=True,
                             data={"num_foregrounds": [2, 2]}, train={"steps": 1}), data=toy_source)
    trainer.train()
    encoded = trainer.recipe.latents.encode(trainer.load_clips([0], 2), 2)[0]
    assert encoded.prompts == ["1, toy scene 0", "2, a gradient", "3, square 0", "4, square 1"]
    meta = json.loads((tmp_path / "layered" / "final" / "layert2v.json").read_text())
    assert meta["config"]["layer_index_prompts"] is True
    seen = []
    pipe = tiny_pipeline
    pipe.config.layer_index_prompts = True
    encode = pipe.encode_prompts
    pipe.encode_prompts = lambda prompts: (seen.append(list(prompts)), encode(prompts))[1]
    pipe("scene", "sky", ["a"], progress=False, guidance_scale=1.0)
    assert ["1, scene", "2, sky", "3, a"] in seen
