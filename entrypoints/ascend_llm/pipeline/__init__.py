"""``ascend-llm pipeline FILE``: a whole workflow (convert, preprocess, train, merge, export, generate,
evaluate) from one YAML file, checked up front, resumable, with a run report.

spec.py reads the file, plan.py turns each step into its stage's own request and checks the run,
execute.py runs it step by step with records in state.py, report.py writes the report (curves.py
draws the loss curves). ``invoke pipeline`` on the host drives the same code with a launcher that
puts each step in the ``docker run`` line of ``invoke run``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Callable, Sequence

from ascend_llm.errors import AscendLLMError, PreflightFailed, UsageError

EXAMPLES = Path(__file__).resolve().parent / "examples"
EXAMPLE_FILES = {"sft": "qwen3-14b-sft.yaml", "lora": "qwen3-14b-lora.yaml"}
SUMMARY = "Run a whole workflow from one YAML file: checked up front, resumable, with a run report."

DESCRIPTION = f"""\
{SUMMARY}

The file (see docs/pipeline.md; two complete ones: --example sft, --example lora):

  name: qwen3-14b-intent-sft             # optional; the file name without .yaml
  model: qwen3-14b                       # --model of every step that takes one
  inputs:                                # paths the run reads (relative ones: to this file)
    hf: /apps/hw/weights/Qwen3-14B
    train: /apps/hw/datasets/intent_train_10k.jsonl
  output: /apps/hw/outputs/intent-sft    # output root; records, logs, report in <output>/pipeline/
  defaults:                              # options for every step whose stage has them
    tokenizer: ${{inputs.hf}}
  steps:                                 # run in this order; each is a stage with its options
    - name: convert
      stage: convert hf2mcore            # stage [action], as on the command line
      load: ${{inputs.hf}}
      save: ${{output}}/mcore-tp8pp1
      for: sft                           # option names as in `ascend-llm <stage> --help`
    - name: preprocess
      stage: preprocess
      format: openai
      input: ${{inputs.train}}
      output_prefix: ${{output}}/data/intent
    - name: sft
      stage: sft
      load: ${{steps.convert.save}}         # an earlier step's value, never retyped
      data: ${{steps.preprocess.result}}    # result: what a later step loads from it
      save: ${{output}}/sft
      extra_args: [--log-throughput]     # like `-- ...`

References: ${{inputs.NAME}}, ${{output}}, ${{steps.STEP.OPTION}} (any resolved option: save, tp, ...) and
${{steps.STEP.result}}: convert's --save or <hf-dir>/mg2hf, preprocess's --data value, a training step's
--save, evaluate --task accuracy's JSON report. $${{ is a literal ${{.

Before any step starts, in one pass, every problem is listed: each step's options (parsed by its
stage), its preflight (a path an earlier step of this run writes is checked when the step starts),
the layout a step loads against the one its producer writes, the prompt type of the training data,
the LoRA arguments of merge/inference against the LoRA step, the tokenizer files of every step,
world size and divisibility, and the disk space for every checkpoint the run writes.

Each finished step leaves a record (<output>/pipeline/state/STEP.json: command, exit status, times,
fingerprints of its inputs and outputs). A rerun skips steps whose record matches and whose outputs
are intact, and runs everything from the first step that changed. A stopped step (SIGTERM: it
saves a checkpoint) has no record and runs again; a training step then continues from its own
checkpoint. The report (<output>/pipeline/report.md and .json, loss-STEP.png) is written at the end,
also after a failure or a stop.

exit status: 0; 2 when the check refuses the run (nothing started); a failed step's own status;
128+N when stopped by signal N."""


def parser() -> argparse.ArgumentParser:
    from ascend_llm.stages.base import HelpFormatter, StageArgumentParser

    p = StageArgumentParser(prog="ascend-llm pipeline", description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("file", nargs="?", metavar="FILE", help="the pipeline YAML file")
    p.add_argument("--dry-run", action="store_true", help="check, then print the whole run as one bash script")
    p.add_argument("--check", action="store_true", help="check and print the plan; run nothing")
    p.add_argument("--from", dest="start_from", metavar="STEP", help="run STEP and every later step, records aside")
    p.add_argument("--only", metavar="STEP", help="run only STEP, records aside")
    p.add_argument("--input", action="append", default=[], metavar="NAME=PATH", help="replace one of inputs:")
    p.add_argument("--output", metavar="DIR", help="replace output:")
    p.add_argument("--example", choices=sorted(EXAMPLE_FILES), help="print an example pipeline file and exit")
    return p


def parse_inputs(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"--input {item!r}: expected NAME=PATH")
        out[name] = value
    return out


def run(
    file: str,
    *,
    dry_run: bool = False,
    check: bool = False,
    start_from: str | None = None,
    only: str | None = None,
    inputs: dict[str, str] | None = None,
    output: str | None = None,
    launcher: Callable[[Sequence[str]], list] | None = None,
    preflight_here: bool = True,
    precheck: Sequence[str] | None = None,
) -> int:
    """Plan, check and run (or print) a pipeline; see DESCRIPTION. ``launcher``/``precheck`` are for
    the host: a step's command line, and a command that checks the run inside the image first."""
    from ascend_llm import cli
    from ascend_llm.pipeline import execute, report
    from ascend_llm.pipeline.plan import Planner
    from ascend_llm.pipeline.spec import load_spec
    from ascend_llm.pipeline.state import now
    from ascend_llm.stages import STAGES

    spec = load_spec(Path(file).resolve(), STAGES, inputs, output)
    planner = Planner(
        spec,
        STAGES,
        cli.build_request,
        dry_run=dry_run,
        start_from=start_from,
        only=only,
        preflight_here=preflight_here,
    )
    plan = planner.plan()
    execute.write_lines(execute.plan_lines(plan))
    problems = plan.all_problems()
    if problems:
        raise PreflightFailed([*problems, f"{len(problems)} problem(s) found; no step was started"])
    if dry_run:
        sys.stdout.write(execute.dry_run_script(plan, launcher, precheck))
        return 0
    if precheck:
        from ascend_llm.runner import run_script

        execute.say("checking the run inside the image")
        code = run_script("exec " + " ".join(shlex.quote(str(t)) for t in precheck), None)
        if code or check:
            return code
    elif check:
        execute.say(f"check passed: {len(plan.running())} of {len(plan.steps)} step(s) would run")
        return 0
    if not plan.running():
        execute.say("every step is finished and unchanged; nothing to run (--from STEP or --only STEP to rerun)")
    started = now()
    with plan.state.locked():
        runner = execute.Executor(plan, planner, launcher or execute.in_image)
        code, status = runner.run()
        data = report.build(plan, runner.results, status, code, started, now())
        json_path, md_path = report.write(plan, data)
    execute.say(f"{status}; report {md_path} (and {json_path})")
    return code


def main(argv: Sequence[str]) -> int:
    try:
        args = parser().parse_args(list(argv))
    except SystemExit as exc:  # --help: argparse printed it
        return int(exc.code or 0)
    if args.example:
        sys.stdout.write((EXAMPLES / EXAMPLE_FILES[args.example]).read_text(encoding="utf-8"))
        return 0
    if not args.file:
        raise UsageError("pipeline needs the pipeline FILE (see ascend-llm pipeline --help)")
    if args.start_from and args.only:
        raise UsageError("--from and --only together: choose one")
    try:
        return run(
            args.file,
            dry_run=args.dry_run,
            check=args.check,
            start_from=args.start_from,
            only=args.only,
            inputs=parse_inputs(args.input),
            output=args.output,
        )
    except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled while steps run
        raise AscendLLMError("stopped", exit_code=130) from None
