"""Where a pipeline's models live: devices, dtypes and offloading, as diffusers' pipelines place theirs.

:class:`DevicePlacement` is the part of :class:`~layert2v.pipeline.LayerT2VPipeline` that moves its components
(``transformer``, ``vae``, ``alpha_path``, ``text_encoder``): ``to()``, diffusers' ``enable_model_cpu_offload()``,
group offloading of the transformer and the memory savers. Every one of them leaves the result unchanged, except
VAE tiling (tiles blend at their seams).
"""

from __future__ import annotations

from typing import Any

import torch

OFFLOAD_MODES = ("block", "leaf", "model")


class DevicePlacement:
    """Device placement of a pipeline's components (see the module docstring). The pipeline holds the components,
    a ``_prompt_cache`` of encoded prompts (emptied on a move) and the state set here: ``_execution_device`` (where
    offloaded weights run), ``_offload_hooks`` (enable_model_cpu_offload's, in call order), ``offload_text_encoder``
    and ``cfg_batch``."""

    transformer: Any
    vae: Any
    alpha_path: Any
    text_encoder: Any
    _prompt_cache: dict[str, torch.Tensor]
    _execution_device: torch.device | None
    _offload_hooks: list[Any]
    offload_text_encoder: bool
    cfg_batch: bool

    @property
    def device(self) -> torch.device:
        return self._execution_device or next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The transformer's compute dtype; Wan's fp32-kept modulation tables and norms do not count."""
        return self.transformer.dtype

    def to(self, *args: str | torch.device | torch.dtype, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None) -> DevicePlacement:
        """Move every component to ``device`` and cast the transformer to ``dtype`` (Wan's fp32-kept modulation
        tables and norms stay fp32), as diffusers' ``pipe.to("cuda")``, ``pipe.to(torch.bfloat16)`` or
        ``pipe.to("cuda", torch.bfloat16)``."""
        for arg in args:
            if isinstance(arg, torch.dtype):
                dtype = arg
            else:
                device = arg
        if device is not None and self._execution_device is not None and torch.device(device).type != "cpu":
            raise ValueError("the pipeline's weights are offloaded to the CPU and run on "
                             f"{self._execution_device}; leave out .to(device) after enabling offload")
        self.transformer.to(device=device)  # a dtype here would cast Wan's fp32-kept modules too
        if dtype is not None:
            self.transformer.cast_keeping_fp32(dtype)
        self.vae.to(device=device)
        self.alpha_path.to(device=device)
        self.text_encoder.model.to(device="cpu" if self.offload_text_encoder else device)
        self._prompt_cache.clear()
        return self

    def enable_model_cpu_offload(self, gpu_id: int | None = None,
                                 device: str | torch.device = "cuda") -> DevicePlacement:
        """diffusers' model offloading: every model stays in CPU memory and moves whole to the accelerator when it
        runs, the one before it leaving (text encoder -> transformer -> VAE; the small alpha path stays on the
        device). Exact; call it instead of ``.to(device)``."""
        device = torch.device(device)
        if device.type == "cpu":
            raise ValueError("offloading keeps the weights in CPU memory and runs them on an accelerator, so on the "
                             "CPU it saves nothing; pass device='cuda' (--device cuda) or drop offload (--offload)")
        if gpu_id is not None:
            device = torch.device(device.type, gpu_id)
        self._chain_offload(device)
        return self

    def _chain_offload(self, device: torch.device) -> None:
        from accelerate import cpu_offload_with_hook

        self.offload_text_encoder = False  # the hooks move the text encoder now
        self.alpha_path.to(device)
        hook = None
        self._offload_hooks = []
        for model in (self.text_encoder.model, self.transformer, self.vae):
            _, hook = cpu_offload_with_hook(model.to("cpu"), device, prev_module_hook=hook)
            self._offload_hooks.append(hook)
        self._execution_device = device
        self._prompt_cache.clear()

    def enable_memory_savers(self, vae_tiling: bool = True, vae_slicing: bool = True,
                             offload_text_encoder: bool = True, cfg_batch: bool = True, offload: str | None = None,
                             device: str | torch.device | None = None) -> DevicePlacement:
        """Lower peak memory at large sizes: decode in spatial tiles (tiles blend at their seams, so pixels move
        slightly) and one layer at a time (exact), keep the text encoder off the device between encodes (UMT5-XXL's
        ~11 GB of bf16 weights) and, with ``cfg_batch=False``, run the CFG branches one after the other.

        ``offload`` keeps the transformer's weights in CPU memory and runs them on ``device`` (an accelerator; call
        this instead of ``.to(device)``): ``"block"`` moves one block at a time (diffusers' block-level group
        offloading, streamed), ``"leaf"`` one layer at a time (least memory, slowest), ``"model"`` every model
        whole, each on the device while it runs (:meth:`enable_model_cpu_offload`). All three are exact.
        """
        if offload is not None:
            self._offload_transformer(offload, device)
        if vae_tiling:
            self.vae.enable_tiling()
        if vae_slicing:
            self.vae.enable_slicing()
        self.cfg_batch = cfg_batch
        self.offload_text_encoder = offload_text_encoder and not self._offload_hooks  # hooks move it already
        if self.offload_text_encoder:
            self.text_encoder.model.to("cpu")
        return self

    def _offload_transformer(self, offload: str, device: str | torch.device | None) -> None:
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"unknown offload {offload!r}; choose from {', '.join(OFFLOAD_MODES)}")
        device = torch.device(device) if device is not None else None
        if device is None or device.type == "cpu":
            raise ValueError("offloading keeps the transformer in CPU memory and runs it on an accelerator, so on the "
                             "CPU it saves nothing; pass device='cuda' (--device cuda) or drop offload (--offload)")
        if offload == "model":
            self.enable_model_cpu_offload(device=device)
            return
        self.transformer.to("cpu")
        self.vae.to(device)
        self.alpha_path.to(device)
        self.transformer.enable_group_offload(device, offload_type=f"{offload}_level", num_blocks_per_group=1,
                                              use_stream=True)
        self._execution_device = device
        self._prompt_cache.clear()
