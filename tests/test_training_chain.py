"""The Wan route through the trainer: stages that chain from a Wan2.1 directory, layer-weights files that give each
stage's transformer exactly on the base they name, and the bad cases (one line, nothing written)."""

from pathlib import Path

import pytest
import torch
from helpers import save_tiny_wan, toy_clip

from layert2v.layer_weights import base_fingerprint
from layert2v.pipeline import LayerT2VPipeline
from layert2v.training.config import TrainConfig
from layert2v.training.trainer import Trainer


def toy_source(i, k):
    return toy_clip(i, k, frames=5, size=32)


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return save_tiny_wan(tmp_path_factory.mktemp("wan21"))


def wan_config(tmp_path, wan_dir, stage, name, **over):
    raw = {"stage": stage, "output_dir": str(tmp_path / name), "text_encoder": str(wan_dir),
           "max_sequence_length": 8, "alpha_lora_rank": 2, "data": {"frames": 5},
           "train": {"steps": 2, "batch_size": 1, "warmup": 1, "checkpoint_every": 2, "log_every": 1, "lr": 1e-2}}
    for key, value in over.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and key in raw else value
    return TrainConfig.from_dict(raw)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, wan_dir):
    """Stage 1 (alpha) on Wan's VAE, stage 2 (layered, LoRA) from Wan's transformer + stage 1's alpha path,
    stage 3 (two foregrounds) from stage 2."""
    tmp = tmp_path_factory.mktemp("chain")
    Trainer(wan_config(tmp, wan_dir, "alpha", "s1", init=str(wan_dir)), data=toy_source).train()
    s1 = tmp / "s1" / "final"
    Trainer(wan_config(tmp, wan_dir, "layered", "s2", lora_rank=4,
                       init={"transformer": str(wan_dir), "vae": str(wan_dir), "alpha_path": str(s1)}),
            data=toy_source).train()
    Trainer(wan_config(tmp, wan_dir, "layered", "s3", lora_rank=4, init=str(tmp / "s2" / "final"),
                       max_foregrounds=2, data={"num_foregrounds": [2, 2]}), data=toy_source).train()
    return tmp


@pytest.mark.parametrize("stage", ["s2", "s3"])
def test_layer_weights_on_the_recorded_base_give_the_stage_output(chain, wan_dir, stage):
    final = chain / stage / "final"
    own = LayerT2VPipeline.from_pretrained(final)
    rebuilt = LayerT2VPipeline.from_pretrained(wan_dir, layer_weights=final / "layer_weights.safetensors")
    want, got = own.transformer.state_dict(), rebuilt.transformer.state_dict()
    assert sorted(want) == sorted(got)
    assert max(float((want[n] - got[n]).abs().max()) for n in want) <= 1e-6
    wan = LayerT2VPipeline.from_pretrained(wan_dir).transformer.state_dict()
    moved = max(float((want[n] - wan[n]).abs().max()) for n in wan if not n.startswith("layer_"))
    assert moved > 1e-4  # the stage changed the backbone, so the check above is not trivially true
    for name, weight in own.alpha_path.state_dict().items():
        assert torch.equal(weight, rebuilt.alpha_path.state_dict()[name])


def test_stage_3_file_carries_stage_2_lora_and_names_wan(chain, wan_dir):
    from layert2v.layer_weights import read_layer_weights

    s2, _ = read_layer_weights(chain / "s2" / "final" / "layer_weights.safetensors")
    s3, _ = read_layer_weights(chain / "s3" / "final" / "layer_weights.safetensors")
    wan = LayerT2VPipeline.from_pretrained(wan_dir).transformer
    assert s2["base"] == s3["base"] == base_fingerprint(wan.state_dict())
    assert len(s2["loras"]) == 1 and len(s3["loras"]) == 2


def test_layer_weights_on_another_base_are_refused(chain, tmp_path):
    other = save_tiny_wan(tmp_path / "other")
    from diffusers import WanTransformer3DModel

    transformer = WanTransformer3DModel.from_pretrained(other / "transformer")
    with torch.no_grad():
        transformer.blocks[0].attn1.to_q.weight.add_(1e-3)
    transformer.save_pretrained(other / "transformer")
    with pytest.raises(ValueError, match="another base transformer"):
        LayerT2VPipeline.from_pretrained(other, layer_weights=chain / "s2" / "final" / "layer_weights.safetensors")


def test_stage_2_pointed_at_stage_1_output_says_where_to_point_it(chain, wan_dir, tmp_path):
    cfg = wan_config(tmp_path, wan_dir, "layered", "bad", lora_rank=4, init=str(chain / "s1" / "final"))
    with pytest.raises(ValueError, match="init.transformer"):
        Trainer(cfg, data=toy_source)
    assert not (tmp_path / "bad").exists()


def test_missing_alpha_path_is_not_built_fresh(wan_dir, tmp_path):
    cfg = wan_config(tmp_path, wan_dir, "layered", "bad", lora_rank=4, init=str(wan_dir))
    with pytest.raises(ValueError, match="init.alpha_path"):
        Trainer(cfg, data=toy_source)
    assert not (tmp_path / "bad").exists()


def test_init_components_must_exist_and_be_known(wan_dir, tmp_path):
    with pytest.raises(ValueError, match="components"):
        wan_config(tmp_path, wan_dir, "layered", "bad", init={"unet": str(wan_dir)})
    cfg = wan_config(tmp_path, wan_dir, "layered", "bad", init={"transformer": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Trainer(cfg, data=toy_source)


def test_alpha_stage_reads_vidlayer_clips_of_another_size_with_the_perceptual_term(wan_dir, tmp_path):
    """data.kind vidlayer: clips of 9 frames at 48x48 train a 5-frame 32x32 stage; eq. 8's L_perc through a
    random VGG16 file."""
    from safetensors.torch import save_file

    from layert2v.data.vidlayer import write_vidlayer
    from layert2v.models.perceptual import vgg16_features

    write_vidlayer(tmp_path / "vidlayer", [toy_clip(i, 1, frames=9, size=48) for i in range(2)])
    vgg = {f"features.{k}": v for k, v in vgg16_features(23).state_dict().items()}
    save_file(vgg, str(tmp_path / "vgg.safetensors"))
    cfg = wan_config(tmp_path, wan_dir, "alpha", "s1", init=str(wan_dir), train={"steps": 1},
                     data={"kind": "vidlayer", "path": str(tmp_path / "vidlayer")},
                     loss={"lambda_perc": 1.0, "vgg16": str(tmp_path / "vgg.safetensors")})
    trainer = Trainer(cfg)
    record = trainer.train()[0]
    assert record["perc"] > 0 and record["loss"] > record["rec"]
    with pytest.raises(ValueError, match="lambda_perc > 0 needs loss.vgg16"):
        wan_config(tmp_path, wan_dir, "alpha", "s1", init=str(wan_dir), loss={"lambda_perc": 1.0})


WAN_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "wan").glob("*.yaml"))


@pytest.mark.parametrize("path", WAN_CONFIGS, ids=lambda p: p.stem)
def test_wan_configs_dry_run_without_weights(path, capsys):
    """Each configs/wan stage and the chain it starts from check out on the meta device, with no weights here."""
    from layert2v.cli import main

    assert main(["train", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    cfg = TrainConfig.from_yaml(path)
    stages = [line for line in out.splitlines() if line.startswith("stage ")]
    assert stages[-1] == f"stage {cfg.stage}: {path.name} -> {cfg.output_dir}/final"  # after the stages it needs
    assert out.count("trainable") == out.count("per process") == len(stages)


def test_wan_schedule_follows_appendix_a():
    cfgs = {p.stem: TrainConfig.from_yaml(p) for p in WAN_CONFIGS}
    shapes = {name: (c.data.height, c.data.width, c.data.frames, c.train.batch_size, c.train.steps)
              for name, c in cfgs.items()}
    assert shapes == {"1a_alpha_192x336": (192, 336, 9, 8, 4500), "1b_alpha_384x672": (384, 672, 41, 2, 2500),
                      "2a_layered_192x336": (192, 336, 9, 8, 6000), "2b_layered_384x672": (384, 672, 41, 4, 1000),
                      "3_multi_384x672": (384, 672, 41, 1, 5000)}
    for c in cfgs.values():
        assert c.train.lr == 1e-4 and c.train.warmup == 500 and c.train.weight_decay == 0.01
        if c.stage == "layered":
            assert (c.lora_rank, c.max_sequence_length) == (128, 512)
            assert (c.loss.lambda_cons, c.loss.lambda_mask, c.loss.lambda_grad) == (0.1, 0.1, 0.1)
        else:
            assert (c.alpha_lora_rank, c.loss.lambda_edge, c.loss.lambda_perc) == (128, 1.0, 1.0)


def test_dry_run_names_a_broken_chain(tmp_path, capsys):
    from layert2v.cli import main

    (tmp_path / "2.yaml").write_text(
        "stage: layered\ninit: runs/nowhere/final\noutput_dir: runs/x\nlora_rank: 4\n")
    assert main(["train", str(tmp_path / "2.yaml"), "--dry-run"]) == 2
    assert "no config in" in capsys.readouterr().err


def test_merged_fingerprint_is_made_without_a_copy_and_is_unchanged(monkeypatch):
    """The export's `result` fingerprint (base_fingerprint of the transformer after merging its LoRA) is made one
    merged layer at a time: equal to fingerprinting a merged deep copy, as the export did, with no copy made."""
    import copy

    from helpers import TINY_TRANSFORMER

    from layert2v.layer_weights import MergedWeights, add_transformer_lora, merge_transformer_lora
    from layert2v.models.transformer import LayeredWanTransformer

    torch.manual_seed(0)
    transformer = LayeredWanTransformer(**TINY_TRANSFORMER, max_foregrounds=1)
    add_transformer_lora(transformer, rank=4)
    with torch.no_grad():  # a trained LoRA: B moved off its zero start
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    before = {k: v.clone() for k, v in transformer.state_dict().items()}
    clone = copy.deepcopy(transformer)
    merge_transformer_lora(clone)
    expected = base_fingerprint(clone.state_dict())
    assert expected != base_fingerprint(transformer.state_dict())  # the LoRA changes the merged weights

    def no_copy(*_):
        raise AssertionError("the fingerprint copied the transformer")

    monkeypatch.setattr(copy, "deepcopy", no_copy)
    assert base_fingerprint(MergedWeights(transformer)) == expected
    after = transformer.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the transformer itself is untouched
