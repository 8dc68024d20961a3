"""The layer layout: the single source of truth for how a layered sample is laid out.

A layered sample is an ordered list of *segments* along the latent time axis::

    full, background, foreground_1 .. foreground_K, alpha_1 .. alpha_K      (K >= 1)

Every segment holds the same number of latent frames. Everything else in the project asks this object
which segment a token belongs to, which prompts a segment may read, which segments are given clean as
conditions and which are generated, and in which order foregrounds composite. Nothing else knows the
order or the count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are handled, so argument checks stay fast
    import torch

FULL = "full"
BACKGROUND = "background"
FOREGROUND = "foreground"
ALPHA = "alpha"


@dataclass(frozen=True)
class Segment:
    """One layer's stretch of the latent time axis."""

    kind: str  # FULL | BACKGROUND | FOREGROUND | ALPHA
    index: int = 0  # 1..K for foreground/alpha, 0 otherwise

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.index}" if self.index else self.kind

    @property
    def is_rgb(self) -> bool:
        """RGB segments go through the RGB VAE; alpha segments through the alpha path."""
        return self.kind != ALPHA

    @classmethod
    def from_name(cls, name: str) -> Segment:
        """The inverse of :attr:`name`: ``"alpha_2"`` -> Segment(ALPHA, 2); a ValueError for any other name."""
        kind, _, index = name.partition("_")
        if kind in (FULL, BACKGROUND) and not index:
            return cls(kind)
        if kind in (FOREGROUND, ALPHA) and index.isdigit() and int(index) >= 1 and str(int(index)) == index:
            return cls(kind, int(index))
        raise ValueError(f"{name!r} is not a segment name; segments are {FULL}, {BACKGROUND}, {FOREGROUND}_k and "
                         f"{ALPHA}_k")

    @property
    def partner(self) -> str | None:
        """A foreground's alpha, an alpha's foreground; None for full and background."""
        if self.kind == FOREGROUND:
            return Segment(ALPHA, self.index).name
        if self.kind == ALPHA:
            return Segment(FOREGROUND, self.index).name
        return None


class LayerLayout:
    """Segment order, prompt routing, conditions and compositing order for K foregrounds.

    Args:
        num_foregrounds: K, the number of foreground layers (each with its alpha matte).
        conditions: names of segments given clean (t = 0) instead of generated, e.g. ``("background",)``
            for LayerFlow's background-conditioned variant or ``("full",)`` for decomposition.
    """

    def __init__(self, num_foregrounds: int, conditions: Iterable[str] = ()):
        if not isinstance(num_foregrounds, int) or num_foregrounds < 1:
            raise ValueError(f"a layered video needs at least one foreground layer, got {num_foregrounds!r}")
        self.num_foregrounds = num_foregrounds
        k = range(1, num_foregrounds + 1)
        self.segments: tuple[Segment, ...] = (
            Segment(FULL),
            Segment(BACKGROUND),
            *(Segment(FOREGROUND, i) for i in k),
            *(Segment(ALPHA, i) for i in k),
        )
        names = [s.name for s in self.segments]
        conditions = tuple(conditions)
        unknown = [c for c in conditions if c not in names]
        if unknown:
            raise ValueError(f"unknown condition segment(s) {unknown}; choose from {names}")
        if len(set(conditions)) == len(names):
            raise ValueError("every segment is a condition: nothing is left to generate")
        self.conditions: frozenset[str] = frozenset(conditions)
        # The derived tables are computed here, not lazily: a compiled forward then reads plain attributes
        # (functools.cached_property takes a lock that torch.compile cannot trace on Python 3.11), and an equal
        # layout holds equal tables, so it reuses the compiled graph.
        self.routing_groups = self._routing_groups()
        self.adaln_rows = self._adaln_rows()
        self.prompt_rows = self._prompt_rows()
        self.generated = self._generated()

    # ----------------------------------------------------------------- order
    @property
    def num_segments(self) -> int:
        return len(self.segments)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]

    def index(self, name: str) -> int:
        return self.names.index(name)

    def segment(self, name: str) -> Segment:
        """The segment called ``name``; a ValueError naming the segments if this layout has none of that name."""
        if name not in self.names:
            raise ValueError(f"no segment {name!r} in this layout; it has {self.names}")
        return self.segments[self.index(name)]

    def foreground(self, k: int) -> int:
        """Segment index of foreground k (1-based)."""
        return self.index(self.foreground_name(k))

    def alpha(self, k: int) -> int:
        """Segment index of alpha k (1-based)."""
        return self.index(self.alpha_name(k))

    @staticmethod
    def foreground_name(k: int) -> str:
        return Segment(FOREGROUND, k).name

    @staticmethod
    def alpha_name(k: int) -> str:
        return Segment(ALPHA, k).name

    @property
    def rgb_names(self) -> list[str]:
        """RGB segments in order: full, background, foreground_1..K (what the RGB VAE encodes)."""
        return [s.name for s in self.segments if s.is_rgb]

    @property
    def alpha_names(self) -> list[str]:
        """Alpha segments in order: alpha_1..K (what the alpha path encodes)."""
        return [s.name for s in self.segments if not s.is_rgb]

    @property
    def composite_order(self) -> list[int]:
        """Foreground numbers bottom to top: foreground 1 lies directly on the background, K on top."""
        return list(range(1, self.num_foregrounds + 1))

    # --------------------------------------------------------------- prompts
    @property
    def prompt_names(self) -> list[str]:
        """One prompt per RGB layer: full, background, foreground_1..K. Alphas read their foreground's."""
        return self.rgb_names

    def layer_prompts(self, full: str, background: str, foregrounds: Sequence[str]) -> list[str]:
        """The per-layer prompts in ``prompt_names`` order (foregrounds bottom to top)."""
        if len(foregrounds) != self.num_foregrounds:
            raise ValueError(f"need {self.num_foregrounds} foreground prompt(s), got {len(foregrounds)}")
        by_name = {FULL: full, BACKGROUND: background,
                   **{self.foreground_name(k): p for k, p in zip(self.composite_order, foregrounds)}}
        return [by_name[name] for name in self.prompt_names]

    def indexed_prompts(self, prompts: Sequence[str]) -> list[str]:
        """LayerFlow's layer-index form: "n, description" with n = 1 + the prompt's layer-embedding row (full 1,
        background 2, foreground_k k + 2); empty prompts (CFG's unconditional branch) stay empty."""
        return [f"{row + 1}, {p}" if p else p for row, p in zip(self.prompt_rows, prompts)]

    @property
    def num_prompts(self) -> int:
        return len(self.prompt_names)

    def visible_prompts(self, segment: Segment) -> tuple[int, ...]:
        """Prompt indices a segment's tokens may attend to (LayerT2V's routing table)."""
        if segment.kind == FULL:
            return tuple(range(self.num_prompts))
        if segment.kind == BACKGROUND:
            return (self.prompt_names.index(BACKGROUND),)
        return (self.prompt_names.index(self.foreground_name(segment.index)),)

    def _routing_groups(self) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
        """Segments grouped by identical prompt visibility: ((segment indices), (prompt indices)) pairs.

        Cross-attention runs once per group with dense fused attention, so no L_visual x L_text mask is built.
        """
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, seg in enumerate(self.segments):
            groups.setdefault(self.visible_prompts(seg), []).append(i)
        return tuple((tuple(segs), prompts) for prompts, segs in groups.items())

    # ------------------------------------------------------------ LayerAdaLN
    @staticmethod
    def adaln_rows_needed(num_foregrounds: int) -> int:
        """LayerAdaLN rows for up to K foregrounds: full, background, then (foreground_k, alpha_k) pairs."""
        return 2 + 2 * num_foregrounds

    def adaln_row(self, name: str) -> int:
        """The LayerAdaLN row of segment ``name``."""
        return self.adaln_rows[self.index(name)]

    def _adaln_rows(self) -> tuple[int, ...]:
        """Per segment, its row in the LayerAdaLN table. Rows grow in (fg, alpha) pairs, so adding a
        foreground (stage 3) appends rows without moving the trained ones."""
        rows = []
        for seg in self.segments:
            if seg.kind == FULL:
                rows.append(0)
            elif seg.kind == BACKGROUND:
                rows.append(1)
            else:
                rows.append(2 * seg.index + (0 if seg.kind == FOREGROUND else 1))
        return tuple(rows)

    def _prompt_rows(self) -> tuple[int, ...]:
        """Per prompt, its row in LayerFlow's layer-embedding table (full 0, background 1, fg_k k+1)."""
        return tuple(range(self.num_prompts))

    # ------------------------------------------------------------ conditions
    def _generated(self) -> tuple[bool, ...]:
        """Per segment, True when it is generated (noised and in the loss), False when given clean."""
        return tuple(s.name not in self.conditions for s in self.segments)

    def segment_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Broadcast a (B,) timestep to (B, num_segments), with condition segments held at t = 0."""
        import torch

        mask = torch.tensor(self.generated, dtype=t.dtype, device=t.device)
        return t.reshape(-1, 1) * mask

    # ------------------------------------------------------ latent time axis
    def split(self, latents: torch.Tensor, dim: int = 2) -> dict[str, torch.Tensor]:
        """Split a tensor concatenated along `dim` into {segment name: chunk}."""
        if latents.shape[dim] % self.num_segments:
            raise ValueError(
                f"time axis of length {latents.shape[dim]} does not split into {self.num_segments} equal segments"
            )
        return dict(zip(self.names, latents.chunk(self.num_segments, dim=dim)))

    def concat(self, parts: dict[str, torch.Tensor] | Sequence[torch.Tensor], dim: int = 2) -> torch.Tensor:
        """Inverse of :meth:`split`: concatenate segments along `dim` in layout order."""
        if isinstance(parts, dict):
            missing = [n for n in self.names if n not in parts]
            if missing:
                raise ValueError(f"missing segment(s) {missing}")
            parts = [parts[n] for n in self.names]
        if len(parts) != self.num_segments:
            raise ValueError(f"expected {self.num_segments} segments, got {len(parts)}")
        import torch

        return torch.cat(list(parts), dim=dim)

    def segment_mask(self, latents: torch.Tensor, which: Sequence[bool], dim: int = 2) -> torch.Tensor:
        """A 0/1 tensor broadcastable to `latents`, 1 on the segments where `which` is True."""
        import torch

        per_seg = latents.shape[dim] // self.num_segments
        flags = torch.tensor(which, dtype=latents.dtype, device=latents.device).repeat_interleave(per_seg)
        shape = [1] * latents.ndim
        shape[dim] = -1
        return flags.reshape(shape)

    # -------------------------------------------------------------- equality
    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LayerLayout)
            and other.num_foregrounds == self.num_foregrounds
            and other.conditions == self.conditions
        )

    def __hash__(self) -> int:
        return hash((self.num_foregrounds, self.conditions))

    def __reduce__(self) -> tuple[type[LayerLayout], tuple[int, tuple[str, ...]]]:
        """Pickled as its arguments, so ``torch.load(weights_only=True)`` rebuilds it (an exported program keeps its
        example inputs) once the class is allowed (:mod:`layert2v.models.transformer` allows it)."""
        return LayerLayout, (self.num_foregrounds, tuple(sorted(self.conditions)))

    def __repr__(self) -> str:
        cond = f", conditions={sorted(self.conditions)}" if self.conditions else ""
        return f"LayerLayout({' | '.join(self.names)}{cond})"
