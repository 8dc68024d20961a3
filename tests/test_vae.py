"""The RGB VAE helpers and the alpha path: training decodes must keep gradients where the clamp would not."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from helpers import TINY_VAE

from layert2v.models.vae import AlphaPath, decode_rgb, decode_unclamped, init_from_scratch
from layert2v.preflight import compression


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


def test_from_scratch_init_is_an_image_network_inflated_in_time():
    """A still video must encode to the still's latent at every latent frame and decode back to it at every frame:
    only the newest temporal tap is non-zero and the resamplers' time convolutions copy frames."""
    torch.manual_seed(0)
    vae = init_from_scratch(AutoencoderKLWan(**TINY_VAE)).eval()
    image = torch.rand(1, 3, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        z_image = vae.encode(image).latent_dist.mode()
        z_video = vae.encode(image.expand(-1, -1, 9, -1, -1)).latent_dist.mode()
        frames = vae.decode(z_video).sample
    assert z_video.shape[2] == 3
    torch.testing.assert_close(z_video, z_image.expand_as(z_video), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(frames, frames[:, :, :1].expand_as(frames), atol=1e-5, rtol=1e-4)
    assert z_image.std() > 0.05  # and the latent is not vanishingly small


def test_from_scratch_init_starts_every_residual_block_as_the_identity():
    vae = init_from_scratch(AutoencoderKLWan(**TINY_VAE))
    block = vae.decoder.mid_block.resnets[0]
    x = torch.randn(1, block.conv1.weight.shape[1], 1, 4, 4)
    torch.testing.assert_close(block(x), x)


def test_compression_reads_the_vae_config():
    assert compression(AutoencoderKLWan(**TINY_VAE).config) == (4, 8)
    small = AutoencoderKLWan(**{**TINY_VAE, "dim_mult": [1, 2, 4], "temperal_downsample": [True, True]})
    assert compression(small.config) == (4, 4)
    # Wan2.2's VAE (its config.json's fields): 8x from its stages, 2x more from the pixel shuffle before them
    wan22 = {"dim_mult": [1, 2, 4, 4], "temperal_downsample": [False, True, True], "patch_size": 2}
    assert compression(wan22) == (4, 16)
