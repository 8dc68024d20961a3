"""Context parallelism for LayeredWanTransformer: every rank holds the same slice of every segment.

diffusers' ``WanTransformer3DModel._cp_plan`` does not fit a layered forward: its hooks split the output of
``rope`` and the input of ``blocks.0`` as one contiguous run of the token axis, and a contiguous run would hand
whole layers to some ranks and parts of layers to others, while per-segment modulation and routed cross-attention
view the tokens as S equal segments.

So the sharding here is per segment: the tokens of each segment are cut into N equal slices and rank r keeps
slice r of every segment. Locally the tokens are still S equal segments, so per-segment modulation and routed
cross-attention run unchanged with no communication (text is replicated), and every rank holds the same share of
every routing group (balanced). Only self-attention communicates: the Wan attention processors get the
``ParallelConfig`` and call diffusers' Ulysses or ring attention through ``dispatch_attention_fn``, which is exact
for non-causal attention in whatever order tokens are sharded, since RoPE is sharded the same way. The output is
all-gathered after ``proj_out`` (out_channels wide, the narrowest point).

The shard must divide: tokens per segment (T' * H'/2 * W'/2) by the world size; Ulysses also needs the head count
(12 for Wan2.1-1.3B) divisible by it. Ring attention merges partial softmaxes with their log-sum-exp, so it needs
a backend that returns one (``_native_cudnn``, ``_native_flash``, ``flash``: CUDA); Ulysses works with any backend,
native SDPA on CPU included.

    torch.distributed.init_process_group("nccl")
    enable_context_parallel(pipe.transformer, "ulysses")   # every rank runs the same pipeline call
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
from diffusers import WanTransformer3DModel
from diffusers.hooks.context_parallel import EquipartitionSharder
from diffusers.models._modeling_parallel import ContextParallelConfig, ParallelConfig

MODES = ("ulysses", "ring")
# Backends whose forward returns the log-sum-exp that ring attention merges with.
RING_BACKENDS = ("_native_cudnn", "_native_flash", "flash", "flash_hub", "_flash_3", "_flash_3_hub")


def _mesh(config: ParallelConfig) -> dist.device_mesh.DeviceMesh:
    return config.context_parallel_config._flattened_mesh


def shard_segments(x: torch.Tensor, segments: int, config: ParallelConfig) -> torch.Tensor:
    """(B, L, ...) tokens of S equal segments -> (B, S * L/(S N), ...): this rank's slice of every segment."""
    mesh = _mesh(config)
    per_segment = x.shape[1] // segments
    if per_segment % mesh.size():
        raise ValueError(f"context parallel over {mesh.size()} ranks needs tokens per segment ({per_segment} = "
                         f"T' x H'/2 x W'/2) divisible by {mesh.size()}; change --frames or --size")
    x = x.unflatten(1, (segments, per_segment))
    return EquipartitionSharder.shard(x, 2, mesh).flatten(1, 2)


def gather_segments(x: torch.Tensor, segments: int, config: ParallelConfig) -> torch.Tensor:
    """Inverse of :func:`shard_segments`: every rank gets the full (B, L, ...) token axis back."""
    x = x.unflatten(1, (segments, -1))
    return EquipartitionSharder.unshard(x, 2, _mesh(config)).flatten(1, 2)


def enable_context_parallel(
    model: WanTransformer3DModel,
    mode: Literal["ulysses", "ring"] = "ulysses",
    degree: int | None = None,
    mesh: dist.device_mesh.DeviceMesh | None = None,
) -> ParallelConfig:
    """Shard a :class:`~layert2v.models.transformer.LayeredWanTransformer`'s layered forward over ``degree`` ranks
    (default: the whole process group).

    Call on every rank after ``torch.distributed.init_process_group``, with identical weights and inputs on every
    rank; each rank then returns the full output. Replaces ``model.enable_parallelism``, whose ``_cp_plan`` hooks
    do not fit the layered forward (see the module docstring) and which needs an accelerator to pick a device.
    """
    if mode not in MODES:
        raise ValueError(f"unknown context-parallel mode {mode!r}; choose from {MODES}")
    if not dist.is_initialized():
        raise RuntimeError("context parallelism needs torch.distributed.init_process_group() first")
    if model._parallel_config is not None:
        raise RuntimeError("parallelism is already enabled on this model")
    degree = degree or dist.get_world_size()
    backend = model.blocks[0].attn1.processor._attention_backend
    if mode == "ring" and str(getattr(backend, "value", backend)) not in RING_BACKENDS:
        raise ValueError(f"ring attention needs a backend that returns the log-sum-exp ({', '.join(RING_BACKENDS)}; "
                         f"CUDA), got {backend or 'native'}: call model.set_attention_backend('_native_cudnn') "
                         "first, or use mode='ulysses'")
    if mode == "ulysses" and model.config.num_attention_heads % degree:
        raise ValueError(f"Ulysses splits the {model.config.num_attention_heads} heads over {degree} ranks; "
                         "pick a degree that divides them, or mode='ring'")

    cp = ContextParallelConfig(ring_degree=degree) if mode == "ring" else ContextParallelConfig(ulysses_degree=degree)
    device = next(model.parameters()).device
    if mesh is None:
        mesh = dist.device_mesh.init_device_mesh(device.type, cp.mesh_shape, mesh_dim_names=cp.mesh_dim_names)
    config = ParallelConfig(context_parallel_config=cp)
    config.setup(dist.get_rank(), dist.get_world_size(), device, mesh=mesh)
    model._parallel_config = config
    for block in model.blocks:  # self-attention only: routed cross-attention is local by construction
        block.attn1.processor._parallel_config = config
    return config


def disable_context_parallel(model: WanTransformer3DModel) -> None:
    """Back to single-process forwards (the process group stays up)."""
    model._parallel_config = None
    for block in model.blocks:
        block.attn1.processor._parallel_config = None
