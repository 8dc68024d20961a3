"""Trajectory guidance: the box bias reaches only the guided prompt's content tokens, in the guided segments."""

import pytest
import torch
from helpers import TINY_TRANSFORMER

from layert2v.layout import LayerLayout
from layert2v.models.guidance import (
    BoxGuidance,
    GuidedCrossAttnProcessor,
    content_tokens,
    guided_cross_attention_processors,
)
from layert2v.models.transformer import LayeredWanTransformer, LayerRoutedAttnProcessor, routed_cross_attention

DIM, TEXT, CONTENT, CELLS = 32, 6, 3, 4  # 4 token cells per segment (one latent frame of 2 x 2)
MASK = torch.tensor([1.0, 0.0, 0.5, 0.0])  # foreground 1's box covers cell 0, half of cell 2
STRENGTH = 2.0


def probe():
    """A tiny attn2 whose values and output projection are the identity, and prompts whose channel p marks prompt
    p's content tokens: output channel p is then the attention mass a token puts on prompt p's content."""
    torch.manual_seed(0)
    model = LayeredWanTransformer(**{**TINY_TRANSFORMER, "num_layers": 1}, max_foregrounds=2).eval()
    attn = model.blocks[0].attn2
    with torch.no_grad():
        for lin in (attn.to_v, attn.to_out[0]):
            lin.weight.copy_(torch.eye(DIM))
            lin.bias.zero_()
    layout = LayerLayout(2)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, layout.num_segments * CELLS, DIM, generator=g)
    ctx = torch.randn(1, layout.num_prompts, TEXT, DIM, generator=g) * 0.3
    ctx[..., : layout.num_prompts] = 0
    for p in range(layout.num_prompts):
        ctx[0, p, :CONTENT, p] = 1.0
    tokens = torch.zeros(1, layout.num_prompts, TEXT)
    tokens[..., :CONTENT] = 1.0
    return attn, layout, x, ctx, BoxGuidance({1: MASK}, tokens, STRENGTH)


def run(attn, layout, x, ctx, guidance):
    with torch.no_grad():
        return layout.split(GuidedCrossAttnProcessor()(attn, x, ctx, layout=layout, box_guidance=guidance), dim=1)


def test_guidance_steers_only_the_guided_prompts_attention():
    attn, layout, x, ctx, guidance = probe()
    with torch.no_grad():
        plain = layout.split(routed_cross_attention(attn, x, ctx, layout), dim=1)
    guided = run(attn, layout, x, ctx, guidance)
    fg1 = layout.prompt_names.index("foreground_1")
    for name in ("background", "foreground_2", "alpha_2"):  # they do not read foreground 1's prompt
        assert torch.equal(guided[name], plain[name]), name
    for name in ("foreground_1", "alpha_1", "full"):
        mass, before = guided[name][0, :, fg1], plain[name][0, :, fg1]
        assert mass[0] > before[0] + 0.05, name  # inside the box: more of foreground 1's description
        assert (mass[[1, 3]] < before[[1, 3]] - 0.05).all(), name  # outside: less
        assert mass[2] == pytest.approx(float(before[2]), abs=1e-5), name  # half covered: no bias
    # in the full segment the box also takes attention from the other prompts
    others = [p for p in range(layout.num_prompts) if p != fg1]
    assert guided["full"][0, 0, others].sum() < plain["full"][0, 0, others].sum()


def test_the_bias_is_exactly_plus_minus_strength_on_content_tokens():
    """The guided output equals dense attention with the documented bias written out by hand."""
    attn, layout, x, ctx, guidance = probe()
    guided = run(attn, layout, x, ctx, guidance)
    fg1 = layout.prompt_names.index("foreground_1")
    with torch.no_grad():
        q = attn.norm_q(attn.to_q(x)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        flat = ctx.flatten(1, 2)
        k = attn.norm_k(attn.to_k(flat)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        v = attn.to_v(flat).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        bias = torch.full((x.shape[1], flat.shape[1]), float("-inf"))
        for s, seg in enumerate(layout.segments):
            rows = slice(s * CELLS, (s + 1) * CELLS)
            for p in layout.visible_prompts(seg):
                bias[rows, p * TEXT:(p + 1) * TEXT] = 0
            if seg.name in ("full", "foreground_1", "alpha_1"):
                bias[rows, fg1 * TEXT:fg1 * TEXT + CONTENT] += (STRENGTH * (2 * MASK - 1))[:, None]
        dense = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + bias, dim=-1) @ v
        dense = attn.to_out[0](dense.transpose(1, 2).flatten(2))
    torch.testing.assert_close(layout.concat(guided, dim=1), dense, atol=1e-5, rtol=1e-5)


def test_unguided_rows_and_given_segments_are_left_alone():
    attn, layout, x, ctx, guidance = probe()
    with torch.no_grad():
        plain = routed_cross_attention(attn, x, ctx, layout)
    # a batch row without content tokens to steer (CFG's negative branch) reads as without guidance
    none = layout.concat(run(attn, layout, x, ctx, guidance.with_tokens(torch.zeros_like(guidance.tokens))), dim=1)
    torch.testing.assert_close(none, plain, atol=1e-5, rtol=1e-5)
    # a segment given clean as a condition is not steered
    given = LayerLayout(2, conditions=("foreground_1", "alpha_1"))
    with torch.no_grad():
        plain_given = given.split(routed_cross_attention(attn, x, ctx, given), dim=1)
    out = run(attn, given, x, ctx, guidance)
    torch.testing.assert_close(out["foreground_1"], plain_given["foreground_1"], atol=1e-5, rtol=1e-5)
    assert (out["full"] - plain_given["full"]).abs().max() > 0.05


def test_processor_without_guidance_is_the_routed_processor_and_swaps_back():
    torch.manual_seed(0)
    model = LayeredWanTransformer(**TINY_TRANSFORMER, max_foregrounds=2).eval()
    layout = LayerLayout(2)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, layout.num_segments, 4, 4, generator=g)
    ctx = torch.randn(1, layout.num_prompts, TEXT, 384, generator=g)
    t = torch.tensor([400.0])
    with torch.no_grad():
        ref = model(x, t, ctx, layout=layout).sample
        with guided_cross_attention_processors(model):
            assert all(type(b.attn2.processor) is GuidedCrossAttnProcessor for b in model.blocks)
            same = model(x, t, ctx, layout=layout).sample
            mask = torch.ones(4)  # 4 x 4 latent / 2 x 2 patch = 4 cells, one latent frame per segment
            box = BoxGuidance({2: mask}, content_tokens(ctx), STRENGTH)
            steered = model(x, t, ctx, layout=layout, attention_kwargs={"box_guidance": box}).sample
    assert torch.equal(same, ref)
    assert (steered - ref).abs().max() > 1e-4
    assert all(type(b.attn2.processor) is LayerRoutedAttnProcessor for b in model.blocks)


def test_mismatched_token_grid_is_a_clear_error():
    attn, layout, x, ctx, guidance = probe()
    with pytest.raises(ValueError, match="token cells per segment"):
        run(attn, layout, x, ctx, BoxGuidance({1: torch.ones(3)}, guidance.tokens, STRENGTH))


def test_content_tokens_are_the_non_zero_rows():
    emb = torch.zeros(2, 5, 3)
    emb[0, :2] = 1.0
    emb[1, :4, 1] = -0.5
    assert content_tokens(emb).tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]
