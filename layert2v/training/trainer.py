"""One training loop for every stage, on accelerate; the stages themselves are recipes (recipes.py).

    batch = next(batches)                 # a step's clips: made ahead by DataLoader workers, or cached latents
    loss = recipe.loss(batch)["loss"]     # the stage's loss
    backward, (after gradient_accumulation micro-batches) clip, optimizer and scheduler step, EMA, log, checkpoint

Data are drawn by index from the (micro-)step number, and each sample's timestep and noise from a generator keyed by
that index (on the training device, so a step's noise never crosses the bus); torch's global RNG state (the vae
stage's posterior samples) is checkpointed. So a resumed run continues exactly where the interrupted one would have
been, and N processes (or N accumulated micro-batches) train as one process on the whole batch does.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
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


class Trainer:
    """Builds the stage's recipe, its optimizer and data, and runs the loop. ``data``: a clip source
    ``(index, num_foregrounds) -> LayeredVideo`` (default: the configured one, see ``data.build_data``)."""

    def __init__(self, config: TrainConfig, data: ClipFn | None = None, accelerator: Accelerator | None = None):
        self.cfg = config
        self.out = Path(config.output_dir)
        check_init(config)
        # the schedule counts optimizer steps: one scheduler step per optimizer step, whatever the process count
        self.accelerator = accelerator or Accelerator(mixed_precision=config.train.mixed_precision,
                                                      gradient_accumulation_steps=config.train.gradient_accumulation,
                                                      step_scheduler_with_optimizer=False)
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
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine_with_warmup(opt.warmup, opt.steps))
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, self.optimizer, self.scheduler)
        self.recipe.model, self.recipe.trained = self.model, model
        self.ema = {n: p.detach().clone() for n, p in self._named_trainable()} if opt.ema > 0 else None
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
                    totals[k] = totals.get(k, 0.0) + float(v.detach()) / accumulate
            if cfg.grad_clip > 0:
                self.accelerator.clip_grad_norm_([p for _, p in self._named_trainable()], cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            if self.ema is not None:
                with torch.no_grad():
                    for n, p in self._named_trainable():
                        self.ema[n].lerp_(p.detach(), 1 - cfg.ema)
            record = {"step": self.step, **totals, "lr": self.scheduler.get_last_lr()[0],
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

    # ----------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> None:
        """Trainable weights (safetensors), optimizer/scheduler/generator state, step: written atomically; the
        checkpoint it replaces is kept as checkpoint_previous."""
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return
        remove_leftovers(self.out)  # of a run killed mid-save
        with atomic_directory(self.out / CHECKPOINT, overwrite=True, previous=self.out / PREVIOUS) as tmp:
            save_file({n: p.detach().contiguous().cpu() for n, p in self._named_trainable()},
                      str(tmp / "trainable.safetensors"))
            if self.ema is not None:
                save_file({n: t.contiguous().cpu() for n, t in self.ema.items()}, str(tmp / "ema.safetensors"))
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()},
                       tmp / "state.pt")
            (tmp / CHECKPOINT_PROGRESS).write_text(json.dumps({"step": self.step, "stage": self.cfg.stage,
                                                           "config": self.cfg.to_dict()}, indent=2))

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
        try:
            weights = load_file(str(ckpt / "trainable.safetensors"))
            ema = (load_file(str(ckpt / "ema.safetensors"))
                   if self.ema is not None and (ckpt / "ema.safetensors").is_file() else None)
            state = torch.load(ckpt / "state.pt", weights_only=True)  # tensors and plain containers only
        except Exception:  # safetensors and torch.load raise many types for a truncated or missing file
            raise ValueError(damaged(ckpt, self.out)) from None
        if sorted(weights) != sorted(self.trainable_names):
            raise ValueError(f"{ckpt} was saved by a different model configuration; use another output_dir")
        with torch.no_grad():
            for n, p in self._named_trainable():
                p.copy_(weights[n])
        if ema is not None:
            self.ema = {k: v.to(self.accelerator.device) for k, v in ema.items()}
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = step
        if self.accelerator.is_main_process:
            truncate_log(self.out / "loss_log.jsonl", step)

    def save_result(self) -> Path:
        """The stage's output: the components it has so far, loadable by the next stage (init) or the pipeline."""
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return self.out
        if self.ema is not None:
            with torch.no_grad():
                for n, p in self._named_trainable():
                    p.copy_(self.ema[n])
        with atomic_directory(self.out / "final", overwrite=True) as tmp:
            self.recipe.export(tmp, self.step)
        return self.out / "final"


# ---------------------------------------------------------------------- helpers
def cosine_with_warmup(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


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
