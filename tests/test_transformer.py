import pytest
import torch
from diffusers import WanTransformer3DModel
from helpers import TINY_TRANSFORMER

from layert2v.layout import LayerLayout
from layert2v.models.configs import WAN21_T2V_1_3B_TRANSFORMER
from layert2v.models.transformer import LayeredWanTransformer, routed_cross_attention

torch.manual_seed(0)


def make(num_layers=2, **kw):
    torch.manual_seed(0)
    return LayeredWanTransformer(**{**TINY_TRANSFORMER, "num_layers": num_layers}, **kw).eval()


def inputs(layout, frames_per_segment=2, batch=1, text_len=6):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, layout.num_segments * frames_per_segment, 4, 4, generator=g)
    ctx = torch.randn(batch, layout.num_prompts, text_len, 384, generator=g)
    return x, ctx


def test_zero_layer_adaln_reproduces_plain_wan():
    wan = WanTransformer3DModel(**TINY_TRANSFORMER).eval()
    layered = LayeredWanTransformer.from_config(wan.config).eval()
    result = layered.load_state_dict(wan.state_dict(), strict=False)
    assert result.missing_keys == ["layer_adaln"] and not result.unexpected_keys
    layout = LayerLayout(1)
    x, ctx = inputs(layout)
    prompt = ctx[:, :1]
    t = torch.tensor([321.0])
    with torch.no_grad():
        ref = wan(x, t, prompt[:, 0]).sample
        # every layer given the same prompt: routing then changes nothing but the order of the softmax sum
        out = layered(x, t, prompt.expand(-1, layout.num_prompts, -1, -1), layout=layout).sample
    assert torch.allclose(ref, out, atol=1e-5, rtol=0), (ref - out).abs().max()
    with torch.no_grad():  # and the layer table is what makes the difference
        layered.layer_adaln[2].fill_(0.5)
        changed = layered(x, t, prompt.expand(-1, layout.num_prompts, -1, -1), layout=layout).sample
    assert (changed - ref).abs().max() > 1e-3


def test_routing_is_exact_for_one_block():
    model = make(num_layers=1, max_foregrounds=2)
    layout = LayerLayout(2)
    x, ctx = inputs(layout)
    ctx2 = ctx.clone()
    ctx2[:, layout.prompt_names.index("background")] = torch.randn_like(ctx2[:, 1])
    t = torch.tensor([500.0])
    with torch.no_grad():
        a = layout.split(model(x, t, ctx, layout=layout).sample)
        b = layout.split(model(x, t, ctx2, layout=layout).sample)
    for name in ("foreground_1", "foreground_2", "alpha_1", "alpha_2"):
        assert torch.equal(a[name], b[name]), name
    assert (a["full"] - b["full"]).abs().max() > 1e-4
    assert (a["background"] - b["background"]).abs().max() > 1e-4


def test_routed_attention_equals_masked_attention():
    """Eq. 7 with an explicit -inf mask, computed densely, equals the grouped fused computation."""
    model = make(num_layers=1)
    attn = model.blocks[0].attn2
    layout = LayerLayout(2)
    per_seg, text_len, dim = 3, 5, 32
    x = torch.randn(1, layout.num_segments * per_seg, dim)
    ctx = torch.randn(1, layout.num_prompts, text_len, dim)
    with torch.no_grad():
        routed = routed_cross_attention(attn, x, ctx, layout)
        q = attn.norm_q(attn.to_q(x)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        flat = ctx.flatten(1, 2)
        k = attn.norm_k(attn.to_k(flat)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        v = attn.to_v(flat).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        mask = torch.full((x.shape[1], flat.shape[1]), float("-inf"))
        for s, seg in enumerate(layout.segments):
            for p in layout.visible_prompts(seg):
                mask[s * per_seg:(s + 1) * per_seg, p * text_len:(p + 1) * text_len] = 0
        dense = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + mask, dim=-1) @ v
        dense = attn.to_out[0](dense.transpose(1, 2).flatten(2))
    assert torch.allclose(routed, dense, atol=1e-5)


def test_optimizer_step_makes_layer_modulation_differ():
    model = make().train()
    layout = LayerLayout(1)
    x, ctx = inputs(layout)
    opt = torch.optim.AdamW([model.layer_adaln], lr=1e-2)
    out = model(x, torch.tensor([400.0]), ctx, layout=layout).sample
    (out.pow(2) * torch.linspace(0.5, 2.0, out.shape[2]).view(1, 1, -1, 1, 1)).mean().backward()
    opt.step()
    rows = model.layer_adaln.detach()
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(rows[i], rows[j]), (i, j)


def test_per_segment_timesteps_and_bad_shapes():
    model = make()
    layout = LayerLayout(1, conditions=["background"])
    x, ctx = inputs(layout)
    with torch.no_grad():
        a = model(x, layout.segment_timesteps(torch.tensor([600.0])), ctx, layout=layout).sample
        b = model(x, torch.tensor([600.0]), ctx, layout=layout).sample
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="one embedding per prompt"):
        model(x, torch.tensor([1.0]), ctx[:, :2], layout=layout)
    with pytest.raises(ValueError, match="at most 1 foreground"):
        model(*inputs(LayerLayout(2))[:1], torch.tensor([1.0]), inputs(LayerLayout(2))[1], layout=LayerLayout(2))


def test_extend_foregrounds_copies_trained_rows():
    model = make(max_foregrounds=1, layer_text_embedding=True)
    with torch.no_grad():
        model.layer_adaln.normal_()
        model.layer_prompt_embedding.normal_()
    old = model.layer_adaln.detach().clone()
    model.extend_foregrounds(3)
    assert model.layer_adaln.shape[0] == LayerLayout.adaln_rows_needed(3)
    assert torch.equal(model.layer_adaln[:4], old)
    three = LayerLayout(3)
    for k in (2, 3):
        assert torch.equal(model.layer_adaln[three.adaln_rows[three.foreground(k)]], old[2])
        assert torch.equal(model.layer_adaln[three.adaln_rows[three.alpha(k)]], old[3])
    assert model.layer_prompt_embedding.shape[0] == three.num_prompts
    assert model.config.max_foregrounds == 3


def test_real_wan_1_3b_config_on_meta_device_keeps_every_wan_name():
    with torch.device("meta"):
        wan = WanTransformer3DModel(**WAN21_T2V_1_3B_TRANSFORMER)
        layered = LayeredWanTransformer.from_config(wan.config)
    wan_names = {n for n, _ in wan.named_parameters()}
    layered_names = {n for n, _ in layered.named_parameters()}
    assert wan_names <= layered_names
    assert layered_names - wan_names == {"layer_adaln"}
    n_params = sum(p.numel() for p in wan.parameters())
    assert 1.2e9 < n_params < 1.5e9
    assert layered.layer_adaln.shape == (4, 6, 1536)
