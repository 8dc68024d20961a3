"""Checks made from arguments and config files alone, before torch, diffusers or any weights are loaded.

Everything here reads JSON and does arithmetic, so a bad ``--frames``, a config of another architecture or a
model too big for this machine is refused in well under a second, with the fix in the message. The pipeline runs
the same checks again, so the Python API refuses the same inputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .formats import LAYER_WEIGHTS_FILE, MODEL_INDEX, PIPELINE, PIPELINE_FILE, model_kind, read_json_object
from .layout import LayerLayout

WAN_TRANSFORMERS = ("LayeredWanTransformer", "WanTransformer3DModel")
# Fields that set a Wan transformer's size: a config lacking any of them is refused, never filled with diffusers'
# defaults (those describe the 14 B model).
TRANSFORMER_SIZE_FIELDS = ("patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels",
                           "text_dim", "freq_dim", "ffn_dim", "num_layers", "rope_max_seq_len")
VAE_SIZE_FIELDS = ("base_dim", "z_dim", "dim_mult", "num_res_blocks", "temperal_downsample")
LOAD_FACTOR = 2  # fp32 weights in the model plus the state dict read from disk while loading
# The built-in model's directory, inside the installed package: what a call without --model uses, and its name in
# code (``LayerT2VPipeline.from_pretrained(layert2v.BUILTIN_MODEL)``), wherever Python runs from.
BUILTIN_MODEL = Path(__file__).parent / "weights" / "world"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")  # weights that load by unpickling (which can run code)


def read_config(path: Path) -> dict[str, Any]:
    """A model's config.json as a dict, or a one-line error naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"no config at {path}; point at a directory saved by `layert2v train` or a Wan2.1-T2V "
                                "diffusers directory")
    return read_json_object(path, "restore the file that came with the weights")


def _missing_or_bad(config: Mapping[str, Any], fields: tuple[str, ...]) -> list[str]:
    def ok(value: Any) -> bool:
        if isinstance(value, list):
            return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value) and bool(value)
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    return [f for f in fields if f not in config or not ok(config[f])]


def check_transformer_config(config: Mapping[str, Any], where: Path | str) -> None:
    """Refuse a transformer config of another architecture or one lacking size fields."""
    name = config.get("_class_name")
    if name not in WAN_TRANSFORMERS:
        raise ValueError(f"{where} holds a {name}, not a Wan transformer; layert2v needs Wan2.1-T2V "
                         "(WanTransformer3DModel) weights")
    bad = _missing_or_bad(config, TRANSFORMER_SIZE_FIELDS)
    if bad:
        raise ValueError(f"{where} lacks or has invalid size field(s) {bad}; layert2v does not guess a model's size: "
                         "restore the config.json that came with the weights")
    if len(config["patch_size"]) != 3:
        raise ValueError(f"{where}: patch_size must list 3 numbers (t, h, w), got {config['patch_size']}")


def check_vae_config(config: Mapping[str, Any], where: Path | str) -> None:
    name = config.get("_class_name")
    if name != "AutoencoderKLWan":
        raise ValueError(f"{where} holds a {name}, not a Wan VAE (AutoencoderKLWan)")
    bad = _missing_or_bad(config, VAE_SIZE_FIELDS[:4])
    if bad or not isinstance(config.get("temperal_downsample"), list):
        raise ValueError(f"{where} lacks or has invalid size field(s) {bad or ['temperal_downsample']}; restore the "
                         "config.json that came with the weights")


def model_configs(model: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(vae config, transformer config) of a saved model directory, both checked."""
    transformer = read_config(model / "transformer" / "config.json")
    check_transformer_config(transformer, model / "transformer")
    vae = read_config(model / "vae" / "config.json")
    check_vae_config(vae, model / "vae")
    return vae, transformer


# ------------------------------------------------------------------------------------------- video shape
def compression(config: Mapping[str, Any]) -> tuple[int, int]:
    """(temporal, spatial) downsampling factors of a VAE config (``vae.config``, or its saved config.json):
    (4, 8) for Wan2.1's VAE, (4, 16) for Wan2.2's, which pixel-shuffles by its ``patch_size`` first; frames map
    as (T - 1) / temporal + 1."""
    spatial = 2 ** (len(config["dim_mult"]) - 1) * (config.get("patch_size") or 1)
    return 2 ** sum(config["temperal_downsample"]), spatial


def video_multiples(vae_config: Mapping[str, Any], transformer_config: Mapping[str, Any]) -> tuple[int, int]:
    """(temporal, spatial): frames must be temporal * k + 1 (the VAE keeps the first frame on its own) and both
    sides multiples of spatial (the VAE's factor times the DiT's patch). Wan2.1: (4, 16); the built-in: (2, 16)."""
    temporal, spatial = compression(vae_config)
    return temporal, spatial * max(transformer_config["patch_size"][1:])


def check_video_shape(num_frames: int, height: int, width: int, temporal: int = 4, spatial: int = 16) -> None:
    """Raise on a shape the model cannot make; the defaults are Wan2.1's (see :func:`video_multiples`)."""
    if num_frames < 1 or (num_frames - 1) % temporal:
        examples = ", ".join(str(temporal * k + 1) for k in (1, 2, 4, 8))
        raise ValueError(f"--frames must be {temporal}k+1 for this model (e.g. {examples}), got {num_frames}")
    if height <= 0 or width <= 0 or height % spatial or width % spatial:
        raise ValueError(f"--size must be a multiple of {spatial} in both sides for this model, got {width}x{height}")


class SequenceTooLong(ValueError):
    """A layered clip longer than the model's RoPE table: ``axis`` ("frames" or "size") is what is too large and
    ``most`` the largest value that fits (frames; pixels per side), below 1 when no frame count fits."""

    def __init__(self, message: str, axis: str, most: int):
        super().__init__(message)
        self.axis, self.most = axis, most


def check_sequence_length(num_foregrounds: int, num_frames: int, height: int, width: int,
                          vae_config: Mapping[str, Any], transformer_config: Mapping[str, Any],
                          fewer: str = "pass fewer --fg") -> None:
    """Refuse a layered sequence longer than the transformer's RoPE table (``rope_max_seq_len`` positions per
    axis): the layers are serialised along time, so the latent frames are multiplied by the layout's segments.
    ``fewer``: the fix when even one frame is too many (the foregrounds came from --fg, or from the prompt)."""
    temporal, spatial = compression(vae_config)
    p_t, p_h, p_w = transformer_config["patch_size"]
    limit = transformer_config["rope_max_seq_len"]
    segments = LayerLayout(num_foregrounds).num_segments
    latent_frames = (num_frames - 1) // temporal + 1
    if segments * latent_frames // p_t > limit:
        most = (limit * p_t // segments - 1) * temporal + 1
        fix = f"pass --frames {most} or fewer" if most >= 1 else fewer
        raise SequenceTooLong(f"{num_frames} frames with {num_foregrounds} foreground(s) make {segments} x "
                              f"{latent_frames} latent frames, more than this model's {limit} positions "
                              f"(rope_max_seq_len); {fix}", "frames", most)
    tokens_h, tokens_w = height // spatial // p_h, width // spatial // p_w
    if max(tokens_h, tokens_w) > limit:
        most = limit * spatial * min(p_h, p_w)
        raise SequenceTooLong(f"--size {width}x{height} is beyond this model's {limit} positions per side "
                              f"(rope_max_seq_len); pass --size of at most {most} on each side", "size", most)


# ------------------------------------------------------------------------------------------- model size
def transformer_parameters(config: Mapping[str, Any]) -> int:
    """Parameters of a (layered) Wan transformer, counted from its config: nothing is built."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    patch = math.prod(config["patch_size"])
    ffn, text, freq = config["ffn_dim"], config["text_dim"], config["freq_dim"]
    attention = 4 * (d * d + d) + 2 * d  # q, k, v, out + RMS norms on q and k
    block = 2 * attention + d * ffn + ffn + ffn * d + d + 6 * d + (2 * d if config.get("cross_attn_norm", True) else 0)
    embedders = (freq * d + d + d * d + d) + (6 * d * d + 6 * d) + (text * d + d + d * d + d)
    io = config["in_channels"] * d * patch + d + d * config["out_channels"] * patch + config["out_channels"] * patch
    k = config.get("max_foregrounds", 1)
    layered = LayerLayout.adaln_rows_needed(k) * 6 * d
    layered += text * LayerLayout(k).num_prompts if config.get("layer_text_embedding") else 0
    layered += d * patch + d if config.get("box_conditioning") else 0  # a one-channel patch embedding
    return config["num_layers"] * block + embedders + io + 2 * d + layered


def vae_parameters(config: Mapping[str, Any]) -> int:
    """Approximate parameters of a Wan VAE (encoder + decoder: 3x3x3 convolutions per residual block), from its
    config; within ~20% of the real count, enough to tell megabytes from gigabytes."""
    dims = [config["base_dim"] * m for m in [1, *config["dim_mult"]]]
    res = config["num_res_blocks"]
    total = 0
    for c_in, c_out in zip(dims, dims[1:]):
        total += 27 * (c_in * c_out + c_out * c_out) + 27 * (res - 1) * 2 * c_out * c_out  # encoder level
        total += 27 * (res + 1) * 2 * c_out * c_out  # decoder level (one more block)
        total += 12 * c_out * c_out  # resampling (2D 3x3 + temporal 3x1x1)
    top = dims[-1]
    total += 2 * (2 * 2 * 27 * top * top + 4 * top * top)  # encoder and decoder middles: 2 blocks + attention
    return total


def available_memory() -> int | None:
    """Bytes the kernel says a new allocation can get (MemAvailable), or None where that is unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits_in_memory(model: Path, vae_config: Mapping[str, Any], transformer_config: Mapping[str, Any],
                         available: int | None = None) -> None:
    """Refuse a model whose float32 weights cannot be loaded in the memory left, saying how much it needs."""
    params = transformer_parameters(transformer_config) + vae_parameters(vae_config)
    need = params * 4 * LOAD_FACTOR
    available = available_memory() if available is None else available
    if available is not None and need > available:
        raise ValueError(f"{model} holds a {params / 1e9:.1f} B-parameter model that needs about {need / 2**30:.1f} "
                          f"GiB of memory to load in float32, but only {available / 2**30:.1f} GiB is free; free "
                          "memory or pass --model with a smaller model (Wan2.1-T2V-1.3B needs about 11 GiB)")


def check_safetensors(path: Path) -> None:
    """Refuse a truncated or foreign .safetensors file from its header alone (8-byte length, JSON, data offsets),
    so a damaged download is reported before torch is even imported."""
    size = path.stat().st_size
    fix = "the file is truncated or damaged: save or download it again"
    with path.open("rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 2 or 8 + length > size:
            raise ValueError(f"cannot read the weights in {path} (no complete safetensors header); {fix}")
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"cannot read the weights in {path} (its header is not JSON); {fix}") from None
    ends = [entry["data_offsets"][1] for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets", ())) == 2]
    if max(ends, default=0) > size - 8 - length:
        raise ValueError(f"cannot read the weights in {path} ({size} bytes, the header describes "
                         f"{8 + length + max(ends)}); {fix}")


def check_no_pickle(folder: Path) -> None:
    """Refuse a component folder whose weights are pickled (``diffusion_pytorch_model.bin`` ...) rather than
    safetensors: layert2v never unpickles, so they are refused before a loader could fall back to them."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise ValueError(f"{folder} holds pickled weights ({', '.join(pickled)}), which layert2v does not load "
                         "(unpickling can run code); convert them to .safetensors where you trust the file (diffusers' "
                         "save_pretrained writes them) or download the safetensors release")


def check_model_directory(model: Path, available: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every check a model directory allows before loading: configs present, valid and of a size that fits, and
    weight files safetensors and complete."""
    vae, transformer = model_configs(model)
    check_fits_in_memory(model, vae, transformer, available)
    for part in ("transformer", "vae", "alpha_path", "text_encoder"):
        check_no_pickle(model / part)
        for weights in sorted((model / part).glob("*.safetensors")):
            check_safetensors(weights)
    return vae, transformer


# ------------------------------------------------------------------------------------------- arguments
SEED_RANGE = (0, 2**63 - 1)


def check_seed(seed: Any) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ValueError(f"--seed must be an integer from {SEED_RANGE[0]} to 2**63-1, got {seed!r}")
    return seed


def check_guidance(guidance: float) -> float:
    if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or guidance < 0:
        raise ValueError(f"--guidance must be a finite number >= 0 (1 turns guidance off), got {guidance!r}")
    return float(guidance)


def check_device(device: str) -> str:
    """Refuse a device string torch would not parse or that this machine lacks (imports torch)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"--device {device!r} is not a device; pass cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine; pass --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                             f"pass cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif parsed.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"--device {device}: MPS is not available on this machine; pass --device cpu")
    elif parsed.type != "cpu":
        raise ValueError(f"--device {device}: layert2v runs on cpu, cuda or mps")
    return device


# ------------------------------------------------------------------------------------------- the model
def check_model_path(model: Path) -> str:
    """:data:`~layert2v.formats.PIPELINE` (a saved layert2v pipeline) or :data:`~layert2v.formats.WAN` (a Wan2.1-T2V
    diffusers directory); a one-line error naming the fix for anything else."""
    if not Path(model).exists():
        raise FileNotFoundError(f"model path {model} does not exist; pass --model with a directory saved by "
                                "`layert2v train` or a Wan2.1-T2V diffusers directory")
    kind = model_kind(model)
    if kind is None:
        raise ValueError(f"{model} is neither a layert2v pipeline (no {PIPELINE_FILE}) nor a Wan2.1 diffusers "
                         f"directory (no {MODEL_INDEX}); pass --model with one")
    return kind


def native_config(model: Path) -> dict:
    """The sampling defaults a saved layert2v pipeline records (empty for a Wan2.1 directory)."""
    file = model / PIPELINE_FILE
    if not file.is_file():
        return {}
    config = read_json_object(file, "re-save the pipeline").get("config")
    return config if isinstance(config, dict) else {}


def check_layer_weights(kind: str, layer_weights: str | Path | None, untrained_layers: bool = False) -> None:
    """The layer weights a model of ``kind`` (:func:`check_model_path`) is given: a Wan2.1 directory needs a
    layer-weights file, or ``untrained_layers`` to run its layer modules as initialised on purpose; a layert2v
    pipeline takes neither. The file is checked from its header (nothing is loaded)."""
    if kind == PIPELINE:
        if layer_weights is not None:
            raise ValueError("--layer-weights applies to a Wan2.1 --model; this model is a complete layert2v "
                             "pipeline: drop --layer-weights")
        if untrained_layers:
            raise ValueError("--untrained-layers applies to a Wan2.1 --model; this model is a trained layert2v "
                             "pipeline: drop --untrained-layers")
        return
    if layer_weights is None:
        if not untrained_layers:
            raise ValueError(f"a Wan2.1 --model needs --layer-weights FILE (the {LAYER_WEIGHTS_FILE} `layert2v "
                             "train` writes; layer_weights= in Python): without it the layer modules are untrained and "
                             "the layers meaningless; pass --untrained-layers (untrained_layers=True) to run it so on "
                             "purpose")
        return
    if untrained_layers:
        raise ValueError("--untrained-layers runs a Wan2.1 --model without layer weights; pass it or "
                         "--layer-weights, not both")
    path = Path(layer_weights)
    if path.is_dir():
        inside = path / LAYER_WEIGHTS_FILE
        fix = f"pass the file in it: --layer-weights {inside}" if inside.is_file() else \
            f"pass the {LAYER_WEIGHTS_FILE} file that `layert2v train` writes in output_dir/final"
        raise IsADirectoryError(f"--layer-weights {path} is a directory, not a layer-weights file; {fix}")
    if not path.is_file():
        raise FileNotFoundError(f"--layer-weights {path} does not exist; pass the {LAYER_WEIGHTS_FILE} file that "
                                "`layert2v train` writes in output_dir/final")
    check_safetensors(path)


@dataclass
class ModelCheck:
    """What the checks made of the model before loading it: its path and the clip's frames and size (None where only
    loading can tell: a Wan2.1 directory has no layert2v.json), the model's frame and size rule and frame rate."""

    model: Path
    frames: int | None
    size: tuple[int, int] | None  # (width, height)
    multiples: tuple[int, int]
    fps: float | None
    configs: tuple[dict, dict]  # the VAE's and the transformer's config.json
    layert2v: bool = False  # a layert2v pipeline directory (it records max_foregrounds)

    def check_foregrounds(self, num_foregrounds: int, derived: bool = False) -> None:
        """The model takes this many foregrounds, and the layered sequence fits its RoPE table. ``derived``: the
        foregrounds were read from the full prompt (no --fg given), which the message then names."""
        vae, transformer = self.configs
        supported = transformer.get("max_foregrounds", 1) if self.layert2v else None
        if supported is not None and num_foregrounds > supported:
            if derived:
                raise ValueError(f"the prompt names {num_foregrounds} objects before 'over', each a foreground layer, "
                                 f"but this model supports at most {supported}; name fewer objects, or give the "
                                 f"layers with --bg and up to {supported} --fg")
            raise ValueError(f"this model supports at most {supported} foreground layer(s), got {num_foregrounds}; "
                             "pass fewer --fg")
        if self.frames is not None and self.size is not None:
            fewer = "name fewer objects before 'over' in the prompt" if derived else "pass fewer --fg"
            check_sequence_length(num_foregrounds, self.frames, self.size[1], self.size[0], vae, transformer, fewer)


def check_model(model: str | Path | None, frames: int | None, size: tuple[int, int] | None,
                layer_weights: str | Path | None = None, untrained_layers: bool = False) -> ModelCheck:
    """Every check of the model (None: the built-in one), its layer weights (:func:`check_layer_weights`) and the
    clip's shape that its config files allow: nothing heavy loads (call :meth:`ModelCheck.check_foregrounds` once
    the foreground count is known). Frames and size left out are the model's own."""
    path = Path(model) if model else BUILTIN_MODEL
    if model is None and not (path / PIPELINE_FILE).is_file():
        raise FileNotFoundError(f"no built-in model at {path}; pass --model DIR (a directory saved by "
                                "`layert2v train`)")
    kind = check_model_path(path)
    vae, transformer = check_model_directory(path)
    check_layer_weights(kind, layer_weights, untrained_layers)
    native = native_config(path)
    temporal, spatial = video_multiples(vae, transformer)
    frames = frames or native.get("num_frames")
    width, height = size or (native.get("width"), native.get("height"))
    if frames is not None or size is not None:
        check_video_shape(frames or 1, height or spatial, width or spatial, temporal, spatial)
    both = (width, height) if width is not None and height is not None else None
    return ModelCheck(path, frames, both, (temporal, spatial), native.get("fps"), (vae, transformer),
                      kind == PIPELINE)
