import pytest
import torch

from layert2v.layout import LayerLayout


def test_order_and_prompts():
    layout = LayerLayout(2)
    assert layout.names == ["full", "background", "foreground_1", "foreground_2", "alpha_1", "alpha_2"]
    assert layout.prompt_names == ["full", "background", "foreground_1", "foreground_2"]
    seg = {s.name: s for s in layout.segments}
    assert layout.visible_prompts(seg["full"]) == (0, 1, 2, 3)
    assert layout.visible_prompts(seg["background"]) == (1,)
    assert layout.visible_prompts(seg["foreground_2"]) == (3,)
    assert layout.visible_prompts(seg["alpha_2"]) == (3,)  # alphas read their foreground's prompt


def test_routing_groups_pair_foreground_with_its_alpha():
    groups = dict(LayerLayout(2).routing_groups)
    assert groups[(2, 4)] == (2,) and groups[(3, 5)] == (3,) and groups[(0,)] == (0, 1, 2, 3)


def test_adaln_rows_are_stable_when_foregrounds_are_added():
    one, three = LayerLayout(1), LayerLayout(3)
    rows_one = dict(zip(one.names, one.adaln_rows))
    rows_three = dict(zip(three.names, three.adaln_rows))
    assert all(rows_three[n] == r for n, r in rows_one.items())
    assert sorted(three.adaln_rows) == list(range(LayerLayout.adaln_rows_needed(3)))


def test_conditions_and_timesteps():
    layout = LayerLayout(1, conditions=["background"])
    t = layout.segment_timesteps(torch.tensor([0.7, 0.2]))
    assert t.shape == (2, 4) and t[:, 1].eq(0).all() and t[0, 0] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="unknown condition"):
        LayerLayout(1, conditions=["sky"])
    with pytest.raises(ValueError, match="at least one foreground"):
        LayerLayout(0)


def test_split_concat_round_trip():
    layout = LayerLayout(2)
    z = torch.randn(1, 4, 12, 2, 2)
    parts = layout.split(z)
    assert list(parts) == layout.names and parts["alpha_2"].shape[2] == 2
    assert torch.equal(layout.concat(parts), z)
    with pytest.raises(ValueError):
        layout.split(torch.randn(1, 4, 7, 2, 2))


def test_layer_prompts_follow_the_prompt_names():
    layout = LayerLayout(2)
    prompts = layout.layer_prompts("all", "sky", ["cat", "dog"])
    assert dict(zip(layout.prompt_names, prompts)) == {"full": "all", "background": "sky", "foreground_1": "cat",
                                                       "foreground_2": "dog"}
    with pytest.raises(ValueError, match="2 foreground"):
        layout.layer_prompts("all", "sky", ["cat"])


def test_name_lookups_round_trip_and_refuse_unknown_names():
    from layert2v.layout import Segment

    layout = LayerLayout(2)
    for seg in layout.segments:
        assert Segment.from_name(seg.name) == seg and layout.segment(seg.name) == seg
    assert layout.rgb_names == ["full", "background", "foreground_1", "foreground_2"] == layout.prompt_names
    assert layout.alpha_names == ["alpha_1", "alpha_2"]
    assert layout.segment("foreground_2").partner == "alpha_2" and layout.segment("alpha_1").partner == "foreground_1"
    assert layout.segment("full").partner is None
    assert layout.foreground(2) == layout.index(LayerLayout.foreground_name(2)) == 3
    for bad in ("foreground", "alpha_0", "alpha_01", "full_1", "sky"):
        with pytest.raises(ValueError, match="not a segment name"):
            Segment.from_name(bad)
    with pytest.raises(ValueError, match="no segment 'alpha_3'"):
        layout.segment("alpha_3")
