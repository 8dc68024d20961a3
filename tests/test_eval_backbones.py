"""The local-weights loader: skip reasons, layout errors, and the real loading code run on tiny random
stand-ins saved in the documented layout (no pretrained weights exist on test machines)."""

import json
import string

import numpy as np
import pytest

from layert2v.eval import suite
from layert2v.eval.backbones import NEEDS, load_backbones
from layert2v.video import LayeredVideo


def test_without_weights_every_model_dimension_is_skipped_with_a_reason():
    nets = load_backbones(None)
    assert set(nets.skipped) == set(NEEDS)
    assert nets.skipped["subject_consistency"] == "no --weights directory given (needs DINO ViT-B/16)"
    assert nets.dino is nets.flow is nets.video_text is None


def test_absent_subfolders_are_skipped_naming_the_expected_path(tmp_path):
    nets = load_backbones(tmp_path)
    assert nets.skipped["subject_consistency"] == f"no DINO ViT-B/16 weights in {tmp_path / 'dino_vitb16'}"
    assert nets.skipped["dynamic_degree"] == f"no RAFT weights in {tmp_path / 'raft'}"
    assert len(nets.skipped) == 6


def test_weights_must_be_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_backbones(tmp_path / "nope")


def test_a_present_but_malformed_subfolder_is_an_error(tmp_path):
    (tmp_path / "dino_vitb16").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_backbones(tmp_path)
    (tmp_path / "dino_vitb16").rmdir()
    (tmp_path / "raft").mkdir()
    with pytest.raises(FileNotFoundError, match="raft.pt2 is missing"):
        load_backbones(tmp_path)
    (tmp_path / "raft" / "raft.pt2").write_text("not a program")
    with pytest.raises(ValueError, match="cannot load .*raft.pt2 as a torch.export program"):
        load_backbones(tmp_path)


# ------------------------------------------------------------------------ tiny stand-in weights
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)

    vit = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                                 image_size=32, patch_size=16)
    transformers.ViTModel(vit, add_pooling_layer=False).save_pretrained(root / "dino_vitb16")
    clip = transformers.CLIPConfig(
        text_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 20,
                     "vocab_size": 64, "max_position_embeddings": 32},
        vision_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 20,
                       "image_size": 32, "patch_size": 16},
        projection_dim=8,
    )
    transformers.CLIPModel(clip).save_pretrained(root / "clip_vitb32")
    transformers.CLIPModel(clip).save_pretrained(root / "clip_vitl14")
    (root / "aesthetic").mkdir()
    torch.save({"weight": torch.ones(1, 8), "bias": torch.tensor([2.0])}, root / "aesthetic/sa_0_4_vit_l_14_linear.pth")

    class Difference(torch.nn.Module):  # "flow" = frame1 - frame0 in its first two channels
        def forward(self, a, b):
            return (b - a)[:, :2]

    class Average(torch.nn.Module):
        def forward(self, a, b):
            return (a + b) / 2

    class MeanColour(torch.nn.Module):
        def forward(self, video):
            return video.mean(dim=(1, 3, 4))

    class FirstTokens(torch.nn.Module):
        def forward(self, tokens):
            return tokens[:, :3].float()

    h, w = torch.export.Dim("h", min=2, max=4096), torch.export.Dim("w", min=2, max=4096)
    pair = (torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
    hw = ({2: h, 3: w}, {2: h, 3: w})
    for sub, file, module, args, dims in [
        ("raft", "raft.pt2", Difference(), pair, hw),
        ("amt", "amt_s.pt2", Average(), pair, hw),
        ("viclip", "vision.pt2", MeanColour(), (torch.zeros(1, 8, 3, 224, 224),), None),
        ("viclip", "text.pt2", FirstTokens(), (torch.zeros(1, 32, dtype=torch.long),), None),
    ]:
        (root / sub).mkdir(exist_ok=True)
        torch.export.save(torch.export.export(module, args, dynamic_shapes=dims), root / sub / file)

    vocab = {}
    for c in string.ascii_lowercase:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    (root / "viclip/vocab.json").write_text(json.dumps(vocab))
    (root / "viclip/merges.txt").write_text("#version: 0.2\n")
    return root


def test_loaders_run_on_stand_ins_in_the_documented_layout(weights):
    nets = load_backbones(weights, device="cpu")
    assert nets.skipped == {}
    frames = np.random.default_rng(0).random((3, 10, 12, 3)).astype(np.float32)

    assert nets.dino.encode(frames).shape == (3, 32)  # CLS token, short side resized to 224
    assert nets.clip.encode(frames).shape == (3, 8)
    feats = nets.aesthetic.clip.encode(frames)  # the ViT-L/14 stand-in
    normalised = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    assert nets.aesthetic.score(frames) == pytest.approx(normalised.sum(axis=1) + 2.0, abs=1e-5)

    # frame1 - frame0 = the column index on the 8-bit scale: checks that padding to 16x16 is cropped away
    ramp = np.broadcast_to(np.arange(12, dtype=np.float32)[None, :, None] / 255, (10, 12, 3))
    flow = nets.flow.flow(np.zeros((10, 12, 3), np.float32), ramp)
    assert flow.shape == (10, 12, 2)
    assert np.array_equal(flow[..., 0], np.broadcast_to(np.arange(12.0), (10, 12)))
    assert nets.interpolator.interpolate(frames[0], frames[1]) == pytest.approx((frames[0] + frames[1]) / 2)

    assert nets.video_text.encode_video(np.zeros((8, 10, 12, 3), np.float32)).shape == (3,)
    # "a cat": <start> a</w> c a t</w> ... the first three token ids, zero-padded to 32
    assert nets.video_text.encode_text("a cat").tolist() == [52.0, 1.0, 4.0]


def test_every_dimension_is_computed_when_every_backbone_loads(weights):
    nets = load_backbones(weights, device="cpu")
    rng = np.random.default_rng(1)
    shape = (5, 16, 16)
    video = LayeredVideo(full=rng.random((*shape, 3)), background=rng.random((*shape, 3)),
                         foregrounds=[rng.random((*shape, 3))], alphas=[rng.random(shape)], fps=8,
                         prompts={"full": "a cat", "background": "a room", "foregrounds": ["a cat"]})
    scores = suite.vbench_scores(video, nets)
    assert set(scores) == set(suite.vbench.DIMENSIONS)
    for dim, columns in scores.items():
        for col in suite.COLUMNS:
            assert len(columns[col]) == 1 and columns[col][0] is not None, (dim, col)
