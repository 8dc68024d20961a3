"""Copy a trained pipeline into the package as the built-in model, weights in fp16 to keep the repo lean.
The target's MODEL_CARD.md is kept (saving replaces the whole directory)."""

import sys
from pathlib import Path

import torch

from layert2v.pipeline import LayerT2VPipeline

CARD = "MODEL_CARD.md"


def main(source: str, target: str) -> None:
    card = Path(target) / CARD
    card_text = card.read_text() if card.is_file() else None
    pipe = LayerT2VPipeline.from_pretrained(source)
    pipe.transformer.to(torch.float16)
    pipe.vae.to(torch.float16)
    pipe.alpha_path.to(torch.float16)
    pipe.save_pretrained(target)
    if card_text is not None:
        card.write_text(card_text)
    print(f"exported {source} -> {target}" + (f" (kept {CARD})" if card_text is not None else ""))


if __name__ == "__main__":
    main(*sys.argv[1:3])
