"""Time one denoising step of LayeredWanTransformer against plain WanTransformer3DModel at the same token count.

The layered model sees 2 + 2K segments of T' latent frames with one prompt per RGB layer (routed); plain Wan sees
the same number of latent frames with one prompt. Prints both medians and their ratio (the layer overhead).

    python benchmarks/step_overhead.py                      # small model on CPU
    python benchmarks/step_overhead.py --model wan-1.3b --device cuda --dtype bf16 --frames 41 --size 672x384
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import WanTransformer3DModel

from layert2v.layout import LayerLayout
from layert2v.models.configs import UMT5_DIM, UMT5_SEQUENCE_LENGTH, WAN21_T2V_1_3B_TRANSFORMER
from layert2v.models.transformer import LayeredWanTransformer

SMALL = {**WAN21_T2V_1_3B_TRANSFORMER, "num_attention_heads": 4, "attention_head_dim": 32, "ffn_dim": 512,
         "num_layers": 4, "text_dim": 384}


def timed(fn, repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("small", "wan-1.3b"), default="small")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--frames", type=int, default=17, help="frames per layer (4k+1)")
    p.add_argument("--size", default="128x128", help="WIDTHxHEIGHT per layer")
    p.add_argument("--foregrounds", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    config = WAN21_T2V_1_3B_TRANSFORMER if args.model == "wan-1.3b" else SMALL
    text_len, text_dim = (UMT5_SEQUENCE_LENGTH, UMT5_DIM) if args.model == "wan-1.3b" else (32, 384)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    width, height = (int(v) for v in args.size.split("x"))
    layout = LayerLayout(args.foregrounds)
    t_lat = (args.frames - 1) // 4 + 1
    torch.manual_seed(0)
    plain = WanTransformer3DModel(**config).to(args.device, dtype).eval()
    layered = LayeredWanTransformer.from_config({**plain.config, "max_foregrounds": args.foregrounds})
    layered.load_state_dict(plain.state_dict(), strict=False)
    layered.to(args.device, dtype).eval()

    x = torch.randn(1, 16, layout.num_segments * t_lat, height // 8, width // 8, device=args.device, dtype=dtype)
    prompts = torch.randn(1, layout.num_prompts, text_len, text_dim, device=args.device, dtype=dtype)
    t = torch.tensor([500.0], device=args.device)
    tokens = x.shape[2] * x.shape[3] * x.shape[4] // 4
    with torch.no_grad():
        run_plain = lambda: plain(x, t, prompts[:, 0])  # noqa: E731
        run_layered = lambda: layered(x, t, prompts, layout=layout)  # noqa: E731
        run_plain(), run_layered()  # warm up
        t_plain = timed(run_plain, args.repeats, args.device)
        t_layered = timed(run_layered, args.repeats, args.device)
    print(f"device {args.device}  dtype {args.dtype}  model {args.model}  layout {layout}  tokens {tokens}")
    print(f"plain Wan step    {t_plain * 1000:9.1f} ms")
    print(f"layered step      {t_layered * 1000:9.1f} ms")
    print(f"overhead ratio    {t_layered / t_plain:9.3f}")


if __name__ == "__main__":
    main()
