"""``ascend-llm pretrain``: pretrain_gpt.py under torchrun."""

from __future__ import annotations

from ascend_llm import datafiles
from ascend_llm.stages.base import StageRequest
from ascend_llm.stages.training import TrainingStage


class PretrainStage(TrainingStage):
    """pretrain_gpt.py; --load is optional (random init), --data carries the _text_document suffix."""

    name = "pretrain"
    summary = "Pretrain (or continue pretraining) with pretrain_gpt.py under torchrun."
    description = """\
--data is the prefix with the suffix: <output-prefix>_text_document from
`ascend-llm preprocess --format pretrain`. Without --load the model starts from random weights.
The checkpoint under --load must be split as --tp/--pp (preflight prints the re-shard command)."""
    load_required = False

    def load_help(self) -> str:
        return "Megatron checkpoint to continue from (omit to start from random weights)"

    def data_help(self) -> str:
        return "<prefix>_text_document written by `ascend-llm preprocess --format pretrain`"

    def data_problems(self, req: StageRequest) -> list[str]:
        return datafiles.check_pretrain_data(req.opts["data"])
