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
from layert2v.training.recipes import LAYER_WEIGHTS
from layert2v.training.trainer import Trainer

STEPS = 3  # checkpoints at step 2 and at the end


def stage(root: Path, batch_size: int):
    return config(root, lora_rank=4, train={"steps": STEPS, "batch_size": batch_size, "checkpoint_every": 2})


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
    for run in ("straight", "resumed"):
        final = tmp_path / run / "layered" / "final"
        meta, tensors = read_layer_weights(final / LAYER_WEIGHTS)
        one_meta, one_tensors = read_layer_weights(one_process["export"] / LAYER_WEIGHTS)
        assert {k: v for k, v in meta.items() if k != "result"} == {k: v for k, v in one_meta.items()
                                                                      if k != "result"}
        assert tensors.keys() == one_tensors.keys()
        for key, value in one_tensors.items():
            torch.testing.assert_close(tensors[key], value, rtol=0, atol=2e-5)
        from layert2v.models.transformer import LayeredWanTransformer

        saved = LayeredWanTransformer.from_pretrained(final / "transformer")
        assert meta["result"] == base_fingerprint(saved.state_dict())
