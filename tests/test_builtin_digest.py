"""The built-in model's output does not change under refactoring: a stored digest of two generations.

The digest belongs to one set of shipped weights. When the weights change on purpose (a new built-in model), the
first assertion fails and says so; regenerate the file with ``python tests/test_builtin_digest.py --write`` and
commit it with the weights. Any other failure means the code now computes something else.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

WEIGHTS = Path(__file__).parents[1] / "layert2v" / "weights" / "world"
DIGESTS = Path(__file__).parent / "data" / "builtin_digest.json"
CASES = [  # (prompt, background, foregrounds, seed)
    ("a red circle moving right over a blue striped background", "a blue striped background",
     ["a red circle moving right"], 0),
    ("a yellow circle bouncing and a white square circling over a green checkerboard", "a green checkerboard",
     ["a yellow circle bouncing", "a white square circling"], 3),
]
STEPS = 4  # enough to run every part of the sampler; bit-identity does not need 25


def weights_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in WEIGHTS.rglob("*") if p.is_file() and p.suffix in {".json", ".safetensors"}):
        h.update(path.relative_to(WEIGHTS).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def output_digests() -> list[str]:
    import torch

    from layert2v.pipeline import LayerT2VPipeline

    torch.set_num_threads(2)
    pipe = LayerT2VPipeline.from_pretrained(WEIGHTS)
    digests = []
    for prompt, background, foregrounds, seed in CASES:
        video = pipe(prompt, background, foregrounds, seed=seed, num_inference_steps=STEPS, progress=False)
        h = hashlib.sha256()
        for layer in [video.full, video.background, *video.foregrounds, *video.alphas]:
            h.update(np.ascontiguousarray(layer, dtype=np.float32).tobytes())
        digests.append(h.hexdigest())
    return digests


def test_builtin_model_output_is_bit_identical_to_the_stored_digest():
    stored = json.loads(DIGESTS.read_text())
    assert stored["weights"] == weights_digest(), (
        "the built-in weights changed since the digest was stored; if that was intended, run "
        "`python tests/test_builtin_digest.py --write` and commit tests/data/builtin_digest.json with them")
    assert output_digests() == stored["outputs"]


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_builtin_digest.py --write")
    DIGESTS.parent.mkdir(exist_ok=True)
    DIGESTS.write_text(json.dumps({"weights": weights_digest(), "steps": STEPS, "outputs": output_digests()},
                                  indent=2) + "\n")
    print(f"wrote {DIGESTS}")
