"""LayeredVideo: the full video, a clean background, K foreground layers and their alpha mattes.

Arrays are float32 in [0, 1], frames first: RGB layers are (T, H, W, 3), alphas (T, H, W).
Foregrounds are stored *straight* (not premultiplied); compositing multiplies by alpha.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .io.layered_dir import LayerSource, read_layers, save_layered_video
from .layout import BACKGROUND, LayerLayout


def over(foreground: np.ndarray, alpha: np.ndarray, under: np.ndarray) -> np.ndarray:
    """The over operator with a straight foreground: fg * a + under * (1 - a)."""
    a = alpha[..., None]
    return foreground * a + under * (1.0 - a)


@dataclass
class LayeredVideo:
    full: np.ndarray
    background: np.ndarray
    foregrounds: list[np.ndarray]
    alphas: list[np.ndarray]
    fps: int = 16
    prompts: dict[str, Any] = field(default_factory=dict)  # {"full": str, "background": str, "foregrounds": [str]}
    seed: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # steps, guidance, model id, timings ... (manifest)
    # layer name -> the saved files it was read from (set by load, carried by the editing functions); not saved
    sources: dict[str, LayerSource] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.foregrounds) == 0 or len(self.foregrounds) != len(self.alphas):
            raise ValueError(
                f"need K >= 1 foregrounds and as many alphas, got {len(self.foregrounds)} and {len(self.alphas)}"
            )
        shape = self.full.shape
        if len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"full video must be (T, H, W, 3), got {shape}")
        for name, arr in [(BACKGROUND, self.background), *((LayerLayout.foreground_name(i), f) for i, f in
                                                             enumerate(self.foregrounds, 1))]:
            if arr.shape != shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {shape} like the full video")
        for i, a in enumerate(self.alphas):
            if a.shape != shape[:3]:
                raise ValueError(f"{LayerLayout.alpha_name(i + 1)} has shape {a.shape}, expected {shape[:3]}")
        self.full = np.asarray(self.full, dtype=np.float32)
        self.background = np.asarray(self.background, dtype=np.float32)
        self.foregrounds = [np.asarray(f, dtype=np.float32) for f in self.foregrounds]
        self.alphas = [np.asarray(a, dtype=np.float32) for a in self.alphas]

    @property
    def num_foregrounds(self) -> int:
        return len(self.foregrounds)

    @property
    def num_frames(self) -> int:
        return self.full.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.full.shape[2], self.full.shape[1]

    @property
    def layout(self) -> LayerLayout:
        return LayerLayout(self.num_foregrounds)

    def premultiplied(self, k: int) -> np.ndarray:
        """Foreground k (1-based) premultiplied by its alpha: what the RGB VAE encodes."""
        return self.foregrounds[k - 1] * self.alphas[k - 1][..., None]

    def composite(self, background: np.ndarray | None = None) -> np.ndarray:
        """Foregrounds over the background (or a replacement background) in layer order, bottom to top."""
        out = self.background if background is None else np.asarray(background, dtype=np.float32)
        if out.shape != self.full.shape:
            raise ValueError(f"background has shape {out.shape}, expected {self.full.shape}")
        for k in self.layout.composite_order:
            out = over(self.foregrounds[k - 1], self.alphas[k - 1], out)
        return np.clip(out, 0.0, 1.0)

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write the layer files, preview and manifest into `directory` (atomically). See docs/OUTPUT.md."""
        return save_layered_video(self, directory, overwrite=overwrite)

    @classmethod
    def load(cls, directory: str | Path) -> LayeredVideo:
        """Read a directory written by :meth:`save` (recording in :attr:`sources` the files each layer came from)."""
        return cls(**read_layers(directory))
