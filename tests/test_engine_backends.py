"""The engine's real-model backends, built from tiny random configs and saved the way the real downloads are laid
out, so that the loading code, the calls into transformers / diffusers, the shapes and the output are real.

Random weights say nothing about quality: these tests check wiring. The OpenAI-compatible judge talks to a fake
server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import torch
from helpers import TINY_VAE
from PIL import Image

from layert2v.cli import main
from layert2v.data.engine.backends import parse_captions
from layert2v.data.engine.build import build
from layert2v.data.engine.clip import Reject
from layert2v.data.engine.config import parse_config
from layert2v.data.engine.footage import make_clip, write_footage
from layert2v.data.engine.judge import OpenAIJudge, parse_scores
from layert2v.data.folder import FolderDataset
from layert2v.models.text import minilm_path

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

QWEN_TOKENS = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
# A Qwen-style chat template (the real one ships with the download); images become vision_start/pad/end.
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
                 "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n"
                 "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")


@pytest.fixture(scope="module")
def clip():
    return make_clip(0)


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    root = tmp_path_factory.mktemp("footage")
    write_footage(root, "clip0", make_clip(0))
    return root


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    """A 2M-parameter Qwen3VLForConditionalGeneration (hidden 32, one layer each side) with MiniLM's tokenizer
    plus Qwen's special tokens (Qwen's own tokenizer cannot be downloaded here) and a small image processor."""
    from transformers import AutoTokenizer, Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    root = tmp_path_factory.mktemp("qwen3vl")
    tok = AutoTokenizer.from_pretrained(minilm_path())
    tok.add_special_tokens({"additional_special_tokens": QWEN_TOKENS})
    tok.chat_template = CHAT_TEMPLATE
    ids = [tok.convert_tokens_to_ids(t) for t in QWEN_TOKENS]
    config = Qwen3VLConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
                     "max_position_embeddings": 4096,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                         "mrope_interleaved": True}},
        vision_config={"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 16,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 32,
                       "num_position_embeddings": 16, "deepstack_visual_indexes": [0]},
        image_token_id=ids[0], video_token_id=ids[1], vision_start_token_id=ids[2], vision_end_token_id=ids[3])
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(config)
    assert sum(p.numel() for p in model.parameters()) < 3_000_000
    model.save_pretrained(root)
    tok.save_pretrained(root)
    Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32,
                             max_pixels=64 * 64).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def vitmatte_dir(tmp_path_factory):
    """A 23k-parameter VitMatteForImageMatting (VitDet backbone: hidden 16, one layer, 4 input channels)."""
    from transformers import VitDetConfig, VitMatteConfig, VitMatteForImageMatting
    from transformers.models.vitmatte.image_processing_pil_vitmatte import VitMatteImageProcessorPil

    root = tmp_path_factory.mktemp("vitmatte")
    backbone = VitDetConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, num_channels=4,
                            image_size=32, pretrain_image_size=32, patch_size=16, out_features=["stage1"],
                            use_relative_position_embeddings=False)
    torch.manual_seed(0)
    VitMatteForImageMatting(VitMatteConfig(backbone_config=backbone, hidden_size=16, convstream_hidden_sizes=[4, 4, 8],
                                           fusion_hidden_sizes=[8, 8, 4, 4])).save_pretrained(root)
    VitMatteImageProcessorPil().save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def vace_dir(tmp_path_factory):
    """A tiny WanVACEPipeline directory: WanVACETransformer3DModel (2 heads x 16, 2 layers, one VACE layer), the
    tests' tiny AutoencoderKLWan, a 1-layer UMT5 encoder with MiniLM's tokenizer, UniPC flow scheduler."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACEPipeline, WanVACETransformer3DModel
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    root = tmp_path_factory.mktemp("wan_vace")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    encoder = UMT5EncoderModel(UMT5Config(vocab_size=tok.vocab_size, d_model=32, d_kv=16, d_ff=64, num_layers=1,
                                          num_heads=2))
    vae = AutoencoderKLWan(**TINY_VAE)
    # VACE's context: masked-video latents (2 x z_dim) and the 8x8-folded mask (64 channels)
    transformer = WanVACETransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                            out_channels=4, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2,
                                            rope_max_seq_len=64, vace_layers=[0], vace_in_channels=2 * 4 + 64)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    WanVACEPipeline(tokenizer=tok, text_encoder=encoder, vae=vae, scheduler=scheduler,
                    transformer=transformer).save_pretrained(root)
    return root


# ------------------------------------------------------------------------------------------------ Qwen-VL
def test_qwen3vl_captioner_runs_the_model_on_frames(qwen_dir, clip):
    from layert2v.data.engine.backends import Qwen3VLCaptioner

    captioner = Qwen3VLCaptioner(str(qwen_dir), device="cpu", dtype="float32", max_new_tokens=6, num_frames=3)
    asked = []
    ask = captioner.vlm.ask
    captioner.vlm.ask = lambda system, content: asked.append(content) or ask(system, content)
    with pytest.raises(Reject, match="answered without a JSON object: '.+'"):  # random weights: random words
        captioner.caption(clip.full, ["disc"])
    assert [im.size for im in asked[0]] == [(32, 32)] * 3


def test_the_captioner_asks_for_up_to_max_foregrounds_subjects(qwen_dir, tmp_path):
    from layert2v.data.engine.build import Engine

    options = {"backend": "qwen3vl", "model": str(qwen_dir), "device": "cpu", "dtype": "float32"}
    assert Engine(parse_config({"max_foregrounds": 3, "captions": options}), tmp_path).backend(
        "captions").max_foregrounds == 3
    assert Engine(parse_config({"max_foregrounds": 3, "captions": {**options, "max_foregrounds": 1}}),
                  tmp_path).backend("captions").max_foregrounds == 1  # said explicitly, it wins


def test_caption_answers_are_parsed_strictly():
    answer = 'Sure! ```json\n{"full": "a cat on a sofa", "background": "a sofa", "foregrounds": ["a cat"], ' \
             '"video_quality": 8}\n```'
    assert parse_captions(answer) == {"full": "a cat on a sofa", "background": "a sofa", "foregrounds": ["a cat"]}
    with pytest.raises(Reject, match="no valid subject"):
        parse_captions('{"foregrounds": []}')
    with pytest.raises(Reject, match=r"lacks \['background'\]"):
        parse_captions('{"full": "x", "foregrounds": ["y"]}')


def test_qwen3vl_judge_in_a_build(qwen_dir, footage, tmp_path):
    config = parse_config({"judge": {"backend": "qwen3vl", "model": str(qwen_dir), "device": "cpu",
                                     "dtype": "float32", "max_new_tokens": 4}})
    summary = build(footage, tmp_path / "ds", config, executor="local", progress=False)
    [reject] = summary.rejected
    assert reject["reason"].startswith("check: the judge answered without a JSON object")
    assert "recomposite_psnr" in reject["scores"]  # the weight-free checks ran (and passed) first


# ------------------------------------------------------------------------------------------------ VitMatte
def test_vitmatte_matter_in_a_build(vitmatte_dir, footage, tmp_path, clip):
    config = parse_config({"matting": {"backend": "vitmatte", "model": str(vitmatte_dir), "device": "cpu",
                                       "band": 2},
                           "quality": {"min_recomposite_psnr": 0, "max_alpha_instability": 1, "max_leakage": 1}})
    summary = build(footage, tmp_path / "ds", config, executor="local", progress=False)
    assert summary.rejected == [] and summary.accepted[0]["backends"]["matting"] == "vitmatte"
    video = FolderDataset(tmp_path / "ds")[0]
    alpha = video.alphas[0]
    assert alpha.shape == (9, 32, 32)
    from scipy import ndimage

    disc = clip.alphas[0] > 0.5
    inside = np.stack([ndimage.binary_erosion(d, iterations=3) for d in disc])
    outside = ~np.stack([ndimage.binary_dilation(d, iterations=4) for d in disc])
    # the trimap's certain regions are kept (band 2 around the segmented disc), the model fills the band
    assert inside.any() and alpha[inside].min() > 0.95 and alpha[outside].max() < 0.05
    band = ~inside & ~outside
    assert np.abs(alpha[band] - 0.5).min() < 0.1  # random weights: sigmoid of ~0 in the band


# ------------------------------------------------------------------------------------------------ Wan VACE
def test_wan_vace_remover_inpaints_only_the_dilated_masks(vace_dir, clip):
    from scipy import ndimage

    from layert2v.data.engine.backends import WanVACERemover

    remover = WanVACERemover(str(vace_dir), steps=2, dilate=1, device="cpu", dtype="float32")
    mask = clip.alphas[0] > 0.5
    frames = clip.full[:7, :, :30]  # 7 frames of 30 px: padded to VACE's 9 x 32 and cropped back
    background = remover.remove(frames, [mask[:7, :, :30]], "a portrait photograph")
    assert background.shape == frames.shape and background.dtype == np.float32
    grown = np.stack([ndimage.binary_dilation(m, ndimage.generate_binary_structure(2, 1)) for m in mask[:7, :, :30]])
    assert np.array_equal(background[~grown], frames[~grown])
    assert np.abs(background[grown] - frames[grown]).mean() > 0.01  # random weights paint something else


# ------------------------------------------------------------------------------------------- missing weights
@pytest.mark.parametrize("stage, backend", [("captions", "qwen3vl"), ("segmentation", "sam3"),
                                            ("matting", "vitmatte"), ("removal", "wan_vace"), ("judge", "qwen3vl")])
def test_missing_weights_are_one_line_before_any_work(footage, tmp_path, capsys, stage, backend):
    config = tmp_path / "engine.yaml"
    config.write_text(f"{stage}: {{backend: {backend}, model: {tmp_path / 'nowhere'}}}\n")
    assert main(["data", "build", str(footage), "--out", str(tmp_path / "ds"), "--config", str(config),
                 "--local"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{backend}: no model at {tmp_path / 'nowhere'}" in err
    assert not (tmp_path / "ds").exists()


def test_sam3_segmenter_is_not_run_here():
    pytest.skip("SAM 3 needs torchvision (Sam3Model calls torchvision.ops.roi_align; Sam3VideoProcessor's image "
                "and video processors have only a torchvision backend), which this project does not install. "
                "Sam3Segmenter is written against Sam3VideoProcessor.init_video_session / add_text_prompt / "
                "postprocess_outputs and Sam3VideoModel.propagate_in_video_iterator; only its missing-weights path "
                "is tested (test_missing_weights_are_one_line_before_any_work)")


# ------------------------------------------------------------------------------------------------- OpenAI
class FakeEndpoint(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat-completions endpoint that records requests and answers from a script."""

    requests: list = []
    answer = '{"0": [8, 9], "4": [8, 9], "8": [2, 9]}'
    status = 200

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeEndpoint.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        reply = {"choices": [{"message": {"role": "assistant", "content": FakeEndpoint.answer}}]}
        data = json.dumps(reply if FakeEndpoint.status == 200 else {"error": "bad request"}).encode()
        self.send_response(FakeEndpoint.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def endpoint(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), FakeEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeEndpoint.requests, FakeEndpoint.status = [], 200
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_judge_scores_key_frames_and_crops(endpoint, footage, tmp_path):
    config = parse_config({"judge": {"backend": "openai", "base_url": endpoint, "model": "gpt-4o",
                                     "api_key_env": "FAKE_KEY"}, "quality": {"key_interval": 4}})
    summary = build(footage, tmp_path / "ds", config, executor="local", progress=False)
    [record] = summary.accepted
    assert record["source_frames"] == [0, 1, 2, 3, 4] and record["backends"]["judge"] == "openai"
    assert record["scores"]["judge"] == {"0": [8, 9], "4": [8, 9], "8": [2, 9]}
    [request] = FakeEndpoint.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "gpt-4o" and "disc number 1 over a portrait photograph" in body["messages"][0]["content"]
    content = body["messages"][1]["content"]
    assert [c["text"] for c in content if c["type"] == "text"] == ["Frame 0:", "Frame 4:", "Frame 8:"]
    png = base64.b64decode(content[1]["image_url"]["url"].split(",", 1)[1])
    assert Image.open(io.BytesIO(png)).size == (4 * 32, 32)  # original | mask | background | foreground


def test_openai_judge_failures(endpoint, footage, tmp_path, monkeypatch):
    FakeEndpoint.status = 400
    config = parse_config({"judge": {"backend": "openai", "base_url": endpoint, "model": "m",
                                     "api_key_env": "FAKE_KEY", "retries": 0}})
    summary = build(footage, tmp_path / "ds", config, executor="local", progress=False)
    assert "answered HTTP 400" in summary.rejected[0]["reason"]

    monkeypatch.delenv("FAKE_KEY")
    with pytest.raises(ValueError, match="FAKE_KEY is not set"):
        OpenAIJudge(base_url=endpoint, model="m", api_key_env="FAKE_KEY")
    with pytest.raises(ValueError, match="must be an http"):
        OpenAIJudge(base_url="127.0.0.1:8000", model="m", api_key_env=None)
    assert parse_scores('{"0": [7, 8], "10": [1, 2]}', [0, 10, 20]) == {0: (7, 8), 10: (1, 2)}
    with pytest.raises(Reject, match="not \\[bg_score, fg_score\\]"):
        parse_scores('{"0": 7}', [0])
