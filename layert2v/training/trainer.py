"""One training loop for every stage, on accelerate; the stages themselves are recipes (recipes.py).

    batch = next(batches)                 # a step's clips: made ahead by DataLoader workers, or cached latents
    loss = recipe.loss(batch)["loss"]     # the stage's loss
    backward, (after gradient_accumulation micro-batches) clip, optimizer and scheduler step, EMA, log, checkpoint

Data are drawn by index from the (micro-)step number, and each sample's timestep and noise from a generator keyed by
that index (on the training device, so a step's noise never crosses the bus); torch's global RNG state (the vae
stage's posterior samples) is checkpointed. So a resumed run continues exactly where the interrupted one would have
been, and N processes (or N accumulated micro-batches) train as one process on the whole batch does.

Engines (the launcher's choice, configs/accelerate): one process, DDP, FSDP2 (the layered stage) and DeepSpeed ZeRO-2.
Every process takes part in every checkpoint and export: the trainable weights, optimizer state and EMA go through
torch.distributed.checkpoint (each process writes its own shard), or under DeepSpeed through DeepSpeed's own
checkpoint (its fp32 master weights and optimizer partitions); the export gathers sharded weights on the main process.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list
from diffusers.optimization import get_cosine_schedule_with_warmup
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..formats import CHECKPOINT_PROGRESS
from ..latents import encode_layered
from ..layout import LayerLayout
from ..models.vae import AlphaPath
from ..output_dirs import atomic_directory, remove_leftovers, write_text_atomic
from ..video import LayeredVideo
from .config import TrainConfig
from .data import (  # noqa: F401  (re-exported: the trainer's public names before the split)
    Batch,
    ClipBatch,
    ClipFn,
    Reads,
    StepBatches,
    WorldClips,
    as_is,
    batch_indices,
    build_data,
    clip_batch,
    to_tensor,
)
from .recipes import RECIPES, LatentRecipe, Recipe, set_latent_stats  # noqa: F401

CHECKPOINT = "checkpoint"
PREVIOUS = "checkpoint_previous"  # the checkpoint before the last, kept so a damaged one is not the only one
# inside a checkpoint: torch.distributed.checkpoint's directory (trainable weights, optimizer, EMA), DeepSpeed's
# checkpoint tag (its weights and optimizer partitions), and each process's RNG and scheduler file
STATE, DEEPSPEED_TAG = "state", "deepspeed"


class Trainer:
    """Builds the stage's recipe, its optimizer and data, and runs the loop. ``data``: a clip source
    ``(index, num_foregrounds) -> LayeredVideo`` (default: the configured one, see ``data.build_data``)."""

    def __init__(self, config: TrainConfig, data: ClipFn | None = None, accelerator: Accelerator | None = None):
        self.cfg = config
        self.out = Path(config.output_dir)
        check_init(config)
        # the schedule counts optimizer steps: one scheduler step per optimizer step, whatever the process count
        self.accelerator = accelerator or Accelerator(mixed_precision=mixed_precision(config),
                                                      gradient_accumulation_steps=config.train.gradient_accumulation,
                                                      step_scheduler_with_optimizer=False)
        self.engine = engine_name(self.accelerator)
        torch.manual_seed(config.train.seed)
        self.generator = torch.Generator(self.accelerator.device).manual_seed(
            config.train.seed + 1000 * self.accelerator.process_index)
        self.step = 0
        self.data = data if data is not None else build_data(config)
        self.recipe: Recipe = RECIPES[config.stage](config, self.accelerator.device, self.generator, self.data)
        model = self.recipe.build()
        self.trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]
        if not self.trainable_names:
            raise ValueError(f"stage {config.stage} has nothing to train")
        opt = config.train
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=opt.lr, weight_decay=opt.weight_decay)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, opt.warmup, opt.steps)
        check_engine(config, self.accelerator, model)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, self.optimizer, self.scheduler)
        self.recipe.model, self.recipe.trained = self.model, model
        # EMA of the trainable weights as this process holds them (its shards under FSDP2), in fp32
        self.ema = ({n: p.detach().float().clone() for n, p in self._named_trainable()} if opt.ema > 0 else None)
        self.resume()

    # ---------------------------------------------------------------- access
    @property
    def text_encoder(self):  # noqa: ANN201 - the recipe's, where the stage reads prompts
        return self.recipe.text_encoder

    @property
    def vae(self):  # noqa: ANN201
        return self.recipe.vae

    @property
    def latents(self):  # noqa: ANN201 - the transformer stages' clip and prompt cache
        return self.recipe.latents

    def _unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def _named_trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        params = dict(self._unwrapped().named_parameters())
        return [(n, params[n]) for n in self.trainable_names]

    # ------------------------------------------------------------------ data
    @property
    def cached(self) -> bool:
        """Whether steps read cached latents by index instead of fresh clips."""
        return bool(self.cfg.data.cache) and isinstance(self.recipe, LatentRecipe)

    def batch_indices(self, micro_step: int) -> tuple[list[int], int]:
        """The data indices of a micro-step's batch on this process and its number of foregrounds."""
        return batch_indices(self.cfg, micro_step, self.accelerator.num_processes, self.accelerator.process_index)

    def batch(self, micro_step: int) -> Batch:
        """A micro-step's batch, made in this process."""
        indices, k = self.batch_indices(micro_step)
        clips = None if self.cached else self.load_clips(indices, k)
        return Batch(micro_step, k, indices, clips)

    def load_clips(self, indices: list[int], k: int) -> ClipBatch:
        """Clips ``indices`` with ``k`` foregrounds from the data, stacked as the stage reads them."""
        return clip_batch([self.data(i, k) for i in indices], self.recipe.reads)

    def step_batches(self, start: int, end: int) -> DataLoader | None:
        """Micro-steps ``start .. end - 1``'s batches of fresh clips, made ahead by ``data.workers`` processes;
        None with a latent cache, where batches are indices into it."""
        if self.cached:
            return None
        steps = StepBatches(self.data, self.cfg, self.recipe.reads, self.accelerator.num_processes,
                            self.accelerator.process_index)
        # its own generator: a loader seeds its workers from torch's global one, which the vae stage samples from
        return DataLoader(steps, sampler=range(start, end), batch_size=None, collate_fn=as_is,
                          num_workers=self.cfg.data.workers, generator=torch.Generator())

    def batches(self, start: int, end: int) -> Iterator[Batch]:
        """The batches of micro-steps ``start .. end - 1``, in order."""
        loader = self.step_batches(start, end)
        if loader is not None:
            yield from loader
        else:
            for micro_step in range(start, end):
                yield self.batch(micro_step)

    def fill_cache(self, batch: int | None = None) -> None:
        """Encode this process's share of the cached clips (and their prompts) before the first step."""
        if self.cached:
            self.recipe.latents.fill(batch or self.cfg.train.batch_size, self.cfg.data.workers,
                                     self.accelerator.is_local_main_process,
                                     (self.accelerator.process_index, self.accelerator.num_processes))

    def loss(self, micro_step: int) -> dict[str, torch.Tensor]:
        """The stage's losses on a micro-step's batch, made here (the loop gets its batches from ``batches``)."""
        return self.recipe.loss(self.batch(micro_step))

    # ----------------------------------------------------------------- train
    def train(self, max_steps: int | None = None) -> list[dict[str, float]]:
        """Run until `train.steps` (or `max_steps` more steps); returns the logged losses of this call."""
        cfg = self.cfg.train
        accumulate = cfg.gradient_accumulation
        end = cfg.steps if max_steps is None else min(cfg.steps, self.step + max_steps)
        if self.step < end:
            self.fill_cache()
        history: list[dict[str, float]] = []
        bar = tqdm(total=end, initial=self.step, desc=f"train {self.cfg.stage}",
                   disable=not self.accelerator.is_local_main_process)
        log_file = self.out / "loss_log.jsonl"
        self.out.mkdir(parents=True, exist_ok=True)
        batches = self.batches(self.step * accumulate, end * accumulate)
        while self.step < end:
            start = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            totals: dict[str, float] = {}
            for _ in range(accumulate):
                batch = next(batches)
                with self.accelerator.accumulate(self.model):  # gradients sync on the last micro-batch only
                    losses = self.recipe.loss(batch)
                    self.accelerator.backward(losses["loss"])  # divided by gradient_accumulation there
                for k, v in losses.items():
                    totals[k] = totals.get(k, 0.0) + v.detach().float() / accumulate
            if cfg.grad_clip > 0:
                self.accelerator.clip_grad_norm_([p for _, p in self._named_trainable()], cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            if self.ema is not None:
                with torch.no_grad():
                    for n, p in self._named_trainable():
                        self.ema[n].lerp_(p.detach().float(), 1 - cfg.ema)
            record = {"step": self.step, **self.mean_over_processes(totals), "lr": self.scheduler.get_last_lr()[0],
                      "seconds": time.perf_counter() - start}
            history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if self.accelerator.is_main_process and (self.step % cfg.log_every == 0 or self.step == end):
                with log_file.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            if self.step % cfg.checkpoint_every == 0 or self.step == end:
                self.save_checkpoint()
        bar.close()
        if self.step >= cfg.steps:
            self.save_result()
        return history

    def mean_over_processes(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        """A step's losses averaged over the processes (each holds its share of the batch's mean)."""
        names = sorted(totals)
        values = torch.stack([totals[k] for k in names])
        if self.accelerator.num_processes > 1:
            values = self.accelerator.reduce(values, "mean")
        return dict(zip(names, values.tolist()))

    # ----------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> None:
        """Trainable weights, optimizer, EMA, scheduler, RNG and step, written by every process into one directory
        that appears atomically; the checkpoint it replaces is kept as checkpoint_previous."""
        acc = self.accelerator
        with shared_atomic_directory(acc, self.out / CHECKPOINT, previous=self.out / PREVIOUS) as tmp:
            if self.engine == "deepspeed":  # its fp32 master weights and each process's optimizer partition
                self.model.save_checkpoint(str(tmp), DEEPSPEED_TAG, save_latest=False, exclude_frozen_parameters=True)
            state = self._state()
            if state:
                distributed_checkpoint(dcp.save, state, tmp / STATE, acc.num_processes)
            torch.save({"scheduler": self.scheduler.state_dict(), "generator": self.generator.get_state(),
                        "torch_rng": torch.get_rng_state()}, tmp / f"rank{acc.process_index}.pt")
            if acc.is_main_process:
                (tmp / CHECKPOINT_PROGRESS).write_text(json.dumps(
                    {"step": self.step, "stage": self.cfg.stage, "engine": self.engine,
                     "processes": acc.num_processes, "config": self.cfg.to_dict()}, indent=2))

    def _state(self) -> dict[str, dict]:
        """What torch.distributed.checkpoint saves and loads: the trainable weights and optimizer state (not under
        DeepSpeed, which keeps its own) and the EMA, each process holding its shards (FSDP2) or a replica."""
        state: dict[str, dict] = {}
        if self.engine != "deepspeed":
            optimizer = self.optimizer.optimizer  # the torch optimizer inside accelerate's wrapper
            state["model"], state["optimizer"] = get_state_dict(self.model, optimizer, options=TRAINABLE)
        if self.ema is not None:
            state["ema"] = self.ema
        return state

    def resume(self) -> None:
        ckpt = self.out / CHECKPOINT
        if not (ckpt / CHECKPOINT_PROGRESS).is_file():
            return
        try:
            progress = json.loads((ckpt / CHECKPOINT_PROGRESS).read_text())
            step = int(progress["step"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(damaged(ckpt, self.out)) from None
        if progress.get("stage") != self.cfg.stage:
            raise ValueError(f"{ckpt} holds a {progress.get('stage')} checkpoint, not {self.cfg.stage}; use another "
                             "output_dir")
        if "engine" not in progress:  # trainable.safetensors + state.pt, saved from the main process only
            raise ValueError(f"{ckpt} was written by an earlier layert2v; finish that run with the version that wrote "
                             f"it, or delete {ckpt} to start over")
        saved_by = (progress["engine"], progress.get("processes"))
        if saved_by != (self.engine, self.accelerator.num_processes):
            raise ValueError(f"{ckpt} was written by {saved_by[1]} process(es) under {saved_by[0]}, and this run has "
                             f"{self.accelerator.num_processes} under {self.engine}; resume it as it was launched (the "
                             "same launcher config and process count) or use another output_dir")
        if self.engine != "deepspeed" and sorted(saved_weights(ckpt, self.out)) != sorted(self.trainable_names):
            raise ValueError(f"{ckpt} was saved by a different model configuration; use another output_dir")
        try:
            if self.engine == "deepspeed":
                loaded, _ = self.model.load_checkpoint(str(ckpt), DEEPSPEED_TAG, load_module_strict=False)
                if loaded is None:
                    raise FileNotFoundError(ckpt / DEEPSPEED_TAG)
            state = self._state()
            if state:
                distributed_checkpoint(dcp.load, state, ckpt / STATE, self.accelerator.num_processes)
            mine = torch.load(ckpt / f"rank{self.accelerator.process_index}.pt", weights_only=True)
        except (Exception, CheckpointException):  # torch.load, DCP, DeepSpeed: many types for a truncated file
            raise ValueError(damaged(ckpt, self.out)) from None
        if self.engine != "deepspeed":
            set_state_dict(self.model, self.optimizer.optimizer, model_state_dict=state["model"],
                           optim_state_dict=state["optimizer"], options=TRAINABLE)
        self.scheduler.load_state_dict(mine["scheduler"])
        self.generator.set_state(mine["generator"])
        torch.set_rng_state(mine["torch_rng"])
        self.step = step
        if self.accelerator.is_main_process:
            truncate_log(self.out / "loss_log.jsonl", step)

    def save_result(self) -> Path:
        """The stage's output: the components it has so far, loadable by the next stage (init) or the pipeline.
        Every process takes part; sharded weights (FSDP2) are gathered on the main process, which writes."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if self.ema is not None:
            with torch.no_grad():
                for n, p in self._named_trainable():
                    p.copy_(self.ema[n])
        gathered = None
        if self.engine == "fsdp2":  # every process sends its shards; the main process gets them whole, on the CPU
            gathered = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True,
                                                                                 cpu_offload=True))
        if acc.is_main_process:
            if gathered is not None:  # the module to export: the sharded one, whole (only the layered stage shards)
                self.recipe.transformer = self.recipe.holding(gathered)
            with atomic_directory(self.out / "final", overwrite=True) as tmp:
                self.recipe.export(tmp, self.step)
        acc.wait_for_everyone()
        return self.out / "final"


# ---------------------------------------------------------------------- helpers
# the trainable weights only (a LoRA run does not save its frozen base); loading leaves the frozen ones as built
TRAINABLE = StateDictOptions(ignore_frozen_params=True, strict=False)


def distributed_checkpoint(save_or_load, state: dict, path: Path, processes: int) -> None:
    """``dcp.save`` or ``dcp.load`` of ``state`` at ``path``; one process runs without a process group, as meant."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        save_or_load(state, checkpoint_id=path, no_dist=processes == 1)


def saved_weights(ckpt: Path, out: Path) -> list[str]:
    """The names of the trainable weights in a checkpoint (from its torch.distributed.checkpoint metadata)."""
    try:
        keys = dcp.FileSystemReader(str(ckpt / STATE)).read_metadata().state_dict_metadata
    except Exception:  # a missing or truncated .metadata
        raise ValueError(damaged(ckpt, out)) from None
    return [k[len("model."):] for k in keys if k.startswith("model.")]


@contextlib.contextmanager
def shared_atomic_directory(accelerator: Accelerator, path: Path, **kwargs) -> Iterator[Path]:
    """``atomic_directory`` for every process: the main process makes the temporary directory, every process writes
    into it, and once all have finished the main process renames it into place."""
    with contextlib.ExitStack() as stack:
        tmp = [None]
        if accelerator.is_main_process:
            if path.parent.is_dir():
                remove_leftovers(path.parent)  # of a run killed mid-save
            tmp = [str(stack.enter_context(atomic_directory(path, overwrite=True, **kwargs)))]
        accelerator.wait_for_everyone()
        if accelerator.num_processes > 1:
            broadcast_object_list(tmp)
        yield Path(tmp[0])
        accelerator.wait_for_everyone()  # all have written; leaving the stack renames on the main process
    accelerator.wait_for_everyone()  # the directory is in place for everyone


def engine_name(accelerator: Accelerator) -> str:
    """single, ddp, fsdp2 or deepspeed: how the launcher set up the processes."""
    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        return "deepspeed"
    if kind == DistributedType.FSDP:
        return "fsdp2" if accelerator.is_fsdp2 else "fsdp1"
    return "ddp" if accelerator.num_processes > 1 else "single"


def mixed_precision(cfg: TrainConfig) -> str:
    """train.mixed_precision, which must equal the launcher's (``accelerate launch`` passes its config file's or
    --mixed_precision's value on as ACCELERATE_MIXED_PRECISION)."""
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    mine = cfg.train.mixed_precision
    if launcher is not None and launcher.lower() != mine:
        raise ValueError(f"accelerate launch asks for mixed precision {launcher.lower()} and the training config for "
                         f"{mine}: set train.mixed_precision: {launcher.lower()} in the config, or launch with "
                         f"--mixed_precision {mine}")
    return mine


def check_engine(cfg: TrainConfig, accelerator: Accelerator, model: torch.nn.Module) -> None:
    """What each engine needs from the training config, checked (and DeepSpeed's batch filled in) before prepare."""
    engine = engine_name(accelerator)
    if engine == "fsdp1":
        raise ValueError("this trainer runs FSDP2: set fsdp_version: 2 in the launcher's fsdp_config "
                         "(configs/accelerate/fsdp.yaml)")
    if engine == "fsdp2":
        units = accelerator.state.fsdp_plugin.transformer_cls_names_to_wrap or []
        found = {type(m).__name__ for m in model.modules()}
        if cfg.stage != "layered" or not set(units) <= found:
            raise ValueError(f"FSDP shards the layered transformer by its blocks ({', '.join(units)}); stage "
                             f"{cfg.stage} has none: launch it with configs/accelerate/ddp.yaml")
    if engine == "deepspeed":
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        # the batch per process is the training config's (accelerate cannot read it from a DataLoader here)
        for key, value, where in (("train_micro_batch_size_per_gpu", cfg.train.batch_size, "train.batch_size"),
                                  ("gradient_clipping", cfg.train.grad_clip, "train.grad_clip")):
            if ds.get(key, "auto") == "auto":
                ds[key] = value
            elif ds[key] != value:
                raise ValueError(f"the DeepSpeed config sets {key}: {ds[key]} and the training config {where}: "
                                 f"{value}; make them equal (or set {key}: auto in the DeepSpeed config)")


def check_init(cfg: TrainConfig) -> None:
    """Every directory ``init`` names exists, and the data's frame and size rules fit the model's VAE and patch:
    checked before anything loads."""
    dirs = cfg.init.values() if isinstance(cfg.init, dict) else [cfg.init] if cfg.init else []
    for where in dirs:
        if not Path(where).exists():
            raise FileNotFoundError(f"init {where} does not exist; point it at the previous stage's output_dir/final "
                                    "or a Wan2.1 diffusers directory")
    cfg.validate()  # again, now that init's configs can be read


def damaged(ckpt: Path, out: Path) -> str:
    previous = out / PREVIOUS
    if (previous / CHECKPOINT_PROGRESS).is_file():
        fix = f"replace {ckpt} with {previous} to resume from the checkpoint before it, or delete {ckpt} to start over"
    else:
        fix = f"delete {ckpt} to start over"
    return f"checkpoint {ckpt} is damaged (a file is missing or truncated); {fix}"


def truncate_log(log: Path, step: int) -> None:
    """Drop log records after ``step`` (written after the checkpoint a run resumes from), so a resumed run's log
    holds every step once."""
    if not log.is_file():
        return
    lines = log.read_text().splitlines()
    keep = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(keep) != len(lines):
        write_text_atomic(log, "".join(line + "\n" for line in keep))


def encode_layers(vae, alpha_path: AlphaPath, samples: list[LayeredVideo], layout: LayerLayout,
                  device: torch.device) -> torch.Tensor:
    """GT layers -> layout-concatenated latents (B, C, S*T', H', W'); foregrounds premultiplied (eq. 3)."""
    clips = clip_batch(samples, RECIPES["layered"].reads)
    layers = {n: x.to(device) for n, x in clips.layers(layout).items()}
    return encode_layered(vae, alpha_path, layers, layout)


def train_from_config(path: str | Path) -> Path:
    """`layert2v train CONFIG.yaml`: run (or resume) the stage and return its output directory."""
    trainer = Trainer(TrainConfig.from_yaml(path))
    trainer.train()
    return trainer.out / "final"
