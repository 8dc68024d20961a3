"""Copy a trained pipeline into the package as the built-in model, weights in fp16 to keep the repo lean."""

import sys

import torch

from layert2v.pipeline import LayerT2VPipeline


def main(source: str, target: str) -> None:
    pipe = LayerT2VPipeline.from_pretrained(source)
    pipe.transformer.to(torch.float16)
    pipe.vae.to(torch.float16)
    pipe.alpha_path.to(torch.float16)
    pipe.save_pretrained(target)
    print(f"exported {source} -> {target}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
