"""L_perc of LayerT2V's stage-1 loss (eq. 8): distances between VGG16 features of the decoded and the true matte.

The network is torchvision's ``vgg16().features`` (configuration "D": 3x3 convolutions with ReLU, 2x2 max
pooling), built here layer for layer with the same module indices, so torchvision's weights file loads under its
own key names (``features.N.weight``). It is built here rather than imported because torchvision is not a
dependency of this project; tests/test_perceptual.py checks the stack against torchvision's where torchvision
imports. Only the layers up to the deepest one used are built (``relu4_3``: 7.6M parameters, not vgg16's 138M).

The loss, for predictions and targets of shape (B, C, T, H, W) or (N, C, H, W) with values in [0, 1] and C = 1
(an alpha matte, repeated to RGB as the VAE sees it) or C = 3:

* every frame is normalised with ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), the
  statistics VGG16 was trained with;
* features are taken after ``relu1_2``, ``relu2_2``, ``relu3_3`` and ``relu4_3`` (the blocks' last
  activations; ``layers=`` chooses others);
* the loss is the mean over those layers of the mean absolute difference of the two feature maps (target
  features carry no gradient; the network is frozen).

Weights: a local file the user names. ``.safetensors`` is preferred (nothing is executed when it is read); a
torchvision ``.pth`` is read with ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# torchvision's configuration "D" (VGG16): output channels per 3x3 convolution, "M" a 2x2 max pool
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# index in vgg16().features of the ReLU after each block's last convolution
FEATURE_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}
DEFAULT_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FIX = "point it at a local VGG16 .safetensors file (or torchvision's vgg16 .pth)"


def vgg16_features(num_layers: int) -> nn.Sequential:
    """The first ``num_layers`` modules of torchvision's ``vgg16().features``, same indices, randomly initialised."""
    layers: list[nn.Module] = []
    channels = 3
    for v in VGG16_CONFIG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU()]
            channels = v
    return nn.Sequential(*layers[:num_layers])


def _last_tap(layers: tuple[str, ...]) -> int:
    """Index in the feature stack of the deepest of ``layers``, checked to be known."""
    unknown = [name for name in layers if name not in FEATURE_LAYERS]
    if unknown or not layers:
        raise ValueError(f"unknown VGG16 feature layer(s) {unknown or layers}; choose from {list(FEATURE_LAYERS)}")
    return max(FEATURE_LAYERS[name] for name in layers)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors named ``features.*`` (or bare ``N.weight``) in a .safetensors or .pth file."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys() if not k.startswith("classifier.")}
        except Exception as e:  # safetensors raises its own error types for a damaged header
            raise ValueError(f"VGG16 weights {path} cannot be read as safetensors ({e}); {FIX}") from None
    if path.suffix in (".pth", ".pt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # an unpickling refusal or a damaged file
            reason = " ".join(str(e).split())[:200]
            raise ValueError(f"VGG16 weights {path} cannot be read with weights_only=True ({reason}); {FIX}") from None
        if not isinstance(state, dict):
            raise ValueError(f"VGG16 weights {path} hold a {type(state).__name__}, not a state dict; {FIX}")
        return {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and not k.startswith("classifier.")}
    raise ValueError(f"VGG16 weights {path} are neither .safetensors nor .pth; {FIX}")


class PerceptualLoss(nn.Module):
    """Frozen VGG16 features -> mean L1 feature distance (see the module docstring).

    Build it with :meth:`from_file` (real weights) or from any ``vgg16_features`` stack (tests).
    """

    def __init__(self, features: nn.Sequential, layers: tuple[str, ...] = DEFAULT_LAYERS):
        super().__init__()
        last = _last_tap(layers)
        if len(features) <= last:
            raise ValueError(f"the feature stack has {len(features)} modules; layer index {last} is needed")
        self.taps = sorted(FEATURE_LAYERS[name] for name in layers)
        self.layers = tuple(layers)
        self.features = features[: self.taps[-1] + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_file(cls, path: str | Path, layers: tuple[str, ...] = DEFAULT_LAYERS) -> PerceptualLoss:
        """Load the VGG16 feature weights the layers need from ``path`` (a torchvision VGG16 state dict, as
        .safetensors or .pth); the classifier's weights, if present, are not read into the model."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"VGG16 weights {path} not found; {FIX}")
        features = vgg16_features(_last_tap(layers) + 1)
        state = _read_state(path)
        prefix = "features." if any(k.startswith("features.") for k in state) else ""
        loaded = {}
        for key, like in features.state_dict().items():
            value = state.get(prefix + key)
            if value is None:
                raise ValueError(f"VGG16 weights {path} lack {prefix + key} (found {len(state)} tensors); {FIX}")
            if value.shape != like.shape:
                raise ValueError(f"VGG16 weights {path}: {prefix + key} is {tuple(value.shape)}, VGG16's is "
                                 f"{tuple(like.shape)}; {FIX}")
            loaded[key] = value.to(like.dtype)
        features.load_state_dict(loaded)
        return cls(features, layers)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.features.eval()  # frozen: always in inference mode
        return self

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) or (N, C, H, W) in [0, 1], C in {1, 3} -> normalised (N, 3, H, W)."""
        if x.ndim == 5:
            x = x.transpose(1, 2).flatten(0, 1)
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected (B, C, T, H, W) or (N, C, H, W) with C = 1 or 3, got {tuple(x.shape)}")
        x = x.expand(-1, 3, -1, -1)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, module in enumerate(self.features):
            x = module(x)
            if i in self.taps:
                out.append(x)
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        with torch.no_grad():
            want = self._features(self._frames(target))
        got = self._features(self._frames(pred))
        return torch.stack([F.l1_loss(g, w.to(g.dtype)) for g, w in zip(got, want)]).mean()
