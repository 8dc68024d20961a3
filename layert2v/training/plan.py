"""`layert2v train CONFIG --dry-run`: check a stage config and the chain of stages it starts from, without weights.

Every component ``init`` names is found on disk (its config.json), or as the output of another config in the same
folder (whose plan is made first), or, for a transformer or VAE directory that is not there yet, taken to be
Wan2.1-T2V-1.3B (said in the plan). Models are built on the meta device, so parameter counts cost no memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..formats import read_json_object
from ..layout import LayerLayout
from ..models.configs import WAN21_T2V_1_3B_TRANSFORMER, WAN21_VAE
from ..preflight import compression
from .config import COMPONENTS, TrainConfig, vae_defaults

WAN_ASSUMED = {"transformer": WAN21_T2V_1_3B_TRANSFORMER, "vae": WAN21_VAE}


@dataclass
class StagePlan:
    path: Path
    cfg: TrainConfig
    components: dict[str, tuple[str, dict[str, Any] | None]] = field(default_factory=dict)  # name -> (from, config)
    lines: list[str] = field(default_factory=list)


def plan(path: str | Path) -> list[str]:
    """The plan of the config at ``path`` and of the stages it chains from, as printable lines."""
    path = Path(path)
    configs = {Path(c).resolve(): c for c in sorted(path.parent.glob("*.yaml"))}
    done: dict[Path, StagePlan] = {}
    order: list[StagePlan] = []
    _plan(path.resolve(), configs, done, order, [])
    return [line for stage in order for line in stage.lines]


def _plan(path: Path, configs: dict[Path, Path], done: dict[Path, StagePlan], order: list[StagePlan],
          stack: list[Path]) -> StagePlan:
    if path in done:
        return done[path]
    if path in stack:
        raise ValueError(f"configs chain in a circle: {' -> '.join(p.name for p in [*stack, path])}")
    cfg = TrainConfig.from_yaml(path)
    stage = StagePlan(path, cfg)
    outputs = {}
    for other in configs:
        if other != path:
            try:
                other_cfg = TrainConfig.from_yaml(other)
            except ValueError:
                continue
            outputs[_norm(Path(other_cfg.output_dir) / "final")] = other
    for name in _components(cfg):
        where = cfg.init_dir(name)
        if where is None:
            stage.components[name] = ("model config" if name in cfg.model else "built new", cfg.model.get(name))
            continue
        if (where / name / "config.json").is_file():
            stage.components[name] = (str(where), read_json_object(where / name / "config.json"))
        elif _norm(where) in outputs:
            earlier = _plan(outputs[_norm(where)], configs, done, order, [*stack, path])
            if name not in earlier.components or not _exports(earlier.cfg, name):
                raise ValueError(f"{path.name}: init {where} is {earlier.path.name}'s output, which holds no {name}/; "
                                 f"set init.{name} to a directory that has one")
            stage.components[name] = (f"{where} ({earlier.path.name})", earlier.components[name][1])
        elif name == "alpha_path" and cfg.stage == "alpha":  # stage 1 makes it (a Wan directory has none)
            stage.components[name] = ("built new (stage 1 trains it)", None)
        elif name in WAN_ASSUMED and not where.exists():
            stage.components[name] = (f"{where} (not on disk: Wan2.1-T2V-1.3B assumed)", WAN_ASSUMED[name])
        else:
            raise ValueError(f"{path.name}: init {where} has no {name}/ and no config in {path.parent} makes it; "
                             f"point init.{name} at a directory that holds one")
    stage.lines = _describe(stage)
    done[path] = stage
    order.append(stage)
    return stage


def _norm(path: Path) -> Path:
    return Path(str(path).rstrip("/")).resolve()


def _components(cfg: TrainConfig) -> list[str]:
    return {"vae": ["vae"], "alpha": ["vae", "alpha_path"], "t2v": ["vae", "transformer"],
            "layered": ["vae", "alpha_path", "transformer"]}[cfg.stage]


def _exports(cfg: TrainConfig, name: str) -> bool:
    """Whether a stage's output holds component ``name``."""
    exported = {"vae": {"vae"}, "alpha": {"vae", "alpha_path"}, "t2v": {"vae", "transformer", "alpha_path"},
                "layered": set(COMPONENTS)}[cfg.stage]
    return name in exported or cfg.decoder_only


def _describe(stage: StagePlan) -> list[str]:
    cfg, comps = stage.cfg, stage.components
    d, t = cfg.data, cfg.train
    vae_cfg = {**vae_defaults(), **(comps["vae"][1] or {})}
    temporal, spatial = compression(vae_cfg)
    transformer_cfg = comps.get("transformer", (None, None))[1]
    if cfg.stage in ("t2v", "layered") and transformer_cfg is None:
        raise ValueError(f"{stage.path.name}: stage {cfg.stage} needs a transformer; set init.transformer or "
                         "model.transformer")
    if cfg.stage == "layered" and comps["alpha_path"][0] == "built new" and cfg.init is not None:
        raise ValueError(f"{stage.path.name}: stage layered needs a trained alpha path; set init.alpha_path to "
                         "stage 1's output")
    patch = (transformer_cfg or {}).get("patch_size", [1, 1, 1])
    frames_ok = d.frames >= 1 and (d.frames - 1) % temporal == 0
    side = spatial * max(patch[1:]) if cfg.stage in ("t2v", "layered") else spatial
    if not frames_ok or d.height % side or d.width % side:
        raise ValueError(f"{stage.path.name}: {d.frames} frames of {d.width}x{d.height} do not fit this model "
                         f"(frames {temporal}k+1, sides multiples of {side})")
    t_lat, h_lat, w_lat = (d.frames - 1) // temporal + 1, d.height // spatial, d.width // spatial
    k = d.num_foregrounds[1]
    segments = {"vae": 0, "alpha": 0, "t2v": 1, "layered": LayerLayout(k).num_segments}[cfg.stage]
    per_segment = (t_lat // patch[0]) * (h_lat // patch[1]) * (w_lat // patch[2])
    trainable, total = _parameters(cfg, comps, vae_cfg, transformer_cfg)
    lines = [f"stage {cfg.stage}: {stage.path.name} -> {cfg.output_dir}/final"]
    for name, (source, _) in comps.items():
        lines.append(f"  {name:<12} {source}")
    lines.append(f"  data         {d.kind}{' ' + d.path if d.path else ''}: {d.frames} frames of {d.width}x"
                 f"{d.height}, {d.num_foregrounds[0]}-{k} foreground(s); latents {t_lat}x{h_lat}x{w_lat}")
    if segments:
        lines.append(f"  tokens       {segments * per_segment} per sample ({segments} segment(s) x {per_segment}), "
                     f"prompts: {cfg.text_encoder} (max {cfg.max_sequence_length} tokens)")
    lines.append(f"  trainable    {trainable / 1e6:.1f}M of {total / 1e6:.1f}M parameters"
                 + (f" (LoRA rank {cfg.lora_rank})" if cfg.stage == "layered" and cfg.lora_rank else ""))
    lines.append(f"  steps        {t.steps}, lr {t.lr:g}, warmup {t.warmup}, batch {t.batch_size} x accumulation "
                 f"{t.gradient_accumulation} = {t.batch_size * t.gradient_accumulation} per process "
                 f"(x N processes under accelerate launch)")
    w = cfg.loss
    losses = {"vae": f"L1 + {w.kl:g} KL",
              "alpha": f"L_rec + {w.lambda_edge:g} L_edge + {w.lambda_struct:g} L_struct"
                       + (f" + {w.lambda_perc:g} L_perc ({w.vgg16})" if w.lambda_perc else ""),
              "t2v": "L_FM",
              "layered": f"L_FM + {w.lambda_cons:g} L_cons ({w.cons_form}) + {w.lambda_mask:g} L_mask "
                         f"(lambda_grad {w.lambda_grad:g})"}[cfg.stage]
    lines.append(f"  loss         {losses}")
    return lines


def _parameters(cfg: TrainConfig, comps: dict, vae_cfg: dict, transformer_cfg: dict | None) -> tuple[int, int]:
    """(trainable, total) parameters of what the stage trains, built on the meta device."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from ..layer_weights import add_transformer_lora
    from ..models.transformer import LayeredWanTransformer
    from ..models.vae import AlphaPath

    with torch.device("meta"):
        vae = AutoencoderKLWan(**{k: v for k, v in vae_cfg.items() if not k.startswith("_")})
        if cfg.stage == "vae":
            model = vae
            if cfg.decoder_only:
                vae.encoder.requires_grad_(False)
                vae.quant_conv.requires_grad_(False)
        elif cfg.stage == "alpha":
            model = AlphaPath.for_vae(vae, rank=cfg.alpha_lora_rank)
            if cfg.decoder_only:
                model.projection.requires_grad_(False)
        else:
            known = {k: v for k, v in transformer_cfg.items() if not k.startswith("_")}
            if cfg.stage == "t2v":
                model = WanTransformer3DModel(**{k: v for k, v in known.items()
                                                 if k not in ("max_foregrounds", "layer_text_embedding",
                                                              "box_conditioning")})
            else:
                model = LayeredWanTransformer(**{**known, "max_foregrounds": cfg.max_foregrounds,
                                                 "layer_text_embedding": cfg.layer_text_embedding,
                                                 "box_conditioning": cfg.box_conditioning
                                                 or known.get("box_conditioning", False)})
                if cfg.lora_rank > 0:
                    model.requires_grad_(False)
                    add_transformer_lora(model, cfg.lora_rank)
                    model.layer_adaln.requires_grad_(True)
                    if model.layer_prompt_embedding is not None:
                        model.layer_prompt_embedding.requires_grad_(True)
                    if model.box_embedding is not None:
                        model.box_embedding.requires_grad_(True)
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
