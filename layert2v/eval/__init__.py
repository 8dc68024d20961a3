"""Evaluation of layered videos: VBench dimensions per layer, matting, layer and trajectory metrics.

`layert2v eval` is :func:`layert2v.eval.command.run_eval`; docs/EVALUATION.md defines every number.
"""

from .command import add_eval_arguments, run_eval

__all__ = ["add_eval_arguments", "run_eval"]
