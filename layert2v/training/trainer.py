"""One trainer for every stage, on accelerate.

Stages (one YAML each, see configs/):
  vae      - the RGB VAE from scratch (only for the built-in model; real runs start from Wan's VAE)
  alpha    - LayerT2V stage 1: frozen encoder, projection head + decoder LoRA, on alpha mattes
  (vae and alpha with ``decoder_only``: only the decoder side trains, so a transformer trained on the latents
  stays valid; the stage's output carries the rest of its init along)
  t2v      - plain text-to-video pretraining of a Wan transformer on full clips (stands in for Wan's pretraining)
  layered  - LayerT2V stage 2 (LoRA or full fine-tune + LayerAdaLN + routing, L_FM + L_cons + L_mask) and,
             with a larger max_foregrounds, stage 3 (new LayerAdaLN rows start from the trained fg/alpha rows)

Data are drawn by index from the step number, and the noise/timestep generator (on the training device, so a
step's noise never crosses the bus) is checkpointed, so a resumed run continues exactly where the interrupted one
would have been.
"""

from __future__ import annotations

import functools
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..flow import NUM_TRAIN_TIMESTEPS, LossWeights, interpolate, layered_flow_loss, sample_timesteps
from ..layer_weights import add_transformer_lora, export_layer_weights, merge_transformer_lora
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
from ..pipeline import PIPELINE_FILE, PipelineConfig
from ..utils import atomic_directory
from ..video import LayeredVideo
from .config import DataConfig, TrainConfig

CHECKPOINT = "checkpoint"
TRANSFORMER_STAGES = ("t2v", "layered")  # the stages that read prompts and cached clip latents


@dataclass
class EncodedClip:
    """A clip as the transformer stages use it: its latents, ground-truth alphas and layer prompts."""

    latents: torch.Tensor  # (1, C, S*T', H', W') in layout order; stage t2v: the full video's only
    alphas: torch.Tensor  # (K, T, H, W), float16 (L_cons and L_mask targets); empty in stage t2v
    prompts: list[str]  # layout.prompt_names order


@dataclass
class ClipBatch:
    """Clips as the VAE encodes them, stacked where they are made. DataLoader workers hand the main process one
    tensor per field through shared memory: numpy arrays would be pickled through a pipe (about 2.6 MB a clip),
    and stacking 128 clips there takes about as long as a GPU step."""

    rgb: torch.Tensor  # (B, L, 3, T, H, W) in [0, 1]: full, background, premultiplied foregrounds (L: see clip_batch)
    alphas: torch.Tensor  # (B, K, 1, T, H, W); (B, 0, 1, T, H, W) where the stage reads none
    prompts: list[dict[str, Any]]  # each clip's full / background / foreground prompts


def clip_batch(samples: list[LayeredVideo], stage: str) -> ClipBatch:
    """Clips with one foreground count -> a ClipBatch of what ``stage`` reads: every RGB layer (vae, layered),
    the full video only (t2v), the alphas (alpha, layered). Workers stack nothing the stage throws away."""
    k = samples[0].num_foregrounds
    frames = samples[0].full.shape[:3]
    num_rgb = {"vae": 2 + k, "alpha": 0, "t2v": 1, "layered": 2 + k}[stage]
    num_alphas = k if stage in ("alpha", "layered") else 0
    rgb = torch.empty(len(samples), num_rgb, 3, *frames)
    alphas = torch.empty(len(samples), num_alphas, 1, *frames)
    for b, s in enumerate(samples):
        layers = (s.full, s.background, *(s.premultiplied(i) for i in range(1, k + 1)))
        for i, x in enumerate(layers[:num_rgb]):
            rgb[b, i] = torch.from_numpy(x).permute(3, 0, 1, 2)
        for i in range(num_alphas):
            alphas[b, i, 0] = torch.from_numpy(s.alphas[i])
    return ClipBatch(rgb, alphas, [s.prompts for s in samples])


class _Clips(Dataset):
    """The clips ``data(i, k)`` for the given indices, so DataLoader workers can make (and stack) them."""

    def __init__(self, data: Any, indices: list[int], k: int):
        self.data, self.indices, self.k = data, indices, k

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> LayeredVideo:
        return self.data(self.indices[j], self.k)


def batch_indices(cfg: TrainConfig, step: int, num_processes: int = 1, process_index: int = 0
                  ) -> tuple[list[int], int]:
    """The data indices of a step's batch on one process and its number of foregrounds (one K per batch)."""
    k = random.Random(cfg.data.seed * 1_000_003 + step).randint(*cfg.data.num_foregrounds)
    size = cfg.train.batch_size
    first = (step * num_processes + process_index) * size
    return [first + i for i in range(size)], k


class _StepBatches(Dataset):
    """Step -> (K, ClipBatch of its batch): DataLoader workers make the fresh clips of the coming steps while the
    current one trains (every stage without a latent cache)."""

    def __init__(self, data: Any, cfg: TrainConfig, num_processes: int, process_index: int):
        self.data, self.cfg = data, cfg
        self.num_processes, self.process_index = num_processes, process_index

    def __len__(self) -> int:
        return self.cfg.train.steps

    def __getitem__(self, step: int) -> tuple[int, ClipBatch]:
        indices, k = batch_indices(self.cfg, step, self.num_processes, self.process_index)
        return k, clip_batch([self.data(i, k) for i in indices], self.cfg.stage)


def _as_is(item: Any) -> Any:
    """collate_fn for items that are whole batches already (a module function, so workers can unpickle it)."""
    return item


class Trainer:
    def __init__(self, config: TrainConfig, accelerator: Accelerator | None = None):
        self.cfg = config
        self.out = Path(config.output_dir)
        self.accelerator = accelerator or Accelerator(mixed_precision=config.train.mixed_precision)
        torch.manual_seed(config.train.seed)
        self.generator = torch.Generator(self.accelerator.device).manual_seed(
            config.train.seed + 1000 * self.accelerator.process_index)
        self.step = 0
        self.text_encoder = TextEncoder.from_pretrained(config.text_encoder, max_length=config.max_sequence_length)
        if config.stage in TRANSFORMER_STAGES:  # prompts are encoded where the model trains
            self.text_encoder.model.to(self.accelerator.device)
        self._prompt_cache: dict[str, torch.Tensor] = {}
        self._encoded: dict[tuple[int, int], EncodedClip] = {}
        self._prefetched: tuple[int, int, ClipBatch] | None = None  # (step, K, clips) from step_batches
        self._empty_latents: dict[tuple[int, int, int], torch.Tensor] = {}
        self.lora_config = None
        self.data = build_data(config)
        self._build_models()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(f"stage {config.stage} has nothing to train")
        self.trainable_names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        opt = config.train
        self.optimizer = torch.optim.AdamW(trainable, lr=opt.lr, weight_decay=opt.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine_with_warmup(opt.warmup, opt.steps))
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(self.model, self.optimizer,
                                                                              self.scheduler)
        self.ema = {n: p.detach().clone() for n, p in self._named_trainable()} if opt.ema > 0 else None
        self.resume()

    # ------------------------------------------------------------------ models
    def _build_models(self) -> None:
        cfg, init = self.cfg, Path(self.cfg.init) if self.cfg.init else None
        if init is not None and not init.exists():
            raise FileNotFoundError(f"init {init} does not exist; point it at the previous stage's output_dir")
        if init and (init / "vae").is_dir():
            self.vae = AutoencoderKLWan.from_pretrained(init / "vae")
        else:
            self.vae = AutoencoderKLWan(**cfg.model.get("vae", {}))
            if cfg.stage == "vae":
                init_from_scratch(self.vae)
        if cfg.stage == "vae":
            self.model = self.vae.train()
            if cfg.decoder_only:  # the encoder defines the latents; latents_mean/std stay as they are
                self.vae.encoder.requires_grad_(False)
                self.vae.quant_conv.requires_grad_(False)
            return
        self.vae.requires_grad_(False).eval().to(self.accelerator.device)  # the alpha stage's, too
        self.alpha_path = (AlphaPath.from_pretrained(init / "alpha_path") if init and (init / "alpha_path").is_dir()
                           else AlphaPath.for_vae(self.vae, rank=cfg.alpha_lora_rank))
        if cfg.stage == "alpha":
            self.model = self.alpha_path.train()
            if cfg.decoder_only:  # the projection head is the encoder side of the alpha latents
                self.alpha_path.projection.requires_grad_(False)
            return
        self.alpha_path.requires_grad_(False).eval()
        self.alpha_path.to(self.accelerator.device)
        if cfg.stage == "t2v":
            self.model = (WanTransformer3DModel.from_pretrained(init / "transformer")
                          if init and (init / "transformer").is_dir()
                          else WanTransformer3DModel(**cfg.model["transformer"])).train()
            return
        # layered: from a plain or layered Wan transformer; layer modules added with defaults
        if init and (init / "transformer").is_dir():
            base_cfg = dict(LayeredWanTransformer.load_config(init / "transformer"))
            transformer = LayeredWanTransformer.from_config(
                {**base_cfg, "layer_text_embedding": cfg.layer_text_embedding,
                 "max_foregrounds": base_cfg.get("max_foregrounds", 1)})  # grown below if needed
            from ..layer_weights import _load_folder_state

            result = transformer.load_state_dict(_load_folder_state(init / "transformer"), strict=False)
            bad = [k for k in result.missing_keys if not k.startswith(("layer_adaln", "layer_prompt_embedding"))]
            if bad or result.unexpected_keys:
                raise ValueError(f"{init / 'transformer'} does not fit this model (missing {bad[:3]}, "
                                 f"unexpected {result.unexpected_keys[:3]})")
        else:
            transformer = LayeredWanTransformer(**cfg.model["transformer"], max_foregrounds=cfg.max_foregrounds,
                                                layer_text_embedding=cfg.layer_text_embedding)
        transformer.extend_foregrounds(cfg.max_foregrounds)  # stage 3: new rows from fg_1/alpha_1
        if cfg.lora_rank > 0:
            transformer.requires_grad_(False)
            self.lora_config = add_transformer_lora(transformer, cfg.lora_rank)
            transformer.layer_adaln.requires_grad_(True)
            if transformer.layer_prompt_embedding is not None:
                transformer.layer_prompt_embedding.requires_grad_(True)
        if cfg.train.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        self.model = transformer.train()

    def _unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def _named_trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        params = dict(self._unwrapped().named_parameters())
        return [(n, params[n]) for n in self.trainable_names]

    # -------------------------------------------------------------------- data
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """(P,) prompts -> (P, L, D) on the training device. Cached clips' prompts are encoded once and kept;
        fresh clips' are encoded each step (not kept: their number grows without bound)."""
        if not self.cfg.data.cache:
            unique = list(dict.fromkeys(prompts))
            where = {p: i for i, p in enumerate(unique)}
            return self.text_encoder.encode(unique)[[where[p] for p in prompts]].to(self.accelerator.device)
        self._cache_prompts(prompts)
        return torch.stack([self._prompt_cache[p] for p in prompts]).to(self.accelerator.device)

    def _cache_prompts(self, prompts: list[str]) -> None:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            for p, e in zip(missing, self.text_encoder.encode(missing)):
                self._prompt_cache[p] = e.cpu()  # held in host memory, as the clip cache

    def batch_indices(self, step: int) -> tuple[list[int], int]:
        """The data indices of a step's batch on this process and its number of foregrounds."""
        return batch_indices(self.cfg, step, self.accelerator.num_processes, self.accelerator.process_index)

    def step_batches(self, start: int, end: int) -> DataLoader | None:
        """Steps ``start .. end - 1``'s fresh clips, made ahead by ``data.workers`` processes; None with a latent
        cache, where ``loss`` reads cached latents."""
        if self.cfg.data.cache and self.cfg.stage in TRANSFORMER_STAGES:
            return None
        steps = _StepBatches(self.data, self.cfg, self.accelerator.num_processes, self.accelerator.process_index)
        # its own generator: a loader seeds its workers from torch's global one, which the vae stage samples from
        return DataLoader(steps, sampler=range(start, end), batch_size=None, collate_fn=_as_is,
                          num_workers=self.cfg.data.workers, generator=torch.Generator())

    def step_batch(self, step: int) -> tuple[int, ClipBatch]:
        """A step's fresh clips and their foreground count: made ahead by the workers when ``train`` streams them,
        else made here. Either way the same clips."""
        if self._prefetched is not None and self._prefetched[0] == step:
            _, k, made = self._prefetched
            self._prefetched = None
            return k, made
        indices, k = self.batch_indices(step)
        return k, self.clip_batch(indices, k)

    def step_clips(self, step: int) -> list[EncodedClip]:
        """The encoded clips of a step's batch: from the latent cache, or fresh ones encoded in one VAE call."""
        if self.cfg.data.cache:
            indices, k = self.batch_indices(step)
            return [self.encoded(i, k) for i in indices]
        k, clips = self.step_batch(step)
        return self._encode(clips, k)

    def encoded(self, index: int, k: int) -> EncodedClip:
        """A cached clip's latents: with ``data.cache`` = N, clip ``index % N`` is encoded on first use."""
        n = self.cfg.data.cache
        if (index % n, k) not in self._encoded:
            self._encoded[(index % n, k)] = self._encode(self.clip_batch([index % n], k), k)[0]
        return self._encoded[(index % n, k)]

    def clip_batch(self, indices: list[int], k: int) -> ClipBatch:
        return clip_batch([self.data(i, k) for i in indices], self.cfg.stage)

    def _encode(self, clips: ClipBatch, k: int) -> list[EncodedClip]:
        """VAE-encode clips in one batch (a GPU encodes a batch in about the time of one clip)."""
        layout = LayerLayout(k, conditions=self.cfg.conditions)
        dev = self.accelerator.device
        with torch.no_grad():
            if self.cfg.stage == "t2v":
                latents = encode_rgb(self.vae, clips.rgb[:, 0].to(dev))
            else:
                latents = encode_layer_tensors(self.vae, self.alpha_path, clips, layout, dev)
        latents = latents.cpu()  # host memory: a step moves only its batch to the device
        layered = self.cfg.stage == "layered"
        no_alphas = torch.empty(0, dtype=torch.float16)  # stage t2v never reads them
        return [EncodedClip(latents[j:j + 1], clips.alphas[j, :, 0].half() if layered else no_alphas,
                            layout.layer_prompts(p["full"], p["background"], p["foregrounds"]))
                for j, p in enumerate(clips.prompts)]

    def fill_cache(self, batch: int | None = None) -> None:
        """Encode the ``data.cache`` clips of every foreground count, and their prompts, before the first step,
        ``batch`` clips per VAE call (default: ``train.batch_size``, which the stage already fits in memory).
        ``data.workers`` processes make the clips while the VAE encodes."""
        batch = batch or self.cfg.train.batch_size
        n = self.cfg.data.cache
        if not n or self.cfg.stage not in TRANSFORMER_STAGES:
            return
        lo, hi = self.cfg.data.num_foregrounds
        missing = {k: [i for i in range(n) if (i, k) not in self._encoded] for k in range(lo, hi + 1)}
        total = sum(len(indices) for indices in missing.values())
        bar = tqdm(total=total, desc="encode clips", disable=not total or not self.accelerator.is_local_main_process)
        for k, indices in missing.items():
            stack = functools.partial(clip_batch, stage=self.cfg.stage)  # in the workers
            loader = DataLoader(_Clips(self.data, indices, k), batch_size=batch, num_workers=self.cfg.data.workers,
                                collate_fn=stack)
            for start, samples in zip(range(0, len(indices), batch), loader):
                for i, clip in zip(indices[start:start + batch], self._encode(samples, k)):
                    self._encoded[(i, k)] = clip
                bar.update(len(samples.prompts))
        bar.close()
        prompts = list(dict.fromkeys([""] + [p for c in self._encoded.values() for p in c.prompts]))
        for start in range(0, len(prompts), 256):
            self._cache_prompts(prompts[start:start + 256])

    def prompts_of(self, clip: EncodedClip, index: int) -> list[str]:
        """The layer prompts in layout order; all empty for a `prompt_dropout` share (deterministic per step)."""
        if random.Random(self.cfg.train.seed * 7919 + self.step * 131 + index).random() < self.cfg.prompt_dropout:
            return [""] * len(clip.prompts)
        return clip.prompts

    # -------------------------------------------------------------------- loss
    def loss(self, step: int) -> dict[str, torch.Tensor]:
        stage, dev = self.cfg.stage, self.accelerator.device
        if stage == "vae":  # every layer of every clip: full, background, premultiplied foregrounds
            return self._vae_loss(self.step_batch(step)[1].rgb.flatten(0, 1).to(dev))
        if stage == "alpha":
            alphas = self.step_batch(step)[1].alphas.flatten(0, 1).to(dev)
            pred = self.model(self.vae, alphas)
            loss = alpha_reconstruction_loss(pred, alphas, self.cfg.loss.lambda_edge, self.cfg.loss.lambda_struct)
            return {"loss": loss}
        clips = self.step_clips(step)
        k = self.batch_indices(step)[1]
        if stage == "t2v":
            z0 = torch.cat([c.latents for c in clips]).to(dev)
            full = LayerLayout(k).prompt_names.index(FULL)
            context = self.encode_prompts([self.prompts_of(c, i)[full] for i, c in enumerate(clips)])
            t = sample_timesteps(len(clips), self.cfg.loss.logit_mean, self.cfg.loss.logit_std,
                                 self.generator, device=dev)
            z1 = torch.randn(z0.shape, generator=self.generator, device=dev)
            z_t = (1 - t.view(-1, 1, 1, 1, 1)) * z0 + t.view(-1, 1, 1, 1, 1) * z1
            v = self.model(z_t, t * NUM_TRAIN_TIMESTEPS, context).sample
            return {"loss": F.mse_loss(v.float(), (z1 - z0).float())}
        return self._layered_loss(clips, k)

    def _vae_loss(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        x = frames * 2 - 1
        posterior = self.model.encode(x).latent_dist
        z = posterior.sample(generator=None)
        rec = decode_unclamped(self._unwrapped(), z)
        l1 = F.l1_loss(rec, x)
        kl = posterior.kl().mean() / x[0].numel()
        return {"loss": l1 + self.cfg.loss.kl * kl, "l1": l1}

    def _layered_loss(self, clips: list[EncodedClip], k: int) -> dict[str, torch.Tensor]:
        dev = self.accelerator.device
        layout = LayerLayout(k, conditions=self.cfg.conditions)
        z0 = torch.cat([c.latents for c in clips]).to(dev)
        prompts = [p for i, c in enumerate(clips) for p in self.prompts_of(c, i)]
        context = self.encode_prompts(prompts).unflatten(0, (len(clips), layout.num_prompts))  # one copy a step
        t = sample_timesteps(len(clips), self.cfg.loss.logit_mean, self.cfg.loss.logit_std, self.generator,
                             device=dev)
        t_seg = layout.segment_timesteps(t)
        z1 = torch.randn(z0.shape, generator=self.generator, device=dev)  # one shared noise over all segments
        z_t = interpolate(z0, z1, t_seg, layout)
        v = self.model(z_t, t_seg * NUM_TRAIN_TIMESTEPS, context, layout=layout).sample
        alphas = torch.stack([c.alphas for c in clips]).float().to(dev)
        w = self.cfg.loss
        decode = (lambda z: self.alpha_path.decode(self.vae, z, clamp=False)) if w.lambda_mask > 0 else None
        return layered_flow_loss(v, z0, z1, z_t, t_seg, layout, alphas=alphas, decode_alpha=decode,
                                 weights=LossWeights(w.lambda_cons, w.lambda_mask, w.lambda_grad),
                                 empty_latent=self.empty_latent(tuple(alphas.shape[2:])))

    def empty_latent(self, frames_hw: tuple[int, int, int]) -> torch.Tensor:
        """L_cons's empty layer for clips of (T, H, W) frames, encoded once per shape."""
        if frames_hw not in self._empty_latents:
            self._empty_latents[frames_hw] = empty_latent(self.vae, *frames_hw)
        return self._empty_latents[frames_hw]

    # ------------------------------------------------------------------- train
    def train(self, max_steps: int | None = None) -> list[dict[str, float]]:
        """Run until `train.steps` (or `max_steps` more steps); returns the logged losses of this call."""
        cfg = self.cfg.train
        end = cfg.steps if max_steps is None else min(cfg.steps, self.step + max_steps)
        if self.step < end:
            self.fill_cache()
        history: list[dict[str, float]] = []
        bar = tqdm(total=end, initial=self.step, desc=f"train {self.cfg.stage}",
                   disable=not self.accelerator.is_local_main_process)
        log_file = self.out / "loss_log.jsonl"
        self.out.mkdir(parents=True, exist_ok=True)
        loader = self.step_batches(self.step, end)
        batches = iter(loader) if loader is not None else None
        while self.step < end:
            start = time.perf_counter()
            if batches is not None:
                self._prefetched = (self.step, *next(batches))
            losses = self.loss(self.step)
            self.optimizer.zero_grad(set_to_none=True)
            self.accelerator.backward(losses["loss"])
            if cfg.grad_clip > 0:
                self.accelerator.clip_grad_norm_([p for _, p in self._named_trainable()], cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            if self.ema is not None:
                with torch.no_grad():
                    for n, p in self._named_trainable():
                        self.ema[n].lerp_(p.detach(), 1 - cfg.ema)
            record = {"step": self.step, **{k: float(v.detach()) for k, v in losses.items()},
                      "lr": self.scheduler.get_last_lr()[0], "seconds": time.perf_counter() - start}
            history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if self.accelerator.is_main_process and (self.step % cfg.log_every == 0 or self.step == end):
                with log_file.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            if self.step % cfg.checkpoint_every == 0 or self.step == end:
                self.save_checkpoint()
        bar.close()
        if self.step >= cfg.steps:
            self.save_result()
        return history

    # ------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> None:
        """Trainable weights (safetensors), optimizer/scheduler/generator state, step: written atomically."""
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return
        with atomic_directory(self.out / CHECKPOINT, overwrite=True) as tmp:
            save_file({n: p.detach().contiguous().cpu() for n, p in self._named_trainable()},
                      str(tmp / "trainable.safetensors"))
            if self.ema is not None:
                save_file({n: t.contiguous().cpu() for n, t in self.ema.items()}, str(tmp / "ema.safetensors"))
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()},
                       tmp / "state.pt")
            (tmp / "progress.json").write_text(json.dumps({"step": self.step, "stage": self.cfg.stage,
                                                           "config": self.cfg.to_dict()}, indent=2))

    def resume(self) -> None:
        ckpt = self.out / CHECKPOINT
        if not (ckpt / "progress.json").is_file():
            return
        progress = json.loads((ckpt / "progress.json").read_text())
        if progress["stage"] != self.cfg.stage:
            raise ValueError(f"{ckpt} holds a {progress['stage']} checkpoint, not {self.cfg.stage}; use another "
                             "output_dir")
        weights = load_file(str(ckpt / "trainable.safetensors"))
        if sorted(weights) != sorted(self.trainable_names):
            raise ValueError(f"{ckpt} was saved by a different model configuration; use another output_dir")
        with torch.no_grad():
            for n, p in self._named_trainable():
                p.copy_(weights[n])
        if self.ema is not None and (ckpt / "ema.safetensors").is_file():
            self.ema = {k: v.to(self.accelerator.device) for k, v in load_file(str(ckpt / "ema.safetensors")).items()}
        state = torch.load(ckpt / "state.pt", weights_only=True)  # tensors and plain containers only
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = progress["step"]

    def save_result(self) -> Path:
        """The stage's output: the components it has so far, loadable by the next stage (init) or the pipeline."""
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return self.out
        if self.ema is not None:
            with torch.no_grad():
                for n, p in self._named_trainable():
                    p.copy_(self.ema[n])
        stage = self.cfg.stage
        init = Path(self.cfg.init) if self.cfg.init else None
        with atomic_directory(self.out / "final", overwrite=True) as tmp:
            vae = self._unwrapped() if stage == "vae" else self.vae
            if stage == "vae" and not self.cfg.decoder_only:
                set_latent_stats(vae, self.data, self.cfg)
            vae.save_pretrained(tmp / "vae")
            if stage in ("alpha", "t2v", "layered"):
                alpha = self._unwrapped() if stage == "alpha" else self.alpha_path
                alpha.save_pretrained(tmp / "alpha_path")
            if stage == "t2v":
                self._unwrapped().save_pretrained(tmp / "transformer")
            if stage == "layered":
                transformer = self._unwrapped()
                if self.lora_config is not None:
                    export_layer_weights(tmp / "layer_weights.safetensors", transformer, self.alpha_path,
                                         self.lora_config)
                    merge_transformer_lora(transformer)
                transformer.save_pretrained(tmp / "transformer")
                pcfg = PipelineConfig(text_encoder=self.cfg.text_encoder,
                                      max_sequence_length=self.cfg.max_sequence_length,
                                      num_frames=self.cfg.data.frames, height=self.cfg.data.height,
                                      width=self.cfg.data.width, **self.cfg.pipeline)
                meta = {"format": "layert2v-pipeline", "version": 1, "config": asdict(pcfg),
                        "trained_from": str(init) if init else None, "steps": self.step}
                (tmp / PIPELINE_FILE).write_text(json.dumps(meta, indent=2))
            if self.cfg.decoder_only:  # the latents are unchanged: init's transformer and pipeline still fit
                for part in init.iterdir():
                    if (part.is_dir() or part.name == PIPELINE_FILE) and not (tmp / part.name).exists():
                        copy = shutil.copytree if part.is_dir() else shutil.copy2
                        copy(part, tmp / part.name)
        return self.out / "final"


# ---------------------------------------------------------------------- helpers
def cosine_with_warmup(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, C) float [0, 1] -> (1, C, T, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float()


def encode_layers(vae: AutoencoderKLWan, alpha_path: AlphaPath, samples: list[LayeredVideo], layout: LayerLayout,
                  device: torch.device) -> torch.Tensor:
    """GT layers -> layout-concatenated latents (B, C, S*T', H', W'); foregrounds premultiplied (eq. 3)."""
    return encode_layer_tensors(vae, alpha_path, clip_batch(samples, "layered"), layout, device)


def encode_layer_tensors(vae: AutoencoderKLWan, alpha_path: AlphaPath, clips: ClipBatch, layout: LayerLayout,
                         device: torch.device) -> torch.Tensor:
    """:func:`encode_layers` on clips already stacked: one RGB and one alpha encode for the batch."""
    k, batch = layout.num_foregrounds, clips.rgb.shape[0]
    rgb_lat = encode_rgb(vae, clips.rgb.flatten(0, 1).to(device)).unflatten(0, (batch, 2 + k))
    alpha_lat = alpha_path.encode(vae, clips.alphas.flatten(0, 1).to(device)).unflatten(0, (batch, k))
    parts = {"full": rgb_lat[:, 0], "background": rgb_lat[:, 1]}
    for i in range(1, k + 1):
        parts[f"foreground_{i}"] = rgb_lat[:, 1 + i]
        parts[f"alpha_{i}"] = alpha_lat[:, i - 1]
    return layout.concat(parts)


@torch.no_grad()
def set_latent_stats(vae: AutoencoderKLWan, data: Any, cfg: TrainConfig, n: int = 32) -> None:
    """Per-channel latent mean/std over data, registered in the VAE config (Wan's latents_mean/std)."""
    vae.eval()
    mus = []
    for i in range(n):
        s = data(10_000_000 + i, cfg.data.num_foregrounds[1])
        x = torch.cat([to_tensor(s.full), to_tensor(s.background), to_tensor(s.premultiplied(1))])
        mus.append(vae.encode(x.to(vae.device) * 2 - 1).latent_dist.mode().transpose(0, 1).flatten(1))
    mu = torch.cat(mus, dim=1)
    vae.register_to_config(latents_mean=mu.mean(1).tolist(), latents_std=mu.std(1).clamp_min(1e-3).tolist())


class WorldClips:
    """(index, K) -> the procedural world's training clip: the same clip for the same pair, in any process."""

    def __init__(self, data: DataConfig):
        self.d = data

    def __call__(self, index: int, k: int) -> LayeredVideo:
        from ..data.world import generate_clip

        d = self.d
        return generate_clip(d.seed * 1_000_003 + index, num_frames=d.frames, height=d.height, width=d.width,
                             num_foregrounds=k, split="train")


class FolderClips:
    """(index, K) -> the samples with K foregrounds of a dataset folder, in turn."""

    def __init__(self, path: str):
        from ..data.folder import FolderDataset

        self.path, self.dataset = path, FolderDataset(path)
        self.by_k: dict[int, list[int]] = {}
        for i in range(len(self.dataset)):
            self.by_k.setdefault(self.dataset.num_foregrounds(i), []).append(i)

    def __call__(self, index: int, k: int) -> LayeredVideo:
        if k not in self.by_k:
            raise ValueError(f"{self.path} has no sample with {k} foreground(s); set data.num_foregrounds to "
                             f"{sorted(self.by_k)}")
        items = self.by_k[k]
        return self.dataset[items[index % len(items)]]


def build_data(cfg: TrainConfig) -> WorldClips | FolderClips:
    """A picklable function (index, num_foregrounds) -> LayeredVideo for the configured source."""
    return WorldClips(cfg.data) if cfg.data.kind == "world" else FolderClips(cfg.data.path)


def train_from_config(path: str | Path) -> Path:
    """`layert2v train CONFIG.yaml`: run (or resume) the stage and return its output directory."""
    trainer = Trainer(TrainConfig.from_yaml(path))
    trainer.train()
    return trainer.out / "final"

