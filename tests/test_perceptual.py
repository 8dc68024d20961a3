"""L_perc (eq. 8): the VGG16 feature stack, its weights loading and its errors, on random small VGGs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from layert2v.models.perceptual import (
    FEATURE_LAYERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PerceptualLoss,
    vgg16_features,
)

SMALL = ("relu1_2", "relu2_2")  # 9 modules, 0.26M parameters: the default's code path at a fraction of the cost


def random_state(num_layers: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random VGG16 state dict under torchvision's key names, with a classifier tensor that must be ignored."""
    torch.manual_seed(seed)
    state = {f"features.{k}": v for k, v in vgg16_features(num_layers).state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    return state


def test_stack_is_truncated_to_the_deepest_layer_used():
    loss = PerceptualLoss(vgg16_features(31))
    assert len(loss.features) == FEATURE_LAYERS["relu4_3"] + 1 == 23
    assert isinstance(loss.features[22], torch.nn.ReLU) and isinstance(loss.features[21], torch.nn.Conv2d)
    # conv1_1 .. conv4_3 of VGG16: sum of 3*3*c_in*c_out + c_out = 7,635,264 (vgg16 in full: 138M)
    assert sum(p.numel() for p in loss.features.parameters()) == 7_635_264
    assert not any(p.requires_grad for p in loss.parameters())


def test_identical_inputs_cost_nothing_and_gradients_reach_only_the_prediction():
    torch.manual_seed(0)
    loss = PerceptualLoss(vgg16_features(9), SMALL)
    target = torch.rand(2, 1, 3, 16, 16)  # (B, C=1 alpha, T, H, W)
    assert loss(target.clone(), target).item() == 0.0
    pred = (target + 0.2 * torch.randn_like(target)).requires_grad_()
    value = loss(pred, target)
    value.backward()
    assert value.item() > 0 and pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())
    rgb = torch.rand(4, 3, 16, 16)  # (N, 3, H, W) frames are accepted too
    assert loss(rgb, rgb.flip(-1)).item() > 0
    with pytest.raises(ValueError, match="differ in shape"):
        loss(rgb, rgb[:2])
    with pytest.raises(ValueError, match="C = 1 or 3"):
        loss(torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8))


def test_frames_are_normalised_with_imagenet_statistics():
    loss = PerceptualLoss(vgg16_features(9), SMALL)
    seen = []
    loss.features[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    loss(mean, mean)
    assert seen[0].abs().max() < 1e-6  # ImageNet's mean maps to 0
    ones = torch.ones(1, 1, 8, 8)
    loss(ones, ones)
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(seen[-1][0, :, 0, 0], expected)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_load_from_a_local_file(tmp_path, suffix):
    state = random_state(9, seed=1)
    path = tmp_path / f"vgg16{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    loss = PerceptualLoss.from_file(path, SMALL)
    torch.testing.assert_close(loss.features[7].weight, state["features.7.weight"])
    reference = vgg16_features(9)
    reference.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(loss(x, y), PerceptualLoss(reference, SMALL)(x, y))


class NotWeights:
    pass


@pytest.mark.parametrize("make, message", [
    (None, "not found; point it at a local VGG16"),
    (lambda p: p.with_suffix(".safetensors").write_bytes(b"garbage"), "cannot be read as safetensors"),
    (lambda p: save_file({"features.0.weight": torch.zeros(64, 3, 3, 3)}, p.with_suffix(".safetensors")),
     "lack features.0.bias"),
    (lambda p: save_file({"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)},
                         p.with_suffix(".safetensors")), r"features.0.weight is \(8, 3, 3, 3\)"),
    (lambda p: torch.save({"x": NotWeights()}, p.with_suffix(".pth")), "weights_only=True"),  # pickled code
    (lambda p: p.with_suffix(".bin").write_bytes(b"x"), "neither .safetensors nor .pth"),
])
def test_missing_or_wrong_weights_give_one_line_naming_the_fix(tmp_path, make, message):
    path = tmp_path / "vgg16.safetensors"
    if make is not None:
        make(path)
        path = next(tmp_path.iterdir())
    with pytest.raises((FileNotFoundError, ValueError), match=message) as e:
        PerceptualLoss.from_file(path, SMALL)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_unknown_layer_is_refused():
    with pytest.raises(ValueError, match="unknown VGG16 feature layer"):
        PerceptualLoss(vgg16_features(9), ("relu9_9",))


def test_stack_matches_torchvision_vgg16():
    try:
        from torchvision.models import vgg16
    except Exception as e:  # noqa: BLE001 - any import failure means there is nothing to compare against
        pytest.skip(f"torchvision does not import here ({type(e).__name__}: {str(e).splitlines()[0][:80]})")
    reference = vgg16(weights=None).features
    ours = vgg16_features(len(reference))
    assert [type(m) for m in ours] == [type(m) for m in reference]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in
                                                                  reference.state_dict().items()}
    ours.load_state_dict(reference.state_dict())
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(ours(x), reference(x))
