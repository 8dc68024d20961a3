"""Real-model backends, written against the transformers / diffusers classes, loading from local directories only.

=================  ==========================================================  =================================
backend            classes                                                     weights (a local directory)
=================  ==========================================================  =================================
captions qwen3vl   AutoModelForImageTextToText: Qwen3VLForConditionalGeneration,  Qwen/Qwen3-VL-30B-A3B-Instruct
                   Qwen3VLMoeForConditionalGeneration, Qwen2_5_VLFor...; AutoProcessor   (or any Qwen3-VL / 2.5-VL)
judge qwen3vl      the same, asked the judge prompt of engine.judge
segmentation sam3  Sam3VideoModel + Sam3VideoProcessor                         facebook/sam3
matting vitmatte   VitMatteForImageMatting + AutoImageProcessor                hustvl/vitmatte-small-composition-1k
removal wan_vace   diffusers WanVACEPipeline                                   Wan-AI/Wan2.1-VACE-1.3B-diffusers
=================  ==========================================================  =================================

Nothing is fetched at run time: ``model`` must be a directory holding the model's files; a missing one is a
one-line error before any clip is read (:meth:`check`). Model backends set ``uses_model = True``, so Ray runs
them in an actor pool that loads the weights once per actor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...formats import MODEL_INDEX
from .clip import CAPTION_KEYS, Reject
from .judge import first_json_object, judge_prompt, parse_scores
from .stages import Captioner, Judge, Remover, Segmenter, TrimapMatter, _disk

_MARKERS = ("config.json", MODEL_INDEX)


def require_model(model: str | Path | None, backend: str, example: str) -> Path:
    """The model directory, or a one-line error naming what to download and where to point the config."""
    if not model:
        raise ValueError(f"{backend}: name the local weights directory with model: DIR (e.g. a download of "
                         f"{example})")
    path = Path(model).expanduser()
    if not path.is_dir() or not any((path / m).is_file() for m in _MARKERS):
        raise FileNotFoundError(f"{backend}: no model at {path} (no {' or '.join(_MARKERS)}); download "
                                f"{example} there, nothing is fetched at run time")
    return path


class LocalModel:
    """Mixin of the model backends: their weights come from the local directory named by ``model``."""

    uses_model = True
    NAME = ""
    EXAMPLE = ""  # what to download

    @classmethod
    def check(cls, model: str | None = None, **_: Any) -> None:
        """Called before any clip is read: a missing model directory is a one-line error."""
        require_model(model, cls.NAME, cls.EXAMPLE)


def _device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _dtype(name: str) -> Any:
    import torch

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {name!r}")
    return dtypes[name]


def _pil(frame: np.ndarray) -> Image.Image:
    return Image.fromarray(np.rint(np.clip(frame, 0.0, 1.0) * 255).astype(np.uint8))


def _even_indices(num_frames: int, count: int) -> list[int]:
    return sorted(set(np.linspace(0, num_frames - 1, min(count, num_frames)).round().astype(int).tolist()))


# -------------------------------------------------------------------------------------------- Qwen-VL
CAPTION_SYSTEM = """You annotate videos for a layered video generator. Look at the frames (in time order) and
answer with STRICT JSON only, no prose.

Find the 1 to {k} main subjects. A subject is a single object (not a group), visible through the clip, covering
between 10% and 70% of the frame. Describe:
- "foregrounds": one caption per subject: the subject alone, its appearance and motion;
- "background": the scene without the subjects;
- "full": the whole video, subjects and scene together.
Also report "camera_stable" (true/false) and "video_quality" (integer 0-10).
{names}
Output format: {{"full": "...", "background": "...", "foregrounds": ["..."], "camera_stable": true,
"video_quality": 7}}. If there is no valid subject, answer {{"foregrounds": []}}."""


class _QwenVL:
    """A Qwen-VL chat model on images: frames go in as separate images.

    The tokenizer and image processor are used directly, expanding each image placeholder to its patch count as
    Qwen's processor does, so no video processor (which needs torchvision) is involved.
    """

    IMAGE, START, END = "<|image_pad|>", "<|vision_start|>", "<|vision_end|>"

    def __init__(self, model: str, device: str = "auto", dtype: str = "bfloat16", max_new_tokens: int = 512):
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        path = require_model(model, "qwen3vl", "Qwen/Qwen3-VL-30B-A3B-Instruct")
        self.device = _device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.image_processor = AutoImageProcessor.from_pretrained(path)
        self.template = self.tokenizer.chat_template or _chat_template(path)
        self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=_dtype(dtype)).to(self.device).eval()
        self.max_new_tokens = max_new_tokens

    def ask(self, system: str, content: list[str | Image.Image]) -> str:
        import torch

        parts = [{"type": "image"} if isinstance(c, Image.Image) else {"type": "text", "text": c} for c in content]
        messages = [{"role": "system", "content": [{"type": "text", "text": system}]},
                    {"role": "user", "content": parts}]
        text = self.tokenizer.apply_chat_template(messages, chat_template=self.template, add_generation_prompt=True,
                                                  tokenize=False)
        images = [c for c in content if isinstance(c, Image.Image)]
        vision = self.image_processor(images=images, return_tensors="pt")
        merge = self.image_processor.merge_size ** 2
        pieces = text.split(self.IMAGE)
        if len(pieces) != len(images) + 1:
            raise ValueError(f"the chat template wrote {len(pieces) - 1} image placeholder(s) for {len(images)} images")
        counts = [int(g.prod()) // merge for g in vision["image_grid_thw"]]
        text = pieces[0] + "".join(self.IMAGE * n + rest for n, rest in zip(counts, pieces[1:]))
        tokens = self.tokenizer([text], return_tensors="pt", add_special_tokens=False)
        inputs = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"],
                  "pixel_values": vision["pixel_values"], "image_grid_thw": vision["image_grid_thw"]}
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]


def _chat_template(path: Path) -> str:
    """The chat template a Qwen-VL download keeps beside the processor (chat_template.json or .jinja)."""
    import json

    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text(encoding="utf-8"))["chat_template"]
    raise FileNotFoundError(f"qwen3vl: {path} has no chat template (tokenizer_config.json, chat_template.jinja or "
                            "chat_template.json); is it a complete download?")


class Qwen3VLCaptioner(LocalModel, Captioner):
    """Layer captions from Qwen3-VL (appendix C.1's annotator, asked for the three captions directly).

    `num_frames` evenly spaced frames are shown, resized so the longer side is at most `max_side` pixels.
    """

    NAME, EXAMPLE = "qwen3vl", "Qwen/Qwen3-VL-30B-A3B-Instruct"

    def __init__(self, model: str, num_frames: int = 8, max_side: int = 448, max_foregrounds: int = 1,
                 device: str = "auto", dtype: str = "bfloat16", max_new_tokens: int = 512):
        self.vlm = _QwenVL(model, device, dtype, max_new_tokens)
        self.num_frames, self.max_side, self.max_foregrounds = num_frames, max_side, max_foregrounds


    def caption(self, frames: np.ndarray, object_names: list[str]) -> dict[str, Any]:
        images = []
        for t in _even_indices(len(frames), self.num_frames):
            image = _pil(frames[t])
            image.thumbnail((self.max_side, self.max_side))
            images.append(image)
        names = (f"The subjects are: {', '.join(object_names)}; describe exactly these, in this order."
                 if object_names else "")
        answer = self.vlm.ask(CAPTION_SYSTEM.format(k=self.max_foregrounds, names=names), images)
        return parse_captions(answer)


def parse_captions(text: str) -> dict[str, Any]:
    """The captioner's answer as prompts; raises Reject when it is not usable, keeping its extra fields."""
    data = first_json_object(text)
    if not isinstance(data, dict):
        raise Reject(f"the captioner answered without a JSON object: {text[:120]!r}")
    if data.get("foregrounds") == []:
        raise Reject("the captioner found no valid subject")
    missing = [k for k in CAPTION_KEYS if k not in data]
    if missing:
        raise Reject(f"the captioner's answer lacks {missing}: {text[:120]!r}")
    fgs = data["foregrounds"]
    texts = [data["full"], data["background"], *(fgs if isinstance(fgs, list) else [None])]
    if not all(isinstance(t, str) and t.strip() for t in texts):
        raise Reject("the captioner's captions are not non-empty strings")
    return {"full": data["full"], "background": data["background"], "foregrounds": list(fgs)}


class Qwen3VLJudge(LocalModel, Judge):
    """The paper's quality judge (GPT-4o there) run locally on Qwen3-VL, with the same prompt and rule."""

    NAME, EXAMPLE = "qwen3vl", "Qwen/Qwen3-VL-30B-A3B-Instruct"

    def __init__(self, model: str, device: str = "auto", dtype: str = "bfloat16", max_new_tokens: int = 256):
        self.vlm = _QwenVL(model, device, dtype, max_new_tokens)


    def score(self, panels: dict[int, Image.Image], description: str) -> dict[int, tuple[int, int]]:
        content: list[str | Image.Image] = []
        for t, image in sorted(panels.items()):
            content += [f"Frame {t}:", image]
        return parse_scores(self.vlm.ask(judge_prompt(description), content), sorted(panels))


# ------------------------------------------------------------------------------------------------ SAM 3
class Sam3Segmenter(LocalModel, Segmenter):
    """SAM 3 with each object name as its text prompt, tracked through the clip (Sam3VideoModel).

    Each name keeps its highest-scoring object; `threshold` is the detection score below which it is dropped.
    """

    NAME, EXAMPLE = "sam3", "facebook/sam3"

    @classmethod
    def check(cls, model: str | None = None, **_: Any) -> None:
        super().check(model)
        try:
            import torchvision  # noqa: F401  - Sam3Model's roi_align and Sam3's processors need it
        except Exception as e:
            raise ValueError(f"sam3 needs a working torchvision matching your torch ({type(e).__name__}: {e}); "
                             "pip install torchvision") from e

    def __init__(self, model: str, device: str = "auto", dtype: str = "float32", threshold: float = 0.5):
        from transformers import Sam3VideoModel, Sam3VideoProcessor

        path = require_model(model, "sam3", "facebook/sam3")
        self.device, self.dtype, self.threshold = _device(device), _dtype(dtype), threshold
        self.processor = Sam3VideoProcessor.from_pretrained(path)
        self.model = Sam3VideoModel.from_pretrained(path, dtype=self.dtype).to(self.device).eval()


    def segment(self, frames: np.ndarray, object_names: list[str]) -> list[np.ndarray]:
        import torch

        video = [_pil(f) for f in frames]
        session = self.processor.init_video_session(video=video, inference_device=self.device, dtype=self.dtype)
        session = self.processor.add_text_prompt(session, list(object_names))
        masks = {name: np.zeros(frames.shape[:3], bool) for name in object_names}
        best: dict[str, tuple[int, float]] = {}  # name -> (object id, score), fixed on first detection
        with torch.inference_mode():
            for out in self.model.propagate_in_video_iterator(inference_session=session):
                result = self.processor.postprocess_outputs(session, out)
                ids = result["object_ids"].tolist()
                scores = dict(zip(ids, result["scores"].tolist()))
                frame_masks = dict(zip(ids, result["masks"].cpu().numpy()))
                for name in object_names:
                    candidates = [i for i in result["prompt_to_obj_ids"].get(name, []) if scores.get(i, 0.0)
                                  >= self.threshold]
                    if name not in best and candidates:
                        top = max(candidates, key=lambda i: scores[i])
                        best[name] = (top, scores[top])
                    if name in best and best[name][0] in frame_masks:
                        masks[name][out.frame_idx] = frame_masks[best[name][0]]
        missing = [n for n in object_names if n not in best]
        if missing:
            raise Reject(f"SAM 3 found no {missing} scoring >= {self.threshold}")
        return [masks[n] for n in object_names]


# ---------------------------------------------------------------------------------------------- VitMatte
class VitMatteMatter(LocalModel, TrimapMatter):
    """VitMatte on a trimap band of `band` pixels around each mask, frame by frame; foreground colours from
    pymatting's estimate_foreground_ml (VitMatte predicts alpha only)."""

    NAME, EXAMPLE = "vitmatte", "hustvl/vitmatte-small-composition-1k"

    def __init__(self, model: str, band: int = 8, device: str = "auto", dtype: str = "float32"):
        from transformers import AutoImageProcessor, VitMatteForImageMatting

        path = require_model(model, "vitmatte", "hustvl/vitmatte-small-composition-1k")
        self.device, self.dtype, self.band = _device(device), _dtype(dtype), band
        self.processor = AutoImageProcessor.from_pretrained(path)
        self.model = VitMatteForImageMatting.from_pretrained(path, dtype=self.dtype).to(self.device).eval()


    def alpha(self, image: np.ndarray, tri: np.ndarray) -> np.ndarray:
        import torch

        h, w = tri.shape
        inputs = self.processor(images=_pil(image), trimaps=Image.fromarray(np.rint(tri * 255).astype(np.uint8)),
                                return_tensors="pt")
        with torch.inference_mode():
            alphas = self.model(pixel_values=inputs["pixel_values"].to(self.device, self.dtype)).alphas
        alpha = alphas[0, 0, :h, :w].float().cpu().numpy()  # the processor pads bottom/right
        return np.where(tri == 1, 1.0, np.where(tri == 0, 0.0, np.clip(alpha, 0.0, 1.0)))


# --------------------------------------------------------------------------------------------- Wan VACE
class WanVACERemover(LocalModel, Remover):
    """Wan2.1 VACE (diffusers WanVACEPipeline) inpainting the masks dilated by `dilate` pixels, prompted with
    the background caption; pixels outside the dilated masks keep the input. The clip is padded to VACE's
    shape rules (sides a multiple of 16, 4k+1 frames) and cropped back."""

    NAME, EXAMPLE = "wan_vace", "Wan-AI/Wan2.1-VACE-1.3B-diffusers"
    NEGATIVE = "person, object, subject, ghosting, blurry blob, artifacts, distortion"

    def __init__(self, model: str, steps: int = 30, guidance: float = 5.0, dilate: int = 8, seed: int = 0,
                 negative_prompt: str = NEGATIVE, device: str = "auto", dtype: str = "bfloat16"):
        from diffusers import WanVACEPipeline

        path = require_model(model, "wan_vace", "Wan-AI/Wan2.1-VACE-1.3B-diffusers")
        self.device = _device(device)
        self.pipe = WanVACEPipeline.from_pretrained(path, dtype=_dtype(dtype)).to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.steps, self.guidance, self.dilate, self.seed, self.negative = steps, guidance, dilate, seed, \
            negative_prompt


    def remove(self, frames: np.ndarray, masks: list[np.ndarray], caption: str = "") -> np.ndarray:
        import torch
        from scipy import ndimage

        covered = np.zeros(frames.shape[:3], bool)
        for m in masks:
            covered |= m
        if self.dilate > 0:
            covered = np.stack([ndimage.binary_dilation(c, _disk(self.dilate)) for c in covered])
        t, h, w, _ = frames.shape
        pt, ph, pw = (-(t - 1)) % 4, (-h) % 16, (-w) % 16
        video = np.pad(frames, ((0, pt), (0, ph), (0, pw), (0, 0)), mode="edge")
        mask = np.pad(covered, ((0, pt), (0, ph), (0, pw)), mode="edge")
        out = self.pipe(prompt=caption, negative_prompt=self.negative, video=[_pil(f) for f in video],
                        mask=[Image.fromarray((m * 255).astype(np.uint8)) for m in mask], height=h + ph,
                        width=w + pw, num_frames=t + pt, num_inference_steps=self.steps,
                        guidance_scale=self.guidance, generator=torch.Generator().manual_seed(self.seed),
                        output_type="np").frames[0]
        filled = np.asarray(out, np.float32)[:t, :h, :w]
        return np.where(covered[..., None], filled, frames).astype(np.float32)
