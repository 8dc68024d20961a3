"""One recipe per training stage: what it builds, what it trains, what it reads, its loss and what it exports.

  VaeRecipe      vae      the RGB VAE from scratch (the built-in model only; real runs start from Wan's VAE)
  AlphaRecipe    alpha    LayerT2V stage 1: frozen encoder, projection head + decoder LoRA, on alpha mattes
  T2VRecipe      t2v      plain text-to-video training of a Wan transformer on full clips
  LayeredRecipe  layered  LayerT2V stage 2 (LoRA or full fine-tune + LayerAdaLN + routing, L_FM + L_cons + L_mask)
                          and, with a larger max_foregrounds, stage 3 (new LayerAdaLN rows from the fg/alpha rows)

``decoder_only`` on vae and alpha trains only the decoder side, so a transformer trained on the latents stays
valid; the stage's output then carries the rest of its init along. Components come from ``init`` (one directory,
or one per component); a component that is neither there nor configured in ``model`` stops the stage with the fix.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from ..flow import NUM_TRAIN_TIMESTEPS, LossWeights, interpolate, interpolate_clip, layered_flow_loss, sample_timesteps
from ..formats import LAYER_WEIGHTS_FILE, PIPELINE_FILE, PIPELINE_FORMAT
from ..latents import encode_layered
from ..layer_weights import (
    LAYER_MODULES,
    LoraChain,
    _load_folder_state,
    add_transformer_lora,
    base_fingerprint,
    export_layer_weights,
    merge_transformer_lora,
)
from ..layout import FULL, LayerLayout
from ..models.text import TextEncoder
from ..models.transformer import LayeredWanTransformer
from ..models.vae import (
    AlphaPath,
    alpha_reconstruction_loss,
    decode_unclamped,
    empty_latent,
    encode_rgb,
    init_from_scratch,
)
from ..pipeline import PipelineConfig
from ..preflight import compression
from ..trajectory import grid_mask
from .cache import LatentCache
from .config import TrainConfig
from .data import Batch, ClipBatch, ClipFn, Reads, to_tensor
from .variants import VariantSampler, boxes_from_alphas

LAYER_WEIGHTS = LAYER_WEIGHTS_FILE


class Recipe:
    """A stage. ``build`` returns the module to train (everything else it needs, frozen, on ``device``);
    ``loss(batch)`` its losses for one batch (``self.model`` is the module as the accelerator wraps it);
    ``export(directory)`` writes the stage's output components."""

    stage: ClassVar[str]
    reads: ClassVar[Reads]
    reads_prompts: ClassVar[bool] = False

    def __init__(self, cfg: TrainConfig, device: torch.device, generator: torch.Generator, data: ClipFn):
        self.cfg, self.device, self.generator, self.data = cfg, device, generator, data
        self.model: torch.nn.Module | None = None  # set by the trainer after accelerator.prepare
        self.trained: torch.nn.Module | None = None  # the unwrapped module build returned

    # ------------------------------------------------------------- components
    def component(self, name: str) -> Path | None:
        """The directory ``init`` gives for component ``name`` (transformer, vae, alpha_path), None if none."""
        where = self.cfg.init_dir(name)
        return where / name if where is not None and (where / name).is_dir() else None

    def load_vae(self) -> AutoencoderKLWan:
        path = self.component("vae")
        if path is not None:
            return AutoencoderKLWan.from_pretrained(path)
        if self.cfg.init is not None and "vae" not in self.cfg.model:
            raise ValueError(f"init {self.cfg.init} has no vae/; point init (or init.vae) at a Wan2.1 directory or "
                             "an earlier stage's output")
        return AutoencoderKLWan(**self.cfg.model.get("vae", {}))

    def noise(self, indices: list[int], shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sample's timestep t (B,) and noise z1 (B, *shape), drawn on the training device from a generator
        keyed by the sample's place in the data stream (``Batch.indices``): the same sample gets the same draw
        whichever process, micro-batch or resumed run it falls in, so DDP and gradient accumulation train as one
        process on the whole batch does."""
        ts, zs = [], []
        for index in indices:
            self.generator.manual_seed(self.cfg.train.seed * 1_000_003 + index)
            ts.append(sample_timesteps(1, self.cfg.loss.logit_mean, self.cfg.loss.logit_std, self.generator,
                                       device=self.device))
            zs.append(torch.randn(shape, generator=self.generator, device=self.device))
        return torch.cat(ts), torch.stack(zs)

    def frozen(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.requires_grad_(False).eval().to(self.device)

    def build(self) -> torch.nn.Module:
        raise NotImplementedError

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def export(self, directory: Path, steps: int) -> None:
        """Write the stage's output into ``directory`` after ``steps`` steps."""
        raise NotImplementedError

    def carry_init(self, directory: Path) -> None:
        """decoder_only: init's other components (and its pipeline file) still fit the unchanged latents."""
        init = Path(self.cfg.init)
        for part in init.iterdir():
            if (part.is_dir() or part.name == PIPELINE_FILE) and not (directory / part.name).exists():
                (shutil.copytree if part.is_dir() else shutil.copy2)(part, directory / part.name)


class VaeRecipe(Recipe):
    stage = "vae"
    reads = Reads(rgb="all", alphas=False)  # every layer of every clip: full, background, premultiplied fgs

    def build(self) -> torch.nn.Module:
        self.vae = self.load_vae()
        if self.component("vae") is None:
            init_from_scratch(self.vae)
        if self.cfg.decoder_only:  # the encoder defines the latents; latents_mean/std stay as they are
            self.vae.encoder.requires_grad_(False)
            self.vae.quant_conv.requires_grad_(False)
        return self.vae.train()

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch.clips.rgb.flatten(0, 1).to(self.device) * 2 - 1
        posterior = self.model.encode(x).latent_dist
        z = posterior.sample(generator=None)
        rec = decode_unclamped(self.trained, z)
        l1 = F.l1_loss(rec, x)
        kl = posterior.kl().mean() / x[0].numel()
        return {"loss": l1 + self.cfg.loss.kl * kl, "l1": l1}

    def export(self, directory: Path, steps: int) -> None:
        if not self.cfg.decoder_only:
            set_latent_stats(self.vae, self.data, self.cfg)
        self.vae.save_pretrained(directory / "vae")
        if self.cfg.decoder_only:
            self.carry_init(directory)


class AlphaRecipe(Recipe):
    stage = "alpha"
    reads = Reads(rgb="none", alphas=True)

    def build(self) -> torch.nn.Module:
        self.vae = self.frozen(self.load_vae())
        path = self.component("alpha_path")
        self.alpha_path = (AlphaPath.from_pretrained(path) if path is not None  # stage 1 builds it: not silent
                           else AlphaPath.for_vae(self.vae, rank=self.cfg.alpha_lora_rank))
        if self.cfg.decoder_only:  # the projection head is the encoder side of the alpha latents
            self.alpha_path.projection.requires_grad_(False)
        self.perceptual = None
        if self.cfg.loss.lambda_perc > 0:  # eq. 8's L_perc on frozen VGG16 features
            from ..models.perceptual import PerceptualLoss

            self.perceptual = self.frozen(PerceptualLoss.from_file(self.cfg.loss.vgg16))
        return self.alpha_path.train()

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        alphas = batch.clips.alphas.flatten(0, 1).to(self.device)
        pred = self.model(self.vae, alphas)
        w = self.cfg.loss
        rec = alpha_reconstruction_loss(pred, alphas, w.lambda_edge, w.lambda_struct)
        if self.perceptual is None:
            return {"loss": rec}
        perc = self.perceptual(pred, alphas)  # unclamped, as every training loss here
        return {"loss": rec + w.lambda_perc * perc, "rec": rec, "perc": perc}

    def export(self, directory: Path, steps: int) -> None:
        self.vae.save_pretrained(directory / "vae")
        self.alpha_path.save_pretrained(directory / "alpha_path")
        if self.cfg.decoder_only:
            self.carry_init(directory)


class LatentRecipe(Recipe):
    """The transformer stages: they read prompts and VAE latents (cached or fresh) of the clips."""

    reads_prompts = True
    needs_alpha_path: ClassVar[bool] = True

    def __init__(self, cfg: TrainConfig, device: torch.device, generator: torch.Generator, data: ClipFn):
        super().__init__(cfg, device, generator, data)
        self.text_encoder = TextEncoder.from_pretrained(self.cfg.text_encoder,
                                                        max_length=self.cfg.max_sequence_length)
        self.text_encoder.model.to(self.device)  # prompts are encoded where the model trains
        self.latents = LatentCache(self)

    def load_alpha_path(self, vae: AutoencoderKLWan) -> AlphaPath | None:
        path = self.component("alpha_path")
        if path is not None:
            return self.frozen(AlphaPath.from_pretrained(path))
        if self.cfg.init is None:  # everything from `model` configs: a model from scratch, its alpha path too
            return self.frozen(AlphaPath.for_vae(vae, rank=self.cfg.alpha_lora_rank))
        if self.needs_alpha_path:
            raise ValueError(f"stage {self.stage} needs a trained alpha path and init {self.cfg.init} has no "
                             "alpha_path/; set init.alpha_path to stage 1's (alpha) output directory")
        return None

    def transformer_dir(self) -> Path | None:
        """init's transformer; None: build one from ``model.transformer`` (from scratch)."""
        path = self.component("transformer")
        if path is None and "transformer" not in self.cfg.model:
            raise ValueError(f"stage {self.stage} needs a transformer and init {self.cfg.init} has no transformer/ "
                             "(a stage-1 output holds only vae/ and alpha_path/); set init.transformer to the "
                             "Wan2.1 directory or the previous transformer stage's output")
        return path

    def encode(self, clips: ClipBatch, k: int) -> torch.Tensor:
        raise NotImplementedError


class T2VRecipe(LatentRecipe):
    stage = "t2v"
    reads = Reads(rgb="full", alphas=False)
    needs_alpha_path = False  # carried along when init has one

    def build(self) -> torch.nn.Module:
        self.vae = self.frozen(self.load_vae())
        self.alpha_path = self.load_alpha_path(self.vae)
        path = self.transformer_dir()
        transformer = (WanTransformer3DModel.from_pretrained(path) if path is not None
                       else WanTransformer3DModel(**self.cfg.model["transformer"]))
        if self.cfg.train.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        self.transformer = transformer.train()
        return self.transformer

    def encode(self, clips: ClipBatch, k: int) -> torch.Tensor:
        return encode_rgb(self.vae, clips.rgb[:, 0].to(self.device))

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        clips = self.latents.of(batch)
        full = LayerLayout(batch.k).prompt_names.index(FULL)
        z0 = torch.cat([c.latents for c in clips]).to(self.device)
        context = self.latents.encode_prompts([self.latents.prompts_of(c, i)[full]
                                               for i, c in zip(batch.indices, clips)])
        t, z1 = self.noise(batch.indices, tuple(z0.shape[1:]))
        v = self.model(interpolate_clip(z0, z1, t), t * NUM_TRAIN_TIMESTEPS, context).sample
        return {"loss": F.mse_loss(v.float(), (z1 - z0).float())}

    def export(self, directory: Path, steps: int) -> None:
        self.vae.save_pretrained(directory / "vae")
        if self.alpha_path is not None:
            self.alpha_path.save_pretrained(directory / "alpha_path")
        self.transformer.save_pretrained(directory / "transformer")


class LayeredRecipe(LatentRecipe):
    stage = "layered"
    reads = Reads(rgb="all", alphas=True)

    def build(self) -> torch.nn.Module:
        cfg = self.cfg
        self.vae = self.frozen(self.load_vae())
        self.alpha_path = self.load_alpha_path(self.vae)
        path = self.transformer_dir()
        self.earlier: LoraChain | None = None  # LoRAs merged into the starting transformer, with their base
        if path is not None:  # from a plain or layered Wan transformer; layer modules added with defaults
            base_cfg = dict(LayeredWanTransformer.load_config(path))
            transformer = LayeredWanTransformer.from_config(
                {**base_cfg, "layer_text_embedding": cfg.layer_text_embedding,
                 "box_conditioning": cfg.box_conditioning or base_cfg.get("box_conditioning", False),
                 "max_foregrounds": base_cfg.get("max_foregrounds", 1)})  # grown below if needed
            result = transformer.load_state_dict(_load_folder_state(path), strict=False)
            bad = [k for k in result.missing_keys if k.split(".")[0] not in LAYER_MODULES]
            if bad or result.unexpected_keys:
                raise ValueError(f"{path} does not fit this model (missing {bad[:3]}, unexpected "
                                 f"{result.unexpected_keys[:3]})")
            if cfg.lora_rank > 0:
                self.earlier = earlier_chain(path.parent, base_fingerprint(transformer.state_dict()))
        else:
            transformer = LayeredWanTransformer(**cfg.model["transformer"], max_foregrounds=cfg.max_foregrounds,
                                                layer_text_embedding=cfg.layer_text_embedding,
                                                box_conditioning=cfg.box_conditioning)
        transformer.extend_foregrounds(cfg.max_foregrounds)  # stage 3: new rows from fg_1/alpha_1
        self.lora_config = None
        if cfg.lora_rank > 0:
            if self.earlier is None:
                self.earlier = LoraChain(base_fingerprint(transformer.state_dict()))
            transformer.requires_grad_(False)
            self.lora_config = add_transformer_lora(transformer, cfg.lora_rank)
            transformer.layer_adaln.requires_grad_(True)
            if transformer.layer_prompt_embedding is not None:
                transformer.layer_prompt_embedding.requires_grad_(True)
            if transformer.box_embedding is not None:
                transformer.box_embedding.requires_grad_(True)
        if cfg.train.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        self._empty_latents: dict[tuple[int, int, int], torch.Tensor] = {}
        self.variants = VariantSampler(cfg.variants, cfg.boxes, cfg.train.seed) if cfg.variants or cfg.boxes else None
        self.transformer = transformer.train()
        return self.transformer

    def layout(self, k: int) -> LayerLayout:
        return LayerLayout(k, conditions=self.cfg.conditions)

    def encode(self, clips: ClipBatch, k: int) -> torch.Tensor:
        layers = {n: x.to(self.device) for n, x in clips.layers(self.layout(k)).items()}
        return encode_layered(self.vae, self.alpha_path, layers, self.layout(k))

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        clips, layout, dev = self.latents.of(batch), self.layout(batch.k), self.device
        z0 = torch.cat([c.latents for c in clips]).to(dev)
        prompts = [p for i, c in zip(batch.indices, clips) for p in self.latents.prompts_of(c, i)]
        context = self.latents.encode_prompts(prompts).unflatten(0, (len(clips), layout.num_prompts))
        t, z1 = self.noise(batch.indices, tuple(z0.shape[1:]))  # one shared noise over all segments
        alphas = torch.stack([c.alphas for c in clips]).float().to(dev)
        generated, box_kwargs = None, {}
        if self.variants is not None:  # per sample: which segments are given, which foregrounds carry boxes
            generated = torch.from_numpy(self.variants.generated(batch.indices, layout)).to(dev)
            if self.cfg.boxes:
                box_kwargs = self.box_inputs(batch.indices, alphas, layout)
            t_seg = t[:, None] * generated
        else:
            t_seg = layout.segment_timesteps(t)
        z_t = interpolate(z0, z1, t_seg, layout)
        v = self.model(z_t, t_seg * NUM_TRAIN_TIMESTEPS, context, layout=layout, **box_kwargs).sample
        w = self.cfg.loss
        decode = (lambda z: self.alpha_path.decode(self.vae, z, clamp=False)) if w.lambda_mask > 0 else None
        empty = self.empty_latent(tuple(alphas.shape[2:]))
        if w.cons_form == "literal":  # eq. 10 as printed: the empty layer taken as 0 (see flow.composite_latents)
            empty = torch.zeros_like(empty)
        return layered_flow_loss(v, z0, z1, z_t, t_seg, layout, alphas=alphas, decode_alpha=decode,
                                 weights=LossWeights(w.lambda_cons, w.lambda_mask, w.lambda_grad),
                                 empty_latent=empty, generated=generated)

    def box_inputs(self, indices: list[int], alphas: torch.Tensor, layout: LayerLayout) -> dict[str, torch.Tensor]:
        """The transformer's ``boxes`` (each foreground's box around its true matte, on the latent grid) and
        ``box_given`` (which foregrounds the draw gave them to) for a batch with ground-truth mattes (B, K, T, H, W)."""
        temporal, spatial = compression(self.vae.config)
        b, k, frames, height, width = alphas.shape
        mattes = alphas.cpu().numpy()
        boxes = np.stack([np.stack([grid_mask(boxes_from_alphas(mattes[i, j]), height, width, temporal, spatial)
                                    for j in range(k)]) for i in range(b)])
        given = [self.variants.draw(index, layout)[2] for index in indices]
        return {"boxes": torch.from_numpy(boxes).to(alphas.device),
                "box_given": torch.tensor(given, dtype=torch.float32, device=alphas.device)}

    def empty_latent(self, frames_hw: tuple[int, int, int]) -> torch.Tensor:
        """L_cons's empty layer for clips of (T, H, W) frames, encoded once per shape."""
        if frames_hw not in self._empty_latents:
            self._empty_latents[frames_hw] = empty_latent(self.vae, *frames_hw)
        return self._empty_latents[frames_hw]

    def export(self, directory: Path, steps: int) -> None:
        cfg, transformer = self.cfg, self.transformer
        self.vae.save_pretrained(directory / "vae")
        self.alpha_path.save_pretrained(directory / "alpha_path")
        if self.lora_config is not None:
            export_layer_weights(directory / LAYER_WEIGHTS, transformer, self.alpha_path, self.lora_config,
                                 earlier=self.earlier)
            merge_transformer_lora(transformer)
        transformer.save_pretrained(directory / "transformer")
        pcfg = PipelineConfig(text_encoder=cfg.text_encoder, max_sequence_length=cfg.max_sequence_length,
                              num_frames=cfg.data.frames, height=cfg.data.height, width=cfg.data.width,
                              layer_index_prompts=cfg.layer_index_prompts, **cfg.pipeline)
        meta = {"format": PIPELINE_FORMAT, "version": 1, "config": asdict(pcfg),
                "trained_from": cfg.init if cfg.init else None, "steps": steps}
        (directory / PIPELINE_FILE).write_text(json.dumps(meta, indent=2))


    def holding(self, state: dict[str, torch.Tensor]) -> LayeredWanTransformer:
        """The trained transformer (its LoRA too) built on the meta device around ``state``, the weights that FSDP
        gathered: the module to export when the training one is sharded, with no second copy of the weights."""
        with torch.device("meta"):
            transformer = LayeredWanTransformer.from_config(self.transformer.config)
            if self.lora_config is not None:
                transformer.add_adapter(self.lora_config)
        transformer.load_state_dict(state, assign=True)
        return transformer


RECIPES: dict[str, type[Recipe]] = {r.stage: r for r in (VaeRecipe, AlphaRecipe, T2VRecipe, LayeredRecipe)}


def earlier_chain(init: Path, start: str) -> LoraChain | None:
    """The LoRA chain of the layer-weights file next to a starting transformer, when that file gives exactly this
    transformer (its ``result`` is ``start``, the transformer's fingerprint); else None (the transformer is then
    the base itself)."""
    path = init / LAYER_WEIGHTS
    if not path.is_file():
        return None
    chain, result = LoraChain.read(path)
    return chain if result == start else None


@torch.no_grad()
def set_latent_stats(vae: AutoencoderKLWan, data: ClipFn, cfg: TrainConfig, n: int = 32) -> None:
    """Per-channel latent mean/std over data, registered in the VAE config (Wan's latents_mean/std)."""
    vae.eval()
    mus = []
    for i in range(n):
        s = data(10_000_000 + i, cfg.data.num_foregrounds[1])
        x = torch.cat([to_tensor(s.full), to_tensor(s.background), to_tensor(s.premultiplied(1))])
        mus.append(vae.encode(x.to(vae.device) * 2 - 1).latent_dist.mode().transpose(0, 1).flatten(1))
    mu = torch.cat(mus, dim=1)
    vae.register_to_config(latents_mean=mu.mean(1).tolist(), latents_std=mu.std(1).clamp_min(1e-3).tolist())
