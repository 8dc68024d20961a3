"""The diffusers internals layert2v reaches into, one test each, so that a diffusers upgrade that moves one of them
fails here by name instead of deep inside a forward. pyproject.toml pins diffusers to the minor range these pass on.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import diffusers
import pytest
from diffusers import WanTransformer3DModel
from helpers import TINY_TRANSFORMER

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def wan() -> WanTransformer3DModel:
    return WanTransformer3DModel(**TINY_TRANSFORMER)


def test_installed_diffusers_is_in_the_pinned_range():
    pin = re.search(r'"(diffusers[^"]*)"', (ROOT / "pyproject.toml").read_text()).group(1)
    low, high = re.fullmatch(r"diffusers>=([\d.]+),<([\d.]+)", pin).groups()
    version = tuple(int(v) for v in diffusers.__version__.split(".")[:2])
    assert tuple(int(v) for v in low.split(".")[:2]) <= version < tuple(int(v) for v in high.split(".")[:2]), (
        f"diffusers {diffusers.__version__} is outside the tested range {pin}: rerun this file, then widen the pin")


def test_parallel_config_attributes(wan):
    """context_parallel.py sets model._parallel_config and each self-attention processor's."""
    assert wan._parallel_config is None
    processor = wan.blocks[0].attn1.processor
    assert hasattr(processor, "_parallel_config") and hasattr(processor, "_attention_backend")


def test_modeling_parallel_module():
    from diffusers.models._modeling_parallel import ContextParallelConfig, ParallelConfig

    assert {"mesh_shape", "mesh_dim_names", "_flattened_mesh"} <= set(dir(ContextParallelConfig))
    assert list(inspect.signature(ParallelConfig.setup).parameters)[:4] == ["self", "rank", "world_size", "device"]
    assert "mesh" in inspect.signature(ParallelConfig.setup).parameters
    assert "context_parallel_config" in inspect.signature(ParallelConfig).parameters


def test_equipartition_sharder():
    from diffusers.hooks.context_parallel import EquipartitionSharder

    for method in (EquipartitionSharder.shard, EquipartitionSharder.unshard):
        assert list(inspect.signature(method).parameters) == ["tensor", "dim", "mesh"]


def test_timestep_embedder_parts(wan):
    """The layered forward runs Wan's condition embedder piece by piece, per segment."""
    emb = wan.condition_embedder
    for part in ("timesteps_proj", "time_embedder", "time_proj", "act_fn", "text_embedder"):
        assert hasattr(emb, part), part
    assert emb.time_proj.out_features == 6 * emb.time_embedder.linear_2.out_features


def test_block_and_attention_parts(wan):
    """layered_block_forward and routed_cross_attention use these of each Wan block."""
    block = wan.blocks[0]
    for part in ("scale_shift_table", "norm1", "norm2", "norm3", "attn1", "attn2", "ffn"):
        assert hasattr(block, part), part
    for part in ("to_q", "to_k", "to_v", "to_out", "norm_q", "norm_k", "heads"):
        assert hasattr(block.attn2, part), part
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    parameters = set(inspect.signature(dispatch_attention_fn).parameters)
    assert {"attn_mask", "dropout_p", "is_causal", "backend"} <= parameters


def test_rope_table_size(wan):
    """preflight.check_sequence_length assumes the RoPE table holds rope_max_seq_len positions per axis."""
    assert wan.rope.max_seq_len == TINY_TRANSFORMER["rope_max_seq_len"]
    assert "rope" in WanTransformer3DModel._keep_in_fp32_modules and "time_embedder" in \
        WanTransformer3DModel._keep_in_fp32_modules
