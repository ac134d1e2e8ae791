"""The stage registry: the names here are the contract (``docker run IMAGE <stage> ...``)."""

from __future__ import annotations

from ascend_llm.stages.base import Stage
from ascend_llm.stages.check import CheckStage
from ascend_llm.stages.convert import ConvertStage
from ascend_llm.stages.evaluate import EvaluateStage
from ascend_llm.stages.generate import GenerateStage
from ascend_llm.stages.lora import LoraStage
from ascend_llm.stages.preprocess import PreprocessStage
from ascend_llm.stages.pretrain import PretrainStage
from ascend_llm.stages.selftest import SelftestStage
from ascend_llm.stages.sft import SftStage
from ascend_llm.stages.tensorboard import TensorboardStage

STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        ConvertStage(),
        PreprocessStage(),
        PretrainStage(),
        SftStage(),
        LoraStage(),
        GenerateStage(),
        EvaluateStage(),
        TensorboardStage(),
        CheckStage(),
        SelftestStage(),
    )
}
