"""Two CPU processes (gloo) under accelerate train as one process on the same effective batch."""

import os
import socket

import torch
import torch.multiprocessing as mp
from test_trainer import config, first_step_gradients, toy_source

from layert2v.training.trainer import Trainer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), ACCELERATE_USE_CPU="true")
    torch.set_num_threads(1)
    from pathlib import Path

    trainer = Trainer(config(Path(root) / "ddp", lora_rank=4, train={"batch_size": 1, "grad_clip": 0.0}),
                      data=toy_source)
    assert trainer.accelerator.num_processes == world
    grads = first_step_gradients(trainer)
    loss = trainer.recipe.loss(trainer.batch(0))["loss"].item()  # this rank's share of step 0
    torch.save({"grads": grads, "loss": loss}, Path(root) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_processes_equal_one_on_the_same_effective_batch(tmp_path):
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = Trainer(config(tmp_path / "one", lora_rank=4, train={"batch_size": 2, "grad_clip": 0.0}),
                     data=toy_source)
    grads = first_step_gradients(single)
    loss = single.recipe.loss(single.batch(0))["loss"].item()
    assert abs((ranks[0]["loss"] + ranks[1]["loss"]) / 2 - loss) < 1e-5 * abs(loss)
    for name, g in grads.items():
        torch.testing.assert_close(ranks[0]["grads"][name], g, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(ranks[1]["grads"][name], g, rtol=1e-4, atol=1e-7)  # all-reduced: the same


def test_each_process_fills_only_its_share_of_the_cache(tmp_path):
    trainer = Trainer(config(tmp_path, data={"cache": 8}, train={"batch_size": 2}), data=toy_source)
    trainer.latents.fill(batch=4, workers=0, show=False, mine=(1, 2))
    # batch_indices: process p of 2 reads indices (2 * step + p) * 2 + (0, 1), i.e. clips 2-3 and 6-7 for p = 1
    assert sorted(i for i, _ in trainer.latents._encoded) == [2, 3, 6, 7]
