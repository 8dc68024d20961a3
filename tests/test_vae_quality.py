"""The VAE benchmark's temporal rows: which pixel frames a latent frame decodes to, and the carried error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan
from helpers import TINY_VAE

from layert2v.models.vae import decode_rgb
from layert2v.preflight import compression

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("vae_quality", ROOT / "benchmarks" / "vae_quality.py")
vae_quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vae_quality)


def test_latent_frames_cover_the_decoded_frames_in_order():
    for downsample in ([False, True, True], [False, False, True]):  # 4x and 2x in time
        vae = AutoencoderKLWan(**TINY_VAE, temperal_downsample=downsample).eval()
        z = torch.randn(1, 4, 3, 4, 4)
        with torch.no_grad():
            frames = decode_rgb(vae, z).shape[2]
        pixels = [f for k in range(3) for f in vae_quality.latent_frame_pixels(vae, k)]
        assert pixels == list(range(frames)) and frames == 1 + 2 * compression(vae.config)[0]
        with torch.no_grad():
            clean = decode_rgb(vae, z, clamp=False)
            for k in range(3):  # the causal decoder: latent frame k first changes its own first pixel frame
                noisy = z.clone()
                noisy[:, :, k] += 1.0
                changed = (decode_rgb(vae, noisy, clamp=False) - clean).abs().amax(dim=(0, 1, 3, 4)) > 1e-6
                assert changed.nonzero()[0].item() == vae_quality.latent_frame_pixels(vae, k)[0]


def test_carried_error_is_finite_and_grows_with_the_noise():
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**TINY_VAE).eval()
    z = torch.randn(1, 4, 3, 4, 4)
    with torch.no_grad():
        clean = decode_rgb(vae, z)
        small = vae_quality.carried_error(vae, z, clean, torch.Generator().manual_seed(1), sigma=0.01)
        large = vae_quality.carried_error(vae, z, clean, torch.Generator().manual_seed(1), sigma=3.0)
    assert 0 < large < small < 100


def test_measure_reads_shape_and_motion_through_a_saved_vae(tmp_path, tiny_pipeline, monkeypatch):
    """measure() end to end on a tiny saved VAE and alpha path: every row present, the reader rows fractions."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # measure() imports world_quality's readers
    tiny_pipeline.vae.save_pretrained(tmp_path / "vae")
    tiny_pipeline.alpha_path.save_pretrained(tmp_path / "alpha_path")
    result = vae_quality.measure(tmp_path, n=2, frames=5, size=32)
    readers = [k for k in result if "read" in k]
    assert readers == ["shape read after the alpha path", "shape read after the RGB VAE",
                       "motion read after the alpha path"]
    assert all(0.0 <= result[k] <= 1.0 for k in readers)
    assert all(np.isfinite(v) for v in result.values()) and len(result) == 10
