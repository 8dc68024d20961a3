"""LayeredWanTransformer: Wan2.1's DiT with LayerT2V's layer awareness.

The layers of a sample are serialised along the latent time axis (see :class:`~layert2v.layout.LayerLayout`)
and run through an unchanged Wan backbone with three additions:

* **LayerAdaLN** — a learnable (6, dim) modulation per layer category, shared by all blocks, zero-initialised,
  added to the timestep modulation of every token of that layer (LayerT2V eq. 5-6).
* **Layer-routed cross-attention** — every prompt is encoded on its own; a token reads only the prompts its layer
  may see (fg -> its fg prompt, bg -> bg prompt, full -> all, alpha -> its fg's prompt). Attention is computed per
  routing group with dense fused SDPA, which is exactly the masked attention of eq. 7 without building the mask.
* **Per-segment timesteps** — a segment may be given clean (t = 0) as a condition (LayerFlow's variants).
* **Box conditioning** (optional, ``box_conditioning=True``) — a foreground's box mask on the latent grid, patchified
  like the latents and projected to the model width, is added to the tokens of that foreground's and its alpha's
  segments, so a model trained with it places the object where the boxes say (LayerT2V v1's trajectories as given
  information rather than attention guidance). Foregrounds without boxes get nothing added.

Optionally, LayerFlow's learnable layer embedding is added to each prompt's text embedding. Across GPUs the
tokens shard per segment (:mod:`~layert2v.models.context_parallel`).

The layered forward goes through the modules as diffusers expects: each block is a :class:`LayeredWanBlock`
called with the per-segment modulation and the layout, and its ``attn2`` runs a
:class:`LayerRoutedAttnProcessor`. So diffusers' hooks (group offloading, first-block cache, ...), attention
processors and backends, regional compilation and LoRA scaling act on the layered path as on plain Wan.

RoPE is Wan's 3D RoPE over the concatenated time axis; the paper's 4D RoPE (an extra layer axis) was its failed
ablation and is deliberately absent. All Wan parameter names are kept, so Wan2.1 weights load unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn as nn
import torch.utils._pytree as pytree
from diffusers.configuration_utils import register_to_config
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_wan import (
    WanAttention,
    WanAttnProcessor,
    WanTransformer3DModel,
    WanTransformerBlock,
    _get_qkv_projections,
)
from diffusers.utils import apply_lora_scale

from ..layout import ALPHA, FOREGROUND, LayerLayout
from .context_parallel import gather_segments, shard_segments

# (segment ids, prompt ids, queries per segment, dtype) of a routing group -> an additive logit bias, or None
LogitBias = Callable[[tuple[int, ...], tuple[int, ...], int, torch.dtype], "torch.Tensor | None"]


def _layout_context(layout: LayerLayout) -> tuple[int, tuple[str, ...]]:
    return layout.num_foregrounds, tuple(sorted(layout.conditions))


# A layout is a pytree node without tensors: torch.export takes ``forward(..., layout=)`` and records the layout in
# its input spec, whose context (K and the given segments) serialises to JSON with the exported program.
pytree.register_pytree_node(
    LayerLayout,
    lambda layout: ([], _layout_context(layout)),
    lambda _leaves, context: LayerLayout(context[0], conditions=context[1]),
    serialized_type_name="layert2v.layout.LayerLayout",
    to_dumpable_context=lambda context: json.dumps([context[0], list(context[1])]),
    from_dumpable_context=lambda dumped: (lambda k, given: (k, tuple(given)))(*json.loads(dumped)),
    flatten_with_keys_fn=lambda layout: ([], _layout_context(layout)),
)
torch.serialization.add_safe_globals([LayerLayout])  # torch.export.load reads the example layout back


class LayeredWanTransformer(WanTransformer3DModel):
    """Wan transformer over layout-serialised latents.

    ``forward(hidden_states, timestep, encoder_hidden_states, layout)`` takes
    ``hidden_states`` (B, C, S * T', H', W') with S = ``layout.num_segments``,
    ``timestep`` (B,) or per segment (B, S), and ``encoder_hidden_states`` (B, P, L, text_dim): one independently
    encoded prompt per RGB layer, in ``layout.prompt_names`` order.

    Extra config (all with defaults, so ``from_config(wan_config)`` works):
        max_foregrounds: foreground layers the LayerAdaLN table has rows for.
        layer_text_embedding: add LayerFlow's learnable per-layer embedding to each prompt's text embedding.
        box_conditioning: learn trained box conditioning (``forward(..., boxes=, box_given=)``).
    """

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 16,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        max_foregrounds: int = 1,
        layer_text_embedding: bool = False,
        box_conditioning: bool = False,
    ) -> None:
        if image_dim is not None or added_kv_proj_dim is not None:
            raise ValueError("LayeredWanTransformer builds on Wan text-to-video; image-conditioned (I2V) configs "
                             "are not supported")
        super().__init__(
            patch_size=patch_size, num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim,
            in_channels=in_channels, out_channels=out_channels, text_dim=text_dim, freq_dim=freq_dim,
            ffn_dim=ffn_dim, num_layers=num_layers, cross_attn_norm=cross_attn_norm, qk_norm=qk_norm, eps=eps,
            image_dim=image_dim, added_kv_proj_dim=added_kv_proj_dim, rope_max_seq_len=rope_max_seq_len,
            pos_embed_seq_len=pos_embed_seq_len,
        )
        inner_dim = num_attention_heads * attention_head_dim
        rows = LayerLayout.adaln_rows_needed(max_foregrounds)
        self.layer_adaln = nn.Parameter(torch.zeros(rows, 6, inner_dim))
        self.layer_prompt_embedding = (
            nn.Parameter(torch.zeros(LayerLayout(max_foregrounds).num_prompts, text_dim))
            if layer_text_embedding else None
        )
        # One box mask channel, patchified as the latents are. Only foregrounds given a box get it added, so the
        # model without boxes is unchanged whatever these weights hold.
        self.box_embedding = (nn.Conv3d(1, inner_dim, kernel_size=patch_size, stride=patch_size)
                              if box_conditioning else None)
        if self.box_embedding is not None:
            nn.init.normal_(self.box_embedding.weight, std=0.02)
            nn.init.zeros_(self.box_embedding.bias)
        for block in self.blocks:
            # LayeredWanBlock adds a forward and no parameters: re-class Wan's blocks in place rather than build a
            # second set (names, weights and initialisation stay Wan's).
            block.__class__ = LayeredWanBlock
            block.attn2.set_processor(LayerRoutedAttnProcessor())

    # Wan keeps its modulation tables in fp32; LayerAdaLN is added to them.
    _keep_in_fp32_modules = [*WanTransformer3DModel._keep_in_fp32_modules, "layer_adaln"]
    # What diffusers' regional compilation, device maps and offloading look for.
    _repeated_blocks = ["LayeredWanBlock"]
    _no_split_modules = ["LayeredWanBlock"]

    def cast_keeping_fp32(self, dtype: torch.dtype) -> LayeredWanTransformer:
        """Cast the parameters to ``dtype`` except ``_keep_in_fp32_modules``, as ``from_pretrained(torch_dtype=...)``
        does; a plain ``.to(dtype)`` would cast those too. Buffers (RoPE tables) stay fp32."""
        keep = set(self._keep_in_fp32_modules)
        for name, param in self.named_parameters():
            want = torch.float32 if keep & set(name.split(".")) else dtype
            if param.dtype != want:
                param.data = param.data.to(want)
        return self

    def compile_blocks(self, **compile_kwargs: Any) -> None:
        """Regional ``torch.compile`` of every block: diffusers' ``compile_repeated_blocks``, which compiles each
        :class:`LayeredWanBlock` (the layered and the plain path both run them).

        All blocks share one structure, so they share one graph (compile time is one block's); the graph is
        specialised to the layout (routing groups) and recompiles for a layout that differs, not for an equal one.
        """
        self.compile_repeated_blocks(**compile_kwargs)

    @property
    def max_foregrounds(self) -> int:
        return self.config.max_foregrounds

    def check_layout(self, layout: LayerLayout) -> None:
        if layout.num_foregrounds > self.max_foregrounds:
            raise ValueError(
                f"this model supports at most {self.max_foregrounds} foreground layer(s), got "
                f"{layout.num_foregrounds}; use fewer --fg prompts or a model trained for more (stage 3)"
            )

    @torch.no_grad()
    def extend_foregrounds(self, max_foregrounds: int) -> None:
        """Stage 3: grow to more foregrounds; new (fg, alpha) rows start from the trained fg_1 / alpha_1 rows."""
        if max_foregrounds <= self.max_foregrounds:
            return
        grown, first = LayerLayout(max_foregrounds), LayerLayout(1)
        fg1, alpha1 = first.foreground_name(1), first.alpha_name(1)
        start = {FOREGROUND: first.adaln_row(fg1), ALPHA: first.adaln_row(alpha1)}
        self.layer_adaln.data = _grow(self.layer_adaln.data, zip(grown.adaln_rows, grown.segments),
                                      lambda seg: start[seg.kind])
        if self.layer_prompt_embedding is not None:
            fg_row = first.prompt_rows[first.prompt_names.index(fg1)]
            self.layer_prompt_embedding.data = _grow(self.layer_prompt_embedding.data,
                                                     zip(grown.prompt_rows, grown.prompt_names), lambda _: fg_row)
        self.register_to_config(max_foregrounds=max_foregrounds)

    # ----------------------------------------------------------------- forward
    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        layout: LayerLayout | None = None,
        encoder_hidden_states_image: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        boxes: torch.Tensor | None = None,
        box_given: torch.Tensor | None = None,
    ) -> torch.Tensor | Transformer2DModelOutput:
        """``boxes`` (B, K, T', H', W'): each foreground's box mask on the latent grid (1 inside, 0 outside);
        ``box_given`` (B, K): 1 for the foregrounds whose box counts, 0 for the rest (None: all of them)."""
        if layout is None:  # plain Wan call (e.g. text-to-video pretraining on full clips)
            if self._parallel_config is not None:
                raise NotImplementedError("context parallelism is set up for layered forwards (pass a layout)")
            return super().forward(hidden_states, timestep, encoder_hidden_states,
                                   encoder_hidden_states_image=encoder_hidden_states_image, return_dict=return_dict,
                                   attention_kwargs=attention_kwargs)
        self.check_layout(layout)
        batch, _, frames, height, width = hidden_states.shape
        segs = layout.num_segments
        if frames % segs:
            raise ValueError(f"latent time axis {frames} is not {segs} equal segments for {layout}")
        if encoder_hidden_states.ndim != 4 or encoder_hidden_states.shape[1] != layout.num_prompts:
            raise ValueError(
                f"expected one embedding per prompt, (B, {layout.num_prompts}, L, D); got "
                f"{tuple(encoder_hidden_states.shape)}"
            )
        p_t, p_h, p_w = self.config.patch_size
        post_t, post_h, post_w = frames // p_t, height // p_h, width // p_w

        rotary_emb = self.rope(hidden_states)
        x = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()  # (B, L, D)
        parallel = self._parallel_config
        if parallel is not None:  # context parallel: this rank keeps the same slice of every segment
            x = shard_segments(x, segs, parallel)
            rotary_emb = tuple(shard_segments(r, segs, parallel) for r in rotary_emb)
        if boxes is not None:
            x = self.add_boxes(x, boxes, box_given, layout)

        # Timestep modulation per segment (B, S, ...), plus LayerAdaLN per segment's layer category.
        if timestep.ndim == 1:
            timestep = timestep[:, None].expand(batch, segs)
        emb = self.condition_embedder
        t_freq = emb.timesteps_proj(timestep.reshape(-1))
        t_dtype = next(iter(emb.time_embedder.parameters())).dtype
        if t_freq.dtype != t_dtype and t_dtype != torch.int8:
            t_freq = t_freq.to(t_dtype)
        temb = emb.time_embedder(t_freq).type_as(encoder_hidden_states)
        timestep_proj = emb.time_proj(emb.act_fn(temb)).unflatten(1, (6, -1))  # (B*S, 6, D)
        layer_rows = rows_of(self.layer_adaln, layout.adaln_rows).float()
        modulation = timestep_proj.unflatten(0, (batch, segs)).float() + layer_rows
        temb = temb.unflatten(0, (batch, segs))  # (B, S, D)

        # Text: each prompt embedded on its own (plus LayerFlow's layer embedding when enabled).
        context = encoder_hidden_states
        if self.layer_prompt_embedding is not None:
            rows = rows_of(self.layer_prompt_embedding, layout.prompt_rows)
            context = context + rows[None, :, None].to(context.dtype)
        context = emb.text_embedder(context)  # (B, P, L, D)

        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, context, modulation, rotary_emb, layout,
                                                      attention_kwargs)
            else:
                x = block(x, context, modulation, rotary_emb, layout=layout, attention_kwargs=attention_kwargs)

        shift, scale = (self.scale_shift_table[None] + temb[:, :, None]).chunk(2, dim=2)  # (B, S, 1, D)
        x = per_segment(self.norm_out(x.float()), segs) * (1 + scale) + shift
        x = self.proj_out(x.flatten(1, 2).type_as(hidden_states))
        if parallel is not None:
            x = gather_segments(x, segs, parallel)

        x = x.reshape(batch, post_t, post_h, post_w, p_t, p_h, p_w, -1)
        out = x.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if not return_dict:
            return (out,)
        return Transformer2DModelOutput(sample=out)


    def add_boxes(self, x: torch.Tensor, boxes: torch.Tensor, box_given: torch.Tensor | None,
                  layout: LayerLayout) -> torch.Tensor:
        """Add each foreground's embedded box mask to the tokens of its foreground and alpha segments."""
        if self.box_embedding is None:
            raise ValueError("this model was not trained with box conditioning; pass trajectories to the pipeline, "
                             "which then guides cross-attention instead")
        if self._parallel_config is not None:
            raise NotImplementedError("box conditioning needs whole segments on one device; drop context parallelism")
        batch, k = boxes.shape[:2]
        if k != layout.num_foregrounds:
            raise ValueError(f"boxes hold {k} foreground(s), the layout {layout.num_foregrounds}")
        emb = self.box_embedding(boxes.flatten(0, 1)[:, None].to(self.box_embedding.weight.dtype))
        emb = emb.flatten(2).transpose(1, 2).unflatten(0, (batch, k))  # (B, K, tokens per segment, D)
        if box_given is not None:
            emb = emb * box_given[:, :, None, None].to(emb.dtype)
        rows = [0] * layout.num_segments  # segment -> 1 + the foreground whose box it reads (0: none)
        for fg in layout.composite_order:
            rows[layout.foreground(fg)] = rows[layout.alpha(fg)] = fg
        table = torch.cat([torch.zeros_like(emb[:, :1]), emb], dim=1)[:, rows]  # (B, S, tokens, D)
        return x + table.flatten(1, 2).to(x.dtype)


def _grow(table: torch.Tensor, rows: Iterable[tuple[int, Any]], start: Callable[[Any], int]) -> torch.Tensor:
    """``table`` extended to every row of ``rows`` ((row, what it is for) pairs); a new row is a copy of
    ``table[start(what)]``. The rows already there stay as they are."""
    extra = {row: table[start(what)] for row, what in rows if row >= len(table)}
    return torch.cat([table, torch.stack([extra[row].clone() for row in sorted(extra)])], dim=0)


def rows_of(table: torch.Tensor, rows: tuple[int, ...]) -> torch.Tensor:
    """``table[rows]`` for the layout's row numbers (plain ints): no index tensor is built, so a forward makes no
    host-to-device copy and a compiled forward reads the rows as constants of the layout."""
    return torch.stack([table[r] for r in rows])


def per_segment(x: torch.Tensor, segments: int) -> torch.Tensor:
    """View (B, L, D) tokens as (B, S, L/S, D): segments are contiguous runs of latent frames."""
    return x.unflatten(1, (segments, -1))


class LayeredWanBlock(WanTransformerBlock):
    """A Wan block that also runs layered: per-segment modulation and layer-routed cross-attention.

    ``forward(hidden_states, encoder_hidden_states, temb, rotary_emb)`` is Wan's. With ``layout`` given,
    ``temb`` is the per-segment modulation (B, S, 6, D) (timestep plus LayerAdaLN), ``encoder_hidden_states`` the
    projected prompts (B, P, Lt, D), and ``attn2`` is called with ``layout=`` and the ``attention_kwargs``, so its
    processor routes (:class:`LayerRoutedAttnProcessor`, or any processor that takes those arguments). Same
    arithmetic as Wan's forward; only the modulation broadcasts per segment instead of per sample.
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
        layout: LayerLayout | None = None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        if layout is None:
            return super().forward(hidden_states, encoder_hidden_states, temb, rotary_emb)
        if not isinstance(self.attn2.processor, LayerRoutedAttnProcessor):
            raise TypeError(f"a layered forward routes cross-attention, but attn2 runs a "
                            f"{type(self.attn2.processor).__name__}; give attn2 a LayerRoutedAttnProcessor (or a "
                            "subclass)")
        x, segs = hidden_states, layout.num_segments
        mod = (self.scale_shift_table[None] + temb).unsqueeze(3)  # (B, S, 6, 1, D)
        shift_msa, scale_msa, gate_msa, c_shift, c_scale, c_gate = mod.unbind(2)  # each (B, S, 1, D)

        norm_x = (per_segment(self.norm1(x.float()), segs) * (1 + scale_msa) + shift_msa).flatten(1, 2).type_as(x)
        attn_out = self.attn1(norm_x, None, None, rotary_emb)
        x = (per_segment(x.float(), segs) + per_segment(attn_out, segs) * gate_msa).flatten(1, 2).type_as(x)

        norm_x = self.norm2(x.float()).type_as(x)
        x = x + self.attn2(norm_x, encoder_hidden_states, None, None, layout=layout, **(attention_kwargs or {}))

        norm_x = (per_segment(self.norm3(x.float()), segs) * (1 + c_scale) + c_shift).flatten(1, 2).type_as(x)
        ff_out = self.ffn(norm_x)
        x = (per_segment(x.float(), segs) + per_segment(ff_out.float(), segs) * c_gate).flatten(1, 2).type_as(x)
        return x


# First-block cache, TaylorSeer, MagCache ... find a block's hidden_states argument and output through this.
TransformerBlockRegistry.register(LayeredWanBlock, TransformerBlockMetadata(return_hidden_states_index=0))


class LayerRoutedAttnProcessor(WanAttnProcessor):
    """``attn2``'s processor: routed cross-attention when called with a ``layout``, Wan's own without.

    Swap it per model with ``set_attn_processor`` or per block with ``attn2.set_processor``; a replacement (e.g.
    a guidance processor) is called as ``processor(attn, x, prompts, None, None, layout=layout,
    **attention_kwargs)``, so per-call inputs reach it through the transformer's ``attention_kwargs``. Honours
    ``set_attention_backend``. A subclass that only adds a bias to the routed logits (trajectory guidance)
    overrides :meth:`logit_bias`, which receives the per-call inputs.
    """

    def __call__(
        self,
        attn: WanAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        layout: LayerLayout | None = None,
        **inputs: Any,
    ) -> torch.Tensor:
        if layout is None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb, **inputs)
        return routed_cross_attention(attn, hidden_states, encoder_hidden_states, layout, self._attention_backend,
                                      logit_bias=self.logit_bias(layout, **inputs))

    def logit_bias(self, layout: LayerLayout) -> LogitBias | None:
        """What is added to the routed attention logits for this call: nothing here."""
        return None


def routed_cross_attention(
    attn: WanAttention, x: torch.Tensor, context: torch.Tensor, layout: LayerLayout, backend: Any = None,
    logit_bias: LogitBias | None = None,
) -> torch.Tensor:
    """Cross-attention where each segment's tokens read only the prompts ``layout`` makes visible to it.

    x: (B, L, D) visual tokens; context: (B, P, Lt, D) projected prompts. Keys/values are projected once for all
    prompts; attention then runs once per routing group over that group's tokens and prompts with the fused
    kernel — equal to eq. 7's masked attention, without an L_visual x L_text mask.

    ``logit_bias(segment ids, prompt ids, queries per segment, dtype)`` (trajectory guidance) may add an additive
    bias to a group's logits, or return None to leave it alone; a biased group runs PyTorch's SDPA, since flash
    kernels take no mask.
    """
    segs, heads = layout.num_segments, attn.heads
    query, key, value = _get_qkv_projections(attn, x, context)  # keys/values (B, P, Lt, D)
    query, key = attn.norm_q(query), attn.norm_k(key)

    q_seg = per_segment(query, segs)  # (B, S, Ls, D)
    out = torch.empty_like(q_seg)
    for seg_ids, prompt_ids in layout.routing_groups:
        q = gather(q_seg, seg_ids).flatten(1, 2).unflatten(2, (heads, -1))
        k = gather(key, prompt_ids).flatten(1, 2).unflatten(2, (heads, -1))
        v = gather(value, prompt_ids).flatten(1, 2).unflatten(2, (heads, -1))
        bias = logit_bias(seg_ids, prompt_ids, q_seg.shape[2], q.dtype) if logit_bias is not None else None
        o = dispatch_attention_fn(q, k, v, attn_mask=bias, dropout_p=0.0, is_causal=False,
                                  backend=backend if bias is None else AttentionBackendName.NATIVE)
        o = o.flatten(2, 3).type_as(q).unflatten(1, (len(seg_ids), -1))
        scatter(out, seg_ids, o)
    out = out.flatten(1, 2)
    out = attn.to_out[0](out)
    return attn.to_out[1](out)


def _as_slice(ids: tuple[int, ...]) -> slice | None:
    if all(b - a == 1 for a, b in zip(ids, ids[1:])):
        return slice(ids[0], ids[-1] + 1)
    return None


def gather(t: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
    """t[:, ids] along dim 1, as a view when the ids are a contiguous run."""
    s = _as_slice(ids)
    return t[:, s] if s is not None else t[:, list(ids)]


def scatter(out: torch.Tensor, ids: tuple[int, ...], values: torch.Tensor) -> None:
    s = _as_slice(ids)
    if s is not None:
        out[:, s] = values
    else:
        out[:, list(ids)] = values
