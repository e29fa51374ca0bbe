"""The only code that reads or changes LitGPT's internals; everything else gets plain values from it.

LitGPT tells a data module its micro-batch size and sequence length only. What else a run needs is read here, from
LitGPT's own frames and files, and what we add to its loop is put there from here:

- ``run``: ``litgpt pretrain``'s ``TrainArgs`` (global batch size, ``max_tokens``), its ``Fabric`` (``num_nodes``),
  its ``out_dir`` and the checkpoint it resumes (``RunContext``), with the out_dir lock and ``iter_num``
  (``guard_pretrain_run``); whether ``final/`` already holds the stop step; ``litgpt pretrain``'s arguments, for
  ``convert-config``.
- ``loops``: the ``data/`` metrics in the training log of ``litgpt pretrain`` and ``litgpt finetune_*``, with
  per-row losses from their loss call, and document attention around their ``fit`` (``attach_to_training_loop``);
  ``ScheduledAdamW``'s per-iteration LR (``get_lr``) and where each data stage starts.
- ``attention``: the model side of document attention (``patch_document_attention``: RoPE positions and masks in
  LitGPT's ``CausalSelfAttention``).

Each entry point first calls ``require_supported_litgpt`` (``version``): one version check, one error.
"""

from sharded_mix.litgpt_bridge.attention import DocumentPatch, patch_document_attention
from sharded_mix.litgpt_bridge.loops import (
    TRAINING_LOG,
    TRAINING_LOOPS,
    TRAINING_LOSS,
    TrainingLoop,
    attach_scheduled_lr,
    attach_to_training_loop,
    publish_stage_steps,
    stage_start_step,
)
from sharded_mix.litgpt_bridge.run import (
    built_by_jsonargparse,
    checkpoint_state,
    final_state,
    guard_pretrain_run,
    pretrain_parameters,
    run_context,
)
from sharded_mix.litgpt_bridge.version import SUPPORTED_LITGPT, SUPPORTED_RANGE, require_supported_litgpt

__all__ = [
    "SUPPORTED_LITGPT",
    "SUPPORTED_RANGE",
    "TRAINING_LOG",
    "TRAINING_LOOPS",
    "TRAINING_LOSS",
    "DocumentPatch",
    "TrainingLoop",
    "attach_scheduled_lr",
    "attach_to_training_loop",
    "built_by_jsonargparse",
    "checkpoint_state",
    "final_state",
    "guard_pretrain_run",
    "patch_document_attention",
    "pretrain_parameters",
    "publish_stage_steps",
    "require_supported_litgpt",
    "run_context",
    "stage_start_step",
]
