"""LayerT2V on top of real Wan2.1 weights: the LoRA + layer-module + alpha-path file, and loading it.

Training from Wan2.1-T2V-1.3B keeps the 1.3B backbone frozen, so what is learned fits in one small safetensors
file: the transformer LoRA (peft), LayerAdaLN (and the optional layer text embedding) and the alpha path. Its
metadata records how to rebuild the adapters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers import AutoencoderKLWan
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from .formats import LAYER_WEIGHTS_FORMAT
from .models.text import TextEncoder
from .models.transformer import LayeredWanTransformer
from .models.vae import AlphaPath

if TYPE_CHECKING:
    from .pipeline import LayerT2VPipeline

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]


def add_transformer_lora(transformer: LayeredWanTransformer, rank: int, alpha: float | None = None) -> LoraConfig:
    """Insert peft LoRA adapters on every attention and FFN projection of every block (stage 2)."""
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=LORA_TARGETS, init_lora_weights=True)
    transformer.add_adapter(config)
    return config


def merge_transformer_lora(transformer: LayeredWanTransformer) -> None:
    """Fold the LoRA into the base weights so the saved transformer is a plain (layered) Wan."""
    if getattr(transformer, "_hf_peft_config_loaded", False):
        transformer.fuse_lora()
        transformer.unload_lora()


def layer_state_dict(transformer: LayeredWanTransformer) -> dict[str, torch.Tensor]:
    out = {"transformer.layer_adaln": transformer.layer_adaln.detach()}
    if transformer.layer_prompt_embedding is not None:
        out["transformer.layer_prompt_embedding"] = transformer.layer_prompt_embedding.detach()
    return out


def export_layer_weights(path: str | Path, transformer: LayeredWanTransformer, alpha_path: AlphaPath,
                         lora: LoraConfig | None) -> Path:
    """Write LoRA + layer modules + alpha path into one safetensors file (atomic)."""
    tensors = layer_state_dict(transformer)
    if lora is not None:
        for k, v in get_peft_model_state_dict(transformer).items():
            tensors[f"transformer.lora.{k}"] = v.detach()
    for k, v in alpha_path.state_dict().items():
        tensors[f"alpha_path.{k}"] = v.detach()
    meta = {
        "format": LAYER_WEIGHTS_FORMAT,
        "lora": None if lora is None else {"r": lora.r, "lora_alpha": lora.lora_alpha,
                                           "target_modules": sorted(lora.target_modules)},
        "max_foregrounds": transformer.max_foregrounds,
        "layer_text_embedding": transformer.layer_prompt_embedding is not None,
        "alpha_path": {k: alpha_path.config[k] for k in ("z_dim", "rank", "targets")},
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata={"layert2v": json.dumps(meta)})
    tmp.replace(path)
    return path


def load_wan_pipeline(cls: type[LayerT2VPipeline], root: Path, layer_weights: str | Path | None,
                      text_encoder: str | Path | None) -> LayerT2VPipeline:
    """A Wan2.1-T2V diffusers directory (transformer/, vae/, text_encoder/, tokenizer/) + optional layer file."""
    from safetensors import SafetensorError, safe_open

    from .pipeline import PipelineConfig, load_weights
    from .preflight import check_model_directory

    for sub in ("transformer", "vae"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"{root} has no {sub}/ folder; expected a Wan2.1-T2V diffusers directory")
    check_model_directory(root)  # size fields present, the model fits: before anything is built
    meta = None
    if layer_weights is not None:
        layer_weights = Path(layer_weights)
        if not layer_weights.is_file():
            raise FileNotFoundError(f"layer weights file {layer_weights} does not exist")
        try:
            with safe_open(str(layer_weights), "pt") as f:
                meta = json.loads((f.metadata() or {}).get("layert2v", "null") or "null")
        except (OSError, SafetensorError, json.JSONDecodeError) as e:
            raise ValueError(f"{layer_weights} is not a readable safetensors file ({e}); export it again") from None
        if not isinstance(meta, dict) or meta.get("format") != LAYER_WEIGHTS_FORMAT:
            raise ValueError(f"{layer_weights} is not a layert2v layer-weights file")

    wan_config = LayeredWanTransformer.load_config(root / "transformer")
    extra = {}
    if meta:
        extra = {"max_foregrounds": meta["max_foregrounds"], "layer_text_embedding": meta["layer_text_embedding"]}
    transformer = LayeredWanTransformer.from_config({**wan_config, **extra})
    state = _load_folder_state(root / "transformer")
    result = transformer.load_state_dict(state, strict=False)
    unexpected = [k for k in result.unexpected_keys if not k.startswith("norm_added_q")]
    missing = [k for k in result.missing_keys if k.split(".")[0] not in ("layer_adaln", "layer_prompt_embedding")]
    if unexpected or missing:
        raise ValueError(f"{root / 'transformer'} does not match the Wan2.1 architecture "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")

    vae = load_weights(AutoencoderKLWan, root / "vae")
    alpha_path = AlphaPath(**meta["alpha_path"]) if meta else AlphaPath.for_vae(vae)
    if meta:
        tensors = load_file(str(layer_weights))
        if meta["lora"]:
            lora = LoraConfig(r=meta["lora"]["r"], lora_alpha=meta["lora"]["lora_alpha"],
                              target_modules=meta["lora"]["target_modules"])
            transformer.add_adapter(lora)
            set_peft_model_state_dict(
                transformer, {k[len("transformer.lora."):]: v for k, v in tensors.items()
                              if k.startswith("transformer.lora.")})
            merge_transformer_lora(transformer)
        with torch.no_grad():
            transformer.layer_adaln.copy_(tensors["transformer.layer_adaln"])
            if transformer.layer_prompt_embedding is not None:
                transformer.layer_prompt_embedding.copy_(tensors["transformer.layer_prompt_embedding"])
        alpha_path.load_state_dict({k[len("alpha_path."):]: v for k, v in tensors.items()
                                    if k.startswith("alpha_path.")})

    encoder = TextEncoder.from_pretrained(text_encoder or root)
    config = PipelineConfig(text_encoder=str(text_encoder or root), max_sequence_length=encoder.max_length,
                            num_frames=41, height=384, width=672, fps=16, num_inference_steps=50,
                            guidance_scale=5.0, flow_shift=3.0, model_id=f"wan2.1:{root.name}")
    return cls(transformer, vae, alpha_path, encoder, config)


def _load_folder_state(directory: Path) -> dict[str, torch.Tensor]:
    """All safetensors shards of a diffusers model folder, merged (never unpickles)."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {directory}")
    from safetensors import SafetensorError

    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except (OSError, SafetensorError) as e:
            raise ValueError(f"cannot read {f} ({e}); the file is truncated or damaged: download it again") from None
    return state
