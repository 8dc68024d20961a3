import pytest
import torch

from layert2v.flow import composite_latents, downsample_alpha, interpolate, layered_flow_loss, sample_timesteps
from layert2v.layout import LayerLayout


def consistent_sample(k=2, batch=2, t_lat=2, h=4, w=4, c=4):
    """Latents whose premultiplied layers composite exactly to the full latent (what L_cons asks for)."""
    g = torch.Generator().manual_seed(0)
    layout = LayerLayout(k)
    alphas = (torch.rand(batch, k, 4 * (t_lat - 1) + 1, 8 * h, 8 * w, generator=g) > 0.5).float()
    small = [downsample_alpha(alphas[:, i : i + 1], (t_lat, h, w)) for i in range(k)]
    parts = {"background": torch.randn(batch, c, t_lat, h, w, generator=g)}
    for i in range(1, k + 1):
        parts[f"foreground_{i}"] = torch.randn(batch, c, t_lat, h, w, generator=g) * small[i - 1]
        parts[f"alpha_{i}"] = torch.randn(batch, c, t_lat, h, w, generator=g)
    empty = torch.randn(1, c, t_lat, h, w, generator=g)
    parts["full"] = composite_latents(parts, small, layout, empty)
    return layout, layout.concat(parts), alphas, empty


def test_logit_normal_timesteps():
    t = sample_timesteps(20000, mean=0.5, std=1.0, generator=torch.Generator().manual_seed(0))
    assert 0 < t.min() and t.max() < 1
    assert abs(torch.logit(t).mean().item() - 0.5) < 0.03 and abs(torch.logit(t).std().item() - 1.0) < 0.03


def test_consistency_loss_is_zero_on_consistent_ground_truth():
    layout, z0, alphas, empty = consistent_sample()
    z1 = torch.randn_like(z0)
    t = layout.segment_timesteps(torch.tensor([0.3, 0.8]))
    z_t = interpolate(z0, z1, t, layout)
    perfect = z1 - z0
    losses = layered_flow_loss(perfect, z0, z1, z_t, t, layout, alphas=alphas, empty_latent=empty)
    assert losses["fm"].item() < 1e-10
    assert losses["cons"].item() < 1e-10
    wrong = perfect + 0.1 * torch.randn_like(perfect)
    assert layered_flow_loss(wrong, z0, z1, z_t, t, layout, alphas=alphas, empty_latent=empty)["cons"].item() > 1e-4
    with pytest.raises(ValueError, match="empty_latent"):
        layered_flow_loss(perfect, z0, z1, z_t, t, layout, alphas=alphas)


def test_latent_composite_is_exact_for_an_affine_encoder():
    """Composite pixels, encode with z = W x + b: the latent over operator with b as the empty layer gives the full
    latent exactly; eq. 10's literal form (empty = 0) is off by b once per foreground."""
    g = torch.Generator().manual_seed(1)
    layout = LayerLayout(2)
    shape = (1, 3, 2, 4, 4)
    alphas = [torch.rand(1, 1, 2, 4, 4, generator=g) for _ in range(2)]
    bg = torch.rand(shape, generator=g)
    fgs = [torch.rand(shape, generator=g) * a for a in alphas]  # premultiplied
    full = bg
    for k in layout.composite_order:
        full = fgs[k - 1] + full * (1 - alphas[k - 1])
    weight, bias = torch.randn(4, 3, generator=g), torch.randn(1, 4, 1, 1, 1, generator=g)

    def encode(x):
        return torch.einsum("oc,bcthw->bothw", weight, x) + bias

    parts = {"background": encode(bg), **{f"foreground_{k}": encode(fgs[k - 1]) for k in (1, 2)}}
    empty = encode(torch.zeros(shape))
    assert torch.allclose(composite_latents(parts, alphas, layout, empty), encode(full), atol=1e-5)
    literal = composite_latents(parts, alphas, layout, torch.zeros_like(empty))
    assert (literal - encode(full)).abs().max() > 0.1


def test_condition_segments_are_clean_and_out_of_the_loss():
    layout = LayerLayout(1, conditions=["background"])
    z0, z1 = torch.randn(1, 4, 8, 2, 2), torch.randn(1, 4, 8, 2, 2)
    t = layout.segment_timesteps(torch.tensor([0.5]))
    z_t = interpolate(z0, z1, t, layout)
    assert torch.equal(layout.split(z_t)["background"], layout.split(z0)["background"])
    v = z1 - z0
    v_bad_condition = v.clone()
    v_bad_condition[:, :, 2:4] += 10.0  # garbage on the condition segment only
    a = layered_flow_loss(v_bad_condition, z0, z1, z_t, t, layout, alphas=None)
    assert a["fm"].item() < 1e-10


def test_mask_loss_uses_the_decoder():
    layout, z0, alphas, empty = consistent_sample(k=1)
    z1 = torch.randn_like(z0)
    t = layout.segment_timesteps(torch.tensor([0.5, 0.5]))
    z_t = interpolate(z0, z1, t, layout)
    calls = []

    def decode(z):
        calls.append(z.shape)
        return torch.full((z.shape[0], 1, 5, 32, 32), 0.5)

    losses = layered_flow_loss(z1 - z0, z0, z1, z_t, t, layout, alphas=alphas, decode_alpha=decode,
                               empty_latent=empty)
    assert calls and losses["mask"].item() > 0.05  # a constant 0.5 alpha is far from a binary matte


def test_downsample_alpha_groups_causal_frames():
    alpha = torch.zeros(1, 1, 5, 16, 16)
    alpha[:, :, 0] = 1.0
    alpha[:, :, 1:3, :8] = 1.0
    small = downsample_alpha(alpha, (2, 2, 2))
    assert torch.allclose(small[0, 0, 0], torch.ones(2, 2))
    assert torch.allclose(small[0, 0, 1], torch.tensor([[0.5, 0.5], [0.0, 0.0]]))


def test_world_clips_composite_in_the_shipped_vae_latent_space():
    """What L_cons asks of the model holds for ground truth: encoded world layers composite to near the full
    clip's latent once the empty layer's latent is taken out (measured: 0.04 at K = 1, 0.10 at K = 3)."""
    from pathlib import Path

    from diffusers import AutoencoderKLWan

    from layert2v.data.world import generate_clip
    from layert2v.models.vae import AlphaPath, empty_latent
    from layert2v.training.trainer import encode_layers

    root = Path(__file__).resolve().parents[1] / "layert2v" / "weights" / "world"
    vae = AutoencoderKLWan.from_pretrained(root / "vae", torch_dtype=torch.float32).eval()
    alpha_path = AlphaPath.from_pretrained(root / "alpha_path", torch_dtype=torch.float32).eval()
    layout = LayerLayout(3)
    clips = [generate_clip(9000 + i, num_frames=9, height=64, width=64, num_foregrounds=3) for i in range(4)]
    with torch.no_grad():
        parts = layout.split(encode_layers(vae, alpha_path, clips, layout, torch.device("cpu")))
        empty = empty_latent(vae, 9, 64, 64)
    alphas = torch.stack([torch.stack([torch.from_numpy(a) for a in c.alphas]) for c in clips]).float()
    small = [downsample_alpha(alphas[:, k : k + 1], tuple(parts["full"].shape[2:])) for k in range(3)]
    error = (composite_latents(parts, small, layout, empty) - parts["full"]).pow(2).mean().item()
    literal = (composite_latents(parts, small, layout, torch.zeros_like(empty)) - parts["full"]).pow(2).mean().item()
    assert error < 0.2 and literal > 10 * error
