"""The RGB VAE helpers and the alpha path: training decodes must keep gradients where the clamp would not."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from helpers import TINY_VAE

from layert2v.models.vae import AlphaPath, decode_rgb, decode_unclamped


def _saturating_vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**TINY_VAE).eval()
    with torch.no_grad():
        vae.decoder.conv_out.bias.fill_(-3.0)  # every output far below -1, as a decoder overshooting black
    return vae


def test_unclamped_decode_matches_decode_inside_the_range():
    vae = _saturating_vae()
    with torch.no_grad():
        vae.decoder.conv_out.bias.zero_()
        z = torch.randn(1, 4, 3, 4, 4)
        raw = decode_unclamped(vae, z)
        clamped = vae.decode(z).sample
    assert raw.shape == clamped.shape == (1, 3, 9, 32, 32)
    assert torch.allclose(raw.clamp(-1, 1), clamped, atol=1e-6)


def test_unclamped_decode_keeps_the_gradient_the_clamp_kills():
    vae = _saturating_vae()
    z = torch.randn(1, 4, 2, 4, 4)
    target = -torch.ones(1, 3, 5, 32, 32)
    assert (decode_unclamped(vae, z) < -1).all()

    torch.nn.functional.l1_loss(vae.decode(z).sample, target).backward()
    assert vae.decoder.conv_out.bias.grad.abs().max() == 0  # the clamped path learns nothing
    vae.zero_grad()
    torch.nn.functional.l1_loss(decode_unclamped(vae, z), target).backward()
    assert vae.decoder.conv_out.bias.grad.abs().min() > 0


def test_alpha_path_trains_through_saturation_and_decodes_clamped():
    vae = _saturating_vae()
    alpha_path = AlphaPath.for_vae(vae, rank=2)
    with torch.no_grad():
        for up in alpha_path.lora_up.values():
            up.normal_(0, 0.01)  # past the zero init, so the LoRA-down factors get a gradient too
    alpha = torch.zeros(1, 1, 5, 32, 32)
    alpha[..., 8:20, 8:20] = 1.0
    pred = alpha_path(vae, alpha)
    assert pred.min() < 0  # unclamped for the loss
    torch.nn.functional.l1_loss(pred, alpha).backward()
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in alpha_path.lora_up.values())
    with torch.no_grad():
        out = alpha_path.decode(vae, alpha_path.encode(vae, alpha))
        rgb = decode_rgb(vae, torch.randn(1, 4, 2, 4, 4))
    assert out.min() >= 0 and out.max() <= 1
    assert rgb.min() >= 0 and rgb.max() <= 1
