"""LayerT2V on top of real Wan2.1 weights: the LoRA + layer-module + alpha-path file, and applying it to Wan.

Training from Wan2.1-T2V-1.3B keeps the 1.3B backbone frozen, so what is learned fits in one small safetensors
file: the transformer LoRA (peft), LayerAdaLN (and the optional layer text embedding) and the alpha path. Its
metadata records how to rebuild the adapters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from .formats import LAYER_WEIGHTS_FORMAT
from .models.transformer import LayeredWanTransformer
from .models.vae import AlphaPath
from .output_dirs import atomic_file

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


# LayerT2V's own parameters, not the base model's
LAYER_MODULES = ("layer_adaln", "layer_prompt_embedding", "box_embedding")


def layer_state_dict(transformer: LayeredWanTransformer) -> dict[str, torch.Tensor]:
    out = {"transformer.layer_adaln": transformer.layer_adaln.detach()}
    if transformer.layer_prompt_embedding is not None:
        out["transformer.layer_prompt_embedding"] = transformer.layer_prompt_embedding.detach()
    if transformer.box_embedding is not None:
        out.update({f"transformer.box_embedding.{k}": v.detach()
                    for k, v in transformer.box_embedding.state_dict().items()})
    return out


def base_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """A hash of a transformer's base weights: names, dtypes, shapes and bytes, the layer modules and any peft
    LoRA left out (a LoRA-wrapped layer's ``base_layer`` counts under its plain name). Equal for the same weights
    however they were loaded; it changes with any weight, dtype or architecture."""
    h = hashlib.sha256()
    named = {n.replace(".base_layer.", "."): n for n in state
             if n.split(".")[0] not in LAYER_MODULES and ".lora_" not in n}
    for name in sorted(named):  # one tensor at a time (``state`` may make each on demand: MergedWeights)
        t = state[named[name]].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()[:32]


@dataclass
class LoraChain:
    """The LoRAs already merged into a stage's starting transformer, in order, and the vanilla base they started
    from: a later stage's layer-weights file carries them so it applies to that base."""

    base: str  # base_fingerprint of the vanilla transformer
    loras: list[dict[str, Any]] = field(default_factory=list)  # each {r, lora_alpha, target_modules}
    tensors: list[dict[str, torch.Tensor]] = field(default_factory=list)  # each LoRA's peft state dict

    @classmethod
    def read(cls, path: Path) -> tuple[LoraChain, str]:
        """The chain a layer-weights file applies, ending with its own LoRA, and the fingerprint of the
        transformer it gives (``result``)."""
        meta, tensors = read_layer_weights(path)
        chain = cls(meta["base"])
        for i, lora in enumerate(meta["loras"]):
            prefix = f"transformer.lora.{i}."
            chain.loras.append(lora)
            chain.tensors.append({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        return chain, meta["result"]


def export_layer_weights(path: str | Path, transformer: LayeredWanTransformer, alpha_path: AlphaPath,
                         lora: LoraConfig | None, earlier: LoraChain | None = None) -> Path:
    """Write LoRA + layer modules + alpha path into one safetensors file (atomic), relative to a recorded base.

    ``transformer`` still holds its LoRA unmerged. Without ``earlier`` its base weights are the base the file
    names; with ``earlier`` (stage 3, started from stage 2's merged transformer) the file carries earlier's LoRAs
    first and names earlier's base. Applied in order to that base, the LoRAs give exactly the transformer the
    stage saves after merging (``result``, checked by the next stage)."""
    chain = earlier or LoraChain(base_fingerprint(transformer.state_dict()))
    loras, lora_tensors = list(chain.loras), list(chain.tensors)
    if lora is not None:
        loras.append({"r": lora.r, "lora_alpha": lora.lora_alpha, "target_modules": sorted(lora.target_modules)})
        lora_tensors.append({k: v.detach() for k, v in get_peft_model_state_dict(transformer).items()})
    tensors = layer_state_dict(transformer)
    for i, state in enumerate(lora_tensors):
        tensors.update({f"transformer.lora.{i}.{k}": v for k, v in state.items()})
    for k, v in alpha_path.state_dict().items():
        tensors[f"alpha_path.{k}"] = v.detach()
    merged = MergedWeights(transformer) if lora is not None else transformer.state_dict()
    meta = {
        "format": LAYER_WEIGHTS_FORMAT,
        "version": 2,
        "base": chain.base,
        "result": base_fingerprint(merged),
        "loras": loras,
        "max_foregrounds": transformer.max_foregrounds,
        "layer_text_embedding": transformer.layer_prompt_embedding is not None,
        "box_conditioning": transformer.box_embedding is not None,
        "alpha_path": {k: alpha_path.config[k] for k in ("z_dim", "rank", "targets")},
    }
    path = Path(path)
    with atomic_file(path) as tmp:
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata={"layert2v": json.dumps(meta)})
    return path


class MergedWeights(Mapping):
    """The weights ``merge_transformer_lora`` will leave, as a read-only mapping that makes each LoRA layer's merged
    weight when asked (base + peft's own delta, as peft's merge adds it) and nothing else: fingerprinting the merged
    transformer this way holds one merged layer at a time, not a copy of the transformer."""

    def __init__(self, transformer: torch.nn.Module):
        from peft.tuners.lora import LoraLayer

        self.state = transformer.state_dict()
        self.layers = {f"{name}.base_layer.weight": module for name, module in transformer.named_modules()
                       if isinstance(module, LoraLayer) and not module.merged}

    def __getitem__(self, name: str) -> torch.Tensor:
        weight = self.state[name]
        layer = self.layers.get(name)
        if layer is None:
            return weight
        with torch.no_grad():
            merged = weight
            for adapter in layer.active_adapters:
                if adapter in layer.lora_A:
                    merged = merged + layer.get_delta_weight(adapter)
            return merged.to(weight.dtype)  # as peft's in-place += keeps the base weight's dtype

    def __iter__(self) -> Iterator[str]:
        return iter(self.state)

    def __len__(self) -> int:
        return len(self.state)


def read_layer_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A layer-weights file's metadata and tensors; a one-line error for anything else."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"layer weights file {path} does not exist")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("layert2v", "null") or "null")
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path} is not a readable safetensors file ({e}); export it again") from None
    if not isinstance(meta, dict) or meta.get("format") != LAYER_WEIGHTS_FORMAT:
        raise ValueError(f"{path} is not a layert2v layer-weights file")
    if meta.get("version") != 2:
        raise ValueError(f"{path} is an old layer-weights file that names no base model; export it again with "
                         "this version of layert2v")
    return meta, load_file(str(path))


def apply_loras(transformer: LayeredWanTransformer, chain: LoraChain) -> None:
    """Merge each LoRA of ``chain`` into ``transformer``, in order (as the stages that trained them did)."""
    for lora, state in zip(chain.loras, chain.tensors):
        config = LoraConfig(r=lora["r"], lora_alpha=lora["lora_alpha"], target_modules=lora["target_modules"])
        transformer.add_adapter(config)
        set_peft_model_state_dict(transformer, state)
        merge_transformer_lora(transformer)


def layered_wan(directory: Path, layer_weights: str | Path | None) -> tuple[LayeredWanTransformer, AlphaPath | None]:
    """The LayeredWanTransformer of a Wan2.1 diffusers ``transformer/`` folder, with a layer-weights file applied
    (its LoRAs merged in order, its layer modules loaded) when one is given, and that file's alpha path (None
    without a file: the caller makes a fresh one for its VAE)."""
    meta, tensors = read_layer_weights(layer_weights) if layer_weights is not None else (None, {})
    wan_config = LayeredWanTransformer.load_config(directory)
    extra = {}
    if meta:
        extra = {"max_foregrounds": meta["max_foregrounds"], "layer_text_embedding": meta["layer_text_embedding"],
                 "box_conditioning": meta.get("box_conditioning", False)}
    transformer = LayeredWanTransformer.from_config({**wan_config, **extra})
    result = transformer.load_state_dict(_load_folder_state(directory), strict=False)
    unexpected = [k for k in result.unexpected_keys if not k.startswith("norm_added_q")]
    missing = [k for k in result.missing_keys if k.split(".")[0] not in LAYER_MODULES]
    if unexpected or missing:
        raise ValueError(f"{directory} does not match the Wan2.1 architecture "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if not meta:
        return transformer, None
    if base_fingerprint(transformer.state_dict()) != meta["base"]:
        raise ValueError(f"{layer_weights} was trained on another base transformer than {directory} "
                         "(its recorded fingerprint differs); pass the --model directory it was trained from")
    apply_loras(transformer, LoraChain.read(Path(layer_weights))[0])
    with torch.no_grad():
        transformer.layer_adaln.copy_(tensors["transformer.layer_adaln"])
        if transformer.layer_prompt_embedding is not None:
            transformer.layer_prompt_embedding.copy_(tensors["transformer.layer_prompt_embedding"])
        if transformer.box_embedding is not None:
            transformer.box_embedding.load_state_dict(_with_prefix(tensors, "transformer.box_embedding."))
    alpha_path = AlphaPath(**meta["alpha_path"])
    alpha_path.load_state_dict(_with_prefix(tensors, "alpha_path."))
    return transformer, alpha_path


def _with_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


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
