"""configs/accelerate/*.yaml: each parses with accelerate's own config classes and turns into the plugin that
`accelerate launch` would build (no GPU needed: only the launcher's argument and environment handling runs)."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest
import torch
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "accelerate"
EXPECTED = {"ddp.yaml": DistributedType.MULTI_GPU, "fsdp.yaml": DistributedType.FSDP,
            "deepspeed_zero2.yaml": DistributedType.DEEPSPEED}


def launch_args(name: str):
    """What `accelerate launch --config_file configs/accelerate/NAME -m layert2v.cli train CONFIG` resolves to."""
    argv = ["--config_file", str(CONFIGS / name), "-m", "layert2v.cli", "train", "stage.yaml"]
    return _validate_launch_command(launch_command_parser().parse_args(argv))


def test_the_three_configs_are_there():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses_as_an_8_gpu_single_node_run(name):
    config = load_config_from_file(str(CONFIGS / name))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == EXPECTED[name]
    assert (config.num_machines, config.num_processes, config.mixed_precision) == (1, 8, "bf16")
    args, _, _ = launch_args(name)
    assert args.num_processes == 8 and args.mixed_precision == "bf16"
    assert args.module and args.training_script == "layert2v.cli"
    assert args.gradient_accumulation_steps is None  # the training config sets accumulation, not the launcher


def test_fsdp_config_builds_the_fsdp2_plugin():
    args, _, _ = launch_args("fsdp.yaml")
    with mock.patch.dict(os.environ, prepare_multi_gpu_env(args)):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.transformer_cls_names_to_wrap == ["LayeredWanBlock"]
    assert plugin.reshard_after_forward is True


def test_fsdp_wrap_unit_is_a_module_whose_forward_runs():
    """FSDP gathers a unit's weights in that unit's forward hook, so the wrap unit must be a module whose own forward
    the layered transformer calls: one call per block, and the class its _no_split_modules names."""
    from helpers import TINY_TRANSFORMER

    from layert2v.layout import LayerLayout
    from layert2v.models.transformer import LayeredWanTransformer

    unit = load_config_from_file(str(CONFIGS / "fsdp.yaml")).fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
    torch.manual_seed(0)
    model = LayeredWanTransformer(**TINY_TRANSFORMER, max_foregrounds=1)
    assert model._no_split_modules == [unit]
    calls: dict[str, int] = {}

    def count(module, *_):
        calls[type(module).__name__] = calls.get(type(module).__name__, 0) + 1

    wrapped = [m for m in model.modules() if type(m).__name__ == unit]
    assert len(wrapped) == TINY_TRANSFORMER["num_layers"]
    for m in wrapped:
        m.register_forward_pre_hook(count)
    layout = LayerLayout(1)
    x = torch.randn(1, 4, layout.num_segments, 4, 4)
    ctx = torch.randn(1, layout.num_prompts, 4, TINY_TRANSFORMER["text_dim"])
    with torch.no_grad():
        model(x, torch.tensor([500.0]), ctx, layout=layout)
    assert calls == {unit: TINY_TRANSFORMER["num_layers"]}


def test_deepspeed_config_builds_a_zero2_plugin_that_takes_batch_accumulation_and_clipping_from_the_trainer():
    args, defaults, _ = launch_args("deepspeed_zero2.yaml")
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as `accelerate launch`
    _, env = prepare_deepspeed_cmd_env(args)
    with mock.patch.dict(os.environ, env):
        plugin = DeepSpeedPlugin()
    ds = plugin.deepspeed_config
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "none"
    assert ds["gradient_accumulation_steps"] == "auto"  # filled from Accelerator(gradient_accumulation_steps=...)
    # filled by the trainer from train.batch_size and train.grad_clip (tests/test_multi_process.py)
    assert ds["train_micro_batch_size_per_gpu"] == ds["gradient_clipping"] == "auto"
