"""``ascend-llm sft``: full-parameter fine-tuning with posttrain_gpt.py --stage sft."""

from __future__ import annotations

from ascend_llm import datafiles
from ascend_llm.options import Option, opt
from ascend_llm.script import Arg
from ascend_llm.stages.base import StageRequest
from ascend_llm.stages.training import TrainingStage


class SftStage(TrainingStage):
    """posttrain_gpt.py --stage sft; --data is the bare prefix of the packed instruction data."""

    name = "sft"
    summary = "Full-parameter instruction fine-tuning (posttrain_gpt.py --stage sft) under torchrun."
    description = """\
--data is the bare prefix given to `ascend-llm preprocess --format alpaca|sharegpt|openai`
(the files are <prefix>_packed_{input_ids,attention_mask,labels}_document.{bin,idx}).
The checkpoint under --load must be split as --tp/--pp (preflight prints the re-shard command)."""

    def stage_options(self) -> list[Option]:
        return [
            opt(
                "prompt_type",
                help="chat template; must be the one used in preprocessing",
                metavar="NAME",
                default_text="the release's Qwen3 template: qwen on MindSpeed-LLM 2.1.0, qwen3 from 2.2.0",
            ),
            opt(
                "no_variable_seq_lengths",
                help="pad every batch to --seq-length instead of the longest sample (the seed's choice "
                "when aligning precision): no --variable-seq-lengths (2.3.0 on: --no-pad-to-seq-lengths)",
                action="store_true",
            ),
        ]

    def data_help(self) -> str:
        return "bare prefix written by `ascend-llm preprocess --format alpaca|sharegpt|openai`"

    def data_problems(self, req: StageRequest) -> list[str]:
        return datafiles.check_packed_data(req.opts["data"], self.name)

    def tune_args(self, req: StageRequest) -> list[Arg]:
        """Upstream's TUNE_ARGS; the prompt type follows the release table (qwen on 2.1.0, qwen3 on 2.2.0),
        which also renames --variable-seq-lengths where a release did."""
        prompt_type = req.opts.get("prompt_type") or (req.release.qwen3_prompt_type if req.release else "qwen")
        args = [] if self.resume_load(req) else [Arg("--finetune")]  # --finetune would reset the iteration
        args += [
            Arg("--stage", ("sft",)),
            Arg("--is-instruction-dataset"),
            Arg("--prompt-type", (prompt_type,)),
        ]
        if not req.opts.get("no_variable_seq_lengths"):
            args.append(Arg("--variable-seq-lengths"))
        return args
