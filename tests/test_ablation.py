"""The ablation benchmark's variants: the unrouted layout and the swap that trains and samples with it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import layert2v.pipeline as pipeline_module
import layert2v.training.recipes as recipes_module
from layert2v.layout import LayerLayout

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ablation", ROOT / "benchmarks" / "ablation.py")
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)


def test_unrouted_layout_shows_every_prompt_to_every_segment():
    routed, unrouted = LayerLayout(2), ablation.UnroutedLayout(2)
    assert len(routed.routing_groups) > 1
    assert unrouted.routing_groups == ((tuple(range(routed.num_segments)), tuple(range(routed.num_prompts))),)
    assert unrouted.adaln_rows == routed.adaln_rows  # only the routing differs


def test_routing_swap_is_undone():
    with ablation.routing("adaln"):
        assert recipes_module.LayerLayout is ablation.UnroutedLayout
        assert pipeline_module.LayerLayout is ablation.UnroutedLayout
    assert recipes_module.LayerLayout is LayerLayout and pipeline_module.LayerLayout is LayerLayout
    with ablation.routing("routed"):
        assert recipes_module.LayerLayout is LayerLayout
