"""The VLM judge's prompt and answer format (appendix C.2), and the judge for any OpenAI-compatible endpoint.

The judge sees one strip per key frame, [original | mask | background | foreground on black], and answers JSON
``{"<frame>": [bg_score, fg_score], ...}`` with integer scores 0..10. The local Qwen3-VL judge
(:class:`layert2v.data.engine.backends.Qwen3VLJudge`) asks the same question.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from PIL import Image

from .clip import Reject
from .stages import Judge

JUDGE_SYSTEM = """You check the training data of a layered video generator, where each video is split into a
background layer [BG] and a foreground layer [FG]. Scene: {description}

Each image you get is four panels side by side, left to right: the original frame, the foreground mask (white is
the object), the background with the object removed [BG], and the extracted object on black [FG].

Background score: look where the mask is white. A smudge or cloud in that spot with the object's colour is
leakage or ghosting: score 0-3. So are floating blobs, melted textures, or face-like shapes inside the masked
region. Blurry, smeared or visibly cloned texture without ghosts: 4-6. Clean: 7-9 (dark, geometrically plausible
cast shadows on surfaces are fine, as are real props). Flawless: 10.
Foreground score: compare the extracted object with the original. Unrecognisable or very noisy: 0-3. Blurry or
with rough edges: 4-6. Clear and recognisable, perhaps with slight halos: 7-9. Perfect: 10.

Answer with a JSON object only. Keys: the frame indices given (as strings). Values: a list of exactly two
integers, [background_score, foreground_score]. Example: {{"0": [9, 8], "10": [2, 9]}}"""


def judge_prompt(description: str) -> str:
    return JUDGE_SYSTEM.format(description=description)


def first_json_object(text: str) -> Any:
    """The first JSON object in a model's answer (models wrap JSON in prose or code fences); None if none."""
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch == "{":
            try:
                return decoder.raw_decode(text, i)[0]
            except json.JSONDecodeError:
                continue
    return None


def parse_scores(text: str, frames: list[int]) -> dict[int, tuple[int, int]]:
    """The judge's answer as ``{frame: (bg, fg)}``; raises Reject when it is not the asked-for JSON."""
    data = first_json_object(text)
    if not isinstance(data, dict):
        raise Reject(f"the judge answered without a JSON object: {text[:120]!r}")
    scores = {}
    for t in frames:
        value = data.get(str(t))
        if value is None:
            continue  # an unscored key frame does not qualify
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)):
            raise Reject(f"the judge's score for frame {t} is {value!r}, not [bg_score, fg_score]")
        scores[t] = (int(value[0]), int(value[1]))
    return scores


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class OpenAIJudge(Judge):
    """Any endpoint speaking OpenAI's chat-completions API (OpenAI, vLLM, SGLang, Ollama, ...).

    Args:
        base_url: e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
        model: the model name the endpoint serves (the paper used ``gpt-4o``).
        api_key_env: the environment variable holding the key (keys never go into a config file); None for
            endpoints without authentication.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY", timeout: float = 120.0,
                 retries: int = 2, max_tokens: int = 512):
        self.check(base_url=base_url, api_key_env=api_key_env)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout, self.retries, self.max_tokens = model, timeout, retries, max_tokens
        self.api_key = os.environ.get(api_key_env) if api_key_env else None

    @staticmethod
    def check(base_url: str | None = None, api_key_env: str | None = "OPENAI_API_KEY", **_: Any) -> None:
        """Fail before any clip is read when the endpoint cannot be used."""
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge: base_url must be an http(s) URL like http://127.0.0.1:8000/v1, got "
                             f"{base_url!r}")
        if api_key_env and not os.environ.get(api_key_env):
            raise ValueError(f"judge: environment variable {api_key_env} is not set; export the API key or set "
                             "api_key_env: null for an endpoint without one")

    def request(self, panels: dict[int, Image.Image], description: str) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for t, image in sorted(panels.items()):
            content.append({"type": "text", "text": f"Frame {t}:"})
            content.append({"type": "image_url", "image_url": {"url": png_data_url(image)}})
        return {"model": self.model, "temperature": 0, "max_tokens": self.max_tokens,
                "messages": [{"role": "system", "content": judge_prompt(description)},
                             {"role": "user", "content": content}]}

    def score(self, panels: dict[int, Image.Image], description: str) -> dict[int, tuple[int, int]]:
        body = json.dumps(self.request(panels, description)).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as response:
                    answer = json.loads(response.read().decode())
                break
            except urllib.error.HTTPError as e:
                if e.code < 500 and e.code != 429 or attempt == self.retries:
                    raise RuntimeError(f"judge endpoint {self.url} answered HTTP {e.code}: "
                                       f"{e.read()[:200].decode(errors='replace')}") from e
            except (urllib.error.URLError, TimeoutError) as e:
                if attempt == self.retries:
                    raise RuntimeError(f"judge endpoint {self.url} unreachable: {e}") from e
            time.sleep(2**attempt)
        try:
            text = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise RuntimeError(f"judge endpoint {self.url} returned no choices[0].message.content") from e
        return parse_scores(text, sorted(panels))
