"""Loading path (b): a Wan2.1-T2V diffusers directory plus a LayerT2V layer-weights file.

No real weights can be downloaded here, so a tiny random model is saved in exactly that layout (model_index.json,
transformer/, vae/, text_encoder/ as UMT5EncoderModel, tokenizer/)."""

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from helpers import save_tiny_wan

from layert2v.layer_weights import add_transformer_lora, export_layer_weights
from layert2v.models.transformer import LayeredWanTransformer
from layert2v.models.vae import AlphaPath
from layert2v.pipeline import LayerT2VPipeline


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return save_tiny_wan(tmp_path_factory.mktemp("wan21"))


def test_plain_wan_directory_loads_only_when_untrained_layers_are_asked_for(wan_dir):
    with pytest.raises(ValueError, match="needs --layer-weights FILE .*layer_weights= in Python"):
        LayerT2VPipeline.from_pretrained(wan_dir)
    pipe = LayerT2VPipeline.from_pretrained(wan_dir, untrained_layers=True)
    assert isinstance(pipe.transformer, LayeredWanTransformer)
    assert pipe.text_encoder.max_length == 512  # UMT5, as Wan encodes it
    wan = WanTransformer3DModel.from_pretrained(wan_dir / "transformer")
    assert torch.equal(wan.blocks[0].attn1.to_q.weight, pipe.transformer.blocks[0].attn1.to_q.weight)
    assert pipe.transformer.layer_adaln.abs().sum() == 0
    video = pipe("a", "b", ["c"], num_frames=5, height=32, width=32, num_inference_steps=2, progress=False)
    assert video.full.shape == (5, 32, 32, 3)
    assert video.metadata["untrained_layers"] is True  # what the manifest records


def test_wan_directory_with_layer_weights(wan_dir, tmp_path):
    transformer = LayeredWanTransformer.from_config({**WanTransformer3DModel.load_config(wan_dir / "transformer"),
                                                     "max_foregrounds": 2, "layer_text_embedding": True})
    transformer.load_state_dict(WanTransformer3DModel.from_pretrained(wan_dir / "transformer").state_dict(),
                                strict=False)
    lora = add_transformer_lora(transformer, rank=4)
    torch.manual_seed(1)
    with torch.no_grad():  # pretend training moved every learned piece
        for name, p in transformer.named_parameters():
            if "lora_B" in name or name.startswith("layer_"):
                p.normal_(0, 0.05)
    alpha = AlphaPath.for_vae(AutoencoderKLWan.from_pretrained(wan_dir / "vae"), rank=2)
    with torch.no_grad():
        alpha.projection.weight.normal_(0, 0.1)
    path = export_layer_weights(tmp_path / "layers.safetensors", transformer, alpha, lora)

    pipe = LayerT2VPipeline.from_pretrained(wan_dir, layer_weights=path)
    assert pipe.max_foregrounds == 2
    assert torch.equal(pipe.transformer.layer_adaln, transformer.layer_adaln.detach())
    assert torch.equal(pipe.alpha_path.projection.weight, alpha.projection.weight)
    # LoRA merged: the loaded plain Linear equals base + B A scaled
    merged = pipe.transformer.blocks[0].attn1.to_q.weight
    base = WanTransformer3DModel.from_pretrained(wan_dir / "transformer").blocks[0].attn1.to_q.weight
    layer = transformer.blocks[0].attn1.to_q
    expected = base + layer.lora_B["default"].weight @ layer.lora_A["default"].weight * layer.scaling["default"]
    assert torch.allclose(merged, expected, atol=1e-6) and not torch.allclose(merged, base)
    video = pipe("a", "b", ["c", "d"], num_frames=5, height=32, width=32, num_inference_steps=2, progress=False)
    assert video.num_foregrounds == 2 and np.isfinite(video.full).all()
    assert "untrained_layers" not in video.metadata
    with pytest.raises(ValueError, match="not both"):
        LayerT2VPipeline.from_pretrained(wan_dir, layer_weights=path, untrained_layers=True)


def test_bad_model_paths(wan_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LayerT2VPipeline.from_pretrained(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a layert2v pipeline"):
        LayerT2VPipeline.from_pretrained(tmp_path / "empty")
    other = tmp_path / "other"
    (other / "transformer").mkdir(parents=True)
    (other / "vae").mkdir()
    (other / "model_index.json").write_text("{}")
    (other / "transformer" / "config.json").write_text(json.dumps({"_class_name": "CogVideoXTransformer3DModel"}))
    with pytest.raises(ValueError, match="not a Wan transformer"):
        LayerT2VPipeline.from_pretrained(other)
    bogus = tmp_path / "bogus.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(bogus))
    with pytest.raises(ValueError, match="not a layert2v layer-weights file"):
        LayerT2VPipeline.from_pretrained(wan_dir, layer_weights=bogus)
