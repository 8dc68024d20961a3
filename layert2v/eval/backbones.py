"""The networks behind the VBench dimensions, loaded from a local weights directory.

Nothing is downloaded. ``--weights DIR`` points at a folder laid out as below (docs/EVALUATION.md); a
backbone whose sub-folder is absent is *skipped* and its dimension reported as skipped with the reason.
A sub-folder that exists but is malformed is an error: the user meant to provide it.

    DIR/dino_vitb16/   transformers ViTModel export of facebook/dino-vitb16        -> Subject Consistency
    DIR/clip_vitb32/   transformers CLIPModel export of openai/clip-vit-base-patch32 -> Background Consistency
    DIR/clip_vitl14/   transformers CLIPModel export of openai/clip-vit-large-patch14 -+
    DIR/aesthetic/sa_0_4_vit_l_14_linear.pth  LAION head {weight (1, D), bias (1,)}  -+-> Aesthetic Quality
    DIR/raft/raft.pt2  torch.export of RAFT: (image1, image2) -> flow                -> Dynamic Degree
    DIR/amt/amt_s.pt2  torch.export of AMT-S: (frame0, frame1) -> middle frame        -> Motion Smoothness
    DIR/viclip/vision.pt2, text.pt2 + CLIP tokenizer files                            -> Text Alignment

RAFT, AMT and ViCLIP have no transformers port, so they are taken as ``torch.export`` programs
(``torch.export.save``) with the signatures above; exporting the authors' model is a one-off step,
with height and width marked dynamic for RAFT and AMT.
Preprocessing follows VBench: 8-bit frames, bicubic resize of the short side to 224, CLIP centre crop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .vbench import AestheticScorer, FlowEstimator, FrameInterpolator, ImageFeatureExtractor, VideoTextEncoder

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
AESTHETIC_FILE = "sa_0_4_vit_l_14_linear.pth"
CHUNK = 16  # frames per forward pass
NEEDS = {  # dimension -> the backbone it needs, for skip reasons
    "subject_consistency": "needs DINO ViT-B/16",
    "background_consistency": "needs CLIP ViT-B/32",
    "aesthetic_quality": "needs CLIP ViT-L/14 and the LAION aesthetic head",
    "dynamic_degree": "needs RAFT",
    "motion_smoothness": "needs AMT-S",
    "text_alignment": "needs ViCLIP",
}


@dataclass
class Backbones:
    """What could be loaded; `skipped` maps a dimension key to the reason it cannot be computed."""

    dino: ImageFeatureExtractor | None = None
    clip: ImageFeatureExtractor | None = None
    aesthetic: AestheticScorer | None = None
    flow: FlowEstimator | None = None
    interpolator: FrameInterpolator | None = None
    video_text: VideoTextEncoder | None = None
    skipped: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------- preprocessing
def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _pixels(frames: np.ndarray, size: int, mean: tuple, std: tuple, crop: bool, device: str) -> Any:
    """(T, H, W, 3) float [0, 1] -> normalised (T, 3, h, w) tensor, short side resized to `size`."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.round(np.clip(frames, 0, 1) * 255.0).astype(np.float32)).permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    x = F.interpolate(x, size=new, mode="bicubic", align_corners=False, antialias=True).clamp(0, 255)
    if crop:
        top, left = (new[0] - size) // 2, (new[1] - size) // 2
        x = x[..., top : top + size, left : left + size]
    x = x / 255.0
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.to(device)


def _features(output: Any) -> Any:
    """CLIPModel.get_image_features returns a tensor (transformers 4) or an output object (5)."""
    return output if hasattr(output, "ndim") else output.pooler_output


# ------------------------------------------------------------------------------------------ backbones
class DinoFeatures:
    """DINO ViT-B/16 CLS embeddings (VBench's subject-consistency features; no centre crop)."""

    def __init__(self, directory: Path, device: str):
        from transformers import ViTModel

        self.device = device
        self.model = ViTModel.from_pretrained(directory, add_pooling_layer=False).to(device).eval()

    def encode(self, frames: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(frames), CHUNK):
                x = _pixels(frames[i : i + CHUNK], 224, IMAGENET_MEAN, IMAGENET_STD, False, self.device)
                hidden = self.model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
                out.append(hidden[:, 0].float().cpu().numpy())
        return np.concatenate(out)


class ClipFeatures:
    """CLIP image embeddings (projected), with CLIP's resize + centre crop."""

    def __init__(self, directory: Path, device: str):
        from transformers import CLIPModel

        self.device = device
        self.model = CLIPModel.from_pretrained(directory).to(device).eval()

    def encode(self, frames: np.ndarray) -> np.ndarray:
        import torch

        size = self.model.config.vision_config.image_size
        out = []
        with torch.no_grad():
            for i in range(0, len(frames), CHUNK):
                x = _pixels(frames[i : i + CHUNK], size, CLIP_MEAN, CLIP_STD, True, self.device)
                out.append(_features(self.model.get_image_features(pixel_values=x)).float().cpu().numpy())
        return np.concatenate(out)


class LaionAesthetic:
    """LAION aesthetic predictor v1: linear head on L2-normalised CLIP ViT-L/14 image embeddings."""

    def __init__(self, clip: ClipFeatures, head_file: Path):
        import torch

        state = torch.load(head_file, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or set(state) != {"weight", "bias"}:
            raise ValueError(f"{head_file} is not a linear-head state dict with 'weight' and 'bias'")
        self.clip = clip
        self.weight = state["weight"].float().numpy().reshape(-1)
        self.bias = float(state["bias"].float().reshape(-1)[0])

    def score(self, frames: np.ndarray) -> np.ndarray:
        feats = self.clip.encode(frames).astype(np.float64)
        if feats.shape[1] != self.weight.size:
            raise ValueError(f"aesthetic head expects {self.weight.size}-d CLIP features, got {feats.shape[1]}")
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        return feats @ self.weight + self.bias


def _as_tensor(output: Any) -> Any:
    """Exported models may return a tensor, or a tuple/list whose last entry is the final estimate."""
    return output[-1] if isinstance(output, (tuple, list)) else output


def _exported(file: Path, device: str) -> Any:
    """A torch.export program as a callable module on `device`."""
    import torch

    try:
        return torch.export.load(str(file)).module().to(device)
    except Exception as e:  # a wrong file type surfaces as many different errors
        raise ValueError(f"cannot load {file} as a torch.export program (torch.export.save): {e}") from e


class ExportedFlow:
    """RAFT: (image1, image2) (1, 3, H, W) 0..255 frames padded to a multiple of 8 -> (1, 2, H, W) flow."""

    def __init__(self, file: Path, device: str):
        self.device = device
        self.model = _exported(file, device)

    def flow(self, frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        h, w = frame0.shape[:2]
        ph, pw = -h % 8, -w % 8
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)

        def prep(frame: np.ndarray) -> Any:
            x = torch.from_numpy(np.round(np.clip(frame, 0, 1) * 255.0).astype(np.float32))
            return F.pad(x.permute(2, 0, 1)[None], pad, mode="replicate").to(self.device)

        with torch.no_grad():
            flow = _as_tensor(self.model(prep(frame0), prep(frame1)))
        flow = flow[0, :, pad[2] : pad[2] + h, pad[0] : pad[0] + w]
        return flow.permute(1, 2, 0).float().cpu().numpy()


class ExportedInterpolator:
    """AMT-S: (frame0, frame1) -> the middle frame, all (1, 3, H, W) in [0, 1]."""

    def __init__(self, file: Path, device: str):
        self.device = device
        self.model = _exported(file, device)

    def interpolate(self, frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
        import torch

        def prep(frame: np.ndarray) -> Any:
            x = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32))
            return x.permute(2, 0, 1)[None].to(self.device)

        with torch.no_grad():
            middle = _as_tensor(self.model(prep(frame0), prep(frame1)))
        return middle[0].clamp(0, 1).permute(1, 2, 0).float().cpu().numpy()


class ExportedViClip:
    """ViCLIP as two programs: vision.pt2 ((1, 8, 3, 224, 224) CLIP-normalised) and text.pt2 ((1, 32) token ids).

    Tokens come from the CLIP BPE tokenizer saved next to them, zero-padded like CLIP's own tokenizer.
    """

    num_frames = 8
    context_length = 32

    def __init__(self, directory: Path, device: str):
        from transformers import CLIPTokenizer

        self.device = device
        self.vision = _exported(directory / "vision.pt2", device)
        self.text = _exported(directory / "text.pt2", device)
        self.tokenizer = CLIPTokenizer.from_pretrained(directory)

    def encode_video(self, frames: np.ndarray) -> np.ndarray:
        import torch

        x = _pixels(frames, 224, CLIP_MEAN, CLIP_STD, True, self.device)[None]
        with torch.no_grad():
            return _as_tensor(self.vision(x))[0].float().cpu().numpy()

    def encode_text(self, text: str) -> np.ndarray:
        import torch

        ids = self.tokenizer(text, truncation=True, max_length=self.context_length)["input_ids"]
        tokens = torch.zeros(1, self.context_length, dtype=torch.long)
        tokens[0, : len(ids)] = torch.tensor(ids)
        with torch.no_grad():
            return _as_tensor(self.text(tokens.to(self.device)))[0].float().cpu().numpy()


# ----------------------------------------------------------------------------------------- the loader
def _hf_export(directory: Path, what: str) -> None:
    """A transformers export needs config.json and a weights file; say exactly what is missing."""
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} has no config.json: save {what} there with save_pretrained()")
    if not any((directory / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")) and not any(
        directory.glob("model-*.safetensors")
    ):
        raise FileNotFoundError(f"{directory} has no model.safetensors: save {what} there with save_pretrained()")


def _file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} exists but {path.name} is missing: put {what} there")
    return path


def load_backbones(weights: str | Path | None, device: str | None = None) -> Backbones:
    """Load every backbone whose sub-folder exists under `weights`; record a skip reason for the rest."""
    found = Backbones()
    if weights is None:
        found.skipped = {dim: f"no --weights directory given ({needs})" for dim, needs in NEEDS.items()}
        return found
    root = Path(weights)
    if not root.is_dir():
        raise FileNotFoundError(f"--weights {root} is not a directory; see docs/EVALUATION.md for its layout")

    def absent(sub: str, label: str) -> str | None:
        return None if (root / sub).is_dir() else f"no {label} weights in {root / sub}"

    if (reason := absent("dino_vitb16", "DINO ViT-B/16")) is None:
        _hf_export(root / "dino_vitb16", "facebook/dino-vitb16 (ViTModel)")
        found.dino = DinoFeatures(root / "dino_vitb16", device or _device())
    else:
        found.skipped["subject_consistency"] = reason

    if (reason := absent("clip_vitb32", "CLIP ViT-B/32")) is None:
        _hf_export(root / "clip_vitb32", "openai/clip-vit-base-patch32 (CLIPModel)")
        found.clip = ClipFeatures(root / "clip_vitb32", device or _device())
    else:
        found.skipped["background_consistency"] = reason

    reason = absent("clip_vitl14", "CLIP ViT-L/14") or absent("aesthetic", "LAION aesthetic head")
    if reason is None:
        _hf_export(root / "clip_vitl14", "openai/clip-vit-large-patch14 (CLIPModel)")
        head = _file(root / "aesthetic" / AESTHETIC_FILE, "LAION's linear head (state dict weight/bias)")
        found.aesthetic = LaionAesthetic(ClipFeatures(root / "clip_vitl14", device or _device()), head)
    else:
        found.skipped["aesthetic_quality"] = reason

    if (reason := absent("raft", "RAFT")) is None:
        found.flow = ExportedFlow(_file(root / "raft" / "raft.pt2", "a torch.export RAFT program"), device or _device())
    else:
        found.skipped["dynamic_degree"] = reason

    if (reason := absent("amt", "AMT-S")) is None:
        amt = _file(root / "amt" / "amt_s.pt2", "a torch.export AMT-S program")
        found.interpolator = ExportedInterpolator(amt, device or _device())
    else:
        found.skipped["motion_smoothness"] = reason

    if (reason := absent("viclip", "ViCLIP")) is None:
        for name, what in [("vision.pt2", "the ViCLIP vision program"), ("text.pt2", "the ViCLIP text program"),
                           ("vocab.json", "the CLIP tokenizer (CLIPTokenizer.save_pretrained)")]:
            _file(root / "viclip" / name, what)
        found.video_text = ExportedViClip(root / "viclip", device or _device())
    else:
        found.skipped["text_alignment"] = reason
    return found
